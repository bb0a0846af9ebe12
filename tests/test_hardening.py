"""What a hostile trial, a recreated study or a spec edit can do to the operator (issue 22):
each a failed trial or an ignored edit, never a stalled study, a wrong result or an exception
out of a reconcile step. The real control plane's side is in test_operator.py."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging

import pytest
from boss.trial import checked_result, parse_result_file, parse_result_message, result_message
from boss_operator.config import OperatorConfig
from boss_operator.engine import FAILED, SUCCEEDED, Engine, Trial
from boss_operator.jobs import CONTAINER
from boss_operator.study import STATUS_TOP_K, StudyReconciler
from boss_operator.watched import Watched
from conftest import digits_doc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

UID = "uid-now"
SHA = "ab" * 32
CONFIG = OperatorConfig(pushgateway="http://127.0.0.1:9", storage_uri="s3://ckpt/", poll_seconds=0,
                        trainer_image="registry.example/boss-trainer:1")


def good(**changes) -> dict:
    """A termination message as a trial of study s leaves it."""
    msg = {"boss": 1, "study": "s", "trial": 0, "phase": "warmup", "metric": "val_accuracy", "value": 0.9,
           "sha256": SHA, "checkpoint": "s3://ckpt/default/s/trial-0000/model.safetensors", "best_epoch": 1,
           "stopped_early": None, "seconds": 3.5, "test": {"test_accuracy": 0.8}, "curve": [0.9]}
    msg.update(changes)
    return msg


class FakeKube:
    """An API server in a dict: one study, the Jobs the operator creates, and the pod each
    finished Job left with the termination message a test chooses."""

    def __init__(self, spec: dict, uid: str = UID):
        self.obj = {"apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy",
                    "metadata": {"name": "s", "namespace": "default", "uid": uid}, "spec": spec}
        self.jobs: dict[str, dict] = {}
        self.messages: dict[str, str] = {}  # job name -> the termination message of its pod
        self.statuses, self.events, self.deleted = [], [], []

    def get_study(self, namespace, name):
        return copy.deepcopy(self.obj)

    def patch_status(self, namespace, name, status):
        self.statuses.append(copy.deepcopy(status))
        self.obj = {**self.obj, "status": {**(self.obj.get("status") or {}), **copy.deepcopy(status)}}

    def create_job(self, namespace, body):
        name = body["metadata"]["name"]
        if name in self.jobs:
            return False
        self.jobs[name] = {**copy.deepcopy(body), "metadata": {**body["metadata"], "uid": f"job-{name}"}}
        return True

    def finish(self, name: str, message: str) -> None:
        self.jobs[name]["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}],
                                     "completionTime": "2026-01-01T00:00:00Z"}
        self.messages[name] = message

    def list_jobs(self, namespace, study):
        return copy.deepcopy(self.jobs)

    def list_pods(self, namespace, job):
        if job not in self.messages:
            return []
        return [{"metadata": {"ownerReferences": [{"uid": self.jobs[job]["metadata"]["uid"], "controller": True}]},
                 "status": {"containerStatuses": [{"name": CONTAINER, "state": {"terminated": {
                     "exitCode": 0, "message": self.messages[job], "finishedAt": "2026-01-01T00:00:00Z"}}}]}}]

    def delete_job(self, namespace, name):
        self.deleted.append(name)
        self.jobs.pop(name, None)

    def refuses_job(self, namespace, body):
        return None

    def event(self, study, type_, reason, message):
        self.events.append((type_, reason, message))


def spec(**changes) -> dict:
    return digits_doc(**{"spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 1, "maxFailedTrials": 3},
                         **changes})["spec"]


def first_trial_told(message: str) -> dict:
    """A study whose first trial's pod said `message`: the trial as the status records it."""
    kube = FakeKube(spec())
    r = StudyReconciler(kube, CONFIG, "default", "s")
    assert r.step() is not None and "s-t0000" in kube.jobs
    kube.finish("s-t0000", message)
    assert r.step() is not None  # never an exception out of the step
    return kube.statuses[-1]["trials"][0]


