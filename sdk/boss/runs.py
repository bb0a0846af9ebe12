"""A local run folder, as `boss run` writes it and `boss status/trials/best/report` read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .spec import SpecError

STATE = "state.json"  # the study, its status and every trial, in order
STUDY = "study.yaml"  # the study as run, for people
INTERRUPTED = "Interrupted"  # stopped before the end; running `boss run` again continues


def read_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{run_dir}: not a BOSS run folder (no {STATE})") from None
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: unreadable run state ({e})") from None


def runner_alive(state: dict[str, Any]) -> bool:
    """Whether the `boss run` that wrote this state is still running (checked on this host)."""
    import os
    import socket

    runner = state.get("runner")
    if not runner or runner.get("host") != socket.gethostname():
        return bool(runner)  # another host's run: trust what it wrote
    try:
        os.kill(int(runner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def as_seen_now(state: dict[str, Any]) -> dict[str, Any]:
    """The state with the truth about a run that stopped (Ctrl-C, a kill, a reboot): status
    Interrupted, and trials it left unfinished `interrupted` rather than `running`."""
    if state.get("status") in ("Succeeded", "Failed") or runner_alive(state):
        return state
    trials = [{**t, "state": "interrupted"} if t.get("state") == "running" else t for t in state.get("trials", [])]
    return {**state, "status": INTERRUPTED, "trials": trials}
