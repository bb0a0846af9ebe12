"""Writing a study's history: finished trials, `chunk_size` at a time, into ConfigMaps it owns.

The format is boss.history's (shared with the clients). Chunks hold trials in the order their
results came in (`told`), so a chunk is complete as soon as that many results exist, whatever
still runs; running trials always stay in the status (at most `parallelism` of them), and so do
finished ones short of a full chunk. The status therefore holds at most `chunk_size` +
`parallelism` trials, whatever the size of the study.

Order of writes, safe to kill between any two: a chunk ConfigMap is created (immutable) before
the status names it; a chunk that exists but is not named yet (a kill in between) is found on
create (409), checked to hold exactly the same trials, and then named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from boss.history import (
    LABEL_HISTORY,
    LABEL_STUDY,
    SNAPSHOT_KEY,
    TRIALS_KEY,
    HistoryError,
    assemble,
    chunk_name,
    chunk_snapshot,
    chunk_trials,
    named_chunks,
    owned_by,
    pack,
    recorded,
)

from .crd import GROUP, VERSION
from .engine import Trial
from .kube import Kube


def record(t: Trial) -> dict[str, Any]:
    """A trial as the cluster stores it: without its early-stopping thresholds (one per epoch,
    for each of up to `parallelism` running trials, they alone could pass etcd's object size);
    make_trial_spec computes them again from the record when a Job needs them."""
    d = t.to_dict()
    d["extra"] = {k: v for k, v in d["extra"].items() if k != "earlyStop"}
    return d


class History:
    """One study's archived trials: how many chunks exist, and writing the next ones."""

    def __init__(self, kube: Kube, namespace: str, study: str, uid: str, chunk_size: int):
        self.kube, self.namespace, self.study, self.uid = kube, namespace, study, uid
        self.chunk_size = chunk_size
        self.chunks = 0  # ConfigMaps the status names
        self.archived = 0  # trials in them: results 0..archived-1 in told order
        self.snapshots: list[dict[str, Any]] = []  # engine snapshots kept with the chunks, newest first

    def load(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """Every recorded trial of the study (chunks + status tail); remembers where the chunks end."""
        status = obj.get("status") or {}
        self.chunks, self.archived = recorded(status)
        if self.chunks and (status.get("history") or {}).get("chunkSize"):
            self.chunk_size = int(status["history"]["chunkSize"])  # a study keeps the size it started with
        cms = self.kube.list_config_maps(self.namespace, f"{LABEL_STUDY}={self.study},{LABEL_HISTORY}=trials") \
            if self.chunks else []
        records = assemble(self.study, self.uid, status, cms)
        found = named_chunks(self.study, self.uid, status, cms)
        self.snapshots = [s for k in sorted(found, reverse=True) if (s := chunk_snapshot(found[k])) is not None]
        return records

    def archive(self, trials: list[Trial], snapshot: Callable[[], dict[str, Any]] | None = None) -> bool:
        """Write every full chunk of finished trials not archived yet, the last one with the
        engine's snapshot (what a restart replays from); True if any was written."""
        by_told = {t.told: t for t in trials if t.told is not None}
        wrote = False
        while all(i in by_told for i in range(self.archived, self.archived + self.chunk_size)):
            chunk = [record(by_told[i]) for i in range(self.archived, self.archived + self.chunk_size)]
            last = not all(i in by_told for i in range(self.archived + self.chunk_size,
                                                      self.archived + 2 * self.chunk_size))
            self._write(self.chunks, chunk, snapshot() if last and snapshot is not None else None)
            self.chunks += 1
            self.archived += self.chunk_size
            wrote = True
        return wrote

    def tail(self, trials: list[Trial]) -> list[dict[str, Any]]:
        """What stays in the status: running trials and results not archived yet, by index."""
        return [record(t) for t in trials if t.told is None or t.told >= self.archived]

    def summary(self) -> dict[str, Any]:
        return {"configMaps": self.chunks, "trials": self.archived, "chunkSize": self.chunk_size}

    def _write(self, k: int, trials: list[dict[str, Any]], snapshot: dict[str, Any] | None) -> None:
        name = chunk_name(self.study, k)
        body = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name, "namespace": self.namespace,
                "labels": {LABEL_STUDY: self.study, LABEL_HISTORY: "trials"},
                "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "BossStudy", "name": self.study,
                                     "uid": self.uid, "controller": True, "blockOwnerDeletion": True}],
            },
            "immutable": True,
            "binaryData": {TRIALS_KEY: pack(trials), **({SNAPSHOT_KEY: pack(snapshot)} if snapshot else {})},
        }
        if self.kube.create_config_map(self.namespace, body):
            return
        # a kill after the create and before the status named it, or a leftover of an earlier
        # study of the same name that the garbage collector has not removed yet
        found = self.kube.read_config_map(self.namespace, name)
        if found is None:
            raise HistoryError(f"ConfigMap {name} exists and does not (it was deleted meanwhile); retrying")
        if owned_by(found, self.uid) and chunk_trials(found) == trials:
            return
        if not owned_by(found, self.uid):
            labels = (found.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_STUDY) != self.study or labels.get(LABEL_HISTORY) != "trials":
                raise HistoryError(f"ConfigMap {name} is in the way of this study's history and is not a BOSS "
                                   "history chunk; rename or delete it")
            # an earlier study of this name left it (the garbage collector behind, or
            # `kubectl delete --cascade=orphan`): its trials are not this study's
        self.kube.delete_config_map(self.namespace, name)  # or ours, from a run that diverged: rewrite
        if not self.kube.create_config_map(self.namespace, body):
            raise HistoryError(f"ConfigMap {name} was recreated meanwhile; retrying")