HOSTILE = {
    "a 400-digit value": '{"boss":1,"study":"s","trial":0,"metric":"val_accuracy","value":' + "9" * 400 + "}",
    "a 400-digit curve": json.dumps(good(curve=[])).replace("[]", "[" + "9" * 400 + "]"),
    "a 400-digit test metric": json.dumps(good(test={"t": 1})).replace('"t": 1', '"t": ' + "9" * 400),
    "2,000 nested lists": json.dumps(good(curve=[])).replace("[]", "[" * 2000 + "]" * 2000),
    "NaN value": json.dumps(good(value=float("nan"))),
    "Infinity value": json.dumps(good(value=float("inf"))),
    "1e400 value": json.dumps(good()).replace("0.9,", "1e400,", 1),
    "no sha256": json.dumps(good(sha256=None)),
    "seconds as text": json.dumps(good(seconds="12")),
    "best_epoch as text": json.dumps(good(best_epoch="3")),
    "stopped_early as a list": json.dumps(good(stopped_early=[1])),
    "a test metric as text": json.dumps(good(test={"test_accuracy": "0.9"})),
    "a phase of its own": json.dumps(good(phase="x" * 100)),
    "another trial's": json.dumps(good(trial=3)),
    "a checkpoint elsewhere": json.dumps(good(checkpoint="s3://elsewhere/model.safetensors")),
    "not UTF-8 JSON": '{"boss": 1, "study": "\udcff"}',
}


@pytest.mark.parametrize("why", HOSTILE)
def test_a_hostile_termination_message_fails_its_trial_with_one_line(why):
    t = first_trial_told(HOSTILE[why])
    assert t["state"] == FAILED and t["value"] is None, why
    assert "\n" not in t["message"] and len(t["message"]) < 600, t["message"]


def test_a_diverged_trial_is_recorded_as_diverged_not_failed():
    msg = good(value=None, sha256=None, checkpoint=None, diverged=True, curve=[None, None])
    t = first_trial_told(json.dumps(msg))
    assert t["state"] == "diverged" and t["value"] is None and t["checksum"] is None
    assert t["extra"]["curve"] == [None, None]
    # a diverged result that claims a checkpoint is no result
    t = first_trial_told(json.dumps({**msg, "sha256": SHA}))
    assert t["state"] == FAILED and "diverged result has a checkpoint" in t["message"]
    # a result with a value that says diverged (it blew up after its best epoch) is a result
    t = first_trial_told(json.dumps(good(diverged=True)))
    assert t["state"] == SUCCEEDED and t["value"] == 0.9


def test_a_good_message_is_recorded_with_typed_fields():
    t = first_trial_told(json.dumps(good(seconds=3, best_epoch=1, test={"test_accuracy": 1})))
    assert t["state"] == SUCCEEDED and t["value"] == 0.9 and t["checksum"] == SHA
    assert t["extra"]["seconds"] == 3.0 and isinstance(t["extra"]["seconds"], float)
    assert t["extra"]["test"] == {"test_accuracy": 1.0} and t["extra"]["curve"] == [0.9]


# ---- the parser against anything (hypothesis) --------------------------------------------------

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
FIELDS = ["boss", "study", "trial", "phase", "metric", "value", "sha256", "checkpoint", "best_epoch",
          "stopped_early", "seconds", "test", "curve", "truncated", "history", "diverged"]


def _spell(text: str) -> str:
    """NaN and infinities spelled every way JSON parsers have been known to accept or not."""
    for a, b in (("NaN", "nan"), ("Infinity", "inf"), ("1e999", "-1e999")):
        text = text.replace(a, b) if len(text) % 3 == 0 else text
    return text


