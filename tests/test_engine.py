"""The engine: two phases, top-K teacher/student choice, budget and failures, replay."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest
from boss.report import ancestry
from boss.spec import DISTILL_WEIGHT, parse_study
from boss_operator.engine import BOSS, FAILED, WARMUP, Engine, ReplayError, Trial
from conftest import ROOT, digits_doc


def spec_of(**changes):
    return parse_study(digits_doc(**changes)).spec


def score(config: dict) -> float:
    """A made-up objective with its optimum at lr=0.05 (no training needed)."""
    return 1.0 - 0.1 * (math.log10(config["lr"]) - math.log10(0.05)) ** 2


def finish(engine: Engine, t: Trial, fail: bool = False) -> None:
    engine.tell(t.index, None if fail else score(t.config), checkpoint=f"mem://ckpt/{t.index}",
                checksum="0" * 64, failed=fail, message="boom" if fail else None)


def drive(engine: Engine, rng: random.Random, fail_rate: float = 0.0) -> None:
    """Run a study to the end with random completion order, as parallel workers would."""
    running: list[Trial] = []
    while not engine.finished:
        while len(running) < engine.spec.budget.parallelism and (t := engine.ask()) is not None:
            running.append(t)
        assert running, "the engine neither proposes nor waits"
        t = running.pop(rng.randrange(len(running)))
        finish(engine, t, fail=rng.random() < fail_rate)


def test_phases_and_teacher_student_choice():
    spec = spec_of(**{"spec.budget": {"trials": 14, "warmupTrials": 5, "parallelism": 1}, "spec.boss.topK": 3})
    e = Engine(spec, "t")
    for i in range(14):
        t = e.ask()
        assert t is not None and t.index == i
        if i < 5:
            assert t.phase == WARMUP and t.teacher is None and t.student is None
        else:
            assert t.phase == BOSS
            top = {x.index for x in e.top_k()}
            assert len(top) == 3
            assert t.teacher != t.student and {t.teacher, t.student} <= top
        finish(e, t)
    assert e.ask() is None and e.finished
    # the BOSS phase has its own observation set: SMAC for BOSS saw only BOSS trials
    assert e._smac[WARMUP].runhistory.finished == 5
    assert e._smac[BOSS].runhistory.finished == 9
    # top-K draws from warm-up and BOSS checkpoints alike, and improves
    assert any(x.phase == BOSS for x in e.top_k())


def test_selection_is_seeded_by_trial_index():
    spec = spec_of(**{"spec.budget": {"trials": 30, "warmupTrials": 8}, "spec.boss.topK": 8})
    e = Engine(spec)
    for _ in range(8):
        finish(e, e.ask())
    pairs = {e.pick_teacher_student(i) for i in range(8, 60)}
    assert len(pairs) > 10  # not always the same two
    assert e.pick_teacher_student(9) == e.pick_teacher_student(9)


def test_boss_phase_waits_for_the_whole_warmup():
    spec = spec_of(**{"spec.budget": {"trials": 10, "warmupTrials": 3, "parallelism": 3}})
    e = Engine(spec)
    warm = [e.ask() for _ in range(3)]
    assert e.ask() is None and not e.finished  # waiting, not done
    finish(e, warm[0])
    finish(e, warm[1])
    assert e.ask() is None
    finish(e, warm[2])
    assert e.ask().phase == BOSS


def test_parallel_asks_propose_different_configs():
    spec = spec_of(**{"spec.budget": {"trials": 12, "warmupTrials": 8, "parallelism": 8}})
    e = Engine(spec)
    configs = [json.dumps(e.ask().config, sort_keys=True) for _ in range(8)]
    assert len(set(configs)) == 8


def test_failures_count_and_end_the_study():
    spec = spec_of(**{"spec.budget": {"trials": 10, "warmupTrials": 3, "maxFailedTrials": 1}})
    e = Engine(spec)
    finish(e, e.ask(), fail=True)
    assert not e.finished
    finish(e, e.ask(), fail=True)
    assert e.too_many_failures and e.finished and e.ask() is None
    assert [t.state for t in e.trials] == [FAILED, FAILED]


def test_warmup_extends_until_two_checkpoints_exist():
    spec = spec_of(**{"spec.budget": {"trials": 10, "warmupTrials": 2, "maxFailedTrials": 5}})
    e = Engine(spec)
    finish(e, e.ask(), fail=True)
    finish(e, e.ask())
    t = e.ask()
    assert t.phase == WARMUP  # only one checkpoint: a third warm-up trial
    finish(e, t)
    assert e.ask().phase == BOSS


def test_budget_is_never_exceeded_and_nan_is_a_failure():
    spec = spec_of(**{"spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 4, "maxFailedTrials": 4}})
    e = Engine(spec)
    ts = [e.ask(), e.ask()]
    e.tell(ts[0].index, float("nan"), checkpoint="x")
    assert e.trials[0].state == FAILED and "not a finite number" in e.trials[0].message
    e.tell(ts[1].index, 0.5)  # a score without a checkpoint is not a success
    assert e.trials[1].state == FAILED
    drive(e, random.Random(0))
    assert len(e.trials) == 4


def test_conditional_and_searched_weight():
    spec = spec_of(**{"spec.budget": {"trials": 12, "warmupTrials": 4},
                      "spec.boss.distillation.weight": {"low": 0.1, "high": 4.0, "log": True}})
    e = Engine(spec)
    drive(e, random.Random(1))
    for t in e.trials:
        assert ("momentum" in t.config) == (t.config["optimizer"] == "sgd")
        assert (DISTILL_WEIGHT in t.config) == (t.phase == BOSS)
        if t.phase == BOSS:
            assert 0.1 <= t.config[DISTILL_WEIGHT] <= 4.0
        json.dumps(t.config)  # plain Python values, no numpy scalars


def _boss_trial_with(values: list[float], teacher: int, student: int, **changes):
    """An engine whose warm-up scored `values`, and its first BOSS trial re-drawn as (teacher, student)."""
    spec = spec_of(**{"spec.budget": {"trials": len(values) + 1, "warmupTrials": len(values), "parallelism": 1},
                      "spec.boss.topK": len(values), **changes})
    e = Engine(spec, "t")
    for v in values:
        t = e.ask()
        e.tell(t.index, v, checkpoint=f"mem://ckpt/{t.index}", checksum="0" * 64)
    t = e.ask()
    assert t.phase == BOSS
    t.teacher, t.student = teacher, student
    return e, t


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_a_teacher_far_below_its_student_does_not_teach(goal):
    from boss_operator.trials import make_trial_spec

    sign = 1 if goal == "maximize" else -1
    values = [sign * v for v in (0.1, 0.5, 0.9, 0.85, 0.3)]  # spread 0.8: the default range 0.25 is 0.2
    cases = [
        (2, 3, 1.0),  # the teacher (0.9) is above its student (0.85): the whole weight
        (3, 2, 1 - 0.05 / 0.2),  # 0.05 below: three quarters of it
        (1, 2, 0.0),  # 0.4 below, past 0.2: none, and no teacher to fetch
        (0, 1, 0.0),
    ]
    for teacher, student, share in cases:
        e, t = _boss_trial_with(values, teacher, student, **{"spec.objective.goal": goal})
        assert e.teacher_share(t) == pytest.approx(share)
        spec = make_trial_spec(parse_study(digits_doc(**{"spec.objective.goal": goal})), e, t, "file:///tmp/r")
        assert spec.distill_weight == pytest.approx(e.spec.boss.distillation.weight * share)
        assert (spec.teacher_uri is None) == (share == 0) and spec.student_uri == f"mem://ckpt/{student}"
    # the paper's rule: every teacher teaches with the whole weight; skip: only one at least as good
    for teacher, student, share, rule in ((1, 2, 1.0, "teach"), (3, 2, 0.0, "skip"), (2, 3, 1.0, "skip")):
        e, t = _boss_trial_with(values, teacher, student, **{"spec.objective.goal": goal,
                                                            "spec.boss.distillation.worseTeacher": rule})
        assert e.teacher_share(t) == share


def test_lineage_and_best():
    spec = spec_of(**{"spec.budget": {"trials": 12, "warmupTrials": 4}})
    e = Engine(spec)
    drive(e, random.Random(2))
    best = e.best()
    assert best.value == max(t.value for t in e.succeeded)
    lin = ancestry([t.to_dict() for t in e.trials], 11)
    assert 11 in lin and {e.trials[11].teacher, e.trials[11].student} <= lin
    assert all(e.trials[i].phase == WARMUP or e.trials[i].teacher is not None for i in lin)


def recorded(seed: int, parallelism: int, fail_rate: float = 0.2) -> tuple[Engine, list[dict]]:
    spec = spec_of(**{"spec.seed": seed, "spec.budget": {"trials": 14, "warmupTrials": 5,
                                                          "parallelism": parallelism, "maxFailedTrials": 20}})
    e = Engine(spec)
    drive(e, random.Random(seed), fail_rate)
    return e, json.loads(json.dumps([t.to_dict() for t in e.trials]))


def crash_at(records: list[dict], k: int) -> list[dict]:
    """What was recorded when the k-th result came in (and the proposals right after it)."""
    out = []
    for r in records:
        if r["asked_after"] > k:
            break
        if r["told"] is not None and r["told"] >= k:
            r = {**r, "told": None, "state": "running", "value": None, "checkpoint": None, "checksum": None,
                 "message": None}
        out.append(r)
    return out


@pytest.mark.parametrize("parallelism", [1, 3])
def test_replay_rebuilds_the_same_engine(parallelism):
    e, records = recorded(seed=7, parallelism=parallelism)
    again = Engine.replay(e.spec, records)
    assert [t.to_dict() for t in again.trials] == records
    for k in (3, 9):  # an operator that crashed after k results, then went on
        part = crash_at(records, k)
        resumed = Engine.replay(e.spec, part)
        assert [t.to_dict() for t in resumed.trials] == part
        continue_as(resumed, records)
        assert [t.to_dict() for t in resumed.trials] == records


def continue_as(engine: Engine, records: list[dict]) -> None:
    """Play the rest of the original history (same results, same order); every proposal must match."""

    def ask_due() -> None:
        while len(engine.trials) < len(records) and records[len(engine.trials)]["asked_after"] <= engine._told:
            t = engine.ask()
            r = records[t.index]
            assert (t.phase, t.config, t.teacher, t.student) == (r["phase"], r["config"], r["teacher"], r["student"])

    for r in sorted((r for r in records if r["told"] is not None), key=lambda r: r["told"])[engine._told:]:
        ask_due()
        engine.tell(r["index"], r["value"], checkpoint=r["checkpoint"], checksum=r["checksum"],
                    failed=r["state"] == FAILED, message=r["message"])
    ask_due()


def test_replay_in_a_fresh_process_with_another_hash_seed(tmp_path):
    e, records = recorded(seed=3, parallelism=2)
    partial = crash_at(records, 8)
    nxt = Engine.replay(e.spec, partial)
    # finish the running trials and ask once more, here and in a new interpreter
    script = f"""
