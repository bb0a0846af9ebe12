"""BOSS: Bayesian Optimization meets Self-Distillation. The SDK users import.

    import boss
    class MyTrainer(boss.Trainer): ...             # the SDK owns the loop, or:
    trial = boss.init(defaults)                     # a loop of one's own (docs/own-loop.md)
    study = boss.load_study("study.yaml")
    model, trial = boss.load_best("runs/digits")   # the best network a study found
"""

from .spec import SpecError, Study, StudySpec, load_study, parse_study
from .store import CheckpointError, StorageError, Store

_TORCH = {"Trainer": "trainer", "boss_loss": "losses", "distillation_loss": "losses", "load_best": "best",
          "init": "session", "distill": "session", "Session": "session"}


def __getattr__(name: str):
    """The torch-backed parts load on first use: the operator imports `boss` without torch."""
    if name in _TORCH:
        import importlib

        return getattr(importlib.import_module(f".{_TORCH[name]}", __name__), name)
    raise AttributeError(f"module 'boss' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "SpecError",
    "StorageError",
    "Store",
    "Study",
    "StudySpec",
    "Session",
    "Trainer",
    "boss_loss",
    "distill",
    "distillation_loss",
    "init",
    "load_best",
    "load_study",
    "parse_study",
]
__version__ = "0.1.0"
