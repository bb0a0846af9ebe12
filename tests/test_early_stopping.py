"""spec.earlyStopping: the median rule and ASHA rungs on the per-epoch objective, in both backends
(the trial judges itself against thresholds the engine fixed when it proposed the trial)."""

from __future__ import annotations

import json

import pytest
import yaml
from boss.loop import run_trial
from boss.spec import parse_study
from boss.store import to_uri
from boss.trial import EarlyStop, TrialSpec
from boss_operator.engine import BOSS, WARMUP, Engine
from boss_operator.local import LocalRun
from conftest import EXAMPLES, tiny_doc

DIGITS = "boss.trainers.digits:DigitsTrainer"


def engine(rule: str, epochs: int = 9, **es) -> Engine:
    doc = yaml.safe_load((EXAMPLES / "digits-study.yaml").read_text())
    doc["spec"]["trainer"]["epochs"] = epochs
    doc["spec"]["earlyStopping"] = {"rule": rule, **es}
    doc["spec"]["budget"] = {"trials": 20, "warmupTrials": 10, "parallelism": 1}
    return Engine(parse_study(doc).spec, "es")


def finish(e: Engine, curve: list[float], stopped: int | None = None) -> None:
    t = e.ask()
    t.extra["curve"] = curve
    if stopped:
        t.extra["stoppedEarly"] = stopped
    e.tell(t.index, max(curve), checkpoint=f"mem://{t.index}", checksum="0")


def test_median_rule_thresholds_are_the_median_running_mean_of_earlier_trials():
    e = engine("median", epochs=4, grace_epochs=2, min_trials=3)
    assert e.early_stop(WARMUP) is None  # nobody to compare with yet
    for c in ([0.2, 0.4, 0.6, 0.8], [0.1, 0.3, 0.5, 0.7], [0.3, 0.5, 0.7, 0.9]):
        finish(e, c)
    rule = e.early_stop(WARMUP)
    assert rule["rule"] == "median"
    assert rule["thresholds"] == pytest.approx({2: 0.3, 3: 0.4})  # no threshold at the last epoch
    assert e.early_stop(BOSS) is None  # the BOSS phase is judged against BOSS trials only
    assert e.trials[-1].extra.get("earlyStop") is None and e.ask().extra["earlyStop"]["thresholds"] == rule["thresholds"]


def test_asha_rungs_keep_the_top_one_over_eta():
    e = engine("asha", epochs=9, grace_epochs=1, reduction_factor=3, min_trials=2)
    for i in range(5):
        finish(e, [0.1 * (i + 1)] * 9)  # 0.1 ... 0.5 at every epoch
    th = e.early_stop(WARMUP)["thresholds"]
    assert set(th) == {1, 3}  # rungs at 1, 3 (9 is the end)
    assert th[1] == pytest.approx(0.4)  # 5 earlier values + this trial = 6: the top 2 go on, so beat the 2nd best
    es = EarlyStop(rule="asha", thresholds={1: 0.45})
    assert es.stops(1, 0.4, 0.4, maximize=True) == 0.45 and es.stops(1, 0.5, 0.5, maximize=True) is None
    assert es.stops(2, 0.0, 0.0, maximize=True) is None  # not a rung
    assert EarlyStop(rule="asha", thresholds={1: 0.3}).stops(1, 0.4, 0.4, maximize=False) == 0.3


def test_a_stopped_trial_never_teaches_nor_seeds():
    e = engine("median")
    finish(e, [0.9] * 9)
    finish(e, [0.99, 0.99], stopped=2)
    finish(e, [0.8] * 9)
    assert [t.index for t in e.top_k()] == [0, 2]


def test_a_trial_below_the_threshold_stops_and_keeps_its_best_epoch(tmp_path):
    base = dict(study="es", phase="warmup", plugin=DIGITS, epochs=4, args={"train_fraction": 0.3},
                config={"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "weight_decay": 1e-4})
    stopped = run_trial(TrialSpec(index=0, output_uri=to_uri(tmp_path / "a"), metrics_textfile=str(tmp_path / "a.prom"), **base,
                                  early_stop={"rule": "asha", "thresholds": {2: 1.01}}))
    assert stopped["stopped_early"] == 2 and len(stopped["history"]) == 2 and stopped["checkpoint"]
    kept = run_trial(TrialSpec(index=1, output_uri=to_uri(tmp_path / "b"), metrics_textfile=str(tmp_path / "b.prom"), **base,
                               early_stop={"rule": "median", "thresholds": {2: 0.0}}))
    assert kept["stopped_early"] is None and len(kept["history"]) == 4


@pytest.mark.slow
def test_a_local_study_with_asha_saves_epochs_and_still_distils(tmp_path):
    doc = tiny_doc(**{"spec.trainer.epochs": 4, "spec.budget": {"trials": 10, "warmupTrials": 5, "parallelism": 2},
                      "spec.earlyStopping": {"rule": "asha", "graceEpochs": 1, "reductionFactor": 2, "minTrials": 2}})
    local = LocalRun(parse_study(doc), tmp_path / "run")
    e = local.run()
    assert local.status() == "Succeeded", e.outcome()
    stopped = [t for t in e.trials if t.extra.get("stoppedEarly")]
    assert stopped, "no trial was stopped"
    for t in stopped:
        assert len(t.extra["curve"]) == t.extra["stoppedEarly"] < 4
        assert t.index not in {x.index for x in e.top_k()}
    for t in e.trials:
        if t.phase == BOSS:
            assert not e.trials[t.teacher].extra.get("stoppedEarly") and not e.trials[t.student].extra.get("stoppedEarly")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    again = Engine.replay(parse_study(doc).spec, state["trials"], "tiny")  # thresholds survive the JSON round trip
    assert [t.extra.get("earlyStop") for t in again.trials] == [t["extra"].get("earlyStop") for t in state["trials"]]