import json, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_engine import spec_of, finish
from boss_operator.engine import Engine
spec = spec_of(**{{"spec.seed": 3, "spec.budget": {{"trials": 14, "warmupTrials": 5, "parallelism": 2, "maxFailedTrials": 20}}}})
e = Engine.replay(spec, json.load(open(sys.argv[1])))
for t in list(e.running):
    finish(e, t)
t = e.ask()
print(json.dumps(None if t is None else [t.phase, t.config, t.teacher, t.student]))
"""
    path = tmp_path / "records.json"
    path.write_text(json.dumps(partial))
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True)
    for t in list(nxt.running):
        finish(nxt, t)
    t = nxt.ask()
    assert t is not None
    assert json.loads(out.stdout) == json.loads(json.dumps([t.phase, t.config, t.teacher, t.student]))


def test_replay_detects_a_changed_history():
    e, records = recorded(seed=5, parallelism=1, fail_rate=0.0)
    records[4]["config"]["lr"] = 0.123456
    with pytest.raises(ReplayError, match="trial 4 replays as"):
        Engine.replay(e.spec, records)
    with pytest.raises(ReplayError, match="indices"):
        Engine.replay(e.spec, records[1:])


# ---- the next config computed ahead (Engine.ahead) ----------------------------------------------


def run_with(engine: Engine, seed: int, settle: bool) -> list[dict]:
    """drive(), the backend settling after each round of asks or never."""
    rng, running = random.Random(seed), []
    while not engine.finished:
        while len(running) < engine.spec.budget.parallelism and (t := engine.ask()) is not None:
            running.append(t)
        if settle:
            engine.settle()
        finish(engine, running.pop(rng.randrange(len(running))), fail=rng.random() < 0.1)
    return [t.to_dict() for t in engine.trials]


def test_settling_changes_when_the_next_config_is_computed_not_what_it_is(monkeypatch):
    spec = spec_of(**{"spec.seed": 4, "spec.budget": {"trials": 24, "warmupTrials": 6, "parallelism": 3,
                                                       "maxFailedTrials": 20}})
    settled, never = run_with(Engine(spec), 1, settle=True), run_with(Engine(spec), 1, settle=False)
    assert settled == never  # a due config is computed before the next result either way
    assert [t.to_dict() for t in Engine.replay(spec, settled).trials] == settled
    # settled, the ask after a result fits no model and searches nothing: that was done before it
    from boss_operator.optimizer import ResumableConfigSelector

    e, rng, fills = Engine(spec), random.Random(1), []
    real_fill = ResumableConfigSelector._fill
    monkeypatch.setattr(ResumableConfigSelector, "_fill", lambda self: (fills.append(1), real_fill(self))[1])
    running, after_result = [], 0
    while not e.finished:
        while len(running) < 3 and (t := e.ask()) is not None:
            running.append(t)
        e.settle()
        before = len(fills)
        finish(e, running.pop(rng.randrange(len(running))))
        if len(running) < 3 and (t := e.ask()) is not None:
            running.append(t)
            after_result += 1
            assert len(fills) == before, f"trial {t.index}: the ask after a result searched"
    assert after_result > 10 and len(fills) >= 3  # the searches happened, all of them in settle()


def test_one_trial_at_a_time_waits_for_its_result():
    """With parallelism 1 nothing is computed ahead: the next config sees the result before it."""
    spec = spec_of(**{"spec.seed": 2, "spec.budget": {"trials": 16, "warmupTrials": 4, "parallelism": 1}})
    assert run_with(Engine(spec), 3, settle=True) == run_with(Engine(spec, ahead=False), 3, settle=True)


def test_a_study_recorded_without_computing_ahead_replays_as_recorded():
    from boss_operator.study import computes_ahead

    spec = spec_of(**{"spec.seed": 6, "spec.budget": {"trials": 24, "warmupTrials": 6, "parallelism": 3,
                                                       "maxFailedTrials": 20}})
    old = run_with(Engine(spec, ahead=False), 2, settle=False)
    assert [t.to_dict() for t in Engine.replay(spec, old, ahead=False).trials] == old
    with pytest.raises(ReplayError, match="replays as"):
        Engine.replay(spec, old)  # computed ahead, the searches see other results: other configs
    # the operator knows which from the status: new studies compute ahead, older ones did not
    assert computes_ahead({}) and computes_ahead({"trials": [], "history": {"trials": 0}})
    assert not computes_ahead({"trials": old[:3]}) and not computes_ahead({"trials": [], "history": {"trials": 100}})
    assert computes_ahead({"trials": old[:3], "engine": {"computeAhead": True}})


def test_each_phases_model_is_refit_on_every_result(monkeypatch):
    """One trial at a time, every proposal after a phase's initial design comes from SMAC's model
    fit on all of that phase's results so far. (SMAC's HPO facade proposes 8 configs from one fit:
    a 12-trial BOSS phase learned from its own results once, and was level with random configs.)"""
    from boss_operator.optimizer import ResumableConfigSelector

    spec = spec_of(**{"spec.seed": 3, "spec.budget": {"trials": 16, "warmupTrials": 4, "parallelism": 1}})
    e, fits = Engine(spec), {}
    real_fit = ResumableConfigSelector.fit
    monkeypatch.setattr(ResumableConfigSelector, "fit",
                        lambda self, X, Y, C: (fits.setdefault(id(self), []).append(len(Y)), real_fit(self, X, Y, C))[1])
    while not e.finished:
        finish(e, e.ask())
    assert e.record()["retrainAfter"] == 1 and e.record()["bossCost"] == "gain"
    boss = [t for t in e.trials if t.phase == BOSS]
    selector = e._smac[BOSS]._config_selector
    sizes = fits[id(selector)]
    initial = len(selector._initial_design_configs)
    assert sizes == list(range(initial, len(boss)))  # a fit after each result, on every one of them
    assert len(fits[id(e._smac[WARMUP]._config_selector)]) >= 2


def test_a_study_recorded_before_the_smac_settings_were_kept_replays_as_recorded():
    from boss_operator.engine import RECORDED_BEFORE, SmacSettings
    from boss_operator.study import smac_settings

    spec = spec_of(**{"spec.seed": 4, "spec.budget": {"trials": 20, "warmupTrials": 5, "parallelism": 2}})
    old = run_with(Engine(spec, smac=RECORDED_BEFORE), 1, settle=True)
    assert [t.to_dict() for t in Engine.replay(spec, old, smac=RECORDED_BEFORE).trials] == old
    with pytest.raises(ReplayError, match="replays as"):
        Engine.replay(spec, old)  # refit on every result, told the gains: other configs
    # the record says which; one from before they were kept (trials, no settings) ran with 8 and values
    assert smac_settings({}) == SmacSettings() == smac_settings({"trials": [], "history": {"trials": 0}})
    assert smac_settings({"trials": old[:3]}) == RECORDED_BEFORE == smac_settings({"history": {"trials": 40}})
    assert smac_settings({"trials": old[:3], "engine": Engine(spec).record()}) == SmacSettings(1, "gain")


def test_the_boss_phase_learns_each_trials_gain_over_its_student():
    """Told the score, SMAC learns that configs which change the student least score best; it is
    told the gain (SMAC minimises: the negated gain), and a diverged trial the gain of falling from
    its student's score to the worst score seen."""
    spec = spec_of(**{"spec.seed": 5, "spec.budget": {"trials": 10, "warmupTrials": 4, "parallelism": 1}})
    e, told = Engine(spec), {}
    while not e.finished:
        t = e.ask()
        if t.index == 7:
            e.tell(t.index, diverged=True)
        else:
            finish(e, t)
    for phase, smac in e._smac.items():
        for info, value in smac.runhistory.items():
            told[(phase, smac.runhistory.get_config(info.config_id).get_dictionary()["lr"])] = value.cost
    for t in e.trials:
        cost = told[(t.phase, t.config["lr"])]
        if t.phase == WARMUP:
            assert cost == pytest.approx(-t.value)
        elif t.index != 7:
            assert cost == pytest.approx(-(t.value - e.trials[t.student].value))
    seen = [t.value for t in e.trials[:7]]
    assert told[(BOSS, e.trials[7].config["lr"])] == pytest.approx(e.trials[e.trials[7].student].value - min(seen))


