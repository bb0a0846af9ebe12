"""Where the dashboard reads studies from: run folders on this machine, or a cluster's API server.

Both sources answer the same questions in the same shapes (plain JSON-able dicts), so the
server and the page never ask which one they have:

- `studies()`: one summary row a study (phase, budget used, best, counts, age);
- `study(id)`: the study (its metric, goal, budget, search space) and every trial as a compact row;
- `trial(id, i)`: one trial whole, with its log;
- `curves(id, indices)`: per-epoch metrics of some trials, read from their logs (the trainer loop
  prints `trial N epoch E/M name=value ...` after every epoch, so a running trial's curve grows as
  its log does; a finished trial without a log falls back to the objective curve it recorded);
- `token(id, watched)`: something cheap that changes when the study or a watched trial's log does
  (a stat of state.json, or the study object's resourceVersion), for the live updates.

A bad input (a folder that is not a run, an unknown study, a cluster that cannot be reached, a
right the user lacks) raises `SourceError` with one line a person can act on.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..runs import STATE, STUDY, as_seen_now, runner_alive

LOG_TAIL = 256 * 1024  # the last part of a log the trial page shows (the whole one: boss logs)
EPOCH = re.compile(r"trial (\d+) epoch (\d+)/(\d+) (.*?)(?: \(\d+(?:\.\d+)? s\))?\s*$")
PAIR = re.compile(r"([A-Za-z_][\w.\-/]*)=(\S+)")


class SourceError(Exception):
    """One line for the page and the server's log: what is wrong and what to do."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _test_metric(metric: str) -> str:
    return "test_" + metric[4:] if metric.startswith("val_") else "test_" + metric


def row(t: dict[str, Any]) -> dict[str, Any]:
    """A trial as the table and the plots need it: no SMAC vector, no paths, short keys kept readable."""
    extra = t.get("extra") or {}
    return {
        "i": t["index"], "phase": t.get("phase"), "state": t.get("state"), "config": t.get("config") or {},
        "value": _number(t.get("value")), "teacher": t.get("teacher"), "student": t.get("student"),
        "started": _number(extra.get("started")), "seconds": _number(extra.get("seconds")),
        "test": {k: _number(v) for k, v in (extra.get("test") or {}).items()},
        "stopped": extra.get("stoppedEarly"), "message": t.get("message"),
    }


def space_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The searched hyperparameters as the plots need them (range, log scale, choices)."""
    out = {}
    for name, p in (spec.get("searchSpace") or {}).items():
        if isinstance(p, dict):
            out[name] = {k: p[k] for k in ("type", "low", "high", "log", "choices", "when") if k in p}
    return out


def summarize(study: dict[str, Any]) -> dict[str, Any]:
    """The studies page's row of one study."""
    trials = study["trials"]
    counts = {s: sum(t["state"] == s for t in trials) for s in ("succeeded", "failed", "diverged", "running", "interrupted")}
    queued = min(int(study.get("queued") or 0), counts["running"])
    counts["running"] -= queued
    best = next((t for t in trials if t["i"] == study.get("best")), None)
    return {"id": study["id"], "name": study["name"], "where": study["where"], "phase": study["phase"],
            "message": study.get("message"), "metric": study["metric"], "goal": study["goal"],
            "budget": study["budget"].get("trials"), "finished": counts["succeeded"] + counts["failed"] + counts["diverged"],
            **counts, "queued": queued, "best": None if best is None else {"i": best["i"], "value": best["value"]},
            "created": study.get("created"), "updated": study.get("updated"), "warning": study.get("warning")}


def best_index(trials: list[dict[str, Any]], maximize: bool) -> int | None:
    done = [t for t in trials if t["state"] == "succeeded" and t["value"] is not None]
    if not done:
        return None
    return max(done, key=lambda t: (t["value"] if maximize else -t["value"], -t["i"]))["i"]


