"""Reading a finished trial's objective back from its Prometheus metrics."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from boss.metrics import JOB, grouping_key, read_objective
from prometheus_client import delete_from_gateway


def objective_from_textfile(path: str | Path, metric: str) -> float | None:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    return read_objective(text, metric)


def objective_from_pushgateway(url: str, study: str, trial: int, metric: str, timeout: float = 10) -> float | None:
    """The trial's objective from the Pushgateway's /metrics (all groups; we pick ours)."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    return read_objective(text, metric, {"job": JOB, **grouping_key(study, trial)})


def forget_pushgateway_group(url: str, study: str, trial: int) -> None:
    """Drop a recorded trial's group so the Pushgateway does not grow without end."""
    delete_from_gateway(url, job=JOB, grouping_key=grouping_key(study, trial), timeout=10)
