"""Reproducible mode (budget.reproducible): the same seed gives the same trials whatever order
they finish in, across a replay after a kill, and on the local backend with real trials."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from boss.spec import parse_study
from boss_operator.engine import FAILED, Engine, ReplayError
from conftest import digits_doc, tiny_doc, write_study
from test_engine import finish


def spec_of(reproducible: bool, trials: int = 24, warmup: int = 8, parallelism: int = 4, **more):
    budget = {"trials": trials, "warmupTrials": warmup, "parallelism": parallelism, "maxFailedTrials": 30}
    if reproducible:
        budget["reproducible"] = True
    return parse_study(digits_doc(**{"spec.budget": budget, "spec.boss.topK": 4, **more})).spec


def listing(engine: Engine) -> list[tuple]:
    """What must be the same from run to run: each trial's proposal and lineage, its result."""
    return [(t.index, t.phase, json.dumps(t.config, sort_keys=True), t.teacher, t.student, t.asked_after,
             t.state, t.value) for t in engine.trials]


def drive(engine: Engine, seed: int, fails: frozenset[int] = frozenset(), stop_after: int | None = None) -> int:
    """Run the study with parallel workers that finish in an order drawn from `seed`; returns
    how many results were told (the run stops after `stop_after` of them: a kill)."""
    rng = random.Random(seed)
    running = list(engine.running)
    told = 0
    while not engine.finished:
        while len(running) < engine.spec.budget.parallelism and (t := engine.ask()) is not None:
            running.append(t)
        assert running, "the engine neither proposes nor waits"
        t = running.pop(rng.randrange(len(running)))
        finish(engine, t, fail=t.index in fails)
        told += 1
        if stop_after is not None and told >= stop_after:
            return told
    return told


def records(engine: Engine) -> list[dict]:
    return json.loads(json.dumps([t.to_dict() for t in engine.trials]))


def test_completion_order_changes_a_study_unless_it_is_reproducible():
    free = [listing(_run(spec_of(False), seed)) for seed in (1, 2, 3)]
    assert len({json.dumps(x) for x in free}) > 1, "without the mode, completion order must matter (or this test proves nothing)"
    same = [listing(_run(spec_of(True), seed)) for seed in (1, 2, 3)]
    assert same[0] == same[1] == same[2]
    assert any(row[1] == "boss" for row in same[0]) and len(same[0]) == 24


def _run(spec, seed: int, **kw) -> Engine:
    e = Engine(spec, "r")
    drive(e, seed, **kw)
    return e


def test_a_trial_sees_exactly_the_results_before_it_by_the_lag():
    e = _run(spec_of(True, parallelism=2), seed=7)
    assert e.lag == 4  # twice the parallelism
    for t in e.trials:
        if t.phase == "boss" and t.index == 8:  # the first after the warm-up: all of it
            assert t.asked_after == 8
        elif t.index < 8:
            assert t.asked_after == max(0, t.index - 3)
        else:
            assert t.asked_after == max(8, t.index - 3)
    told = [t.told for t in e.trials if t.told is not None]
    assert told == list(range(len(told))) and len(told) == 24 - 4  # in trial order; no proposal sees the last four
    assert len(e.top_k()) == 4 and max(e.top_k(), key=e.score) == e.best()  # all of them, once all are proposed


def test_failures_stop_a_reproducible_study_at_the_same_trial_whatever_the_timing():
    spec = parse_study(digits_doc(**{"spec.budget": {"trials": 24, "warmupTrials": 8, "parallelism": 4,
                                                     "maxFailedTrials": 2, "reproducible": True}})).spec
    fails = frozenset({1, 3, 5, 6})
    runs = [_run(spec, seed, fails=fails) for seed in (1, 2, 3, 4)]
    assert len({json.dumps(listing(e)) for e in runs}) == 1
    e = runs[0]
    assert e.finished and e.outcome()[:2] == ("Failed", "TooManyFailedTrials")
    assert sum(t.state == FAILED for t in e.trials) == 4


def test_a_killed_reproducible_study_continues_into_the_same_trials():
    whole = _run(spec_of(True), seed=5)
    for stop_after in (3, 9, 13):
        e = Engine(spec_of(True), "r")
        drive(e, seed=11, stop_after=stop_after)
        again = Engine.replay(spec_of(True), records(e), "r", lag=e.record().get("lag"))
        assert listing(again) == listing(e)
        drive(again, seed=stop_after)  # other finishing orders after the restart
        assert listing(again) == listing(whole)


def test_the_lag_is_the_parallelism_the_study_started_with():
    """Parallelism may change while a study runs; the record keeps the lag it started with."""
    e = Engine(spec_of(True, parallelism=4), "r")
    drive(e, seed=1, stop_after=6)
    assert e.record()["lag"] == 8
    again = Engine.replay(spec_of(True, parallelism=8), records(e), "r", lag=e.record()["lag"])
    drive(again, seed=2)
    assert listing(again) == listing(_run(spec_of(True, parallelism=4), seed=3))


def test_a_reproducible_record_told_out_of_order_does_not_replay():
    e = _run(spec_of(True), seed=1)
    recs = records(e)
    recs[9]["told"], recs[10]["told"] = 10, 9
    with pytest.raises(ReplayError, match="out of trial order"):
        Engine.replay(spec_of(True), recs, "r")


