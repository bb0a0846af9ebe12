"""One trial: what the engine asks for, and the entrypoint that runs it.

The local backend and the Kubernetes Job run the same thing: `python -m boss.trial` with
the trial's `TrialSpec` as JSON in the BOSS_TRIAL environment variable. Storage
credentials come from the environment (AWS_* for s3://), never from the spec.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .spec import Objective

ENV = "BOSS_TRIAL"
CHECKPOINT = "model.safetensors"
RESULT = "result.json"


class EarlyStop(BaseModel):
    """When this trial stops early: thresholds by epoch, fixed by the engine when it was proposed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: Literal["median", "asha"]
    thresholds: dict[int, float]

    def stops(self, epoch: int, value: float, best: float | None, maximize: bool) -> float | None:
        """The threshold this trial failed at `epoch`, or None to go on."""
        threshold = self.thresholds.get(epoch)
        if threshold is None:
            return None
        mine = best if self.rule == "median" else value
        if mine is None or (mine < threshold if maximize else mine > threshold):
            return threshold
        return None


class TrialSpec(BaseModel):
    """Everything one trial needs to run, resolved by the engine's backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    study: str
    namespace: str | None = Field(None, description="The study's namespace on a cluster (labels its metrics).")
    index: int = Field(ge=0)
    phase: Literal["warmup", "boss"]
    config: dict[str, Any]
    seed: int = 0
    plugin: str
    args: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(ge=1)
    objective: Objective = Objective()
    distill_loss: Literal["mse", "kl"] = "mse"
    distill_weight: float = Field(0.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    teacher_uri: str | None = None
    teacher_sha256: str | None = None
    teacher_config: dict[str, Any] | None = Field(
        None, description="The teacher's architecture parameters where its shape differs (None: inactive).")
    student_uri: str | None = None
    student_sha256: str | None = None
    output_uri: str = Field(description="This trial's folder in storage: checkpoint and result go here.")
    storage_endpoint: str | None = None
    pushgateway: str | None = None
    metrics_textfile: str | None = None
    threads: int | None = Field(None, ge=1)
    early_stop: EarlyStop | None = None

    @property
    def checkpoint_uri(self) -> str:
        return self.output_uri.rstrip("/") + "/" + CHECKPOINT

    @property
    def result_uri(self) -> str:
        return self.output_uri.rstrip("/") + "/" + RESULT

    def to_env(self) -> dict[str, str]:
        return {ENV: self.model_dump_json()}


# Exit codes of `python -m boss.trial`; a Job's podFailurePolicy retries only the first kind.
EXIT_FAILED = 1  # may work on a retry: storage outage, out of memory, an unexpected error
EXIT_BAD_SPEC = 2  # $BOSS_TRIAL is missing or invalid
EXIT_WILL_FAIL_AGAIN = 3  # the same trial would fail the same way: broken plugin or checkpoint, no finite objective


class TrialError(RuntimeError):
    """A trial that cannot finish; the message is one line meant for the user.

    `retry`: whether running the same trial again may succeed (e.g. storage was down)."""

    def __init__(self, message: str, *, retry: bool = False):
        super().__init__(message)
        self.retry = retry


def main(argv: list[str] | None = None) -> int:
    """Run the trial described by $BOSS_TRIAL. Exit 0 on success, else one of the EXIT_* codes."""
    raw = os.environ.get(ENV)
    if not raw:
        print(f"boss.trial: {ENV} is not set (it holds the trial spec as JSON)", file=sys.stderr)
        return EXIT_BAD_SPEC
    try:
        spec = TrialSpec.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"boss.trial: invalid {ENV}: {where}: {first['msg']}", file=sys.stderr)
        return EXIT_BAD_SPEC
    from .loop import run_trial
    from .plugins import PluginError
    from .store import CheckpointError, StorageError

    try:
        result = run_trial(spec)
    except (TrialError, CheckpointError, StorageError, PluginError) as e:
        print(f"boss.trial: trial {spec.index} failed: {e}", file=sys.stderr)
        retry = isinstance(e, StorageError) or getattr(e, "retry", False)
        return EXIT_FAILED if retry else EXIT_WILL_FAIL_AGAIN
    except Exception as e:
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"boss.trial: trial {spec.index} failed: {type(e).__name__}: {first} "
              "(the traceback is in the trial's log)", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({"trial": spec.index, spec.objective.metric: result["value"]}))
    return 0


if __name__ == "__main__":
    # run main() from the imported module, not from __main__: otherwise `TrialError` here would be
    # __main__.TrialError, a different class from the boss.trial.TrialError the loop raises
    from boss.trial import main as _main

    sys.exit(_main())
