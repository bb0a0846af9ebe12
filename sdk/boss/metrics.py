"""A trial's metrics in Prometheus form: written by the trainer, read back by the engine.

One place holds the metric names, so the writer (the trial) and the reader (the local
backend; the operator, which only cross-checks them against the trial's termination message)
cannot drift. A trial pushes to a Pushgateway when one is
configured, and otherwise writes the text exposition format to a file beside the trial.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

JOB = "boss-trial"
EPOCH = "boss_trial_epoch"
METRIC = "boss_trial_metric"
OBJECTIVE = "boss_trial_objective"
COMPLETED = "boss_trial_completed"


def grouping_key(study: str, trial: int, namespace: str | None = None) -> dict[str, str]:
    """The Pushgateway group of one trial (job=boss-trial, [namespace,] study, trial).

    On a cluster the namespace is part of it: studies of the same name in two namespaces
    share one Pushgateway and must not overwrite each other's trials.
    """
    key = {"namespace": namespace} if namespace else {}
    return {**key, "study": study, "trial": str(trial)}


class MetricsReporter:
    """Per-epoch metrics and the final objective of one trial."""

    def __init__(self, study: str, trial: int, phase: str, *, textfile: str | None = None,
                 pushgateway: str | None = None, namespace: str | None = None):
        if not textfile and not pushgateway:
            raise ValueError("a MetricsReporter needs a textfile or a pushgateway")
        self.study, self.trial, self.namespace = study, trial, namespace
        self.textfile, self.pushgateway = textfile, pushgateway
        self.registry = CollectorRegistry()
        self._epoch = Gauge(EPOCH, "Last finished epoch of the trial", ["phase"], registry=self.registry)
        self._metric = Gauge(METRIC, "Latest per-epoch value of each trial metric", ["phase", "name"],
                             registry=self.registry)
        self._objective = Gauge(OBJECTIVE, "The trial's final objective (its best validation value)",
                                ["phase", "metric"], registry=self.registry)
        self._completed = Gauge(COMPLETED, "1 once the final objective is reported", ["phase"],
                                registry=self.registry)
        self.phase = phase
        self.push_failures = 0  # consecutive failed pushes (the Pushgateway is down)
        self._completed.labels(phase).set(0)

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._epoch.labels(self.phase).set(epoch)
        for name, value in metrics.items():
            self._metric.labels(self.phase, name).set(value)
        self.flush()

    def final(self, metric: str, value: float) -> None:
        self._objective.labels(self.phase, metric).set(value)
        self._completed.labels(self.phase).set(1)
        self.flush()

    def flush(self) -> None:
        """Publish the metrics. A Pushgateway that is down costs a warning, never the trial: the
        trial's own result is the record (on a cluster its termination message, which the
        operator reads; locally the result in storage), the metrics are monitoring."""
        if self.pushgateway:
            try:
                push_to_gateway(self.pushgateway, job=JOB, registry=self.registry,
                                grouping_key=grouping_key(self.study, self.trial, self.namespace), timeout=10)
                self.push_failures = 0
            except OSError as e:  # URLError, refused, timed out
                self.push_failures += 1
                print(f"boss: warning: cannot push metrics to {self.pushgateway}: {e}", file=sys.stderr)
        if self.textfile:
            write_to_textfile(self.textfile, self.registry)  # writes a temp file, then renames


def read_objective(text: str, metric: str, match: dict[str, str] | None = None) -> float | None:
    """The final objective in Prometheus text, or None while the trial has not reported one.

    `match` selects one trial's series among many (a Pushgateway's /metrics holds all groups).
    """
    match = match or {}
    if match:  # a Pushgateway page holds every group: parse only the lines that can be this trial's (a full
        # parse per result was a quarter of the operator's CPU with 50 studies sharing a Pushgateway)
        needles = [f'{k}="{_escape(v)}"' for k, v in match.items()]
        text = "\n".join(line for line in text.splitlines()
                          if line.startswith((OBJECTIVE, COMPLETED)) and all(n in line for n in needles))
    completed, value = False, None
    for family in text_string_to_metric_families(text):
        for s in _samples(family.samples, match):
            if s.name == COMPLETED and s.value == 1:
                completed = True
            elif s.name == OBJECTIVE and s.labels.get("metric") == metric:
                value = s.value
    if not completed or value is None or math.isnan(value):
        return None
    return value


def read_metrics(text: str, match: dict[str, str] | None = None) -> dict[str, float]:
    """The latest per-epoch metrics (name -> value) of one trial."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in _samples(family.samples, match or {}):
            if s.name == METRIC:
                out[s.labels["name"]] = s.value
            elif s.name == EPOCH:
                out["epoch"] = s.value
    return out


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\"", '\\"').replace("\n", "\\n")


def _samples(samples: Iterable, match: dict[str, str]):
    for s in samples:
        if all(s.labels.get(k) == v for k, v in match.items()):
            yield s
