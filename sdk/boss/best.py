"""The best network a study found, as a ready model:

    model, trial = boss.load_best("runs/digits")          # a `boss run` folder
    model, trial = boss.load_best("digits", namespace="ml", endpoint="http://minio:9000")  # a cluster study

The study's own trainer builds the network (`configure_model` with the best trial's config, so
its architecture parameters are the checkpoint's), and the weights come from the checkpoint,
checked against the SHA-256 the study recorded (safetensors: nothing is unpickled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .spec import SpecError


def load_best(target: str | Path, *, namespace: str | None = None, endpoint: str | None = None,
              device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(the best trial's model in eval mode on `device`, the trial's record). `endpoint`: the
    S3 endpoint of the checkpoints when the study does not name one (a cluster's default);
    credentials come from the environment (AWS_*) as for any boto3 client."""
    from .cli import _load_any
    from .plugins import load_trainer_class
    from .report import best_trial
    from .store import Store

    study, trials = _load_any(str(target), namespace)
    spec = study["spec"]
    best = best_trial(trials, (spec.get("objective") or {}).get("goal", "maximize") == "maximize")
    if best is None:
        raise SpecError(f"{target}: no trial has succeeded yet")
    if not best.get("checkpoint"):
        raise SpecError(f"{target}: the best trial #{best['index']} has no checkpoint recorded")
    trainer_spec = spec.get("trainer") or {}
    trainer = load_trainer_class(trainer_spec.get("plugin", "boss.trainers.digits:DigitsTrainer"))(
        best["config"], trainer_spec.get("args") or {}, seed=0)
    model = trainer.configure_model()
    store = Store(endpoint or (spec.get("storage") or {}).get("endpoint"))
    weights, _ = store.load_checkpoint(best["checkpoint"], best.get("checksum"))
    model.load_state_dict(weights)
    return model.to(device).eval(), best