def _is_checked(r: dict) -> None:
    assert set(r) <= {"study", "trial", "metric", "value", "sha256", "checkpoint", "phase", "best_epoch",
                      "stopped_early", "seconds", "test", "curve", "truncated", "diverged"}
    if r.get("diverged"):  # trained, objective never finite: no value, no checkpoint
        assert r["value"] is None and r["sha256"] is None and r["checkpoint"] is None
    else:
        assert isinstance(r["value"], float) and isinstance(r["sha256"], str)
    assert isinstance(r["trial"], int)
    assert r["seconds"] is None or isinstance(r["seconds"], float)
    assert r["best_epoch"] is None or type(r["best_epoch"]) is int
    assert r["stopped_early"] is None or type(r["stopped_early"]) is int
    assert all(isinstance(v, float) for v in r["test"].values())
    assert all(v is None or isinstance(v, float) for v in r["curve"])
    json.dumps(r, allow_nan=False)  # what the status and the clients get


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), junk), max_size=4), st.booleans(), st.integers(0, 4))
def test_any_message_is_a_checked_result_or_one_line_of_why(changes, as_file, wrap):
    msg = good()
    for k, v in changes:
        msg[k] = v
    text = json.dumps(msg, allow_nan=True)
    text = "[" * wrap * 600 + text + "]" * wrap * 600 if wrap > 2 else _spell(text)
    text = text[-4096:] if len(text) > 4096 and wrap == 4 else text  # what a kubelet keeps
    try:
        r = parse_result_file(text.encode(), "val_accuracy") if as_file else parse_result_message(text)
    except ValueError as e:
        assert "\n" not in str(e) and len(str(e)) < 400, str(e)
    else:
        _is_checked(r)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096) | st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_any_bytes_are_a_checked_result_or_one_line_of_why(data):
    for parse in (lambda: parse_result_file(data, "m"), lambda: parse_result_message(data.decode(errors="replace"))):
        try:
            _is_checked(parse())
        except ValueError as e:
            assert "\n" not in str(e), str(e)


def test_a_result_file_with_a_text_seconds_is_refused_not_recorded():
    result = {**good(), "history": [{"val_accuracy": 0.9}], "seconds": "12"}
    del result["curve"]
    with pytest.raises(ValueError, match="seconds"):
        parse_result_file(json.dumps(result), "val_accuracy")
    result["seconds"] = 12
    assert parse_result_file(json.dumps(result), "val_accuracy")["curve"] == [0.9]
    # what the trial writes passes its own check
    assert checked_result(json.loads(result_message({**result, "stopped_early": 2})))["stopped_early"] == 2


# ---- a recreated study --------------------------------------------------------------------------


def test_a_job_left_by_an_earlier_study_of_the_same_name_is_deleted_not_adopted():
    kube = FakeKube(spec())
    r = StudyReconciler(kube, CONFIG, "default", "s")
    # the earlier study's trial 0: finished, orphaned (`kubectl delete --cascade=orphan`), its
    # message right in every field the operator checks
    old = FakeKube(spec(), uid="uid-before")
    StudyReconciler(old, CONFIG, "default", "s").step()
    old.finish("s-t0000", json.dumps(good(value=0.99)))
    kube.jobs, kube.messages = old.jobs, old.messages
    kube.jobs["s-t0000"]["metadata"]["ownerReferences"] = []
    assert r.step() is not None
    assert kube.deleted == ["s-t0000"] and [e[1] for e in kube.events].count("StaleJobDeleted") == 1
    trials = kube.statuses[-1]["trials"]
    assert [t["state"] for t in trials] == ["running"]  # not told 0.99
    assert r.step() is not None  # the stale Job gone: this study's own is created
    assert kube.jobs["s-t0000"]["metadata"]["ownerReferences"][0]["uid"] == UID


# ---- status.studySpec ---------------------------------------------------------------------------


def test_an_edit_seen_before_the_first_status_cannot_replace_the_started_spec():
    """The watch shows the user's edit (made before the operator's first status write landed)
    without that status: the study still runs as it started."""
    started = spec()
    kube = FakeKube(started)
    watched = Watched()
    r = StudyReconciler(kube, dataclasses.replace(CONFIG, poll_seconds=60), "default", "s", watched)
    watched.put_study(("default", "s"), kube.get_study("default", "s"))
    assert r.step() is not None
    written = kube.statuses[-1]["studySpec"]
    assert written == started
    edited = copy.deepcopy(started)
    edited["trainer"]["epochs"] = 7
    edited["searchSpace"]["lr"]["high"] = 0.5
    # the edit's watch event: the object as it was before the operator's status write
    watched.put_study(("default", "s"), {**{k: v for k, v in kube.obj.items() if k != "status"}, "spec": edited})
    kube.finish("s-t0000", json.dumps(good()))
    assert r.step() is not None
    assert kube.statuses[-1]["studySpec"] == started
    assert all(json.loads(_env(j))["epochs"] == started["trainer"]["epochs"] for j in kube.jobs.values())


