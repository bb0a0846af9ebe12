"""A local run folder, as `boss run` writes it and `boss status/trials/best/report` read it."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from .spec import SpecError

STATE = "state.json"  # the study, its status and every trial, in order
STUDY = "study.yaml"  # the study as run, for people
INTERRUPTED = "Interrupted"  # stopped before the end; running `boss run` again continues
LOCK = ".writer"  # held (flock) by the one `boss run` writing the folder; says who


class RunLock:
    """One writer per run folder: an exclusive flock held while `boss run` writes it. The kernel
    drops it when the process ends however it ends, so a killed run's folder is taken over by
    the next run; readers (status, show, report) never take it."""

    def __init__(self, run_dir: str | Path):
        import fcntl

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SpecError(f"{run_dir}: another `boss run` is writing to this folder ({holder}); "
                            "wait for it to end, or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
