"""The kopf handlers: one daemon per BossStudy runs the reconcile step until the study ends.

Sync daemon: kopf runs it in a thread, so SMAC's CPU work never blocks the event loop. The
daemon keeps the engine in memory between steps; after an operator restart a new daemon
rebuilds it by replay from the study's status and history.

The daemon sleeps until something happens: a trial Job that finished (kopf watches Jobs with
the study label) or a change of the study wakes it at once (watched.py); the poll of
`BOSS_POLL_SECONDS` (60) is only a safety net for a watch that missed something.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import kopf
from boss.history import trial_count
from boss.spec import growth
from prometheus_client import start_http_server

from . import opmetrics
from .config import OperatorConfig
from .crd import GROUP, PLURAL, VERSION
from .jobs import LABEL_STUDY, job_outcome, job_queued
from .kube import Kube
from .readback import forget_pushgateway_groups
from .study import FINAL, StudyReconciler, condition
from .watched import Watched

PREFIX = GROUP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events tell the story; kopf adds warnings
    settings.watching.server_timeout = 300
    # kopf holds a deleted study's finalizer until its daemon ends, and looks again only after
    # the daemon's cancellation backoff unless it ends within this wait: it does (the deletion
    # wakes it), so `kubectl delete` returns in about a second
    settings.background.instant_exit_timeout = 3.0
    # every study's daemon is a sync function holding one of kopf's executor threads for the
    # study's life; the default pool (cores + 4 threads) would leave all but a few studies
    # waiting for a thread. Blocked threads cost little: allow one per study.
    settings.execution.max_workers = int(os.environ.get("BOSS_MAX_STUDIES", "1024"))
    if memo.get("namespaces"):
        # named namespaces, with a Role each: nothing cluster-scoped (namespaces, CRDs) may be
        # listed, so kopf watches exactly the names it was given
        settings.scanning.disabled = True
    memo.config = OperatorConfig.from_env()
    memo.kube = Kube()
    memo.watched = Watched()
    port = int(os.environ.get("BOSS_METRICS_PORT", "8000"))
    if port:
        start_http_server(port)


# a deleted study's daemon is asked to stop, kopf waits `instant_exit_timeout` for it, then looks
# again at `cancellation_backoff` (a step that was computing still ends in seconds), and only
# after that at the cancellation timeout
def _not_over(status: kopf.Status, **_) -> bool:
    """Daemons run for studies that are not over: none is started for a finished study (an
    operator may find thousands), kopf stops a study's daemon when it ends, and starts it again
    when the study goes on (its budget grown: study_changed)."""
    return (status or {}).get("phase") not in FINAL


@kopf.daemon(GROUP, VERSION, PLURAL, when=_not_over, cancellation_backoff=5.0, cancellation_timeout=30)
def run_study(stopped: kopf.DaemonStopped, name: str, namespace: str, memo: kopf.Memo,
              logger: logging.Logger, **_) -> None:
    key = (namespace, name)
    wake = memo.watched.wake_event(key)
    reconciler = StudyReconciler(memo.kube, memo.config, namespace, name, memo.watched)
    while not stopped:
        wake.clear()  # what happens from here on wakes the next step
        try:
            wait = reconciler.step()
        except Exception as e:  # the API server or the metrics hiccuped: the next step redoes it
            logger.exception(f"reconcile step failed, retrying: {e}")
            reconciler.engine = None  # rebuild from the status and history, the only truth
            wait = min(memo.config.poll_seconds, 5.0)
        if wait is None:
            # over (or going): kopf stops this daemon when it sees the final phase (the `when`
            # filter), which lets it start again if the study grows; a daemon that returned on
            # its own would never be started again for this study
            stopped.wait(300)
            return
        deadline = time.monotonic() + wait
        while not stopped and not wake.is_set() and time.monotonic() < deadline:
            wake.wait(min(1.0, max(0.0, deadline - time.monotonic())))  # 1 s slices: see `stopped` too


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_STUDY: kopf.PRESENT})
async def trial_job_changed(type: str, body: kopf.Body, name: str, namespace: str, labels: kopf.Labels,
                      memo: kopf.Memo, **_) -> None:
    """A trial Job's watch event: keep it for the study's next step; wake the study when it finished
    or Kueue admitted it.
    Async on purpose: it runs on kopf's event loop, never queued behind the daemons' threads."""
    watched: Watched | None = memo.get("watched")
    if watched is None:
        return
    key = (namespace, labels.get(LABEL_STUDY, ""))
    if type == "DELETED":
        watched.put_job(key, name, None, deleted_rv=body.get("metadata", {}).get("resourceVersion"))
        return
    before = watched.job(key, name)
    watched.put_job(key, name, dict(body))
    if job_outcome(body) is not None or (before is not None and job_queued(before) != job_queued(body)):
        watched.wake(key)  # finished, or admitted by Kueue (queued -> running shows at once)


async def _resume_if_grown(namespace: str, name: str, body: dict, memo: kopf.Memo, logger: logging.Logger) -> None:
    """A finished study whose budget was raised (`kubectl edit`/`apply`: budget.trials or
    budget.maxFailedTrials, nothing else) goes on: its phase becomes Resuming, which starts its
    daemon again (run_study's filter); the daemon then adopts the grown budget."""
    status = body.get("status") or {}
    started, spec = status.get("studySpec"), body.get("spec")
    if not started or started == spec:
        return
    wrap = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": {"name": name}}
    diff, grew = growth({**wrap, "spec": started}, {**wrap, "spec": spec}, trial_count(status))
    if diff is not None or not grew:
        return  # not a growth: a finished study's other edits change nothing
    logger.info(f"{namespace}/{name}: {grew}; the study goes on")
    await asyncio.to_thread(memo.kube.patch_status, namespace, name, {
        "phase": "Resuming",
        "conditions": [condition("Ready", True, "BudgetGrown", f"{grew}; the recorded trials are kept")]})


@kopf.on.event(GROUP, VERSION, PLURAL)
async def study_changed(type: str, uid: str, name: str, namespace: str, spec: kopf.Spec, status: kopf.Status,
                  body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_) -> None:
    """Jobs go with the study through their ownerReferences; the metrics forget it here
    (the operator's own, and the trials' groups on the Pushgateway, which never expire).
    Checkpoints stay in storage: they are the user's.

    A watch event, not an on.delete handler: that would need a finalizer on every study, and
    a finished study could then not be deleted while the operator is down.

    Any other event keeps the study for its daemon's next step, and wakes it when someone else
    changed it (an edit of suspend or parallelism) or marked it for deletion; its own status
    writes do not wake it."""
    watched: Watched | None = memo.get("watched")
    key = (namespace, name)
    if type != "DELETED" and (status or {}).get("phase") in FINAL and body is not None:
        await _resume_if_grown(namespace, name, dict(body), memo, logger)
    if type != "DELETED":
        if watched is not None and body is not None:
            old = watched.study(key)
            watched.put_study(key, dict(body))
            if old is None or old.get("spec") != dict(body).get("spec") or \
                    body.metadata.get("deletionTimestamp"):  # its daemon ends at once (kopf waits for it)
                watched.wake(key)
        return
    successor = watched is not None and (watched.study(key) or {}).get("metadata", {}).get("uid") not in (None, uid)
    if successor:  # a late event: a new study of this name exists; its wake-up, Jobs and groups are its own
        logger.info(f"an earlier study named {name} was deleted; the new one keeps its state")
        opmetrics.study_phase(uid, None)
        return
    if watched is not None:
        watched.forget(key)
    opmetrics.study_phase(uid, None)
    named = (spec.get("metrics") or {}).get("pushgateway")
    # only a Pushgateway the cluster admin configured or allowed: never a URL a study chose
    gateway = named if isinstance(named, str) and memo.config.allows_metrics_url(named) else memo.config.pushgateway
    trials = list(range(trial_count(status)))  # every trial is either archived or in the tail
    if gateway and trials:  # HTTP calls: in a thread, not on the event loop
        await asyncio.to_thread(forget_pushgateway_groups, gateway, name, namespace, trials, logger)
