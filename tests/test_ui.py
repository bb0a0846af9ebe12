"""`boss ui`: the dashboard, seen in real headless Chromium (over the DevTools protocol) against a
local run that is running, its JSON and event stream against finished runs and bad input, and
(with the real control plane) cluster studies read with a user's own rights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from boss.spec import parse_study
from boss_operator.local import LocalRun
from cdp import Browser, chromium
from conftest import tiny_doc, write_study
from test_chart import FULL, admitted_pod, by_kind, can_i, helm, helm_bin, release, rules_on_server, validate_all  # noqa: F401 (fixtures)
from test_operator import FINAL_PHASES, cluster, study_doc, wait_phase  # noqa: F401 (cluster: a fixture)

BOSS = [sys.executable, "-m", "boss.cli"]
TESTS = Path(__file__).parent


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{path}" if path else str(TESTS)}


@contextmanager
def ui(*args, env=None):
    """`boss ui ARGS --port 0` in its own process group; yields (url, the process, its stderr file)."""
    err = Path(os.environ.get("TMPDIR", "/tmp")) / f"boss-ui-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(err, "w+") as errf:
        proc = subprocess.Popen(BOSS + ["ui", *map(str, args), "--port", "0"], stdout=subprocess.PIPE, stderr=errf,
                                text=True, env={**_env(), **(env or {})}, start_new_session=True)
        try:
            line = proc.stdout.readline()
            assert "http://" in line, f"no URL from boss ui: {line!r} {err.read_text()}"
            yield line.split(" at ")[1].split()[0].rstrip("/"), proc, err
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            proc.stdout.close()
            err.unlink(missing_ok=True)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder of runs: a finished small study (5 trials, 2 warm-up)."""
    root = tmp_path_factory.mktemp("runs")
    doc = tiny_doc(**{"spec.budget": {"trials": 5, "warmupTrials": 2, "parallelism": 2}, "spec.trainer.epochs": 2})
    LocalRun(parse_study(doc), root / "tiny").run()
    return root


# ---- the command and the JSON ---------------------------------------------------------------------


def test_a_path_that_is_not_there_is_one_line_and_exit_2(tmp_path):
    for bad, says in ((tmp_path / "nope", "no such folder"), (write_study(tmp_path, {"a": 1}), "not a folder")):
        r = subprocess.run(BOSS + ["ui", str(bad)], capture_output=True, text=True, timeout=60, env=_env())
        assert r.returncode == 2 and says in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, says in (([str(tmp_path), "--port", str(port)], "cannot listen on 127.0.0.1"),
                           ([str(tmp_path), "--cluster"], "give a run folder or --cluster, not both")):
            r = subprocess.run(BOSS + ["ui", *args], capture_output=True, text=True, timeout=60, env=_env())
            assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_the_json_of_a_finished_run(runs):
    state = json.loads((runs / "tiny" / "state.json").read_text())
    with ui(runs) as (url, _, _):
        status, listing = get(f"{url}/api/studies")
        assert status == 200 and [s["id"] for s in listing["studies"]] == ["tiny"]
        row = listing["studies"][0]
        assert (row["phase"], row["finished"], row["budget"], row["failed"], row["running"]) == ("Succeeded", 5, 5, 0, 0)
        assert row["best"]["value"] == state["best"]["value"] and row["best"]["i"] == state["best"]["index"]
        status, study = get(f"{url}/api/study?id=tiny")
        assert status == 200 and [t["i"] for t in study["trials"]] == [0, 1, 2, 3, 4]
        assert [(t["teacher"], t["student"]) for t in study["trials"]] == [(t["teacher"], t["student"]) for t in state["trials"]]
        assert study["best"] == state["best"]["index"] and set(study["space"]) == set(state["study"]["spec"]["searchSpace"])
        assert "vector" not in study["trials"][0]  # compact rows
        status, trial = get(f"{url}/api/trial?id=tiny&i=3")
        assert status == 200 and trial["log"].startswith("--- trial 3 started") and trial["checksum"] == state["trials"][3]["checksum"]
        status, curves = get(f"{url}/api/curves?id=tiny&trials=0,3")
        assert [r["epoch"] for r in curves["3"]] == [1, 2]
        assert curves["3"][-1]["val_accuracy"] == pytest.approx(state["trials"][3]["extra"]["curve"][-1], abs=1e-4)
        assert {"train_loss", "distill_loss", "val_loss"} <= set(curves["3"][0])
        status, imp = get(f"{url}/api/importance?id=tiny")
        assert status == 200 and "random forest" in imp["method"] and "at least 8" in imp["message"]