def _env(job: dict) -> str:
    return next(e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "BOSS_TRIAL")


# ---- the status's size ----------------------------------------------------------------------------


class ConfigMaps(FakeKube):
    def __init__(self, spec):
        super().__init__(spec)
        self.cms = {}

    def create_config_map(self, namespace, body):
        if body["metadata"]["name"] in self.cms:
            return False
        self.cms[body["metadata"]["name"]] = body
        return True

    def read_config_map(self, namespace, name):
        return self.cms.get(name)


def test_the_status_stays_under_etcds_limit_at_the_specs_bounds():
    """topK 10,000, parallelism 1,000 running trials with early-stopping thresholds at many
    epochs, and a tail of finished trials each with a termination message's worth of curve."""
    doc = spec(**{"spec.budget": {"trials": 20_000, "warmupTrials": 20_000, "parallelism": 1000},
                  "spec.boss.topK": 10_000, "spec.trainer.epochs": 100_000,
                  "spec.earlyStopping": {"rule": "median", "graceEpochs": 1, "minTrials": 1},
                  "spec.suspend": True})  # no trial asked of SMAC: the test makes them
    kube = ConfigMaps(doc)
    r = StudyReconciler(kube, CONFIG, "default", "s")
    r.step()  # the engine and history, and the first trial
    e = r.engine
    e.trials.clear()
    curve = json.loads(result_message({**good(), "history": [{"val_accuracy": 0.5 + i / 7e5} for i in range(100_000)]}))
    for i in range(12_000 + 99):  # finished: 120 chunks archived, 99 in the tail
        t = Trial(index=i, phase="warmup", config={"lr": 0.01 + i / 1e6, "batch_size": 64, "optimizer": "adam"},
                  state=SUCCEEDED, value=0.5 + i / 1e6, told=i, checksum=SHA, vector="A" * 64,
                  checkpoint=f"s3://ckpt/default/s/trial-{i:05d}/model.safetensors",
                  extra={"curve": curve["curve"], "test": {"test_accuracy": 0.9}, "seconds": 1.0})
        e.trials.append(t)
    e._told = len(e.trials)
    thresholds = {str(k): 0.5 + k / 1e6 for k in range(1, len(curve["curve"]))}
    for _ in range(1000):  # running, each with its thresholds in memory
        e.trials.append(Trial(index=len(e.trials), phase="warmup", config={"lr": 0.1, "batch_size": 64},
                              asked_after=e._told, vector="A" * 64,
                              extra={"earlyStop": {"rule": "median", "thresholds": thresholds}, "started": 1.0}))
    r._write_status(kube.obj, r.study, False)
    status = kube.statuses[-1]
    size = len(json.dumps({"status": status, "spec": doc}))
    assert size < 1024 * 1024, size  # etcd's default limit is 1.5 MiB for the whole object
    assert len(status["topK"]) == STATUS_TOP_K and status["topKSize"] == 10_000
    assert len(status["trials"]) == 99 + 1000 and not any("earlyStop" in t["extra"] for t in status["trials"])


def test_thresholds_left_out_of_the_record_are_computed_again_the_same():
    from boss.spec import parse_study
    from boss_operator.history import record
    from boss_operator.trials import make_trial_spec

    study = parse_study(digits_doc(**{"spec.budget": {"trials": 12, "warmupTrials": 12, "parallelism": 3},
                                      "spec.trainer.epochs": 6,
                                      "spec.earlyStopping": {"rule": "median", "graceEpochs": 1, "minTrials": 2}}))
    e = Engine(study.spec, "s")
    asked = []
    while len(e.trials) < 12:
        while len(e.running) < 3 and (t := e.ask()) is not None:
            asked.append(t)
        t = e.running[-1]  # the newest first: results come in out of order
        e.tell(t.index, 0.5 + t.index / 100, checkpoint="s3://b/x", checksum=SHA)
        t.extra["curve"] = [0.1 * k + t.index / 100 for k in range(1, 7)]
    rules = [t.extra.get("earlyStop") for t in asked]
    assert sum(r is not None for r in rules) >= 6
    replayed = Engine.replay(study.spec, [record(t) for t in e.trials], "s")
    assert [make_trial_spec(study, replayed, t, "s3://ckpt").early_stop for t in replayed.trials] == \
        [make_trial_spec(study, e, t, "s3://ckpt").early_stop for t in e.trials]