def test_a_diverging_corner_is_proposed_less_after_the_warm_up():
    """A learning rate above 0.05 never gives a finite score. Told each one as the worst result
    (in the BOSS phase: a fall from the student's score to the worst seen), SMAC proposes that
    corner less in the BOSS phase than in the warm-up, over a few seeds."""
    shares = {WARMUP: [0, 0], BOSS: [0, 0]}
    for seed in range(4):
        spec = spec_of(**{"spec.seed": seed, "spec.budget": {"trials": 24, "warmupTrials": 8, "parallelism": 1,
                                                              "maxFailedTrials": 0}})
        e = Engine(spec)
        while not e.finished:
            t = e.ask()
            diverges = t.config["lr"] > 0.05
            if diverges:
                e.tell(t.index, diverged=True)
            else:
                finish(e, t)
            shares[t.phase][0] += diverges
            shares[t.phase][1] += 1
        assert e.outcome()[0] == "Succeeded"
    warm, boss = (shares[p][0] / shares[p][1] for p in (WARMUP, BOSS))
    assert boss < 0.75 * warm, shares


def _fail_with(engine: Engine, t: Trial, message: str) -> None:
    engine.tell(t.index, failed=True, message=message)


def test_the_first_two_trials_failing_alike_stop_the_study_early():
    """A mistake that breaks every trial costs two trials, not maxFailedTrials + 1."""
    spec = spec_of(**{"spec.budget": {"trials": 10, "warmupTrials": 4, "parallelism": 1, "maxFailedTrials": 3}})
    e = Engine(spec)
    for _ in range(2):
        _fail_with(e, e.ask(), "FileNotFoundError: data.txt")
    assert e.ask() is None and e.finished
    phase, reason, message = e.outcome()
    assert (phase, reason) == ("Failed", "RepeatedFailure") and "data.txt" in message
    # the user fixes the cause and grows the budget: the study goes on, the two failures kept
    e.grown()
    t = e.ask()
    assert t is not None and t.index == 2
    finish(e, t)
    again = Engine.replay(spec, [x.to_dict() for x in e.trials], failure_floor=e.record()["failureFloor"])
    assert again.ask() is not None  # the record keeps where the failures were forgiven


def test_different_errors_or_a_success_do_not_stop_a_study_early():
    spec = spec_of(**{"spec.budget": {"trials": 10, "warmupTrials": 4, "parallelism": 2, "maxFailedTrials": 3}})
    e = Engine(spec)
    a, b = e.ask(), e.ask()
    _fail_with(e, a, "CUDA out of memory")
    _fail_with(e, b, "RuntimeError: shape mismatch")
    assert e.repeated_failure is None and e.ask() is not None
    e = Engine(spec)
    a, b, c = e.ask(), e.ask(), None
    finish(e, a)
    c = e.ask()
    _fail_with(e, b, "boom")
    _fail_with(e, c, "boom")
    assert e.repeated_failure is None and e.ask() is not None  # the code ran once: not a mistake in it
    # maxFailedTrials below two: the plain rule already stops at the second failure
    e = Engine(spec_of(**{"spec.budget": {"trials": 10, "warmupTrials": 4, "parallelism": 1, "maxFailedTrials": 1}}))
    _fail_with(e, e.ask(), "boom")
    assert e.repeated_failure is None and e.ask() is not None
