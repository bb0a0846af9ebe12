"""One trial: what the engine asks for, and the entrypoint that runs it.

The local backend and the Kubernetes Job run the same thing: `python -m boss.trial` with
the trial's `TrialSpec` as JSON in the BOSS_TRIAL environment variable. Storage
credentials come from the environment (AWS_* for s3://), never from the spec.

On a cluster the Job also names a file in BOSS_TERMINATION_MESSAGE (its container's
terminationMessagePath): the trial leaves its result there, compact (`result_message`), and the
kubelet copies it into the Pod's status, where the operator reads it. The operator therefore
never reads the studies' storage, and a value another tenant pushes to the Pushgateway cannot
replace a trial's objective. Without the variable (`boss run`) nothing is written.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import traceback
from typing import Any

from pydantic import ValidationError

# what a trial is and how it fails live in boss.trialspec (the bottom of the trial modules);
# named here too, where the operator, the backends and the tests have always imported them
from .trialspec import (  # noqa: F401
    CHECKPOINT,
    ENV,
    EXIT_BAD_SPEC,
    EXIT_FAILED,
    EXIT_WILL_FAIL_AGAIN,
    MESSAGE_BUDGET,
    MESSAGE_FORMAT,
    MESSAGE_LIMIT,
    RESULT,
    TERMINATION_ENV,
    EarlyStop,
    TrialError,
    TrialSpec,
    _failed,
    leave_message,
)


def _round(value: Any, digits: int | None) -> float | None:
    """A finite number (to `digits` significant digits), else None (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if digits is None else float(f"{value:.{digits}g}")


def result_message(result: dict[str, Any], budget: int = MESSAGE_BUDGET) -> str:
    """A finished trial's result as its termination message: one line of JSON, at most `budget` bytes.

    The objective keeps full precision. To fit, the per-epoch curve and the test metrics are
    rounded (6, then 4 significant digits), then the test metrics, then the curve's last epochs
    and at last the checkpoint URI (the operator knows it) are left out; `truncated` names what
    was cut."""
    metric = result["metric"]
    curve = [row.get(metric) for row in result.get("history") or []]
    test = {str(k): v for k, v in (result.get("test") or {}).items()}
    core: dict[str, Any] = {
        "boss": MESSAGE_FORMAT, "study": result["study"], "trial": result["trial"], "phase": result.get("phase"),
        "metric": metric, "value": None if result.get("diverged") and result.get("value") is None
        else float(result["value"]), "sha256": result.get("sha256"),
        "checkpoint": result.get("checkpoint"), "best_epoch": result.get("best_epoch"),
        "stopped_early": result.get("stopped_early"), "seconds": _round(result.get("seconds"), 6),
    }
    if core["value"] is None:
        core["diverged"] = True

    def render(digits: int | None, test_: dict[str, Any], curve_: list[Any], cut: list[str], core_=core) -> str:
        msg = {**core_, "test": {k: _round(v, digits) for k, v in test_.items()},
               "curve": [_round(v, digits) for v in curve_]}
        if cut:
            msg["truncated"] = cut
        return json.dumps(msg, separators=(",", ":"), allow_nan=False)

    for digits in (None, 6, 4):
        text = render(digits, test, curve, [])
        if len(text.encode()) <= budget:
            return text
    text = render(4, {}, curve, ["test"] if test else [])
    if len(text.encode()) <= budget:
        return text
    cut = (["test"] if test else []) + ["curve"]
    lo, hi = 0, len(curve)  # the longest prefix of the curve that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(render(4, {}, curve[:mid], cut).encode()) <= budget:
            lo = mid
        else:
            hi = mid - 1
    text = render(4, {}, curve[:lo], cut)
    if len(text.encode()) <= budget:
        return text
    return render(4, {}, [], [*cut, "checkpoint"], {**core, "checkpoint": None})


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_INT_DIGITS = 20  # an integer in a result: an index, an epoch; more digits than this is no result
MAX_EPOCHS = 1_000_000
MAX_TEST_METRICS = 256
MAX_CURVE = 1_000_000


def decode_result(text: str | bytes) -> Any:
    """JSON from a trial, decoded without exceptions other than ValueError: integers are bounded
    (a 400-digit one would overflow every float() after it) and so is nesting (2,000 `[` would
    end json's recursion)."""

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise ValueError(f"it holds an integer of {len(digits)} digits")
        return int(digits)

    try:
        return json.loads(text, parse_int=bounded_int)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(msg: dict[str, Any], key: str, limit: int, required: bool = True) -> str | None:
    value = msg.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{key} is missing or not a string of at most {limit} characters")
    return value


def _whole(msg: dict[str, Any], key: str, low: int, high: int, required: bool = False) -> int | None:
    value = msg.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{key} is {'missing or ' if required else ''}not an integer in [{low}, {high}]")
    return value


def checked_result(msg: Any, metric_history: str | None = None) -> dict[str, Any]:
    """A trial's result with every field the backends record typed and bounded, and nothing
    else; ValueError (one line) naming the first field that is not. `msg` is a termination
    message (`curve`) or, with `metric_history` naming the objective, a result.json (`history`).

    A trial's code writes these bytes, so nothing in them may reach the engine, the status or
    a client with a type or size the trial chose."""
    if not isinstance(msg, dict):
        raise ValueError("it is not a JSON object")
    out: dict[str, Any] = {
        "study": _text(msg, "study", 253), "trial": _whole(msg, "trial", 0, 10**9, required=True),
        "metric": _text(msg, "metric", 256),
    }
    value, diverged = msg.get("value"), msg.get("diverged")
    if diverged not in (None, False, True):
        raise ValueError("diverged is not true or false")
    if diverged is True and value is None:  # trained, never a finite objective: no checkpoint either
        # (a result *with* a value may say diverged too: its training blew up after its best epoch)
        if msg.get("sha256") is not None or msg.get("checkpoint") is not None:
            raise ValueError("a diverged result has a checkpoint")
        out.update(value=None, sha256=None, checkpoint=None, diverged=True)
    else:
        if not _number(value):
            raise ValueError("value is missing or not a number")
        if not math.isfinite(value):
            raise ValueError("value is not a finite number")
        out["value"] = float(value)
        sha = msg.get("sha256")
        if not (isinstance(sha, str) and _SHA256.match(sha)):  # every real trial reports its checkpoint's
            raise ValueError("sha256 is missing or not a SHA-256 digest (of the checkpoint)")
        out["sha256"] = sha
        out["checkpoint"] = _text(msg, "checkpoint", 4096, required=False)
    phase = msg.get("phase")
    if phase not in (None, "warmup", "boss"):
        raise ValueError("phase is not warmup or boss")
    out["phase"] = phase
    out["best_epoch"] = _whole(msg, "best_epoch", 0, MAX_EPOCHS)
    stopped = msg.get("stopped_early")
    out["stopped_early"] = None if stopped is None or stopped is False else _whole(msg, "stopped_early", 1, MAX_EPOCHS)
    seconds = msg.get("seconds")
    if seconds is not None and not (_number(seconds) and 0 <= seconds <= 1e9):
        raise ValueError("seconds is not a number of seconds")
    out["seconds"] = None if seconds is None else float(seconds)
    test = msg.get("test") or {}
    if not isinstance(test, dict) or len(test) > MAX_TEST_METRICS:
        raise ValueError(f"test is not an object of at most {MAX_TEST_METRICS} metrics")
    out["test"] = {}
    for k, v in test.items():
        if len(k) > 256 or not (v is None or _number(v)):
            raise ValueError("test holds a metric that is not a number, or a name over 256 characters")
        if v is not None and math.isfinite(v):
            out["test"][k] = float(v)
    if metric_history is None:
        curve = msg.get("curve") or []
    else:
        rows = msg.get("history") or []
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError("history is not a list of objects")
        curve = [row.get(metric_history) for row in rows]
    if not isinstance(curve, list) or len(curve) > MAX_CURVE or not all(v is None or _number(v) for v in curve):
        raise ValueError("curve is not a list of numbers")
    out["curve"] = [float(v) if v is not None and math.isfinite(v) else None for v in curve]
    cut = msg.get("truncated")
    if cut is not None:
        if not isinstance(cut, list) or not all(c in ("test", "curve", "checkpoint") for c in cut):
            raise ValueError("truncated is not a list of what was cut")
        out["truncated"] = cut
    return out


def parse_result_message(text: str | None) -> dict[str, Any]:
    """The result in a trial's termination message, typed and bounded (checked_result);
    ValueError (one line) if it is not one, whatever the bytes."""
    if not text or not text.strip():
        raise ValueError("it is empty")
    try:
        msg = decode_result(text)
    except ValueError as e:
        if "integer" in str(e) or "nested" in str(e):
            raise
        first = text.strip().splitlines()[-1][:200]
        raise ValueError(f"it is not a trial's result: {first!r}") from None
    if not isinstance(msg, dict) or msg.get("boss") != MESSAGE_FORMAT:
        raise ValueError(f"it is not a trial's result (format {MESSAGE_FORMAT})")
    return checked_result(msg)


def parse_result_file(data: str | bytes, metric: str) -> dict[str, Any]:
    """A trial's result.json (the local backend reads it back), typed and bounded as a
    termination message is; ValueError (one line) if it is not one."""
    try:
        msg = decode_result(data)
    except ValueError as e:
        raise ValueError(f"it is not JSON: {str(e).splitlines()[0][:200]}") from None
    return checked_result(msg, metric_history=metric)



def main(argv: list[str] | None = None) -> int:
    """Run the trial described by $BOSS_TRIAL. Exit 0 on success, else one of the EXIT_* codes."""
    raw = os.environ.get(ENV)
    if not raw:
        _failed(f"boss.trial: {ENV} is not set (it holds the trial spec as JSON)")
        return EXIT_BAD_SPEC
    try:
        spec = TrialSpec.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        _failed(f"boss.trial: invalid {ENV}: {where}: {first['msg']}")
        return EXIT_BAD_SPEC
    from .distributed import PEER_LOST, from_env
    from .loop import run_trial
    from .plugins import PluginError
    from .session import run_script
    from .store import CheckpointError, StorageError

    dist = from_env()
    rank = dist.rank if dist.enabled else None
    who = f" (process {dist.rank} of {dist.world})" if dist.enabled else ""
    try:
        result = run_script(spec) if spec.script else run_trial(spec)
    except (TrialError, CheckpointError, StorageError, PluginError) as e:
        _failed(f"boss.trial: trial {spec.index} failed{who}: {e}", rank=rank)
        retry = isinstance(e, StorageError) or getattr(e, "retry", False)
        return EXIT_FAILED if retry else EXIT_WILL_FAIL_AGAIN
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        if dist.enabled and _is_dist_error(e):  # another process died first: its line says why
            _failed(f"boss.trial: trial {spec.index} failed: process {dist.rank} {PEER_LOST} "
                    f"({type(e).__name__}: {first[:200]})", rank=rank)
            return EXIT_FAILED
        traceback.print_exc()
        hint = ""
        if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) and e.args[0] not in spec.config:
            hint = (f"; if {e.args[0]!r} is a hyperparameter: this trial's config has none (a conditional one is "
                    f"absent when its `when` is false: read it with {'trial' if spec.script else 'self'}.config.get("
                    f"{e.args[0]!r}, default))")
        _failed(f"boss.trial: trial {spec.index} failed{who}: {type(e).__name__}: {first}{hint} "
                "(the traceback is in the trial's log)", rank=rank)
        return EXIT_FAILED
    if result is None:
        return 0  # not rank 0: rank 0 reports the trial
    print(json.dumps({"trial": spec.index, spec.objective.metric: result["value"]}))
    if not leave_message(result_message(result)):  # a diverged trial too: its result is that it diverged
        return EXIT_FAILED  # on a cluster the result would be lost: a retry may write it
    return 0


def _is_dist_error(e: BaseException) -> bool:
    """A failed collective (a peer closed its connection, or timed out)."""
    import torch.distributed as td

    return isinstance(e, getattr(td, "DistError", ())) or (
        isinstance(e, RuntimeError) and any(w in str(e) for w in ("gloo", "Connection closed by peer", "NCCL")))


if __name__ == "__main__":
    if os.getpid() == 1:
        # the container's first process: the kernel gives PID 1 no default action for SIGTERM, so
        # the kubelet's stop (eviction, preemption, deletion) would wait out the whole grace
        # period and SIGKILL. End as any other process would: at once (the last finished epoch
        # is saved; the next pod resumes from it)
        def _stop(signum, frame):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)

        signal.signal(signal.SIGTERM, _stop)
    # run main() from the imported module, not from __main__: otherwise `TrialError` here would be
    # __main__.TrialError, a different class from the boss.trial.TrialError the loop raises
    from boss.trial import main as _main

    code = _main()
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        # one of N processes: leave without interpreter finalization, where gloo's worker threads
        # may still hold tensors and abort a finished trial's process (SIGABRT, "terminate called
        # without an active exception"; pytorch/pytorch#179291)
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