# ---- a deleted study's late event ---------------------------------------------------------------


def test_a_deleted_studys_event_leaves_a_new_study_of_that_name_alone(monkeypatch):
    import kopf
    from boss_operator import handlers

    forgotten = []
    monkeypatch.setattr(handlers, "forget_pushgateway_groups", lambda *a: forgotten.append(a))
    memo = kopf.Memo(watched=Watched(), config=CONFIG)
    key = ("default", "s")
    wake = memo.watched.wake_event(key)
    memo.watched.put_study(key, {"metadata": {"name": "s", "uid": "new"}, "spec": {}})
    old_status = {"trials": [{"index": 0}], "history": {"trials": 0}}
    asyncio.run(handlers.study_changed(type="DELETED", uid="old", name="s", namespace="default", spec={},
                                       status=old_status, body={}, memo=memo, logger=logging.getLogger("t")))
    assert memo.watched.wake_event(key) is wake and memo.watched.study(key) and not forgotten
    memo.watched.forget(key)
    asyncio.run(handlers.study_changed(type="DELETED", uid="old", name="s", namespace="default", spec={},
                                       status=old_status, body={}, memo=memo, logger=logging.getLogger("t")))
    assert forgotten  # no successor: its groups go


# ---- an interrupt while a trial starts (boss run) --------------------------------------------------


