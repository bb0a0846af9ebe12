"""What the engine asks a trial to do (TrialSpec), how a trial fails (TrialError, exit codes),
and where a failed trial leaves its one line: the bottom of the SDK's trial modules.

It imports none of them: `boss.distributed` (the launcher), `boss.session` (the loop-level
API), `boss.loop` (the Trainer path) and `boss.trial` (the entry point) all import it, so the
trial code has one direction: entry -> Trainer path / adapters -> session -> distributed -> here.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .spec import Objective

ENV = "BOSS_TRIAL"
TERMINATION_ENV = "BOSS_TERMINATION_MESSAGE"  # where to leave the result (the container's terminationMessagePath)
CHECKPOINT = "model.safetensors"
RESULT = "result.json"
MESSAGE_LIMIT = 4096  # what a kubelet keeps of a termination message (the last 4096 bytes of the file)
MESSAGE_BUDGET = 3072  # what a result message may take: well under the kubelet's limit
MESSAGE_FORMAT = 1


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
    script: str | None = Field(
        None, description="The study's trainer.script: a training script (path.py) or module run as the trial "
        "instead of the plugin's Trainer; it talks to BOSS through boss.session.")
    args: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(ge=1)
    objective: Objective = Objective()
    distill_loss: Literal["mse-rel", "mse", "kl"] = "mse-rel"
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
        # without a script the spec reads as it did before the field: a trainer image of an earlier
        # SDK still runs a plugin trial that a newer operator sends
        return {ENV: self.model_dump_json(exclude=None if self.script else {"script"})}


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


def write_error_file(line: str) -> None:
    """Leave a failed rank's one line where torchrun looks for it ($TORCHELASTIC_ERROR_FILE)."""
    import time

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w") as f:
            json.dump({"message": line, "timestamp": int(time.time())}, f)
    except OSError:
        pass


def leave_message(text: str) -> bool:
    """Write `text` where $BOSS_TERMINATION_MESSAGE says (a Job sets it); False if it could not be."""
    path = os.environ.get(TERMINATION_ENV)
    if not path:
        return True
    data = text.encode()[-MESSAGE_LIMIT:]
    try:
        with open(path, "wb") as f:
            f.write(data)
        return True
    except OSError as e:
        print(f"boss.trial: cannot write the termination message to {path}: {e}", file=sys.stderr)
        return False


def _failed(line: str, *, rank: int | None = None) -> str:
    """Print a failed trial's one line, and leave it as the termination message.

    `rank`: this is one of several processes (torchrun). Its line goes to torchrun's error file,
    where `python -m boss.distributed` picks the root cause's; the termination message is left
    only where no other process left one yet (the first failure usually explains the rest)."""
    print(line, file=sys.stderr, flush=True)
    if rank is None:
        leave_message(line[-1024:])
        return line
    write_error_file(line)
    path = os.environ.get(TERMINATION_ENV)
    if path and not (os.path.exists(path) and os.path.getsize(path)):
        leave_message(line[-1024:])
    return line

