"""What the operator's watches have seen, per study: the study object, its Jobs, and a wake-up.

kopf watches the studies and the trial Jobs (label boss.automl.io/study); its event handlers
put each object here and wake the study's daemon when a Job has finished or the study changed.
The reconcile step then reads the study and its Jobs from here instead of asking the API
server, so a finished trial costs no GET or list and its successor starts at once. The watch
can lag or miss (a reconnect): the daemon still reads both from the API server when it starts,
after a failed step, and at each safety poll (`BOSS_RESYNC_SECONDS`).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

Key = tuple[str, str]  # (namespace, study)


class Watched:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[Key, dict[str, Any]] = {}
        self._jobs: dict[Key, dict[str, dict[str, Any]]] = {}
        self._wakes: dict[Key, threading.Event] = {}

    def wake_event(self, key: Key) -> threading.Event:
        with self._lock:
            return self._wakes.setdefault(key, threading.Event())

    def wake(self, key: Key) -> None:
        self.wake_event(key).set()

    def put_study(self, key: Key, body: dict[str, Any] | None) -> None:
        with self._lock:
            if body is None:
                self._studies.pop(key, None)
                self._jobs.pop(key, None)
            else:
                self._studies[key] = copy.deepcopy(dict(body))

    def study(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            body = self._studies.get(key)
            return copy.deepcopy(body) if body is not None else None

    def put_job(self, key: Key, name: str, body: dict[str, Any] | None) -> None:
        with self._lock:
            jobs = self._jobs.setdefault(key, {})
            if body is None:
                jobs.pop(name, None)
            else:
                old = jobs.get(name)
                rv = (body.get("metadata") or {}).get("resourceVersion")
                old_rv = (old or {}).get("metadata", {}).get("resourceVersion")
                if old is not None and rv and old_rv and _newer(old_rv, rv):
                    return  # an older event arriving late: keep what we have
                jobs[name] = copy.deepcopy(dict(body))

    def replace_jobs(self, key: Key, jobs: dict[str, dict[str, Any]]) -> None:
        """What a list of the API server said: the whole truth as of now."""
        with self._lock:
            self._jobs[key] = copy.deepcopy(jobs)

    def jobs(self, key: Key) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._jobs.get(key, {}))

    def job(self, key: Key, name: str) -> dict[str, Any] | None:
        """One Job as last seen (no copy of the study's whole map: a watch event's lookup)."""
        with self._lock:
            return self._jobs.get(key, {}).get(name)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._studies.pop(key, None)
            self._jobs.pop(key, None)
            self._wakes.pop(key, None)


def _newer(a: str, b: str) -> bool:
    """Whether resourceVersion a is newer than b (etcd revisions; opaque strings otherwise)."""
    try:
        return int(a) > int(b)
    except ValueError:
        return False
