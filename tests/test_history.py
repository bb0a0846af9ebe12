"""A study's history in ConfigMaps (boss.history, boss_operator.history), without a cluster:
the chunks, the bounded status, a kill between the two writes, and replay from them."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from boss.history import HistoryError, assemble, chunk_name, chunk_trials, pack, unpack
from boss.spec import parse_study
from boss_operator.engine import Engine
from boss_operator.history import History, record
from conftest import EXAMPLES

UID = "uid-1"


class ConfigMapKube:
    """The ConfigMap calls of our Kube, on a dict (what an API server would keep)."""

    def __init__(self):
        self.cms: dict[str, dict] = {}
        self.creates = 0

    def list_config_maps(self, namespace, selector):
        want = dict(part.split("=") for part in selector.split(","))
        return [copy.deepcopy(cm) for cm in self.cms.values()
                if all(cm["metadata"]["labels"].get(k) == v for k, v in want.items())]

    def read_config_map(self, namespace, name):
        return copy.deepcopy(self.cms.get(name))

    def create_config_map(self, namespace, body):
        self.creates += 1
        if body["metadata"]["name"] in self.cms:
            return False
        self.cms[body["metadata"]["name"]] = copy.deepcopy(body)
        return True

    def delete_config_map(self, namespace, name):
        self.cms.pop(name, None)


def spec(trials=40, parallelism=3, seed=0):
    doc = yaml.safe_load((EXAMPLES / "digits-study.yaml").read_text())
    doc["spec"]["budget"] = {"trials": trials, "warmupTrials": 8, "parallelism": parallelism, "maxFailedTrials": 50}
    doc["spec"]["seed"] = seed
    return parse_study(doc).spec


def score(config):
    return 1.0 - 0.05 * (math.log10(config["lr"]) + 1.3) ** 2


def drive(engine, history, status, until, parallelism=3):
    """Run the engine with instant trials (one fails now and then), the oldest finishing first,
    writing the status as the operator does after each result; stop after `until` results."""
    while engine._told < until:
        while len(engine.running) < parallelism and (t := engine.ask()) is not None:
            pass
        t = engine.running[0]
        if t.index % 7 == 5:
            engine.tell(t.index, failed=True, message="boom")
        else:
            engine.tell(t.index, score(t.config), checkpoint=f"s3://b/{t.index}", checksum="0")
        history.archive(engine.trials, engine.snapshot)
        status.clear()
        status.update({"trials": history.tail(engine.trials), "history": history.summary()})


def test_chunks_pack_and_the_status_stays_bounded():
    kube, s = ConfigMapKube(), spec()
    engine, history, status = Engine(s, "st"), History(kube, "ns", "st", UID, 4), {}
    drive(engine, history, status, 25)
    assert status["history"] == {"configMaps": 6, "trials": 24, "chunkSize": 4}
    assert sorted(kube.cms) == [chunk_name("st", k) for k in range(6)]
    assert len(status["trials"]) <= 4 + 3  # a chunk's worth, plus the running ones
    assert all(cm["immutable"] for cm in kube.cms.values())
    # the ConfigMaps hold results in the order they came in, and nothing twice
    told = [t["told"] for k in range(6) for t in unpack(kube.cms[chunk_name("st", k)]["binaryData"]["trials.json.gz"])]
    assert told == list(range(24))
    obj = {"metadata": {"name": "st", "uid": UID}, "status": status}
    everything = History(kube, "ns", "st", UID, 4).load(obj)
    assert everything == [t.to_dict() for t in engine.trials]
    assert unpack(pack({"a": [1.5, None]})) == {"a": [1.5, None]}


def test_restart_from_chunks_and_tail_proposes_what_an_uninterrupted_engine_does():
    kube, s = ConfigMapKube(), spec()
    engine, history, status = Engine(s, "st"), History(kube, "ns", "st", UID, 4), {}
    drive(engine, history, status, 20)
    obj = {"metadata": {"name": "st", "uid": UID}, "status": copy.deepcopy(status)}
    history = History(kube, "ns", "st", UID, 4)
    records = history.load(obj)
    assert history.snapshots and history.snapshots[0]["told"] >= 20 - 4  # the newest chunk's
    replayed = Engine.replay(s, records, "st", history.snapshots)
    for _ in range(4):  # the next proposals, side by side
        a, b = engine.ask(), replayed.ask()
        assert (a.index, a.phase, a.config, a.teacher, a.student) == (b.index, b.phase, b.config, b.teacher, b.student)


def test_a_kill_between_the_chunk_and_the_status_loses_nothing():
    kube, s = ConfigMapKube(), spec()
    engine, history, status = Engine(s, "st"), History(kube, "ns", "st", UID, 4), {}
    drive(engine, history, status, 7)
    before = copy.deepcopy(status)  # 1 chunk named
    drive(engine, history, status, 8)  # writes chunk 1...
    assert chunk_name("st", 1) in kube.cms
    # ...and the operator dies before the status names it: the status is still `before`
    obj = {"metadata": {"name": "st", "uid": UID}, "status": before}
    again = History(kube, "ns", "st", UID, 4)
    records = again.load(obj)
    assert len(records) == len(before["trials"]) + 4
    replayed = Engine.replay(s, records, "st")
    assert not again.archive(replayed.trials)  # the 8th result is not in `before`: no chunk yet
    eighth = next(t for t in engine.trials if t.told == 7)  # its Job is found finished again, and told
    replayed.tell(eighth.index, eighth.value, checkpoint=eighth.checkpoint, checksum=eighth.checksum)
    creates = kube.creates
    again.archive(replayed.trials)  # finds chunk 1 already there, with the same trials, and names it
    assert again.summary() == {"configMaps": 2, "trials": 8, "chunkSize": 4} and kube.creates == creates + 1
    assert [t.to_dict() for t in replayed.trials] == [t.to_dict() for t in engine.trials]


def test_a_chunk_of_an_earlier_study_of_the_same_name_is_never_read_but_replaced():
    """The earlier study's chunk may stay for ever (`kubectl delete --cascade=orphan`): waiting
    for the garbage collector would stall the new study, reading it would mix two studies."""
    kube, s = ConfigMapKube(), spec()
    engine, history, status = Engine(s, "st"), History(kube, "ns", "st", "old-uid", 4), {}
    drive(engine, history, status, 5)  # the earlier study left chunk 0
    kube.cms["st-history-0000"]["metadata"]["ownerReferences"] = []  # orphaned
    fresh = Engine(Engine(s, "st").spec.model_copy(update={"seed": 7}), "st")
    mine = History(kube, "ns", "st", UID, 4)
    drive(fresh, mine, {}, 3)
    drive(fresh, mine, {}, 4)  # its chunk 0 is in the way: replaced by this study's own
    chunk = kube.cms["st-history-0000"]
    assert chunk["metadata"]["ownerReferences"][0]["uid"] == UID
    assert chunk_trials(chunk) == [record(t) for t in sorted(fresh.trials, key=lambda t: t.told or 0)
                                   if t.told is not None and t.told < 4]
    kube.cms["st-history-0001"] = {"metadata": {"name": "st-history-0001", "labels": {}}}  # a user's own
    with pytest.raises(HistoryError, match="not a BOSS history chunk"):
        drive(fresh, mine, {}, 8)
    chunk["metadata"]["ownerReferences"] = [{"uid": "old-uid", "controller": True}]
    kube.cms["st-history-0000"] = chunk  # a status naming a chunk that is another study's: never read
    obj = {"metadata": {"name": "st", "uid": UID}, "status": {"history": {"configMaps": 1, "trials": 4}, "trials": []}}
    with pytest.raises(HistoryError, match="missing"):
        History(kube, "ns", "st", UID, 4).load(obj)


def test_a_study_written_before_chunks_replays_and_moves_its_trials_out():
    """The previous version kept every trial in status.trials and no status.history."""
    kube, s = ConfigMapKube(), spec()
    engine = Engine(s, "st")
    drive(engine, History(ConfigMapKube(), "ns", "st", UID, 10_000), {}, 18)  # nothing archived
    old_status = {"trials": [t.to_dict() for t in engine.trials]}
    history = History(kube, "ns", "st", UID, 4)
    records = history.load({"metadata": {"name": "st", "uid": UID}, "status": old_status})
    replayed = Engine.replay(s, records, "st")
    history.archive(replayed.trials)
    assert history.summary()["configMaps"] == 4 and len(history.tail(replayed.trials)) < len(old_status["trials"])
    a, b = engine.ask(), replayed.ask()
    assert (a.index, a.config) == (b.index, b.config)


def test_assemble_refuses_a_history_that_does_not_add_up():
    status = {"history": {"configMaps": 1, "trials": 3}, "trials": []}
    cm = {"metadata": {"name": chunk_name("st", 0), "ownerReferences": [{"uid": UID, "controller": True}]},
          "binaryData": {"trials.json.gz": pack([{"index": 0}, {"index": 1}])}}
    with pytest.raises(HistoryError, match="hold 2 trials, the status says 3"):
        assemble("st", UID, status, [cm])
    cm["binaryData"]["trials.json.gz"] = "not base64 gzip"
    with pytest.raises(HistoryError, match="damaged"):
        assemble("st", UID, status, [cm])


# ---- snapshots: replay in bounded time, same proposals ------------------------------------------


def test_the_resumable_selector_proposes_what_smac_own_generator_does():
    """optimizer.ResumableConfigSelector, asked directly, against SMAC's own ConfigSelector through
    smac.ask() (its intensifier's generator), same seed, results coming in while trials run."""
    from boss_operator.optimizer import make_smac, trial_seed_of
    from boss_operator.space import native
    from smac.main.config_selector import ConfigSelector
    from smac.runhistory.dataclasses import TrialInfo, TrialValue

    s = spec(trials=40)
    ours, theirs = make_smac(s, "warmup", "a", 0, 30), make_smac(s, "warmup", "b", 0, 30, selector=ConfigSelector)
    seed = trial_seed_of(ours)
    for i in range(30):
        a = TrialInfo(config=ours._config_selector.next_config(), seed=seed)
        ours.runhistory.add_running_trial(a)
        b = theirs.ask()
        assert native(a.config) == native(b.config) and a.seed == b.seed, i
        if i % 3 != 2:  # results come in, some trials still run
            ours.tell(a, TrialValue(cost=-score(native(a.config))), save=False)
            theirs.tell(b, TrialValue(cost=-score(native(b.config))), save=False)


def test_the_cheap_parts_of_an_ask_give_smac_own_numbers():
    """What optimizer.py does faster than SMAC 2.4.1 (at 1,500 trials an ask took 0.4 s, now
    0.1 s) gives SMAC's own numbers, bit for bit: the predicted best of the evaluated configs (one
    prediction for all rows, not one per row), the objective bounds (folded in per result, not
    recomputed from every entry), and the membership test of the handed-out configs."""
    import numpy as np
    from boss_operator.optimizer import make_smac, trial_seed_of
    from boss_operator.space import native
    from smac.runhistory.dataclasses import TrialInfo, TrialValue

    smac = make_smac(spec(trials=200), "warmup", "cheap", 0, 150)
    sel, seed = smac._config_selector, trial_seed_of(smac)
    checked = 0
    for i in range(120):
        info = TrialInfo(config=sel.next_config(), seed=seed)
        smac.runhistory.add_running_trial(info)
        smac.tell(info, TrialValue(cost=-score(native(info.config))), save=False)
        if i % 20 == 19:
            X, Y, X_configs = sel._collect_data()
            sel._model.train(X, Y)
            ours, theirs = sel._predicted_best(X_configs), sel._get_x_best(X_configs)
            assert np.array_equal(ours[0], theirs[0]) and ours[1] == theirs[1], i
            kept = list(smac.runhistory._objective_bounds)
            type(smac.runhistory)._update_objective_bounds(smac.runhistory)  # SMAC's full recompute
            assert kept == smac.runhistory._objective_bounds, i
            handed = list(sel._processed_configs)
            probes = handed[-5:] + [smac.scenario.configspace.sample_configuration() for _ in range(5)]
            assert [c in sel._processed_configs for c in probes] == [any(c == h for h in handed) for c in probes]
            checked += 1
    assert checked == 6


@pytest.mark.parametrize("cut", [3, 11, 19, 27, 36])
def test_a_restart_from_a_snapshot_proposes_what_an_uninterrupted_engine_does(cut):
    """Same seed, `cut` results in (warm-up, its initial design, mid-batch, the BOSS phase):
    an engine replayed from the snapshot plus the trials after it proposes the same next trials
    as the engine that never stopped, and it asks SMAC only for the trials after the snapshot."""
    s = spec(trials=60)
    engine, history, status = Engine(s, "st"), History(ConfigMapKube(), "ns", "st", UID, 10_000), {}
    drive(engine, history, status, cut)
    saved = engine.snapshot()
    drive(engine, history, status, cut + 4)  # a few more trials after the snapshot: the tail
    records = [t.to_dict() for t in engine.trials]
    import json

    saved = json.loads(json.dumps(saved))  # as stored: JSON, nothing else
    asks = []
    original = Engine.ask

    def counting(self):
        asks.append(1)
        return original(self)

    Engine.ask = counting
    try:
        replayed = Engine.replay(s, records, "st", snapshots=[saved])
    finally:
        Engine.ask = original
    assert len(asks) == len(records) - saved["proposed"]  # only the tail went through SMAC
    for _ in range(10):
        a, b = engine.ask(), replayed.ask()
        if a is None:
            assert b is None
            t = engine.running[0]
            for e in (engine, replayed):
                e.tell(t.index, score(t.config), checkpoint=f"s3://b/{t.index}", checksum="0")
            continue
        assert (a.index, a.phase, a.config, a.teacher, a.student, a.vector) == \
            (b.index, b.phase, b.config, b.teacher, b.student, b.vector)
        for e in (engine, replayed):
            e.tell(a.index, score(a.config), checkpoint=f"s3://b/{a.index}", checksum="0")


def test_a_snapshot_that_does_not_fit_the_records_is_not_used():
    s = spec(trials=30)
    engine = Engine(s, "st")
    drive(engine, History(ConfigMapKube(), "ns", "st", UID, 10_000), {}, 12)
    saved = engine.snapshot()
    records = [t.to_dict() for t in engine.trials]
    records[2]["config"] = {**records[2]["config"], "lr": 0.3}  # the records say otherwise
    with pytest.raises(Exception, match="replays as"):
        Engine.replay(s, records, "st", snapshots=[saved])  # not the snapshot: the full replay, which refuses
    tampered = {**saved, "digest": saved["digest"]}
    tampered["smac"] = {"warmup": {**saved["smac"]["warmup"], "rngs": {}}}
    good = [t.to_dict() for t in engine.trials]
    replayed = Engine.replay(s, good, "st", snapshots=[tampered])  # unusable RNGs: falls back, still exact
    t = engine.running[0]
    for e in (engine, replayed):
        e.tell(t.index, score(t.config), checkpoint=f"s3://b/{t.index}", checksum="0")
    a, b = engine.ask(), replayed.ask()
    assert (a.index, a.config) == (b.index, b.config)
