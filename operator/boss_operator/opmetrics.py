"""The operator's own Prometheus metrics (served on its metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STUDIES = Gauge("boss_operator_studies", "Studies this operator watches, by phase", ["phase"])
TRIALS_STARTED = Counter("boss_operator_trials_started_total", "Trial Jobs created")
TRIALS_FINISHED = Counter("boss_operator_trials_finished_total", "Trials recorded as finished", ["result"])
SUGGESTION_SECONDS = Histogram("boss_operator_suggestion_seconds", "Time to propose one trial (SMAC ask)",
                               buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
REPLAY_SECONDS = Histogram("boss_operator_replay_seconds", "Time to rebuild a study's engine by replay",
                           buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300))

_phases: dict[str, str] = {}


def study_phase(uid: str, phase: str | None) -> None:
    """Track one study's phase (None: forget it) and refresh the per-phase counts."""
    if phase is None:
        _phases.pop(uid, None)
    else:
        _phases[uid] = phase
    counts: dict[str, int] = {}
    for p in _phases.values():
        counts[p] = counts.get(p, 0) + 1
    for p in ("Pending", "WarmingUp", "Distilling", "Suspended", "Succeeded", "Failed"):
        STUDIES.labels(p).set(counts.get(p, 0))