@pytest.fixture
def foreground(monkeypatch):
    """Ctrl-C as an interactive shell's foreground job gets it (KeyboardInterrupt), whatever an
    earlier test of this process left (Lightning ignores SIGINT once it saw a KeyboardInterrupt;
    a `boss run` in-process ignores it after its first press)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_right_after_a_trial_process_started_still_stops_it(tmp_path, foreground):
    """The process exists before the run holds its handle; a Ctrl-C in between must not leave
    it running on its own (in its own session) beside the next `boss run` of the same trial."""
    import os
    import signal
    import time

    from boss.spec import parse_study
    from boss_operator.local import Interrupted, LocalRun
    from boss_operator.workers import ColdLauncher, _gone

    started = []

    class CtrlCAfterStart(ColdLauncher):
        def start(self, env, cwd, log_path):
            proc = super().start(env, cwd, log_path)
            started.append(proc.pid)
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, the moment the process exists
            time.sleep(0.2)
            return proc

    study = parse_study(digits_doc(**{"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 1},
                                      "spec.trainer.epochs": 500}))  # minutes: it would not end by itself
    run = LocalRun(study, tmp_path / "run", launcher=CtrlCAfterStart(), workdir=tmp_path)
    try:
        with pytest.raises(Interrupted):
            run.run()
        assert len(started) == 1
        deadline = time.time() + 5
        while not _gone(started[0]):
            assert time.time() < deadline, "the trial's process runs on after the run stopped"
            time.sleep(0.1)
        assert run.engine.running and run.interrupted  # the trial is continued by the next run
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_ctrl_c_inside_a_tell_saves_the_result_whole(tmp_path, monkeypatch, foreground):
    """A Ctrl-C that lands while a result is being told (its place in the order set, its state
    not yet) must not save a trial that a later run replays as failed."""
    import os
    import signal

    from boss.runs import read_state
    from boss.spec import parse_study
    from boss_operator import engine as engine_module
    from boss_operator.local import Interrupted, LocalRun

    fired = []
    setattr_ = engine_module.Trial.__setattr__

    def ctrl_c_when_told(self, name, value):
        setattr_(self, name, value)
        if name == "told" and value is not None and not fired:
            fired.append(self.index)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(engine_module.Trial, "__setattr__", ctrl_c_when_told)
    study = parse_study(digits_doc(**{"spec.budget": {"trials": 3, "warmupTrials": 3, "parallelism": 1},
                                      "spec.trainer.epochs": 1}))
    run = LocalRun(study, tmp_path / "run", workdir=tmp_path)
    with pytest.raises(Interrupted):
        run.run()
    assert fired == [0]
    saved = read_state(tmp_path / "run")["trials"][0]
    assert saved["state"] == SUCCEEDED and saved["told"] == 0 and saved["value"] is not None, saved


# ---- the operator's own settings ----------------------------------------------------------------


@pytest.mark.parametrize("slip", ["pushgateway", "storage_uri", "trainer_image", "allow-list"])
def test_an_operator_restarted_with_a_settings_slip_holds_started_studies_and_fails_none(slip):
    named = spec(**{"spec.metrics": {"pushgateway": "http://127.0.0.1:19"}}) if slip == "allow-list" else spec()
    before = dataclasses.replace(CONFIG, allowed_metrics_urls=("http://127.0.0.1:19",))
    kube = FakeKube(named)
    assert StudyReconciler(kube, before, "default", "s").step() is not None
    assert kube.statuses[-1]["phase"] == "WarmingUp" and len(kube.jobs) == 1
    slipped = dataclasses.replace(CONFIG, **({"allowed_metrics_urls": ()} if slip == "allow-list" else {slip: None}))
    held = StudyReconciler(kube, slipped, "default", "s")
    for _ in range(3):  # restarted with the slip: the study waits, whatever the number of steps
        assert held.step() is not None
    assert kube.obj["status"]["phase"] == "WarmingUp" and len(kube.jobs) == 1
    ready = [c for c in kube.obj["status"]["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "False" and ready["reason"] == "OperatorConfig"
    assert [e[1] for e in kube.events].count("OperatorConfig") == 1
    kube.finish("s-t0000", json.dumps(good()))
    assert StudyReconciler(kube, before, "default", "s").step() is not None  # restarted as it was
    ready = [c for c in kube.obj["status"]["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "True" and kube.obj["status"]["trialsCompleted"] == 1 and len(kube.jobs) == 2


# ---- one writer per run folder (issue 23) -------------------------------------------------------


def test_a_second_boss_run_on_the_same_folder_is_refused_in_one_line_and_fresh_keeps_the_old_run(tmp_path):
    import subprocess
    import sys
    import time

    import yaml

    doc = digits_doc(**{"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 1},
                        "spec.trainer.epochs": 300})  # runs until stopped
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(doc))
    run = [sys.executable, "-m", "boss.cli", "run", "study.yaml", "--run-dir", "run", "-q"]
    first = subprocess.Popen(run, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list((tmp_path / "run" / "trials").glob("*/log.txt")):
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.2)
        for args in ([], ["--fresh"]):
            second = subprocess.run(run + args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 2 and len(lines) == 1, second.stderr
            assert "another `boss run` is writing to this folder" in lines[0] and f"pid {first.pid}" in lines[0]
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert first.returncode == 130  # stopped cleanly, nothing of its state lost to the second
    saved = (tmp_path / "run" / "state.json").read_text()
    doc["spec"]["trainer"]["epochs"] = 1
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(doc))
    fresh = subprocess.run([sys.executable, "-m", "boss.cli", "run", "short.yaml", "--run-dir", "run", "-q", "--fresh"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and (aside[0] / "state.json").read_text() == saved, fresh.stderr
    assert f"kept in {aside[0].name}" in fresh.stderr


# ---- what a user reads (issue 23) ---------------------------------------------------------------


def test_a_missing_conditional_hyperparameter_and_a_huge_loss_read_well(tmp_path):
    import os
    import subprocess
    import sys

    from boss.loop import _num
    from boss.store import to_uri
    from boss.trial import TrialSpec

    assert (_num(0.96100123), _num(3.2e31), _num(float("nan")), _num(float("inf"))) == ("0.9610", "3.2e+31", "nan", "inf")
    (tmp_path / "cond.py").write_text("from boss.trainers.digits import DigitsTrainer\n\n\nclass UsesMomentum(DigitsTrainer):\n"
                                      "    def configure_model(self):\n        self.config['momentum']\n"
                                      "        return super().configure_model()\n")
    spec = TrialSpec(study="s", index=0, phase="warmup", config={"lr": 0.1, "optimizer": "adamw"},
                     plugin="cond:UsesMomentum", epochs=1, output_uri=to_uri(tmp_path / "out"),
                     metrics_textfile=str(tmp_path / "m.prom"))
    r = subprocess.run([sys.executable, "-m", "boss.trial"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **spec.to_env(), "PYTHONPATH": str(tmp_path)})
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and "KeyError: 'momentum'" in last and "absent when its `when` is false" in last, last


def test_a_finished_cluster_study_whose_budget_grows_goes_on_with_its_trials_kept():
    """`kubectl edit` of budget.trials on a Succeeded study: the event handler sets it Resuming
    (its daemon's filter then starts it again), the next step adopts the grown budget, runs the
    extra trial, and the status keeps every earlier trial as it was."""
    import kopf
    from boss_operator import handlers

    kube = FakeKube(spec(**{"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2}}))
    r = StudyReconciler(kube, CONFIG, "default", "s")
    r.step()
    for name in ("s-t0000", "s-t0001"):
        kube.finish(name, json.dumps(good(trial=int(name[-1]), checkpoint=f"s3://ckpt/default/s/trial-000{name[-1]}/"
                                              "model.safetensors", value=0.5 + int(name[-1]) / 10)))
    assert r.step() is None and kube.obj["status"]["phase"] == "Succeeded"
    before = copy.deepcopy(kube.obj["status"]["trials"])
    assert not handlers._not_over(kube.obj["status"])  # kopf stops (and does not start) its daemon
    grown = copy.deepcopy(kube.obj["spec"])
    grown["budget"]["trials"] = 3
    kube.obj["spec"] = grown
    memo = kopf.Memo(kube=kube)
    asyncio.run(handlers._resume_if_grown("default", "s", copy.deepcopy(kube.obj), memo, logging.getLogger("t")))
    assert kube.obj["status"]["phase"] == "Resuming" and handlers._not_over(kube.obj["status"])
    again = StudyReconciler(kube, CONFIG, "default", "s")  # the daemon, started again
    assert again.step() is not None and "s-t0002" in kube.jobs
    assert kube.obj["status"]["studySpec"]["budget"]["trials"] == 3
    assert "BudgetGrown" in [e[1] for e in kube.events]
    kube.finish("s-t0002", json.dumps(good(trial=2, phase="boss", checkpoint="s3://ckpt/default/s/trial-0002/"
                                                                            "model.safetensors")))
    assert again.step() is None
    status = kube.obj["status"]
    assert status["phase"] == "Succeeded" and len(status["trials"]) == 3 and status["trials"][:2] == before
    assert status["engine"]["smacTrials"] == {"warmup": 2, "boss": 1}  # the sizes it started with
    # any other edit of a finished study changes nothing
    other = copy.deepcopy(kube.obj["spec"])
    other["trainer"]["epochs"] = 9
    kube.obj["spec"] = other
    asyncio.run(handlers._resume_if_grown("default", "s", copy.deepcopy(kube.obj), memo, logging.getLogger("t")))
    assert kube.obj["status"]["phase"] == "Succeeded"


def test_a_cluster_study_whose_first_trials_fail_alike_stops_and_goes_on_once_its_budget_grows():
    """The first two Jobs fail with the same message: Failed (RepeatedFailure) with an Event,
    two Jobs spent instead of four; raising maxFailedTrials (`kubectl patch`) lets it go on."""
    import kopf
    from boss_operator import handlers

    kube = FakeKube(spec(**{"spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 3}}))
    r = StudyReconciler(kube, CONFIG, "default", "s")
    r.step()
    for name in ("s-t0000", "s-t0001"):
        kube.finish(name, "Traceback: FileNotFoundError: /data/train.csv")  # not a result: the trial failed
    assert r.step() is None
    status = kube.obj["status"]
    assert status["phase"] == "Failed" and len(status["trials"]) == 2, status.get("conditions")
    assert [e[1] for e in kube.events if e[0] == "Warning"][-1] == "RepeatedFailure"
    assert sorted(kube.jobs) == ["s-t0000", "s-t0001"]
    grown = copy.deepcopy(kube.obj["spec"])
    grown["budget"]["maxFailedTrials"] = 4
    kube.obj["spec"] = grown
    asyncio.run(handlers._resume_if_grown("default", "s", copy.deepcopy(kube.obj), kopf.Memo(kube=kube),
                                          logging.getLogger("t")))
    again = StudyReconciler(kube, CONFIG, "default", "s")
    assert again.step() is not None and "s-t0002" in kube.jobs  # a warm-up trial more: none succeeded yet
    assert kube.obj["status"]["engine"]["failureFloor"] == 2 and kube.obj["status"]["phase"] != "Failed"
