"""A study's size on a real control plane: history in ConfigMaps, bounded status, exact replay
after a SIGKILL, `boss trials` as a user who may only read the namespace, and a finished Job
waking its study long before the safety poll (boss_operator/history.py, watched.py)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from boss.history import LABEL_HISTORY, LABEL_STUDY, read_trials
from boss.spec import parse_study
from boss_operator.engine import Engine
from kubernetes import client
from test_operator import FINAL_PHASES, boss_cli, cluster, get, jobs_of, pods_run, study_doc, wait_phase  # noqa: F401

CHUNK = 2


def watch_sizes(c, name, stop, seen):
    """Sample the study while it runs: the trials its status holds and its size in bytes."""
    while not stop.is_set():
        try:
            obj = get(c, name)
            status = obj.get("status") or {}
            seen.append((len(status.get("trials") or []), len(json.dumps(obj)), status.get("trialsCompleted") or 0))
        except client.ApiException:
            pass
        time.sleep(0.2)


def reader_kubeconfig(c, user: str):
    """A user who may only read, and only in the study's namespace: BossStudies and ConfigMaps
    (what the built-in `view` role grants; this control plane runs no role aggregation)."""
    rbac = client.RbacAuthorizationV1Api(c.api)
    read = ["get", "list", "watch"]
    rbac.create_namespaced_role(c.ns, {"metadata": {"name": "boss-reader"}, "rules": [
        {"apiGroups": ["boss.automl.io"], "resources": ["bossstudies"], "verbs": read},
        {"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": read}]})
    rbac.create_namespaced_role_binding(c.ns, {
        "metadata": {"name": f"{user}-boss-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "boss-reader"},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    return c.k8s.client_kubeconfig(user, (), c.tmp / f"{user}.kubeconfig")


@pytest.mark.slow
def test_a_study_over_several_history_configmaps_survives_a_kill_with_an_exact_replay(cluster):  # noqa: F811
    c = cluster
    c.op.env["BOSS_HISTORY_CHUNK"] = str(CHUNK)
    budget = {"trials": 9, "warmupTrials": 3, "parallelism": 2, "maxFailedTrials": 2}
    c.op.start()
    stop, seen = threading.Event(), []
    with c.node():
        sampler = threading.Thread(target=watch_sizes, args=(c, "killed", stop, seen), daemon=True)
        sampler.start()
        c.apply(study_doc(c, "killed", **{"spec.budget": budget}))
        deadline = time.time() + 600
        while ((get(c, "killed").get("status") or {}).get("history") or {}).get("configMaps", 0) < 3:
            assert time.time() < deadline, c.op.log()[-3000:]
            time.sleep(0.2)
        c.op.kill()  # three chunks written: the restart reads them (and the snapshot kept with them)
        c.op.start()
        killed = wait_phase(c, "killed", FINAL_PHASES, timeout=600)
        stop.set()
    assert killed["status"]["phase"] == "Succeeded", killed["status"].get("conditions")
    core = client.CoreV1Api(c.api)
    every = read_trials(core, killed)
    assert [t["index"] for t in every] == list(range(9))
    # exact: a fresh engine, asked trial by trial in the recorded order of results, proposes every
    # recorded trial (config, teacher, student) again; it raises at the first difference
    doc = {"apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy", "metadata": {"name": "killed"},
           "spec": killed["status"]["studySpec"]}
    replayed = Engine.replay(parse_study(doc).spec, every, "killed")
    assert len(replayed.trials) == 9 and all(t.done for t in replayed.trials)
    assert "does not replay" not in c.op.log()  # the restart used its snapshot
    names = [f"killed-t{i:04d}" for i in range(9)]
    assert [j.metadata.name for j in jobs_of(c, "killed")] == names and [pods_run(c, n) for n in names] == [1] * 9
    assert "replayed" in c.op.log() and "ReplayFailed" not in c.op.log()
    # the status holds a chunk's worth of results plus the running trials, however far the study went
    assert seen and max(n for n, _, _ in seen) <= CHUNK + budget["parallelism"]
    history = killed["status"]["history"]
    assert history["configMaps"] == 9 // CHUNK and history["trials"] == 9 // CHUNK * CHUNK
    cms = core.list_namespaced_config_map(c.ns, label_selector=f"{LABEL_STUDY}=killed,{LABEL_HISTORY}=trials").items
    assert len(cms) == history["configMaps"]
    assert all(cm.immutable and cm.metadata.owner_references[0].uid == killed["metadata"]["uid"] for cm in cms)
    # `boss trials` as a user with read rights in this namespace only lists every trial
    kubeconfig = reader_kubeconfig(c, "alice")
    out = boss_cli(c, "trials", "killed", "-n", c.ns, "-o", "json", kubeconfig=kubeconfig)
    assert out.returncode == 0, out.stderr
    assert [t["index"] for t in json.loads(out.stdout)] == list(range(9))
    # without the right to read ConfigMaps: one line saying so, never a partial list
    nobody = c.k8s.client_kubeconfig("bob", (), c.tmp / "bob.kubeconfig")
    client.RbacAuthorizationV1Api(c.api).create_namespaced_role_binding(c.ns, {
        "metadata": {"name": "bob-studies"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "boss-reader-studies"},
        "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]})
    client.RbacAuthorizationV1Api(c.api).create_namespaced_role(c.ns, {
        "metadata": {"name": "boss-reader-studies"}, "rules": [
            {"apiGroups": ["boss.automl.io"], "resources": ["bossstudies"], "verbs": ["get", "list"]}]})
    out = boss_cli(c, "trials", "killed", "-n", c.ns, kubeconfig=nobody)
    assert out.returncode == 1 and "403" in out.stderr and "configmaps" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    # deleting the study deletes its history (ownerReferences: the garbage collector)
    client.CustomObjectsApi(c.api).delete_namespaced_custom_object("boss.automl.io", "v1alpha1", c.ns,
                                                                    "bossstudies", "killed")
    deadline = time.time() + 60
    while core.list_namespaced_config_map(c.ns, label_selector=f"{LABEL_STUDY}=killed").items:
        assert time.time() < deadline, "the history ConfigMaps outlived their study"
        time.sleep(0.5)


def test_a_finished_job_wakes_its_study_long_before_the_safety_poll(cluster):  # noqa: F811
    c = cluster
    c.op.env["BOSS_POLL_SECONDS"] = "60"
    c.op.start()
    with c.node():
        c.apply(study_doc(c, "awake", **{"spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 1}}))
        status = wait_phase(c, "awake", FINAL_PHASES, timeout=300)["status"]
    assert status["phase"] == "Succeeded", status.get("conditions")
    jobs = jobs_of(c, "awake")
    gaps = [(b.metadata.creation_timestamp - a.status.completion_time).total_seconds() for a, b in zip(jobs, jobs[1:], strict=False)]
    # each next trial starts within seconds of the last one's end (timestamps have 1 s steps; a
    # loaded 2-core machine adds a few), never after the 60 s poll
    assert len(gaps) == 2 and max(gaps) <= 15, gaps