def test_a_reproducible_study_replays_from_a_snapshot():
    """The operator replays a large study from the snapshot in its last history chunk."""
    e = Engine(spec_of(True, trials=40), "r")
    drive(e, seed=3, stop_after=20)
    snap = e.snapshot()
    drive(e, seed=4, stop_after=6)
    recs = records(e)
    a = Engine.replay(spec_of(True, trials=40), recs, "r", snapshots=[snap])
    b = Engine.replay(spec_of(True, trials=40), recs, "r")
    assert listing(a) == listing(b) == listing(e)
    drive(a, seed=9)
    drive(b, seed=10)
    assert listing(a) == listing(b)


# ---- the local backend, real trials --------------------------------------------------------


def _local_doc():
    return tiny_doc(**{"spec.budget": {"trials": 10, "warmupTrials": 4, "parallelism": 3, "maxFailedTrials": 1},
                       "spec.trainer.plugin": "flaky_trainers:RandomlySlow", "spec.trainer.epochs": 2,
                       "spec.trainer.args": {"train_fraction": 0.3, "max_seconds": 1.5}})


def _trials(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "state.json").read_text())["trials"]


def _key(trials: list[dict]) -> list[tuple]:
    return [(t["index"], t["phase"], json.dumps(t["config"], sort_keys=True), t["teacher"], t["student"],
             t["checksum"], t["value"]) for t in trials]


def _env(delay_seed: int) -> dict[str, str]:
    tests = str(Path(__file__).parent)  # flaky_trainers
    return {**os.environ, "BOSS_TEST_DELAY_SEED": str(delay_seed),
            "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}


def _run_cli(study: Path, run_dir: Path, delay_seed: int, *flags: str) -> subprocess.CompletedProcess:
    env = _env(delay_seed)
    return subprocess.run([sys.executable, "-m", "boss.cli", "run", str(study), "--run-dir", str(run_dir), *flags],
                          capture_output=True, text=True, timeout=600, env=env)


def _seen(trials: list[dict]) -> list[list[int]]:
    """For each trial, the trials whose results its proposal was made from."""
    told = {t["told"]: t["index"] for t in trials if t["told"] is not None}
    return [sorted(told[k] for k in range(t["asked_after"])) for t in trials]


def _finish_order(run_dir: Path) -> list[int]:
    return [t["index"] for t in sorted(_trials(run_dir), key=lambda t: t["extra"]["started"] + t["extra"]["seconds"])]


@pytest.mark.slow
def test_boss_run_reproducible_gives_the_same_trials_in_any_finishing_order_and_after_a_kill(tmp_path):
    study = write_study(tmp_path, _local_doc())
    # (without the mode other finishing orders give other studies:
    # test_completion_order_changes_a_study_unless_it_is_reproducible, on the same engine)
    runs = []
    for seed in (1, 2):
        d = tmp_path / f"r{seed}"
        r = _run_cli(study, d, seed, "--reproducible")
        assert r.returncode == 0, r.stderr
        runs.append(d)
    assert _finish_order(runs[0]) != _finish_order(runs[1])  # the trials did finish in other orders
    assert _key(_trials(runs[0])) == _key(_trials(runs[1]))  # ...and gave the same study, checksums too
    assert _seen(_trials(runs[0])) == _seen(_trials(runs[1]))  # each proposal saw the same results
    assert all(t["checksum"] for t in _trials(runs[0]))
    assert yaml.safe_load((runs[0] / "study.yaml").read_text())["spec"]["budget"]["reproducible"] is True

    # SIGKILL in the BOSS phase, then the same command continues into the same trials
    killed = tmp_path / "rk"
    env = _env(3)
    proc = subprocess.Popen([sys.executable, "-m", "boss.cli", "run", str(study), "--run-dir", str(killed),
                             "--reproducible", "-q"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "state.json").exists() or sum(t["state"] != "running" for t in _trials(killed)) < 6:
        assert time.time() < deadline and proc.poll() is None, "the run ended before the kill"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its trials, as a crash or an OOM kill would
    proc.wait()
    r = _run_cli(study, killed, 4, "--reproducible")
    assert r.returncode == 0, r.stderr
    assert _key(_trials(killed)) == _key(_trials(runs[0]))
    shown = [_shown(d) for d in (runs[0], killed)]
    assert "lineage" in shown[0] and "best trial #" in shown[0]
    assert shown[0] == shown[1]  # the same table, best trial and lineage (times and folder aside)


def _shown(run_dir: Path) -> str:
    """`boss show` of a run folder, without what differs between two runs of one study: the
    folder's path, each trial's seconds, and the table's column widths that follow from them."""
    text = subprocess.run([sys.executable, "-m", "boss.cli", "show", str(run_dir)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "250"}).stdout
    drop, out = None, []
    for line in text.replace(str(run_dir), "RUN").splitlines():
        cells = re.split(r"[\u2502\u2503]", line)  # a table row's cells
        if len(cells) > 2:
            names = [c.strip() for c in cells]
            drop = names.index("s") if "s" in names else drop  # the header names the seconds column
            cells = [c for i, c in enumerate(cells) if i != drop]
        out.append(" ".join(re.split(r"[\s\u2500-\u257f]+", " ".join(cells))).strip())
    return "\n".join(out)
