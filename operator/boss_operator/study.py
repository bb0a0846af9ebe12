"""One BossStudy on a cluster: a reconcile step that is safe to kill at any point and re-run.

The study's status, with the history ConfigMaps it names (history.py), is the whole truth:
every trial the engine proposed, in order, with its result. A step (1) reads the study, (2)
rebuilds the engine by replay if this process has none, (3) records the results of finished Jobs, (4) creates the Job of any recorded trial
that lacks one, (5) asks for new trials up to `parallelism`, recording each in the status
*before* creating its Job, and (6) writes the status. A crash between any two of these
leaves a status from which the next step (in this process or after a restart) does the
rest: Jobs have deterministic names, so no trial ever runs twice. Full chunks of finished
trials move to ConfigMaps before the status drops them (history.py), so the status stays
bounded at any study size.

Between restarts a step reads the study and its Jobs from what the watches saw (watched.py)
and reads them from the API server only when the daemon starts, after a failed step and at
each safety poll: a finished trial costs no GET or list.

A finished trial's result comes from its pod's termination message (the kubelet copies it into
the Pod's status): the operator reads and writes no storage, and contacts no URL a study chose
unless the cluster admin allowed it (config.py). The metrics are a cross-check: a value there
that disagrees with the termination message is reported (MetricsMismatch) and never used.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import Any

from boss.history import trial_count
from boss.spec import SpecError, Study, first_difference, fixed_part, growth, parse_study
from boss.store import join
from boss.trial import parse_result_message

from . import opmetrics
from .config import OperatorConfig
from .engine import BOSS, DIVERGED, FAILED, Engine, ReplayError, SmacSettings, Trial, recorded_ahead, smac_trials_of
from .history import History, HistoryError
from .jobs import build_job, job_failure, job_name, job_outcome, oom_killed, queued_trials, termination_message
from .kube import Kube
from .readback import forget_pushgateway_group, metrics_objective
from .trials import make_trial_spec, result_extra
from .watched import Watched

FINAL = ("Succeeded", "Failed")
POD_GRACE_SECONDS = 30.0  # how long after its Job succeeded a trial's pod may still lack its status
STATUS_TOP_K = 10  # top-K entries the status lists (with topKSize: how many there are)
log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rounded(value: float) -> str:
    """An objective as a person reads it in a table: 0.9610, 1234.5, 3.2e-05."""
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.4g}"


def condition(type_: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason,
            "message": message, "lastTransitionTime": _now()}


def _recorded(status: dict[str, Any]) -> bool:
    return bool(status.get("trials")) or bool((status.get("history") or {}).get("trials"))


def computes_ahead(status: dict[str, Any]) -> bool:
    """Whether the study's engine computes configs ahead (Engine.ahead): new studies do; one
    recorded by an operator from before that (no status.engine) replays as it was recorded."""
    return recorded_ahead(status.get("engine"), _recorded(status))


def smac_settings(status: dict[str, Any]) -> SmacSettings:
    """How the study's engine drives SMAC: as status.engine records, or as before it did."""
    return SmacSettings.of_record(status.get("engine"), _recorded(status))


class OperatorConfigProblem(Exception):
    """A started study that the operator's current settings do not allow (see StudyReconciler._hold)."""


