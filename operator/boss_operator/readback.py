"""Reading a finished trial's objective back from its Prometheus metrics.

Two sources: the Pushgateway the trial pushed to (read at once), or a Prometheus server
that scrapes that Pushgateway (read through its query API, once a scrape has happened).

The local backend takes the objective from the metrics and falls back to the result in
storage (`read_back`). The operator takes it from the trial's termination message and only
cross-checks it against the metrics (`metrics_objective`): a Pushgateway accepts pushes from
anyone, so its value is never used on a cluster.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boss.metrics import COMPLETED, JOB, OBJECTIVE, grouping_key, read_objective
from prometheus_client import delete_from_gateway


@dataclass(frozen=True)
class Readback:
    """A finished trial's objective and where it came from."""

    value: float | None
    source: str | None  # prometheus | pushgateway | textfile | storage; None when there is no objective
    problem: str | None = None  # why the metrics did not give it
    unreadable: bool = False  # the metrics source did not answer at all


def read_back(result: dict[str, Any], metric: str, study: str, trial: int, *, namespace: str | None = None,
              pushgateway: str | None = None, prometheus: str | None = None, textfile: str | None = None,
              wait_seconds: float = 0.0, since_end: Callable[[], float] = lambda: 0.0) -> Readback | None:
    """The objective of a trial that exited cleanly after saving `result`, for both backends.

    From Prometheus when one is named, else the Pushgateway, else the trial's textfile. When a
    metrics server is down or has lost the series, from `result` (a metrics outage must not lose
    a trial that saved its weights). None while Prometheus may still scrape it: less than
    `wait_seconds` since the trial ended.
    """
    source = "prometheus" if prometheus else "pushgateway" if pushgateway else "textfile"
    where = "Prometheus" if prometheus else "the Pushgateway"
    unreadable = False
    try:
        if prometheus:
            value = objective_from_prometheus(prometheus, study, trial, metric, namespace=namespace)
        elif pushgateway:
            value = objective_from_pushgateway(pushgateway, study, trial, metric, namespace=namespace)
        else:
            value = objective_from_textfile(textfile or "", metric)
    except Exception as e:  # down, refused, or an answer we cannot parse
        value, unreadable, problem = None, True, f"{where} unreadable ({e})"
    else:
        if value is not None:
            return Readback(value, source)
        if prometheus and since_end() < wait_seconds:
            return None  # the next scrape of the Pushgateway has not happened yet
        if source == "textfile":
            problem = "the trial exited without reporting its objective"
        else:
            problem = f"no objective in {where}" + (
                f" {wait_seconds:g} s after the trial ended (does it scrape the Pushgateway with "
                "honor_labels?)" if prometheus else "")
    if source != "textfile" and result.get("metric") == metric and result.get("value") is not None:
        return Readback(float(result["value"]), "storage", problem, unreadable)
    return Readback(None, None, problem, unreadable)


def metrics_objective(metric: str, study: str, trial: int, *, namespace: str | None = None,
                      pushgateway: str | None = None, prometheus: str | None = None, wait_seconds: float = 0.0,
                      since_end: Callable[[], float] = lambda: 0.0) -> Readback | None:
    """What the metrics say of a finished trial's objective, with no fallback: the operator's
    cross-check. Readback(None, ...) with the problem when they say nothing; None while
    Prometheus may still scrape it."""
    if not (pushgateway or prometheus):
        return Readback(None, None, "no Pushgateway or Prometheus to check against")
    return read_back({}, metric, study, trial, namespace=namespace, pushgateway=pushgateway,
                     prometheus=prometheus, wait_seconds=wait_seconds, since_end=since_end)


def objective_from_textfile(path: str | Path, metric: str) -> float | None:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    return read_objective(text, metric)


def objective_from_pushgateway(url: str, study: str, trial: int, metric: str, *,
                               namespace: str | None = None, timeout: float = 10) -> float | None:
    """The trial's objective from the Pushgateway's /metrics (all groups; we pick ours)."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    return read_objective(text, metric, {"job": JOB, **grouping_key(study, trial, namespace)})


def objective_from_prometheus(url: str, study: str, trial: int, metric: str, *,
                              namespace: str | None = None, timeout: float = 10) -> float | None:
    """The trial's objective from a Prometheus server's instant-query API.

    None until a scrape has seen the trial complete. The `job` label is not matched: it is
    `boss-trial` only where Prometheus scrapes the Pushgateway with honor_labels, as it should.
    """
    selector = ",".join(f'{k}="{_quote(v)}"' for k, v in grouping_key(study, trial, namespace).items())
    query = f'{{__name__=~"{OBJECTIVE}|{COMPLETED}",{selector}}}'
    address = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(address, timeout=timeout) as r:
        answer = json.loads(r.read().decode())
    if answer.get("status") != "success":
        raise ValueError(f"Prometheus refused the query: {answer.get('error', answer)}")
    completed, value = False, None
    for series in answer["data"]["result"]:
        name, sample = series["metric"].get("__name__"), float(series["value"][1])
        if name == COMPLETED and sample == 1:
            completed = True
        elif name == OBJECTIVE and series["metric"].get("metric") == metric and sample == sample:
            value = sample
    return value if completed else None


def forget_pushgateway_group(url: str, study: str, trial: int, namespace: str | None = None) -> None:
    """Drop a recorded trial's group so the Pushgateway does not grow without end."""
    delete_from_gateway(url, job=JOB, grouping_key=grouping_key(study, trial, namespace), timeout=10)


def forget_pushgateway_groups(url: str, study: str, namespace: str | None, trials: list[int], log: Any) -> int:
    """Drop a deleted study's groups; returns how many. Best effort: a Pushgateway that is down
    keeps them (they are a few hundred bytes each), and the deletion goes on."""
    dropped = 0
    for index in trials:
        try:
            forget_pushgateway_group(url, study, int(index), namespace)
            dropped += 1
        except (OSError, ValueError, TypeError) as e:
            log.warning("cannot drop the Pushgateway group of trial %s of %s: %s", index, study, e)
            break
    return dropped


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
