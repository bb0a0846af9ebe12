"""Metrics round trip: the trial writes Prometheus metrics, the engine reads the objective back."""

from __future__ import annotations

import time

import pytest
from boss.metrics import MetricsReporter, read_metrics, read_objective
from boss_operator.readback import (
    forget_pushgateway_group,
    objective_from_prometheus,
    objective_from_pushgateway,
    objective_from_textfile,
)
from conftest import free_port


def test_textfile_round_trip(tmp_path):
    path = tmp_path / "metrics.prom"
    r = MetricsReporter("s", 4, "boss", textfile=str(path))
    r.epoch_end(1, {"train_loss": 0.9, "val_accuracy": 0.61})
    assert objective_from_textfile(path, "val_accuracy") is None  # no final objective yet
    r.epoch_end(2, {"train_loss": 0.5, "val_accuracy": 0.72})
    assert read_metrics(path.read_text()) == {"epoch": 2, "train_loss": 0.5, "val_accuracy": 0.72}
    r.final("val_accuracy", 0.72)
    assert objective_from_textfile(path, "val_accuracy") == 0.72
    assert objective_from_textfile(path, "val_loss") is None  # another metric was the objective
    assert objective_from_textfile(tmp_path / "missing.prom", "val_accuracy") is None


def test_needs_a_destination():
    with pytest.raises(ValueError):
        MetricsReporter("s", 0, "warmup")


def test_pushgateway_round_trip(pushgateway):
    a = MetricsReporter("study-a", 1, "warmup", pushgateway=pushgateway)
    b = MetricsReporter("study-a", 2, "boss", pushgateway=pushgateway)
    a.epoch_end(1, {"val_accuracy": 0.5})
    assert objective_from_pushgateway(pushgateway, "study-a", 1, "val_accuracy") is None
    a.final("val_accuracy", 0.81)
    b.final("val_accuracy", 0.93)
    assert objective_from_pushgateway(pushgateway, "study-a", 1, "val_accuracy") == 0.81
    assert objective_from_pushgateway(pushgateway, "study-a", 2, "val_accuracy") == 0.93
    assert objective_from_pushgateway(pushgateway, "study-b", 1, "val_accuracy") is None
    forget_pushgateway_group(pushgateway, "study-a", 1)
    assert objective_from_pushgateway(pushgateway, "study-a", 1, "val_accuracy") is None
    assert objective_from_pushgateway(pushgateway, "study-a", 2, "val_accuracy") == 0.93


def test_same_named_studies_in_two_namespaces_keep_their_own_trials(pushgateway):
    a = MetricsReporter("twin", 0, "warmup", pushgateway=pushgateway, namespace="team-a")
    b = MetricsReporter("twin", 0, "warmup", pushgateway=pushgateway, namespace="team-b")
    a.final("val_accuracy", 0.61)
    b.epoch_end(1, {"val_accuracy": 0.3})  # still training: must not replace team-a's finished trial
    assert objective_from_pushgateway(pushgateway, "twin", 0, "val_accuracy", namespace="team-a") == 0.61
    assert objective_from_pushgateway(pushgateway, "twin", 0, "val_accuracy", namespace="team-b") is None
    b.final("val_accuracy", 0.72)
    assert objective_from_pushgateway(pushgateway, "twin", 0, "val_accuracy", namespace="team-b") == 0.72
    assert objective_from_pushgateway(pushgateway, "twin", 0, "val_accuracy", namespace="team-a") == 0.61


def wait_value(read, timeout: float = 30.0):
    deadline = time.time() + timeout
    while (value := read()) is None and time.time() < deadline:
        time.sleep(0.2)
    return value


def test_objective_read_back_through_a_prometheus_server(pushgateway, prometheus):
    """Trials push to the Pushgateway; Prometheus scrapes it; the objective comes from its query API."""
    done = MetricsReporter("scraped", 3, "boss", pushgateway=pushgateway, namespace="ns-1")
    other = MetricsReporter("scraped", 3, "boss", pushgateway=pushgateway, namespace="ns-2")
    running = MetricsReporter("scraped", 4, "boss", pushgateway=pushgateway, namespace="ns-1")
    assert objective_from_prometheus(prometheus, "scraped", 3, "val_accuracy", namespace="ns-1") is None
    # pushed in this order, so that the scrape that sees `done` has seen the other two as well
    running.epoch_end(1, {"val_accuracy": 0.99})
    other.final("val_accuracy", 0.5)
    done.final("val_accuracy", 0.875)
    got = wait_value(lambda: objective_from_prometheus(prometheus, "scraped", 3, "val_accuracy", namespace="ns-1"))
    assert got == 0.875
    assert objective_from_prometheus(prometheus, "scraped", 3, "val_accuracy", namespace="ns-2") == 0.5
    assert objective_from_prometheus(prometheus, "scraped", 3, "val_loss", namespace="ns-1") is None
    # the scrape that saw trial 3 also saw trial 4's epoch: not completed, no objective
    assert objective_from_prometheus(prometheus, "scraped", 4, "val_accuracy", namespace="ns-1") is None
    with pytest.raises(OSError):
        objective_from_prometheus(f"http://127.0.0.1:{free_port()}", "scraped", 3, "val_accuracy", timeout=2)


def test_read_objective_ignores_other_trials():
    text = """# TYPE boss_trial_objective gauge
boss_trial_objective{job="boss-trial",study="s",trial="1",metric="val_accuracy",phase="boss"} 0.5
boss_trial_objective{job="boss-trial",study="s",trial="2",metric="val_accuracy",phase="boss"} 0.7
# TYPE boss_trial_completed gauge
boss_trial_completed{job="boss-trial",study="s",trial="1",phase="boss"} 1
boss_trial_completed{job="boss-trial",study="s",trial="2",phase="boss"} 0
"""
    assert read_objective(text, "val_accuracy", {"study": "s", "trial": "1"}) == 0.5
    assert read_objective(text, "val_accuracy", {"study": "s", "trial": "2"}) is None


def test_read_objective_finds_its_trial_among_many_groups_with_escaped_labels():
    """A Pushgateway page holds every group: only this trial's lines count, label values are
    matched as the text format escapes them, and a label that merely ends like ours is not ours."""
    groups = "\n".join(
        f'boss_trial_objective{{job="boss-trial",study="s",trial="{i}",metric="val_accuracy"}} {i / 100}\n'
        f'boss_trial_completed{{job="boss-trial",study="s",trial="{i}"}} 1' for i in range(300))
    odd = ('boss_trial_objective{job="boss-trial",study="a\\"b\\\\c",trial="7",metric="val_accuracy"} 0.25\n'
           'boss_trial_completed{job="boss-trial",study="a\\"b\\\\c",trial="7"} 1\n'
           'boss_trial_objective{job="boss-trial",xstudy="q",study="r",trial="9",metric="val_accuracy"} 0.9\n'
           'boss_trial_completed{job="boss-trial",xstudy="q",study="r",trial="9"} 1\n')
    text = "# TYPE boss_trial_objective gauge\n# TYPE boss_trial_completed gauge\n" + groups + "\n" + odd
    assert read_objective(text, "val_accuracy", {"study": "s", "trial": "123"}) == 1.23
    assert read_objective(text, "val_accuracy", {"study": 'a"b\\c', "trial": "7"}) == 0.25
    assert read_objective(text, "val_accuracy", {"study": "q", "trial": "9"}) is None
    assert read_objective(text, "val_accuracy", {"study": "s", "trial": "300"}) is None