class StudyReconciler:
    def __init__(self, kube: Kube, config: OperatorConfig, namespace: str, name: str,
                 watched: Watched | None = None):
        self.kube, self.config = kube, config
        self.namespace, self.name = namespace, name
        self.watched = watched  # None: every step reads the study and its Jobs from the API server
        self.engine: Engine | None = None
        self.history: History | None = None
        self._synced = -math.inf  # when this process last read the study and its Jobs from the API server
        self._pending = False  # a finished Job whose result could not be read yet
        self.study: Study | None = None
        self._written: dict[str, Any] | None = None  # the status this process last wrote
        self._seen_ended: dict[int, float] = {}  # trial -> when this process saw its Job end
        self._queued = 0  # running trials whose Job is suspended (not admitted by Kueue yet)
        self._events: list[tuple[dict[str, Any], str, str, str]] | None = None  # a step's, posted at its end
        self._started: dict[str, Any] | None = None  # the spec the study started with (status.studySpec)
        self._stale: set[str] = set()  # Jobs of an earlier study of this name, already reported
        self._smac_trials: dict[str, int] | None = None  # SMAC's sizes when the budget grew before a replay
        self._grew = False  # the budget grew before the engine was replayed

    # ---- one step ---------------------------------------------------------------------------

    def step(self) -> float | None:
        """Reconcile once; returns seconds until the next step, or None when the study is over.

        What is not needed to start the next trial comes after its Job exists: the step's Events,
        then the engine's next config (Engine.settle)."""
        self._events = []
        try:
            wait = self._step()
        finally:
            events, self._events = self._events or [], None
            for event in events:
                self._event(*event)
        if wait is not None and self.engine is not None:
            self.engine.settle()  # the next config, now that the new Jobs exist: not after the next result
        return wait

    def _step(self) -> float | None:
        fresh = self.engine is None or self.watched is None or \
            time.monotonic() - self._synced >= self.config.poll_seconds
        obj = self._read_study(fresh)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None  # gone, or going: no new trial; the garbage collector takes its Jobs
        status = obj.get("status") or {}
        if status.get("phase") in FINAL:
            opmetrics.study_phase(obj["metadata"].get("uid", self.name), status["phase"])
            return None
        try:
            validated = self._validate(obj)
        except OperatorConfigProblem as e:
            return self._hold(obj, str(e))
        if validated is None:
            return None
        study, live = validated
        if self.engine is None:
            history = History(self.kube, self.namespace, self.name, obj["metadata"].get("uid", ""),
                              self.config.history_chunk)
            try:
                started = time.perf_counter()
                records = history.load(obj)
                self.engine = Engine.replay(study.spec, records, study.name, history.snapshots,
                                            ahead=computes_ahead(status),
                                            smac_trials=(status.get("engine") or {}).get("smacTrials")
                                            or self._smac_trials,
                                            lag=(status.get("engine") or {}).get("lag"),
                                            failure_floor=int((status.get("engine") or {}).get("failureFloor") or 0),
                                            smac=smac_settings(status))
                if self._grew:
                    self.engine.grown()
                    self._grew = False
                opmetrics.REPLAY_SECONDS.observe(time.perf_counter() - started)
            except (ReplayError, HistoryError) as e:
                self._fail(obj, "ReplayFailed", f"the recorded trials cannot be replayed: {e}")
                return None
            self.history = history
            log.info("%s/%s: replayed %d trials in %.2f s", self.namespace, self.name, len(records),
                     time.perf_counter() - started)
        self.study = study
        suspended, parallelism = live.spec.suspend, live.spec.budget.parallelism
        jobs = self._read_jobs(fresh)
        if fresh:
            self._synced = time.monotonic()
        self._pending = False
        jobs = self._own_jobs(obj, jobs)
        self._collect(obj, jobs)
        self._count_queued(jobs, study)
        for t in self.engine.running:  # recorded, but its Job was never created (a crash)
            if job_name(self.name, t.index) not in jobs:
                self._create_job(obj, t)
        while not suspended and len(self.engine.running) < parallelism:
            started = time.perf_counter()
            t = self.engine.ask()
            opmetrics.SUGGESTION_SECONDS.observe(time.perf_counter() - started)
            if t is None:
                break
            t.extra["started"] = time.time()  # for the report's wall-time curve
            if t.index == 0 and not self._job_accepted(obj, t):
                return None
            self._write_status(obj, study, suspended)  # the proposal is recorded before its Job exists
            self._create_job(obj, t)
        self._count_queued(jobs, study)
        phase = self._write_status(obj, study, suspended)
        self._clean_jobs(jobs, study)  # only now: the results of the Jobs it deletes are in the status
        if phase != status.get("phase"):
            self._event(obj, "Normal", "PhaseChanged", f"{status.get('phase') or 'New'} -> {phase}")
        if phase in FINAL:
            best = self.engine.best()
            if phase == "Succeeded" and best is not None:
                self._event(obj, "Normal", "StudySucceeded",
                            f"best trial {best.index}: {study.spec.objective.metric}={best.value:.4f}, "
                            f"checkpoint {best.checkpoint}")
            elif phase == "Failed":
                _, reason, message = self.engine.outcome()
                self._event(obj, "Warning", reason, message)
            return None
        if self._pending:  # a result not readable yet (pod status, a metrics scrape): ask again soon
            return min(self.config.retry_seconds, self.config.poll_seconds)
        return self.config.poll_seconds  # the safety poll: a finished Job or an edit wakes the step

    # ---- the parts ---------------------------------------------------------------------------

    def _read_study(self, fresh: bool) -> dict[str, Any] | None:
        key = (self.namespace, self.name)
        obj = None if fresh or self.watched is None else self.watched.study(key)
        if obj is None:
            obj = self.kube.get_study(self.namespace, self.name)
            if self.watched is not None and obj is not None:
                self.watched.put_study(key, obj)
        return obj

    def _read_jobs(self, fresh: bool) -> dict[str, dict[str, Any]]:
        key = (self.namespace, self.name)
        if fresh or self.watched is None:
            jobs = self.kube.list_jobs(self.namespace, self.name)
            if self.watched is not None:
                self.watched.replace_jobs(key, jobs, getattr(jobs, "resource_version", None))
                jobs = self.watched.jobs(key)  # with what the watch saw while the list was on its way
            return jobs
        return self.watched.jobs(key)

    def _own_jobs(self, obj: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The study's own Jobs. A Job with its label and a trial's name but another owner (or
        none: `kubectl delete --cascade=orphan`) is an earlier study's of the same name: its
        result is another trial's, so it is deleted, never adopted, and this trial's Job is
        created once it is gone."""
        uid = obj["metadata"].get("uid")
        if not uid:
            return jobs
        mine: dict[str, dict[str, Any]] = {}
        for name, job in jobs.items():
            refs = (job.get("metadata") or {}).get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                mine[name] = job
                continue
            if name not in self._stale:
                self._stale.add(name)
                self._event(obj, "Warning", "StaleJobDeleted",
                            f"Job {name} is left from an earlier study named {self.name}; deleted, not adopted")
            if not (job.get("metadata") or {}).get("deletionTimestamp"):
                self.kube.delete_job(self.namespace, name)
            self._pending = True  # look again soon: its trial's own Job is created once it is gone
        return mine

    def _validate(self, obj: dict[str, Any]) -> tuple[Study, Study] | None:
        """(the study as it started, the live one whose suspend/parallelism apply), or None if it failed."""
        status = obj.get("status") or {}
        # the spec the study started with: once this process recorded it, a cached object that
        # carries an edit but not yet that status (a watch event in between) cannot replace it
        self._started = status.get("studySpec") or (self._written or {}).get("studySpec") or obj.get("spec")
        doc = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
               "metadata": {"name": obj["metadata"]["name"], "namespace": self.namespace},
               "spec": self._started}
        try:
            study = parse_study(doc, f"{self.namespace}/{self.name}")
        except SpecError as e:
            self._fail(obj, "InvalidSpec", str(e))
            return None
        problem = self._cluster_problem(study)
        if problem and status.get("studySpec"):  # it ran with this operator's settings before
            raise OperatorConfigProblem(f"{self.namespace}/{self.name}: {problem}")
        if problem:
            self._fail(obj, "InvalidSpec", f"{self.namespace}/{self.name}: {problem}")
            return None
        live = study
        if obj.get("spec") != self._started:
            try:
                live = parse_study({**doc, "spec": obj.get("spec")}, f"{self.namespace}/{self.name}")
            except SpecError as e:  # a bad edit of a running study: keep running as started
                log.warning("%s; the edit is ignored", e)
                return study, study
            diff, grew = growth(study.to_document(), live.to_document(), trial_count(status))
            if diff is None and grew:  # the budget grew: the study goes on with it, all recorded trials kept
                self._smac_trials = self._smac_trials or (status.get("engine") or {}).get("smacTrials") \
                    or smac_trials_of(study.spec)  # each phase's SMAC keeps the size it started with
                self._started = obj.get("spec")
                if self.engine is not None:
                    self.engine.spec = live.spec
                    self.engine.grown()
                else:
                    self._grew = True  # told to the engine once it is replayed
                self._event(obj, "Normal", "BudgetGrown", f"{grew}; the recorded trials are kept")
                return live, live
            changed = first_difference(fixed_part(study.to_document()), fixed_part(live.to_document()))
            if changed:
                log.warning("%s/%s: %s changed after the study started; only suspend, parallelism, "
                            "budget.trials and budget.maxFailedTrials apply", self.namespace, self.name, changed)
        return study, live

    def _cluster_problem(self, study: Study) -> str | None:
        s = study.spec
        refused = [f"{field}: {url!r} is not allowed on this cluster (the cluster admin lists the URLs a "
                   f"study may name: chart value {value}); leave it out to use the cluster's own"
                   for field, url, allowed, value in (
                       ("spec.storage.endpoint", s.storage.endpoint, self.config.allows_storage_endpoint,
                        "allowed.storageEndpoints"),
                       ("spec.metrics.pushgateway", s.metrics.pushgateway, self.config.allows_metrics_url,
                        "allowed.metricsUrls"),
                       ("spec.metrics.prometheus", s.metrics.prometheus, self.config.allows_metrics_url,
                        "allowed.metricsUrls"))
                   if url is not None and not allowed(url)]
        if refused:
            return "; ".join(refused)
        if not (s.trainer.image or self.config.trainer_image):
            return ("spec.trainer.image: required (no default trainer image is set: the chart's trainer.image, "
                    "which `make deploy REGISTRY=...` sets)")
        if not (s.metrics.pushgateway or self.config.pushgateway):
            return "spec.metrics.pushgateway: required on a cluster (or set the operator's default)"
        uri = s.storage.uri or self.config.storage_uri
        if not uri:
            return "spec.storage.uri: required on a cluster (or set the operator's default)"
        if "://" not in uri or uri.startswith("file://"):
            return f"spec.storage.uri: trials run in other pods; use object storage (s3://, gs://), not {uri!r}"
        return None

    def _root(self, study: Study) -> str:
        """The study's storage root, <uri>/<namespace>: same-named studies in two namespaces
        may share a bucket (the operator's default) and must not overwrite each other. Only
        trials use it; the operator computes every URI it hands them from it."""
        return join(study.spec.storage.uri or self.config.storage_uri, self.namespace)

    def _job_accepted(self, obj: dict[str, Any], t: Trial) -> bool:
        """The first trial's Job, dry-run on the API server before anything is recorded: a pod
        template it refuses fails the study with the server's own message, and no Job exists."""
        problem = self.kube.refuses_job(self.namespace, self._job_body(obj, t))
        if problem:
            self._fail(obj, "InvalidSpec", f"{self.namespace}/{self.name}: the trial Job is refused (check "
                       f"spec.trainer.podTemplate): {problem}")
        return problem is None

    def _count_queued(self, jobs: dict[str, dict[str, Any]], study: Study) -> None:
        """Running trials whose Job waits for Kueue (jobs.queued_trials)."""
        assert self.engine is not None
        self._queued = queued_trials(jobs, self.name, [t.index for t in self.engine.running],
                                     created_suspended=bool(study.spec.trainer.queue_name))

    def _create_job(self, obj: dict[str, Any], t: Trial) -> None:
        body = self._job_body(obj, t)
        if self.kube.create_job(self.namespace, body):
            opmetrics.TRIALS_STARTED.inc()
        if self.watched is not None:  # known to exist now, whether or not its watch event came yet
            key = (self.namespace, self.name)
            if self.watched.job(key, body["metadata"]["name"]) is None:
                self.watched.put_job(key, body["metadata"]["name"], body)

    def _job_body(self, obj: dict[str, Any], t: Trial) -> dict[str, Any]:
        assert self.study is not None and self.engine is not None
        ts = make_trial_spec(self.study, self.engine, t, self._root(self.study))
        ts = ts.model_copy(update={
            "namespace": self.namespace,
            "pushgateway": self.study.spec.metrics.pushgateway or self.config.pushgateway,
            "storage_endpoint": self.study.spec.storage.endpoint or self.config.storage_endpoint,
        })
        return build_job(self.study, obj["metadata"].get("uid", ""), self.namespace, ts,
                         self.study.spec.trainer.image or self.config.trainer_image,
                         self.study.spec.storage.secret_ref or self.config.storage_secret,
                         self.config.backoff_limit)

    def _collect(self, obj: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> bool:
        """Tell the engine about every running trial whose Job has ended."""
        assert self.engine is not None and self.study is not None
        changed = False
        for t in list(self.engine.running):
            job = jobs.get(job_name(self.name, t.index))
            outcome = job_outcome(job) if job else None
            if outcome is None:
                continue
            if outcome == "failed":
                said = self._pod_message(job, succeeded=False)
                said = f": {said}" if said else ""
                self.engine.tell(t.index, failed=True, message=f"{job_failure(job)}{said} "
                                 f"(log: boss logs {self.name} {t.index} -n {self.namespace})")
            else:
                result = self._read_result(obj, t, job)
                if result is None:
                    self._pending = True
                    continue  # the pod's status or a metrics scrape not there yet: try again soon
                value, checkpoint, checksum, extra, message = result
                diverged = bool(extra.pop("diverged", False))
                t.extra.update(extra)
                self.engine.tell(t.index, value, checkpoint=checkpoint, checksum=checksum,
                                 failed=value is None and not diverged, diverged=diverged, message=message)
            changed = True
            metric = self.study.spec.objective.metric
            if t.state == FAILED:
                opmetrics.TRIALS_FINISHED.labels("failed").inc()
                self._event(obj, "Warning", "TrialFailed", f"trial {t.index} ({t.phase}) failed: {t.message}")
            elif t.state == DIVERGED:
                opmetrics.TRIALS_FINISHED.labels("diverged").inc()
                self._event(obj, "Warning", "TrialDiverged", f"trial {t.index} ({t.phase}) diverged: {t.message}")
            else:
                opmetrics.TRIALS_FINISHED.labels("succeeded").inc()
                self._event(obj, "Normal", "TrialSucceeded", f"trial {t.index} ({t.phase}) {metric}={t.value:.4f}")
        return changed

    def _clean_jobs(self, jobs: dict[str, dict[str, Any]], study: Study) -> None:
        """Delete the Jobs of succeeded trials beyond the newest `trainer.keepFinishedJobs`: a large
        study would otherwise keep a Job, a pod and a Pushgateway group per trial (etcd, the Job
        controller, the safety poll's list and each metrics cross-check all grow with them).
        Called after the status recording their results is written, so a crash never loses a
        result with its Job. Failed trials keep theirs."""
        assert self.engine is not None
        done = sorted((t for t in self.engine.succeeded if job_name(self.name, t.index) in jobs),
                      key=lambda t: t.told if t.told is not None else t.index)
        gateway = study.spec.metrics.pushgateway or self.config.pushgateway
        for t in done[: max(0, len(done) - study.spec.trainer.keep_finished_jobs)]:
            name = job_name(self.name, t.index)
            self.kube.delete_job(self.namespace, name)
            if self.watched is not None:
                self.watched.put_job((self.namespace, self.name), name, None)
            if gateway:  # its metrics group goes with it: every cross-check reads all the groups
                try:
                    forget_pushgateway_group(gateway, self.name, t.index, self.namespace)
                except (OSError, ValueError) as e:
                    log.warning("%s: cannot drop the Pushgateway group of trial %d: %s", self.name, t.index, e)

    def _pod_message(self, job: dict[str, Any], succeeded: bool) -> str | None:
        """The termination message of the Job's last succeeded (failed) pod; for a failed one its
        last line, shortened, or that it went over its memory limit."""
        try:
            pods = self.kube.list_pods(self.namespace, job["metadata"]["name"])
        except Exception as e:  # a failure's message is worth a try, never a failed step
            if succeeded:
                raise
            log.warning("%s: cannot list the pods of %s: %s", self.name, job["metadata"]["name"], e)
            return None
        message = termination_message(job, pods, succeeded)
        if succeeded:
            return message
        oom = oom_killed(job, pods)
        if oom or not message:
            return oom
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        return last if len(last) <= 300 else last[:297] + "..."

    def _read_result(self, obj: dict[str, Any], t: Trial, job: dict[str, Any]):
        """(value, checkpoint, checksum, extra, message) of a succeeded Job, None to retry later.

        The result is the trial's termination message in its pod's status; the Pushgateway or
        Prometheus only cross-checks it."""
        assert self.study is not None and self.engine is not None
        ts = make_trial_spec(self.study, self.engine, t, self._root(self.study))
        metric = self.study.spec.objective.metric
        message = self._pod_message(job, succeeded=True)
        if message is None:
            if self._since_end(t, job) < POD_GRACE_SECONDS:
                return None  # the pod's status may not show it yet
            self._seen_ended.pop(t.index, None)
            return None, None, None, {}, "the Job succeeded but its pod holds no result (no termination message)"
        try:
            result = parse_result_message(message)
        except ValueError as e:
            return None, None, None, {}, f"the trial's termination message is not its result: {e}"
        problem = None
        diverged = bool(result.get("diverged"))
        if (result["study"], result["trial"], result["metric"]) != (self.name, t.index, metric):
            problem = (f"the trial's termination message is the result of {result['study']} trial {result['trial']} "
                       f"({result['metric']}), not of {self.name} trial {t.index} ({metric})")
        elif result.get("checkpoint") not in (None, ts.checkpoint_uri):
            problem = (f"the trial says its checkpoint is {result['checkpoint']}, not {ts.checkpoint_uri} "
                       "where the operator told it to save it")
        if problem:
            return None, None, None, {}, problem
        if diverged:  # no objective was pushed: nothing to cross-check
            self._seen_ended.pop(t.index, None)
            return None, None, None, {**result_extra(result, metric), "seconds": result.get("seconds"),
                                      "diverged": True}, None
        value = float(result["value"])
        spec = self.study.spec.metrics
        check = metrics_objective(metric, self.name, t.index, namespace=self.namespace,
                                  pushgateway=spec.pushgateway or self.config.pushgateway,
                                  prometheus=spec.prometheus or self.config.prometheus,
                                  wait_seconds=spec.wait_seconds, since_end=lambda: self._since_end(t, job))
        if check is None:
            return None  # Prometheus may not have scraped it yet: ask again next step
        self._seen_ended.pop(t.index, None)
        extra = {**result_extra(result, metric), "seconds": result.get("seconds"), "objectiveFrom": "terminationMessage"}
        if check.value is None:
            self._event(obj, "Warning", "MetricsUnavailable" if check.unreadable else "MetricsMissing",
                        f"trial {t.index}: {check.problem}; the trial's termination message gives {metric}={value:.6g}")
        elif math.isclose(check.value, value, rel_tol=1e-9, abs_tol=1e-12):
            extra["checkedAgainst"] = check.source
        else:
            extra["metricsMismatch"] = {"source": check.source, "value": check.value}
            self._event(obj, "Warning", "MetricsMismatch",
                        f"trial {t.index}: {check.source} says {metric}={check.value:.6g} but the trial's termination "
                        f"message says {value:.6g}; recorded {value:.6g} (the metrics are not used: anyone who can "
                        "reach the Pushgateway can push to this trial's group)")
        return value, ts.checkpoint_uri, result.get("sha256"), extra, None

    def _since_end(self, t: Trial, job: dict[str, Any]) -> float:
        """Seconds since the trial's Job completed (by its completionTime, else since seen)."""
        now = time.time()
        seen = self._seen_ended.setdefault(t.index, now)
        stamp = (job.get("status") or {}).get("completionTime")
        try:
            ended = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else seen
        except (AttributeError, ValueError):
            ended = seen
        return now - min(seen, ended)

    def _write_status(self, obj: dict[str, Any], study: Study, suspended: bool) -> str:
        e = self.engine
        assert e is not None
        reason, message = "", ""
        if e.finished:
            phase, reason, message = e.outcome()
        elif suspended:
            phase = "Suspended"
        else:
            phase = "Distilling" if e.phase == BOSS else "WarmingUp"
        best, top = e.best(), e.top_k()
        conditions = [condition("Ready", phase not in FINAL, phase, f"{len(e.trials)} of {study.spec.budget.trials} trials proposed"),
                      condition("Suspended", suspended, "SpecSuspend" if suspended else "Running",
                                "spec.suspend is true: no new trials start" if suspended else "")]
        if phase in FINAL:
            conditions.append(condition(phase, True, reason, message))
        status: dict[str, Any] = {
            "phase": phase,
            "studySpec": self._started,
            "trialsTotal": study.spec.budget.trials,
            "trialsCompleted": sum(t.done for t in e.trials),
            "trialsRunning": len(e.running) - min(self._queued, len(e.running)),
            "trialsQueued": min(self._queued, len(e.running)),  # Jobs Kueue has not admitted: no pods, no clock
            "trialsFailed": len(e.failed),
            "trialsDiverged": len(e.diverged),  # ran, objective never finite: told to SMAC as its worst
            "trialsStoppedEarly": sum(bool(t.extra.get("stoppedEarly")) for t in e.trials),
            "best": None if best is None else {
                "trial": best.index, "value": best.value, "phase": best.phase, "config": best.config,
                "checkpoint": best.checkpoint, "test": best.extra.get("test", {}),
            },
            # the best of the top-K (spec.boss.topK may be 10,000: all of them would pass etcd's
            # object size); the whole of it follows from the trials (`boss status`, the report)
            "bestValue": None if best is None else rounded(best.value),  # for `kubectl get boss`
            "topK": [{"trial": t.index, "value": t.value, "phase": t.phase, "checkpoint": t.checkpoint}
                     for t in top[:STATUS_TOP_K]],
            "topKSize": len(top),
            "conditions": conditions,
            "engine": e.record(),
            "observedGeneration": obj["metadata"].get("generation"),  # the spec this status reflects
        }
        status.update(self._trials_status())
        earlier = {c["type"]: c for c in ((self._written or obj.get("status") or {}).get("conditions") or [])}
        for c in conditions:  # a condition's time moves only when it changes
            old = earlier.get(c["type"])
            if old and (old.get("status"), old.get("reason")) == (c["status"], c["reason"]):
                c["lastTransitionTime"] = old.get("lastTransitionTime", c["lastTransitionTime"])
        status["completedAt"] = _now() if phase in FINAL else None  # None: a grown study runs again
        if status != self._written:  # a poll that changed nothing writes nothing
            self.kube.patch_status(self.namespace, self.name, status)
            self._written = status
        opmetrics.study_phase(obj["metadata"].get("uid", self.name), phase)
        return phase

    def _trials_status(self) -> dict[str, Any]:
        """The trials part of the status: full chunks of results go to their ConfigMaps first
        (created before the status names them), the rest stays here, bounded."""
        assert self.engine is not None and self.history is not None
        self.history.archive(self.engine.trials, self.engine.snapshot)
        return {"trials": self.history.tail(self.engine.trials), "history": self.history.summary()}

    def _hold(self, obj: dict[str, Any], message: str) -> float:
        """A started study that this operator's settings cannot run now (a default or an allowed
        URL gone after a restart): a slip of the operator's configuration, not the study's fault.
        Nothing is failed or started; a condition and an Event say why, and the study goes on
        as soon as the operator runs with settings that allow it (the condition then clears)."""
        held = [condition("Ready", False, "OperatorConfig", message)]
        earlier = [c for c in ((obj.get("status") or {}).get("conditions") or []) if c.get("type") == "Ready"]
        if not earlier or (earlier[0].get("reason"), earlier[0].get("message")) != ("OperatorConfig", message):
            self.kube.patch_status(self.namespace, self.name, {"conditions": held})
            self._event(obj, "Warning", "OperatorConfig", f"{message}; the study waits (nothing failed)")
        self._written = None  # written again in full once the settings allow it
        self.engine = None
        return self.config.poll_seconds

    def _fail(self, obj: dict[str, Any], reason: str, message: str) -> None:
        """A study that cannot run: phase Failed, a condition and an Event; nothing is created."""
        self.kube.patch_status(self.namespace, self.name, {
            "phase": "Failed",
            "conditions": [condition("Ready", False, reason, message), condition("Failed", True, reason, message)],
        })
        self._event(obj, "Warning", reason, message)
        opmetrics.study_phase(obj["metadata"].get("uid", self.name), "Failed")

    def _event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if self._events is not None:  # in a step: posted when it is done
            self._events.append((obj, type_, reason, message))
            return
        try:
            self.kube.event(obj, type_, reason, message)
        except Exception as e:  # an Event is worth a try, never a failed step
            log.warning("%s: cannot post event %s: %s", self.name, reason, e)
