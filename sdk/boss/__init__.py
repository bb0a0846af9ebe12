"""BOSS: Bayesian Optimization meets Self-Distillation. The SDK users import.

    import boss
    class MyTrainer(boss.Trainer): ...
    study = boss.load_study("study.yaml")
"""

from .losses import boss_loss, distillation_loss
from .spec import SpecError, Study, StudySpec, load_study, parse_study
from .store import CheckpointError, Store
from .trainer import Trainer

__all__ = [
    "CheckpointError",
    "SpecError",
    "Store",
    "Study",
    "StudySpec",
    "Trainer",
    "boss_loss",
    "distillation_loss",
    "load_study",
    "parse_study",
]
__version__ = "0.1.0"
