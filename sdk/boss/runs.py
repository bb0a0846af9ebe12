"""A local run folder, as `boss run` writes it and `boss status/trials/best/report` read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .spec import SpecError

STATE = "state.json"  # the study, its status and every trial, in order
STUDY = "study.yaml"  # the study as run, for people


def read_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{run_dir}: not a BOSS run folder (no {STATE})") from None
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: unreadable run state ({e})") from None