def study_view(sid: str, name: str, where: str, doc: dict[str, Any], phase: str | None, message: str | None,
               trials: list[dict[str, Any]], *, queued: int = 0, created: float | None = None,
               updated: float | None = None, warning: str | None = None) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    objective = spec.get("objective") or {}
    maximize = objective.get("goal", "maximize") == "maximize"
    rows = [row(t) for t in trials]
    budget = spec.get("budget") or {}
    return {"id": sid, "name": name, "where": where, "phase": phase or "Pending", "message": message,
            "metric": objective.get("metric", "val_accuracy"), "goal": "maximize" if maximize else "minimize",
            "testMetric": _test_metric(objective.get("metric", "val_accuracy")),
            "budget": {"trials": budget.get("trials"), "warmup": budget.get("warmupTrials"),
                       "parallelism": budget.get("parallelism")},
            "topK": (spec.get("boss") or {}).get("topK"), "plugin": (spec.get("trainer") or {}).get("plugin"),
            "epochs": (spec.get("trainer") or {}).get("epochs"),
            "space": space_of(spec), "trials": rows, "best": best_index(rows, maximize), "queued": queued,
            "created": created, "updated": updated, "warning": warning}


def parse_epochs(text: str, index: int | None = None) -> list[dict[str, float]]:
    """Per-epoch metrics from a trial's log (the loop's `trial N epoch E/M k=v ...` lines). A trial
    that ran again (after an interruption) prints its epochs again: the later line wins."""
    by_epoch: dict[int, dict[str, float]] = {}
    for line in text.splitlines():
        m = EPOCH.search(line)
        if m is None or (index is not None and int(m.group(1)) != index):
            continue
        values = {k: _number(v) for k, v in PAIR.findall(m.group(4))}
        by_epoch[int(m.group(2))] = {"epoch": int(m.group(2)), **{k: v for k, v in values.items()}}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _fallback_curve(t: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    curve = (t.get("extra") or {}).get("curve") or []
    return [{"epoch": e + 1, metric: _number(v)} for e, v in enumerate(curve)]


def trial_detail(t: dict[str, Any]) -> dict[str, Any]:
    extra = t.get("extra") or {}
    return {**row(t), "checkpoint": t.get("checkpoint"), "checksum": t.get("checksum"), "origin": t.get("origin"),
            "bestEpoch": extra.get("best_epoch"), "warning": extra.get("warning"),
            "extra": {k: v for k, v in extra.items() if k not in ("curve", "test", "log", "started", "seconds")}}


class _Cache:
    """A few parsed studies, newest first: memory stays bounded however many a folder holds."""

    def __init__(self, size: int = 8):
        self.size, self.items = size, OrderedDict()

    def get(self, key: Any, stamp: Any) -> Any:
        hit = self.items.get(key)
        if hit is not None and hit[0] == stamp:
            self.items.move_to_end(key)
            return hit[1]
        return None

    def put(self, key: Any, stamp: Any, value: Any) -> Any:
        self.items[key] = (stamp, value)
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


# ---- run folders --------------------------------------------------------------------------------


class LocalSource:
    """A run folder, or a folder of run folders (such as `runs/`), read as `boss show` reads them;
    never written, never locked, so a `boss run` writing it goes on undisturbed."""

    kind = "local"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.exists():
            raise SourceError(f"{root}: no such folder (a run folder appears once `boss run STUDY.yaml` starts, "
                              "in runs/NAME or its --run-dir; `make demo` writes runs/digits-demo)")
        if not self.root.is_dir():
            raise SourceError(f"{root}: not a folder (give a run folder of `boss run`, or a folder of them)")
        self._studies = _Cache()
        self._raw = _Cache(2)  # the last trials read whole, for the trial page and the curves
        self._curves = _Cache(256)
        self._runners: dict[str, Any] = {}  # who writes each folder, as its state last said

    def describe(self) -> str:
        return str(self.root)

    def folders(self) -> dict[str, Path]:
        """Run folders by id: the root itself when it is one, else its subfolders that are (ids are
        what the scan found, never a path from a request)."""
        if (self.root / STATE).exists() or (self.root / STUDY).exists():
            return {self.root.resolve().name: self.root}
        found = {}
        try:
            entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError as e:
            raise SourceError(f"{self.root}: cannot list the folder ({e.strerror})") from None
        for e in entries:
            if e.is_dir() and (os.path.exists(os.path.join(e.path, STATE)) or os.path.exists(os.path.join(e.path, STUDY))):
                found[e.name] = Path(e.path)
        return found

    def empty_message(self) -> str:
        return (f"no run folders in {self.root} yet: start one with `boss run STUDY.yaml --run-dir "
                f"{self.root / 'NAME'}` (or `make demo`); it shows up here as soon as it starts")

    def _folder(self, sid: str) -> Path:
        folder = self.folders().get(sid)
        if folder is None:
            raise SourceError(f"no run folder {sid!r} in {self.root}", 404)
        return folder

    def _stamp(self, folder: Path) -> tuple:
        try:
            st = os.stat(folder / STATE)
        except FileNotFoundError:
            return (None,)
        return (st.st_mtime_ns, st.st_size)

    def _state(self, sid: str) -> tuple[dict[str, Any], Path]:
        folder = self._folder(sid)
        stamp = self._stamp(folder)
        hit = self._raw.get(sid, stamp)
        if hit is not None:
            return hit, folder
        if stamp == (None,):
            if (folder / STUDY).exists():  # `boss run` made the folder and is about to write its state
                import yaml

                try:
                    doc = yaml.safe_load((folder / STUDY).read_text()) or {}
                except (OSError, yaml.YAMLError) as e:
                    raise SourceError(f"{folder}: unreadable {STUDY} ({e})") from None
                return {"study": doc, "status": None, "trials": [], "runner": None}, folder
            raise SourceError(f"{folder}: not a BOSS run folder (no {STATE})")
        try:
            state = json.loads((folder / STATE).read_text())
        except FileNotFoundError:  # replaced between the stat and the read: read it next time
            return self._state(sid)
        except (OSError, ValueError) as e:
            raise SourceError(f"{folder / STATE}: unreadable run state ({e})") from None
        if not isinstance(state, dict) or not isinstance(state.get("trials"), list) or not isinstance(state.get("study"), dict):
            raise SourceError(f"{folder / STATE}: not a BOSS run state (no study and trials)")
        self._runners[sid] = state.get("runner")
        return self._raw.put(sid, stamp, state), folder

    def study(self, sid: str) -> dict[str, Any]:
        folder = self._folder(sid)
        stamp = (self._stamp(folder), self._alive(sid))
        hit = self._studies.get(sid, stamp)
        if hit is not None:
            return hit
        raw, folder = self._state(sid)
        state = as_seen_now(raw) if raw.get("status") else raw
        doc = state["study"]
        created = _mtime(folder / STUDY)
        view = study_view(sid, (doc.get("metadata") or {}).get("name", sid), str(folder), doc,
                          state.get("status"), state.get("message"), state["trials"],
                          created=created, updated=_mtime(folder / STATE))
        return self._studies.put(sid, stamp, view)

    def _alive(self, sid: str) -> bool:
        """Whether the run writing this folder is alive (known from its state, even when that state
        is no longer cached: a flip here would look like a change and wake every page)."""
        runner = self._runners.get(sid)
        return bool(runner) and runner_alive({"runner": runner})

    def studies(self) -> list[dict[str, Any]]:
        out = []
        for sid, folder in self.folders().items():
            try:
                out.append(summarize(self.study(sid)))
            except SourceError as e:
                out.append({"id": sid, "name": sid, "where": str(folder), "error": str(e)})
        return out

    def _raw_trial(self, sid: str, index: int) -> tuple[dict[str, Any], dict[str, Any], Path]:
        state, folder = self._state(sid)
        trials = state["trials"]
        if not 0 <= index < len(trials) or trials[index].get("index") != index:
            t = next((t for t in trials if t.get("index") == index), None)
            if t is None:
                raise SourceError(f"{sid}: no trial {index} (the study has {len(trials)})", 404)
        else:
            t = trials[index]
        return state, t, folder

    def _log_path(self, folder: Path, index: int) -> Path:
        return folder / "trials" / f"{index:04d}" / "log.txt"  # never the path a state names: only this folder's

    def trial(self, sid: str, index: int) -> dict[str, Any]:
        state, t, folder = self._raw_trial(sid, index)
        out = trial_detail(t)
        if t.get("state") == "running" and state.get("status") and not runner_alive(state):
            out["state"] = "interrupted"
        log = self._log_path(folder, index)
        try:
            size = log.stat().st_size
            with log.open("rb") as f:
                f.seek(max(0, size - LOG_TAIL))
                out["log"] = f.read().decode(errors="replace")
            out["logCut"] = size > LOG_TAIL
            out["logWhere"] = str(log)
        except FileNotFoundError:
            out["log"], out["logError"] = "", f"no log yet ({log})"
        return out

    def curves(self, sid: str, indices: list[int]) -> dict[str, list[dict[str, Any]]]:
        state, folder = self._state(sid)
        metric = ((state["study"].get("spec") or {}).get("objective") or {}).get("metric", "val_accuracy")
        out = {}
        for i in indices:
            try:
                _, t, _ = self._raw_trial(sid, i)
            except SourceError:
                continue
            log = self._log_path(folder, i)
            try:
                st = log.stat()
                stamp = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = None
            rows = self._curves.get((sid, i), stamp) if stamp else None
            if rows is None and stamp:
                rows = self._curves.put((sid, i), stamp, parse_epochs(log.read_text(errors="replace"), i))
            out[str(i)] = rows or _fallback_curve(t, metric)
        return out

    def token(self, sid: str | None, watched: list[int]) -> Any:
        """What changes when the study (or, for the studies page, the folder) or a watched log does."""
        if sid is None:
            folders = self.folders()
            for k in folders.keys() - self._runners.keys():  # a folder seen for the first time: who writes it
                try:
                    self._state(k)
                except SourceError:
                    self._runners[k] = None
            return [(k, self._stamp(f), self._alive(k)) for k, f in folders.items()]
        folder = self._folder(sid)
        if sid not in self._runners:
            try:
                self._state(sid)
            except SourceError:
                self._runners[sid] = None
        logs = {}
        for i in watched:
            try:
                st = os.stat(self._log_path(folder, i))
                logs[i] = st.st_size
            except OSError:
                logs[i] = None
        return {"state": self._stamp(folder), "alive": self._alive(sid), "logs": logs}


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# ---- a cluster ------------------------------------------------------------------------------------


def _api_line(e: Exception) -> str:
    """The API server's own message (or the connection error's first line), on one line."""
    body = getattr(e, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
            if message:
                return " ".join(str(message).split())
        except (ValueError, AttributeError):
            pass
    if getattr(e, "status", None):
        return f"{e.status} {getattr(e, 'reason', '')}".strip()
    text = str(e).strip().splitlines()
    return " ".join(text[0].split()) if text else type(e).__name__


def _is_api_error(e: Exception) -> bool:
    return "ApiException" in {k.__name__ for k in type(e).__mro__}


class ClusterSource:
    """BossStudy objects, their history ConfigMaps, Jobs and pod logs, read through the API server
    with the user's own kubeconfig: the page shows what `kubectl` would let them see, nothing more."""

    kind = "cluster"
    POLL = 1.0  # a GET of the study object a second, per open page (the live updates)

    def __init__(self, namespace: str | None = None, all_namespaces: bool = False, api_client: Any = None,
                 context: str | None = None):
        self.all_namespaces = all_namespaces
        self._api_client, self._context = api_client, context
        self._namespace = namespace
        self._apis: tuple | None = None
        self._trials = _Cache(4)
        self._curves = _Cache(256)  # finished trials' per-epoch rows, from their pods' logs

    def _connect(self) -> tuple:
        if self._apis is not None:
            return self._apis
        try:
            from kubernetes import client, config
        except ImportError:
            raise SourceError("cluster mode needs the Kubernetes client: pip install 'boss-sdk[cluster]'") from None
        api = self._api_client
        if api is None:
            try:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config(context=self._context)
            except Exception as e:  # no kubeconfig, a broken one
                raise SourceError(f"no cluster to talk to: {_api_line(e)} (set KUBECONFIG, or use a run folder)", 503) from None
            api = client.ApiClient()
        if self._namespace is None:
            from ..client import _current_namespace

            self._namespace = _current_namespace()
        self._apis = (client.CustomObjectsApi(api), client.CoreV1Api(api))
        return self._apis

    def describe(self) -> str:
        return "all namespaces" if self.all_namespaces else f"namespace {self._namespace or '(from kubeconfig)'}"

    def empty_message(self) -> str:
        where = "any namespace you may read" if self.all_namespaces else f"namespace {self._namespace}"
        return f"no BossStudy in {where}: create one with `kubectl apply -f study.yaml` (or `boss submit`)"

    def _call(self, what: str, fn, *args, **kw) -> Any:
        """One API call; its failure as one line that says what could not be read and why."""
        try:
            return fn(*args, **kw)
        except SourceError:
            raise
        except Exception as e:
            if _is_api_error(e) and getattr(e, "status", None) == 403:
                raise SourceError(f"the API server does not let you {what}: {_api_line(e)}", 403) from None
            if _is_api_error(e) and getattr(e, "status", None) == 404:
                raise SourceError(f"not found: {what} ({_api_line(e)})", 404) from None
            if _is_api_error(e) and getattr(e, "status", None):
                raise SourceError(f"the API server refused to {what}: {_api_line(e)}", 502) from None
            raise SourceError(f"cannot reach the cluster to {what}: {_api_line(e)}", 503) from None

    def _split(self, sid: str) -> tuple[str, str]:
        ns, _, name = sid.partition("/")
        if not ns or not name:
            raise SourceError(f"{sid!r}: a cluster study is NAMESPACE/NAME", 404)
        return ns, name

    def _list(self) -> list[dict[str, Any]]:
        custom, _ = self._connect()
        if self.all_namespaces:
            got = self._call("list BossStudies in all namespaces", custom.list_cluster_custom_object,
                             "boss.automl.io", "v1alpha1", "bossstudies")
        else:
            got = self._call(f"list BossStudies in namespace {self._namespace}", custom.list_namespaced_custom_object,
                             "boss.automl.io", "v1alpha1", self._namespace, "bossstudies")
        return got.get("items") or []

    def _get(self, sid: str) -> dict[str, Any]:
        custom, _ = self._connect()
        ns, name = self._split(sid)
        try:
            return self._call(f"get BossStudy {name} in namespace {ns}", custom.get_namespaced_custom_object,
                              "boss.automl.io", "v1alpha1", ns, "bossstudies", name)
        except SourceError as e:
            if e.status == 404:
                raise SourceError(f"no BossStudy {name!r} in namespace {ns!r}", 404) from None
            raise

    def _view(self, obj: dict[str, Any], with_history: bool) -> dict[str, Any]:
        _, core = self._connect()
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        status = obj.get("status") or {}
        spec = status.get("studySpec") or obj.get("spec") or {}
        warning = None
        trials = [t for t in status.get("trials") or [] if isinstance(t, dict)]
        if with_history:
            rv = meta.get("resourceVersion")
            hit = self._trials.get(f"{ns}/{name}", rv)
            if hit is not None:
                trials, warning = hit
            else:
                from ..history import HistoryError, read_trials

                try:
                    trials = self._call(f"list ConfigMaps in namespace {ns}", read_trials, core, obj)
                except HistoryError as e:
                    warning = f"{e}; showing the trials in the study's status only"
                except SourceError as e:
                    if e.status != 403:
                        raise
                    from ..history import recorded

                    warning = (f"you may not read ConfigMaps in namespace {ns}, where the study keeps its history "
                               f"({recorded(status)[1]} archived trials): only the {len(trials)} trials in its status "
                               f"are shown. Ask for get/list on configmaps there. ({e})")
                self._trials.put(f"{ns}/{name}", rv, (trials, warning))
        message = status.get("message")
        final = [c for c in status.get("conditions") or [] if c.get("type") == status.get("phase") == "Failed"]
        if final and not message:
            message = final[0].get("message")
        created = _timestamp(meta.get("creationTimestamp"))
        return study_view(f"{ns}/{name}", name, f"namespace {ns}", {"spec": spec}, status.get("phase"), message,
                          trials, queued=int(status.get("trialsQueued") or 0), created=created, warning=warning)

    def studies(self) -> list[dict[str, Any]]:
        """One row a study from its object alone (no ConfigMap read for the list): the operator's
        counters in the status cover the archived trials too."""
        out = []
        for obj in self._list():
            s = summarize(self._view(obj, with_history=False))
            status = obj.get("status") or {}
            from ..history import recorded

            s["finished"] += recorded(status)[1]  # archived trials are finished ones (the counters below say more)
            for field, key in (("trialsCompleted", "finished"), ("trialsRunning", "running"), ("trialsQueued", "queued"),
                               ("trialsFailed", "failed"), ("trialsDiverged", "diverged")):
                if isinstance(status.get(field), int):
                    s[key] = status[field]
            best = status.get("best")
            if best and best.get("value") is not None:
                s["best"] = {"i": best.get("trial"), "value": best.get("value")}
            out.append(s)
        return out

    def study(self, sid: str) -> dict[str, Any]:
        return self._view(self._get(sid), with_history=True)

    def _raw_trials(self, sid: str) -> list[dict[str, Any]]:
        obj = self._get(sid)
        self._view(obj, with_history=True)
        meta = obj["metadata"]
        hit = self._trials.get(f"{meta.get('namespace')}/{meta['name']}", meta.get("resourceVersion"))
        return hit[0] if hit else (obj.get("status") or {}).get("trials") or []

    def _pod_log(self, sid: str, index: int) -> tuple[str, str | None]:
        _, core = self._connect()
        ns, name = self._split(sid)
        try:
            pods = self._call(f"list pods in namespace {ns}", core.list_namespaced_pod, ns,
                              label_selector=f"job-name={name}-t{index:04d}").items
            if not pods:
                return "", (f"no pod for trial {index}: not started yet, or its Job was deleted after it "
                            "finished (the study keeps the newest spec.trainer.keepFinishedJobs)")
            pod = sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0)[-1]
            text = self._call(f"read the log of pod {pod.metadata.name} in namespace {ns}",
                              core.read_namespaced_pod_log, pod.metadata.name, ns, limit_bytes=LOG_TAIL)
            return text or "", None
        except SourceError as e:
            return "", str(e)

    def trial(self, sid: str, index: int) -> dict[str, Any]:
        trials = self._raw_trials(sid)
        t = next((t for t in trials if t.get("index") == index), None)
        if t is None:
            raise SourceError(f"{sid}: no trial {index} (the study has {len(trials)})", 404)
        out = trial_detail(t)
        out["log"], err = self._pod_log(sid, index)
        if err:
            out["logError"] = err
        out["job"] = self._job(sid, index)
        return out

    def _job(self, sid: str, index: int) -> dict[str, Any]:
        """The trial's Job as the page shows it: its counts and conditions, or why there is none."""
        from kubernetes import client

        self._connect()
        ns, name = self._split(sid)
        job = f"{name}-t{index:04d}"
        batch = client.BatchV1Api(self._apis[1].api_client)
        try:
            got = self._call(f"get Job {job} in namespace {ns}", batch.read_namespaced_job, job, ns)
        except SourceError as e:
            if e.status == 404:
                return {"name": job, "error": "no Job: not created yet, or deleted after its trial finished "
                                              "(the study keeps the newest spec.trainer.keepFinishedJobs)"}
            return {"name": job, "error": str(e)}
        st = got.status
        conditions = [f"{c.type}: {c.reason or ''} {c.message or ''}".strip() for c in st.conditions or [] if c.status == "True"]
        return {"name": job, "active": st.active or 0, "succeeded": st.succeeded or 0, "failed": st.failed or 0,
                "conditions": conditions}

    def curves(self, sid: str, indices: list[int]) -> dict[str, list[dict[str, Any]]]:
        trials = {t.get("index"): t for t in self._raw_trials(sid)}
        view = self.study(sid)
        out = {}
        for i in indices[:12]:
            t = trials.get(i)
            if t is None:
                continue
            # every metric per epoch is in the pod's log; a finished trial's log no longer changes, so it
            # is read once (a running one's each time the page asks); without a pod (its Job deleted after
            # keepFinishedJobs), the objective's curve the trial recorded
            done = t.get("state") != "running"
            rows = self._curves.get((sid, i), "done") if done else None
            if rows is None:
                text, _ = self._pod_log(sid, i)
                rows = parse_epochs(text, i)
                if done:
                    self._curves.put((sid, i), "done", rows)
            out[str(i)] = rows or _fallback_curve(t, view["metric"])
        return out

    def token(self, sid: str | None, watched: list[int]) -> Any:
        if sid is None:
            return [((o["metadata"].get("namespace"), o["metadata"]["name"]), o["metadata"].get("resourceVersion"))
                    for o in self._list()]
        obj = self._get(sid)
        running = {t.get("index") for t in (obj.get("status") or {}).get("trials") or [] if t.get("state") == "running"}
        # a running pod's log has no cheap version: a watched running trial's curve is re-read every 2 s
        logs = {i: int(time.monotonic() // 2) for i in watched if i in running}
        return {"rv": obj["metadata"].get("resourceVersion"), "logs": logs}


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
