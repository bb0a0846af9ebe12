"""The kopf handlers: one daemon per BossStudy runs the reconcile step until the study ends.

Sync daemon: kopf runs it in a thread, so SMAC's CPU work never blocks the event loop. The
daemon keeps the engine in memory between steps; after an operator restart a new daemon
rebuilds it by replay from the study's status.
"""

from __future__ import annotations

import logging
import os

import kopf
from prometheus_client import start_http_server

from . import opmetrics
from .config import OperatorConfig
from .crd import GROUP, PLURAL, VERSION
from .kube import Kube
from .readback import forget_pushgateway_groups
from .study import StudyReconciler

PREFIX = GROUP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events tell the story; kopf adds warnings
    settings.watching.server_timeout = 300
    if memo.get("namespaces"):
        # named namespaces, with a Role each: nothing cluster-scoped (namespaces, CRDs) may be
        # listed, so kopf watches exactly the names it was given
        settings.scanning.disabled = True
    memo.config = OperatorConfig.from_env()
    memo.kube = Kube()
    port = int(os.environ.get("BOSS_METRICS_PORT", "8000"))
    if port:
        start_http_server(port)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=30)
def run_study(stopped: kopf.DaemonStopped, name: str, namespace: str, memo: kopf.Memo,
              logger: logging.Logger, **_) -> None:
    reconciler = StudyReconciler(memo.kube, memo.config, namespace, name)
    while not stopped:
        try:
            wait = reconciler.step()
        except Exception as e:  # the API server or the metrics hiccuped: the next step redoes it
            logger.exception(f"reconcile step failed, retrying: {e}")
            reconciler.engine = None  # rebuild from the status, the only truth
            wait = memo.config.poll_seconds
        if wait is None:
            return
        stopped.wait(wait)


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_study(type: str, uid: str, name: str, namespace: str, spec: kopf.Spec, status: kopf.Status,
                 memo: kopf.Memo, logger: logging.Logger, **_) -> None:
    """Jobs go with the study through their ownerReferences; the metrics forget it here
    (the operator's own, and the trials' groups on the Pushgateway, which never expire).
    Checkpoints stay in storage: they are the user's.

    A watch event, not an on.delete handler: that would need a finalizer on every study, and
    a finished study could then not be deleted while the operator is down."""
    if type != "DELETED":
        return
    opmetrics.study_phase(uid, None)
    named = (spec.get("metrics") or {}).get("pushgateway")
    # only a Pushgateway the cluster admin configured or allowed: never a URL a study chose
    gateway = named if isinstance(named, str) and memo.config.allows_metrics_url(named) else memo.config.pushgateway
    trials = [t.get("index") for t in status.get("trials") or [] if isinstance(t, dict)]
    if gateway and trials:
        forget_pushgateway_groups(gateway, name, namespace, trials, logger)