def test_bad_input_is_one_line_on_the_page_and_in_the_log(runs, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("{not json")
    (tmp_path / "nothing").mkdir()
    with ui(tmp_path) as (url, _, err):
        for path, code, says in (("/api/study?id=unknown", 404, "no run folder 'unknown'"),
                                 ("/api/study?id=broken", 400, "unreadable run state"),
                                 ("/api/study", 400, "which study")):
            status, body = get(url + path)
            assert status == code and says in body["error"] and "\n" not in body["error"]
        _, listing = get(f"{url}/api/studies")
        assert [s["id"] for s in listing["studies"]] == ["broken"] and "unreadable" in listing["studies"][0]["error"]
        time.sleep(0.3)
        log = err.read_text()
        assert "no run folder 'unknown'" in log and "unreadable run state" in log and "Traceback" not in log
    with ui(runs) as (url, _, _):
        status, body = get(f"{url}/api/trial?id=tiny&i=99")
        assert status == 404 and "no trial 99" in body["error"]
    with ui(tmp_path / "nothing") as (url, _, _):
        _, listing = get(f"{url}/api/studies")
        assert listing["studies"] == [] and "no run folders in" in listing["empty"]


def _events(url: str, timeout: float):
    """The data lines of an event stream, as they come."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: "):
                yield json.loads(line[6:])


def test_an_event_follows_a_change_of_the_run_within_2_s(runs, tmp_path):
    import shutil
    import threading

    shutil.copytree(runs / "tiny", tmp_path / "tiny")
    with ui(tmp_path) as (url, _, _):
        stream = _events(f"{url}/api/events?id=tiny&watch=1", 10)
        first = next(stream)
        assert "state" in first["token"]
        changed = {}

        def touch():
            time.sleep(0.5)
            state = tmp_path / "tiny" / "state.json"
            text = state.read_text() + " "
            changed["at"] = time.monotonic()  # before the write: the event may be read before this thread runs again
            state.write_text(text)

        threading.Thread(target=touch).start()
        second = next(stream)
        assert second["token"]["state"] != first["token"]["state"] and time.monotonic() - changed["at"] < 2.0


# ---- in a browser, against a run that is running ----------------------------------------------------


def _needs_chromium():
    if chromium() is None:
        pytest.skip("Debian's chromium is not installed (make services installs it)")


def _live_doc(name="live"):
    return tiny_doc(**{"metadata.name": name,
                       "spec.budget": {"trials": 6, "warmupTrials": 3, "parallelism": 1, "maxFailedTrials": 2},
                       "spec.trainer.plugin": "ui_trainers:SlowDigits", "spec.trainer.epochs": 4,
                       "spec.trainer.args": {"train_fraction": 0.3, "epoch_seconds": 0.6, "fail_trial": 1}})


def test_the_dashboard_follows_a_running_study_in_chromium(tmp_path):
    _needs_chromium()
    study = write_study(tmp_path, _live_doc())
    runs = tmp_path / "runs"
    runs.mkdir()
    run = subprocess.Popen(BOSS + ["run", str(study), "--run-dir", str(runs / "live"), "-q"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    try:
        with ui(runs) as (url, _, _), Browser() as b:
            b.go(f"{url}/#/")
            b.wait("!!(document.querySelector('#studies tbody tr[data-id=\"live\"]') || document.getElementById('empty'))", 60)
            b.wait("!!document.querySelector('#studies tbody tr[data-id=\"live\"]')", 60)  # appears without a reload
            b.go(f"{url}/#/s/live")
            b.wait("document.querySelectorAll('#trials tbody tr').length >= 1", 60)
            b.js("window.__not_reloaded = true")
            finished_rows = "document.querySelectorAll('#trials tbody tr:not(.running)').length"
            state = runs / "live" / "state.json"
            seen, lags, grew = [], [], False
            curve_points = "(() => { const p = document.querySelector('#curves path.curve[data-trial=\"%d\"]'); return p ? (p.getAttribute('d').match(/L/g) || []).length + 1 : 0; })()"
            last_points: dict[int, int] = {}
            deadline = time.monotonic() + 240
            while run.poll() is None and time.monotonic() < deadline:
                saved = json.loads(state.read_text()) if state.exists() else {"trials": []}
                done = sum(t["state"] != "running" for t in saved["trials"])
                at = time.monotonic()
                while b.js(finished_rows) < done and time.monotonic() - at < 10:
                    time.sleep(0.05)
                if done and (not seen or done > seen[-1]):
                    lags.append(time.monotonic() - at)
                    seen.append(done)
                running = [t["index"] for t in saved["trials"] if t["state"] == "running"]
                for i in running:  # the running trial's curve gains points as its epochs end
                    n = b.js(curve_points % i)
                    if n > last_points.get(i, 0) > 0:
                        grew = True
                    last_points[i] = max(n, last_points.get(i, 0))
                time.sleep(0.2)
            assert run.wait(120) == 0, run.stderr.read()
            saved = json.loads(state.read_text())
            b.wait(f"document.getElementById('phase').textContent === {json.dumps(saved['status'])}", 10)
            b.wait(f"{finished_rows} === 6", 10)
            assert b.js("window.__not_reloaded") is True  # every change came in live
            assert len(seen) >= 3 and seen == sorted(seen), seen  # the table gained rows as trials finished
            print(f"rows appeared {[round(x, 2) for x in lags]} s after state.json said so")
            assert max(lags) < 4.0, lags  # (what the issue asks is 2 s; a loaded 2-core machine gets slack)
            assert grew, last_points  # a running trial's curve grew while the page was open

            # the lineage: a node per succeeded trial at its score, a student and a teacher edge per BOSS trial
            ok = [t for t in saved["trials"] if t["state"] == "succeeded"]
            b.wait(f"document.querySelectorAll('#lineage circle.node').length === {len(ok)}", 10)
            nodes = b.js("[...document.querySelectorAll('#lineage circle.node')].map(c => +c.dataset.trial).sort((a, b) => a - b)")
            assert nodes == [t["index"] for t in ok]
            edges_js = "[...document.querySelectorAll('#lineage path.edge')].map(e => [+e.dataset.from, +e.dataset.to, e.dataset.kind])"
            edges = b.js(edges_js)
            want = [[t[k], t["index"], k] for t in ok for k in ("student", "teacher") if t.get(k) is not None]
            assert sorted(edges) == sorted(want) and want
            hot = b.js("[...document.querySelectorAll('#lineage circle.node.hot')].map(c => +c.dataset.trial)")
            assert saved["best"]["index"] in hot
            ys = "Object.fromEntries([...document.querySelectorAll('#lineage circle.node')].map(c => [c.dataset.trial, +c.getAttribute('cy')]))"
            by_score = b.js(ys)
            b.js("{ const s = document.getElementById('lineage-y'); s.value = 'rank'; s.dispatchEvent(new Event('change')); }")
            by_rank = b.js(ys)  # the same graph, each node at its rank: the best on top, in score order
            assert sorted(by_rank) == sorted(by_score) and sorted(b.js(edges_js)) == sorted(want)
            order = sorted(ok, key=lambda t: (-t["value"], t["index"]))
            assert [by_rank[str(t["index"])] for t in order] == sorted(by_rank.values())
            b.js("{ const s = document.getElementById('lineage-y'); s.value = 'score'; s.dispatchEvent(new Event('change')); }")
            # a click on a node opens its trial
            b.js(f"(() => {{ const c = document.querySelector('#lineage circle.node[data-trial=\"{ok[-1]['index']}\"]'); const r = c.getBoundingClientRect();"
                 f" c.ownerSVGElement.dispatchEvent(new MouseEvent('click', {{clientX: r.x + r.width / 2, clientY: r.y + r.height / 2, bubbles: true}})); }})()")
            b.wait(f"location.hash === '#/s/live/t/{ok[-1]['index']}'", 10)
            b.wait("document.getElementById('log') && document.getElementById('log').textContent.includes('epoch 4/4')", 20)
            assert b.js("document.getElementById('trial-checksum').textContent") == ok[-1]["checksum"]

            # the failed trial: its message as text (it holds HTML), its log
            b.go(f"{url}/#/s/live/t/1")
            b.wait("!!document.getElementById('trial-message')", 20)
            failed = saved["trials"][1]
            assert failed["state"] == "failed"
            assert b.js("document.getElementById('trial-message').textContent") == failed["message"]
            assert b.js("document.querySelectorAll('#trial-message *, #log *, main script').length") == 0
            assert "fails on purpose" in b.js("document.getElementById('log').textContent")

            # the table sorts and filters
            b.go(f"{url}/#/s/live")
            b.wait(f"{finished_rows} === 6", 20)
            b.js("document.querySelector('#trials th[data-key=\"value\"]').click()")
            values = b.js("[...document.querySelectorAll('#trials tbody tr')].map(r => +r.dataset.trial)")
            by_value = sorted((t for t in saved["trials"] if t["value"] is not None), key=lambda t: (-t["value"], t["index"]))
            assert values[:len(by_value)] == [t["index"] for t in by_value]
            b.js("{ const f = document.getElementById('state-filter'); f.value = 'failed'; f.dispatchEvent(new Event('change')); }")
            assert b.js("[...document.querySelectorAll('#trials tbody tr')].map(r => +r.dataset.trial)") == [1]
            assert b.errors == []
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
            run.wait(60)
        run.stderr.close()


# Holds each EventSource the page makes until `window.__open` is set, to put a change of the run
# between the page's first read and its event stream's first token (the CI run that found this
# had the cluster page's curves take long enough for the operator's write to land there).
HELD_EVENTS = """(() => {
  const Real = window.EventSource;
  window.EventSource = function (url) {
    const fake = { onopen: null, onmessage: null, onerror: null, closed: false, real: null,
                   close() { this.closed = true; if (this.real) this.real.close(); } };
    const start = () => {
      if (fake.closed) return;
      if (!window.__open) return setTimeout(start, 50);
      const r = fake.real = new Real(url);
      r.onopen = (e) => fake.onopen && fake.onopen(e);
      r.onmessage = (e) => fake.onmessage && fake.onmessage(e);
      r.onerror = (e) => fake.onerror && fake.onerror(e);
    };
    start();
    return fake;
  };
})();"""


def test_a_change_before_the_event_stream_opens_is_still_shown(runs, tmp_path):
    import shutil

    _needs_chromium()
    shutil.copytree(runs / "tiny", tmp_path / "tiny")
    state = tmp_path / "tiny" / "state.json"
    full = json.loads(state.read_text())
    state.write_text(json.dumps({**full, "trials": full["trials"][:3]}))
    with ui(tmp_path) as (url, _, _), Browser() as b:
        b.send("Page.addScriptToEvaluateOnNewDocument", source=HELD_EVENTS)
        for page, rows in ((f"{url}/#/s/tiny", "#trials tbody tr"), (f"{url}/#/", "#studies tbody tr[data-id=\"tiny\"]")):
            b.go("about:blank")
            state.write_text(json.dumps({**full, "trials": full["trials"][:3]}))
            b.go(page)
            b.wait(f"document.querySelectorAll('{rows}').length === 1" if page.endswith("#/") else
                   "document.querySelectorAll('#trials tbody tr').length === 3", 30)
            b.js("window.__not_reloaded = true")
            state.write_text(json.dumps(full))  # after the page read the run, before its stream opens
            time.sleep(0.3)
            b.js("window.__open = true")
            if page.endswith("#/"):
                b.wait("document.querySelector('#studies tbody tr[data-id=\"tiny\"] td:nth-child(4)').textContent.startsWith('5/')", 10)
            else:
                b.wait("document.querySelectorAll('#trials tbody tr').length === 5", 10)
            assert b.js("window.__not_reloaded") is True


def test_bad_input_on_the_page_in_chromium(tmp_path, runs):
    _needs_chromium()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("[]")
    with ui(tmp_path) as (url, _, _), Browser() as b:
        b.go(f"{url}/#/s/nowhere")
        line = b.wait("document.getElementById('page-error') && document.getElementById('page-error').textContent")
        assert line.startswith("no run folder 'nowhere'") and "\n" not in line
        assert b.js("document.getElementById('error').textContent") == line
        b.go(f"{url}/#/")
        b.wait("!!document.querySelector('#studies tbody tr[data-id=\"broken\"] .message')")
        assert "not a BOSS run state" in b.js("document.querySelector('#studies tbody tr[data-id=\"broken\"] .message').textContent")
    with ui(runs) as (url, _, _), Browser() as b:
        b.go(f"{url}/#/s/tiny/t/42")
        line = b.wait("document.getElementById('page-error') && document.getElementById('page-error').textContent")
        assert "no trial 42" in line
        assert b.errors == [] or all("404" in e for e in b.errors)


# ---- a cluster: the real control plane, read with a user's own rights --------------------------------


def _as_operator_writes(admin, ns: str, name: str, state: dict) -> None:
    """The status and history ConfigMap the operator would write for these trials: the first three
    archived in `<name>-history-0000` (owned by the study), the rest in the status."""
    from boss.history import LABEL_HISTORY, LABEL_STUDY, TRIALS_KEY, chunk_name, pack
    from kubernetes import client

    custom, core = client.CustomObjectsApi(admin), client.CoreV1Api(admin)
    obj = custom.get_namespaced_custom_object("boss.automl.io", "v1alpha1", ns, "bossstudies", name)
    trials = state["trials"]
    core.create_namespaced_config_map(ns, {
        "metadata": {"name": chunk_name(name, 0), "labels": {LABEL_STUDY: name, LABEL_HISTORY: "trials"},
                     "ownerReferences": [{"apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy", "name": name,
                                          "uid": obj["metadata"]["uid"], "controller": True}]},
        "binaryData": {TRIALS_KEY: pack(trials[:3])}, "immutable": True})
    best = state["best"]
    custom.patch_namespaced_custom_object_status("boss.automl.io", "v1alpha1", ns, "bossstudies", name, {"status": {
        "phase": "Succeeded", "trials": trials[3:], "history": {"configMaps": 1, "trials": 3},
        "trialsCompleted": len(trials), "trialsRunning": 0, "trialsQueued": 0,
        "trialsFailed": sum(t["state"] == "failed" for t in trials), "trialsDiverged": 0,
        "best": {"trial": best["index"], "value": best["value"], "checkpoint": best["checkpoint"]}}})


def test_cluster_studies_with_the_users_own_rights(k8s, admin, installed_chart, namespace, runs, tmp_path):
    from kubernetes import client

    _needs_chromium()
    ns = namespace
    state = json.loads((runs / "tiny" / "state.json").read_text())
    study = write_study(tmp_path, tiny_doc(**{"metadata.name": "seen"}))
    k8s.kubectl("apply", "-n", ns, "-f", str(study))
    admin_env = {"KUBECONFIG": str(k8s.kubeconfig)}
    with ui("--cluster", "-n", ns, env=admin_env) as (url, _, _), Browser() as b:
        _, listing = get(f"{url}/api/studies")
        assert [s["id"] for s in listing["studies"]] == [f"{ns}/seen"]  # applied with kubectl: it shows up
        b.go(f"{url}/#/s/{ns}%2Fseen")
        b.wait("document.getElementById('phase') && document.getElementById('phase').textContent === 'Pending'", 30)
        b.js("window.__not_reloaded = true")
        _as_operator_writes(admin, ns, "seen", state)  # the page follows: the trials, the phase
        b.wait("document.querySelectorAll('#trials tbody tr').length === 5", 15)
        b.wait("document.getElementById('phase').textContent === 'Succeeded'", 15)
        assert b.js("window.__not_reloaded") is True
        b.wait(f"document.querySelectorAll('#lineage circle.node').length === {sum(t['state'] == 'succeeded' for t in state['trials'])}", 10)
        status, got = get(f"{url}/api/study?id={ns}/seen")
        assert status == 200 and got["phase"] == "Succeeded" and got["warning"] is None
        assert [t["i"] for t in got["trials"]] == [0, 1, 2, 3, 4]  # three from the ConfigMap, two from the status
        assert got["best"] == state["best"]["index"]
        status, body = get(f"{url}/api/study?id={ns}/unseen")
        assert status == 404 and body["error"] == f"no BossStudy 'unseen' in namespace '{ns}'"
        status, trial = get(f"{url}/api/trial?id={ns}/seen&i=4")
        assert status == 200 and trial["checksum"] == state["trials"][4]["checksum"]
        assert "no pod for trial 4" in trial["logError"]  # no Job ran here: said, not an empty box
        assert trial["job"]["name"] == "seen-t0004" and "no Job" in trial["job"]["error"]
        b.go(f"{url}/#/")
        b.wait(f"!!document.querySelector('#studies tbody tr[data-id=\"{ns}/seen\"]')", 30)
        assert b.js(f"document.querySelector('#studies tbody tr[data-id=\"{ns}/seen\"] td:nth-child(4)').textContent") == "5/6"
        assert b.errors == []

    # a user who may read the studies but not ConfigMaps: one clear message, and what the status holds
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(ns, {"metadata": {"name": "studies-only"}, "rules": [
        {"apiGroups": ["boss.automl.io"], "resources": ["bossstudies"], "verbs": ["get", "list", "watch"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "carol-studies-only"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "studies-only"},
        "subjects": [{"kind": "User", "name": "carol", "apiGroup": "rbac.authorization.k8s.io"}]})
    carol = k8s.client_kubeconfig("carol", (), tmp_path / "carol.kubeconfig")
    with ui("--cluster", "-n", ns, env={"KUBECONFIG": str(carol)}) as (url, _, err):
        status, got = get(f"{url}/api/study?id={ns}/seen")
        assert status == 200 and [t["i"] for t in got["trials"]] == [3, 4]
        assert got["warning"].startswith(f"you may not read ConfigMaps in namespace {ns}") and "3 archived trials" in got["warning"]
        status, trial = get(f"{url}/api/trial?id={ns}/seen&i=3")
        assert "does not let you list pods" in trial["logError"]
        assert "does not let you get Job seen-t0003" in trial["job"]["error"]
        with Browser() as b:
            b.go(f"{url}/#/s/{ns}%2Fseen")
            warning = b.wait("document.getElementById('warning') && document.getElementById('warning').textContent", 30)
            assert "you may not read ConfigMaps" in warning and "\n" not in warning
            assert b.js("document.querySelectorAll('#trials tbody tr').length") == 2
        assert "Traceback" not in err.read_text()
    with ui("--cluster", "-n", "elsewhere", env={"KUBECONFIG": str(carol)}) as (url, _, err):
        status, body = get(f"{url}/api/studies")
        assert status == 403 and body["error"].startswith("the API server does not let you list BossStudies in namespace elsewhere")


def test_an_unreachable_cluster_is_one_line(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"  # a cluster nobody listens for
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n"
                          "    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n"
                          "  user: {token: x}\ncontexts:\n- name: c\n  context: {cluster: gone, user: u}\n"
                          "current-context: c\n")
    with ui("--cluster", "-n", "default", env={"KUBECONFIG": str(kubeconfig)}) as (url, _, err):
        status, body = get(f"{url}/api/studies")
        assert status == 503 and body["error"].startswith("cannot reach the cluster to list BossStudies in namespace default")
        assert "\n" not in body["error"]
        time.sleep(0.3)
        assert "cannot reach the cluster" in err.read_text() and "Traceback" not in err.read_text()
    with ui("--cluster", env={"KUBECONFIG": str(tmp_path / "missing")}) as (url, _, err):
        status, body = get(f"{url}/api/studies")
        assert status == 503 and body["error"].startswith("no cluster to talk to")


# ---- the chart's option: the dashboard in the cluster, read-only --------------------------------------

# what each Kubernetes client call ClusterSource (and boss.history, which it uses) makes needs
UI_CALLS = {"get_namespaced_custom_object": ("boss.automl.io", "bossstudies", "get"),
            "list_namespaced_custom_object": ("boss.automl.io", "bossstudies", "list"),
            "list_cluster_custom_object": ("boss.automl.io", "bossstudies", "list"),
            "list_namespaced_config_map": ("", "configmaps", "list"),
            "list_namespaced_pod": ("", "pods", "list"),
            "read_namespaced_pod_log": ("", "pods/log", "get"),
            "read_namespaced_job": ("batch", "jobs", "get")}


def _ui_calls() -> set[tuple[str, str, str]]:
    import re

    sdk = Path(__file__).parents[1] / "sdk" / "boss"
    names = set()
    for path in (sdk / "ui" / "sources.py", sdk / "history.py"):
        names |= set(re.findall(r"\.((?:create|delete|get|list|patch|read|replace|connect)_[a-z_]+)\b", path.read_text()))
    names = {n for n in names if n.endswith(("_object", "_map", "_pod", "_log", "_job"))}
    unknown = names - set(UI_CALLS)
    assert not unknown, f"boss ui calls {unknown}: add them to UI_CALLS and to charts/.../templates/ui.yaml"
    return {UI_CALLS[n] for n in names}


def test_the_chart_can_deploy_the_dashboard_with_read_only_rbac(helm):  # noqa: F811
    template = helm
    assert not [d for d in template() if d["metadata"]["name"].endswith("-ui")]  # off by default
    for values, role_kind, scope in (({"ui": {"enabled": True}}, "ClusterRole", ["--all-namespaces"]),
                                     ({"ui": {"enabled": True}, "watchNamespace": "team-a"}, "Role", ["--namespace", "team-a"])):
        docs = template(values)
        validate_all(docs)
        kinds = by_kind(docs)
        ui_docs = {(d["kind"], d["metadata"]["name"]) for d in docs if d["metadata"]["name"] == f"{FULL}-ui"}
        assert ui_docs == {("ServiceAccount", f"{FULL}-ui"), (role_kind, f"{FULL}-ui"), (f"{role_kind}Binding", f"{FULL}-ui"),
                           ("Deployment", f"{FULL}-ui"), ("Service", f"{FULL}-ui"), ("NetworkPolicy", f"{FULL}-ui")}
        role = next(d for d in kinds[role_kind] if d["metadata"]["name"] == f"{FULL}-ui")
        granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
        assert granted == _ui_calls()  # exactly what the code reads; nothing it could write with
        dep = next(d for d in kinds["Deployment"] if d["metadata"]["name"] == f"{FULL}-ui")
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["command"][:5] == ["python", "-m", "boss.cli", "ui", "--cluster"] and c["command"][-len(scope):] == scope
        assert pod["serviceAccountName"] == f"{FULL}-ui" and c["securityContext"]["readOnlyRootFilesystem"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        operator_np = next(d for d in kinds["NetworkPolicy"] if d["metadata"]["name"] == FULL)
        assert labels["app.kubernetes.io/component"] == "ui"  # not the operator's pod for its NetworkPolicy
        assert {"key": "app.kubernetes.io/component", "operator": "DoesNotExist"} in operator_np["spec"]["podSelector"]["matchExpressions"]


def test_text_from_a_study_is_shown_as_text_never_as_html(runs, tmp_path):
    """A name, a config value, a message and a log line that hold HTML: shown as written, and
    nothing of them runs (an <img onerror> would set window.__xss)."""
    import shutil

    _needs_chromium()
    evil = "<img src=x onerror=\"window.__xss=1\">"
    shutil.copytree(runs / "tiny", tmp_path / "tiny")
    state = json.loads((tmp_path / "tiny" / "state.json").read_text())
    state["study"]["metadata"]["name"] = f"tiny{evil}"
    state["message"] = f"done {evil}"
    t = state["trials"][2]
    t["config"]["optimizer"] = evil
    t["state"], t["value"], t["message"] = "failed", None, f"boom {evil}"
    (tmp_path / "tiny" / "state.json").write_text(json.dumps(state))
    log = tmp_path / "tiny" / "trials" / "0002" / "log.txt"
    log.write_text(log.read_text() + f"{evil}\n")
    with ui(tmp_path) as (url, _, _), Browser() as b:
        b.go(f"{url}/#/")
        b.wait("document.querySelectorAll('#studies tbody tr').length === 1")
        assert b.js("document.querySelector('#studies tbody tr a').textContent") == f"tiny{evil}"
        b.go(f"{url}/#/s/tiny")
        b.wait("document.querySelectorAll('#trials tbody tr').length === 5")
        assert evil in b.js("document.querySelector('#trials tbody tr[data-trial=\"2\"] td.cfg').textContent")
        assert evil in b.js("document.getElementById('head').textContent")
        b.go(f"{url}/#/s/tiny/t/2")
        b.wait("!!document.getElementById('trial-message')")
        assert b.js("document.getElementById('trial-message').textContent") == f"boom {evil}"
        assert b.js("document.getElementById('log').textContent").endswith(f"{evil}\n")
        assert b.js("document.querySelectorAll('main img').length") == 0
        time.sleep(0.5)
        assert b.js("window.__xss") is None and b.errors == []


def test_the_change_token_of_many_running_studies_is_stable(runs, tmp_path):
    """More studies than the raw-state cache holds, all being written: reading one study or another
    must not change what the event stream compares (a flip would wake every open page twice a second)."""
    import shutil
    import socket

    from boss.ui.sources import LocalSource

    for k in range(4):
        shutil.copytree(runs / "tiny", tmp_path / f"s{k}")
        state = json.loads((tmp_path / f"s{k}" / "state.json").read_text())
        state["status"], state["runner"] = "Distilling", {"pid": os.getpid(), "host": socket.gethostname()}
        (tmp_path / f"s{k}" / "state.json").write_text(json.dumps(state))
    src = LocalSource(tmp_path)
    first = src.token(None, [])
    assert all(alive for _, _, alive in first)
    src.studies()
    src.trial("s0", 1)
    src.curves("s3", [0, 1])
    assert src.token(None, []) == first
    one = src.token("s2", [1])
    src.studies()
    assert src.token("s2", [1]) == one


def test_the_chart_installs_the_dashboard_read_only(k8s, release):  # noqa: F811
    """Installed on the real API server: its pod passes Pod Security `restricted`, and its
    ServiceAccount may do exactly the reads the code makes, per the real authorizer."""
    release.install({"ui": {"enabled": True}})
    manifest = release.manifest()
    objs = release.on_server(manifest)
    ns, ui_name = release.namespace, f"{release.full}-ui"
    assert {(k, ui_name) for k in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                                   "NetworkPolicy")} <= set(objs)
    pod = admitted_pod(k8s, ns, objs["Deployment", ui_name])
    assert pod["spec"]["serviceAccountName"] == ui_name
    sa, anybody = f"system:serviceaccount:{ns}:{ui_name}", f"system:serviceaccount:{ns}:nobody"
    assert rules_on_server(k8s, sa, ns) - rules_on_server(k8s, anybody, ns) == _ui_calls()
    for verb, group, resource in (("get", "", "secrets"), ("create", "boss.automl.io", "bossstudies"),
                                  ("patch", "boss.automl.io", "bossstudies"), ("delete", "", "configmaps"),
                                  ("create", "", "pods/exec"), ("create", "batch", "jobs")):
        assert not can_i(k8s, sa, verb, group, resource, ns), (verb, resource)
    release.uninstall_removes_everything(manifest)


@pytest.mark.slow
def test_a_study_on_a_real_node_shows_its_jobs_pod_logs_and_curves(cluster):  # noqa: F811
    """The operator runs a study's trials as Jobs on a real node; the page follows it without a
    reload, and a trial's log and per-epoch curves come from its pod through the API server."""
    _needs_chromium()
    c = cluster
    c.op.start()
    with c.node():
        c.apply(study_doc(c, "watched", **{"spec.trainer.epochs": 3,
                                           "spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 1}}))
        with ui("--cluster", "-n", c.ns, env={"KUBECONFIG": str(c.k8s.kubeconfig)}) as (url, _, err), Browser() as b:
            b.go(f"{url}/#/s/{c.ns}%2Fwatched")
            b.wait("!!document.getElementById('phase')", 30)
            b.js("window.__not_reloaded = true")
            final = wait_phase(c, "watched", FINAL_PHASES, timeout=600)
            assert final["status"]["phase"] == "Succeeded", final["status"].get("conditions")
            b.wait("document.getElementById('phase').textContent === 'Succeeded'", 15)
            b.wait("document.querySelectorAll('#trials tbody tr:not(.running)').length === 4", 15)
            assert b.js("window.__not_reloaded") is True
            status, trial = get(f"{url}/api/trial?id={c.ns}/watched&i=3")
            assert status == 200 and "trial 3 epoch 3/3" in trial["log"], trial.get("logError")
            assert trial["job"]["name"] == "watched-t0003" and trial["job"]["succeeded"] == 1
            _, curves = get(f"{url}/api/curves?id={c.ns}/watched&trials=3")
            assert [r["epoch"] for r in curves["3"]] == [1, 2, 3] and {"train_loss", "val_accuracy"} <= set(curves["3"][0])
            b.go(f"{url}/#/s/{c.ns}%2Fwatched/t/3")
            b.wait("document.getElementById('log') && document.getElementById('log').textContent.includes('epoch 3/3')", 30)
            assert "1 succeeded" in b.js("document.getElementById('trial-job').textContent")
            assert b.js("document.querySelectorAll('#trial-curves svg').length") >= 2 and b.errors == []
            assert "Traceback" not in err.read_text()
