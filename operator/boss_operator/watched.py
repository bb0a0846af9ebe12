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
        self._gone: dict[Key, dict[str, str | None]] = {}  # Jobs deleted since the last list: name -> rv

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
            elif not _newer(_rv(self._studies.get(key)), _rv(body)):  # a GET older than an event: keep the event's
                self._studies[key] = copy.deepcopy(dict(body))

    def study(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            body = self._studies.get(key)
            return copy.deepcopy(body) if body is not None else None

    def put_job(self, key: Key, name: str, body: dict[str, Any] | None, deleted_rv: str | None = None) -> None:
        """A Job as a watch event (or our own create) shows it; None: deleted (at `deleted_rv`,
        None when this operator deleted it)."""
        with self._lock:
            jobs = self._jobs.setdefault(key, {})
            if body is None:
                jobs.pop(name, None)
                self._gone.setdefault(key, {})[name] = deleted_rv
            else:
                if _newer(_rv(jobs.get(name)), _rv(body)):
                    return  # an older event arriving late: keep what we have
                jobs[name] = copy.deepcopy(dict(body))

    def replace_jobs(self, key: Key, jobs: dict[str, dict[str, Any]], list_rv: str | None = None) -> None:
        """What a list of the API server said (as of `list_rv`, the list's resourceVersion), merged
        with what the watch said meanwhile: a Job that finished, appeared or went away after the
        list was taken stays as the watch saw it (else a finished trial, seen on the watch while
        the list was on its way, would be forgotten until the next safety poll)."""
        with self._lock:
            cached, gone = self._jobs.get(key, {}), self._gone.get(key, {})
            merged: dict[str, dict[str, Any]] = {}
            for name, body in jobs.items():
                old = cached.get(name)
                if _newer(_rv(old), _rv(body)):
                    merged[name] = old  # the watch saw a newer state
                elif name in gone and (gone[name] is None or not _newer(_rv(body), gone[name])):
                    continue  # deleted after the list was taken
                else:
                    merged[name] = copy.deepcopy(body)
            for name, old in cached.items():
                if name not in merged and (_rv(old) is None or _newer(_rv(old), list_rv)):
                    merged[name] = old  # created after the list was taken (or by us, not seen yet)
            self._jobs[key] = merged
            # tombstones the list has caught up with are no longer needed
            self._gone[key] = {n: r for n, r in gone.items() if n in jobs}  # gone from lists from now on

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
            self._gone.pop(key, None)


def _rv(body: dict[str, Any] | None) -> str | None:
    return ((body or {}).get("metadata") or {}).get("resourceVersion")


def _newer(a: str | None, b: str | None) -> bool:
    """Whether resourceVersion a is newer than b (etcd revisions; unknown or opaque: not newer)."""
    try:
        return int(a) > int(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
