"""Where a cluster study's trials live: a bounded tail in its status, the rest in ConfigMaps.

etcd caps an object near 1.5 MB, so a study cannot keep every trial in its status (the way a
Katib experiment gets stuck). The operator moves finished trials, `chunkSize` at a time in the
order their results came in, into ConfigMaps owned by the study: `<study>-history-0000`,
`-0001`, ... each the gzip'd JSON list of its trials in `binaryData`, written once and marked
immutable. The status says how many there are (`status.history`); it names a chunk only after
the chunk exists, so a reader that trusts the status never misses one, and a kill between the
two writes leaves a chunk nobody refers to yet (the next write finds it and uses it).

Trials still running, and finished ones not yet archived (fewer than `chunkSize`), stay in
`status.trials`. A study written before chunks existed has no `status.history`: all of its
trials are in `status.trials`, and reads the same way.

This module is the format, shared by the operator (which writes it) and the clients (`boss
trials`, `boss report`, `BossClient`, which read it with the user's own rights: ConfigMaps in
the study's namespace).
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

GROUP = "boss.automl.io"
LABEL_STUDY = f"{GROUP}/study"
LABEL_HISTORY = f"{GROUP}/history"  # the value says what the ConfigMap holds: "trials"
TRIALS_KEY = "trials.json.gz"
SNAPSHOT_KEY = "snapshot.json.gz"  # the engine's state after the chunk's last trial, if it keeps one


class HistoryError(RuntimeError):
    """A study's history cannot be read whole (a chunk the status names is missing or damaged)."""


def chunk_name(study: str, k: int) -> str:
    return f"{study}-history-{k:04d}"


def pack(value: Any) -> str:
    """JSON, gzip'd, base64 (what `binaryData` holds)."""
    raw = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode()


def unpack(data: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(data)))


def owned_by(cm: dict[str, Any], uid: str | None) -> bool:
    """Whether a ConfigMap is the controller-owned chunk of the study with this uid (a chunk of
    an earlier study of the same name waits for the garbage collector and is never read)."""
    refs = (cm.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(r.get("uid") == uid and r.get("controller") for r in refs)


def chunk_index(cm: dict[str, Any], study: str) -> int | None:
    name = (cm.get("metadata") or {}).get("name", "")
    prefix = f"{study}-history-"
    if not name.startswith(prefix) or not name[len(prefix):].isdigit():
        return None
    return int(name[len(prefix):])


def chunk_trials(cm: dict[str, Any]) -> list[dict[str, Any]]:
    data = (cm.get("binaryData") or {}).get(TRIALS_KEY)
    if data is None:
        raise HistoryError(f"ConfigMap {cm['metadata']['name']} holds no {TRIALS_KEY}")
    try:
        return unpack(data)
    except (ValueError, OSError, EOFError) as e:
        raise HistoryError(f"ConfigMap {cm['metadata']['name']}: {TRIALS_KEY} is damaged: {e}") from None


def chunk_snapshot(cm: dict[str, Any]) -> dict[str, Any] | None:
    """The engine snapshot kept with a chunk (None if none, or unreadable: replay does without)."""
    data = (cm.get("binaryData") or {}).get(SNAPSHOT_KEY)
    if data is None:
        return None
    try:
        value = unpack(data)
    except (ValueError, OSError, EOFError):
        return None
    return value if isinstance(value, dict) else None


def recorded(status: dict[str, Any]) -> tuple[int, int]:
    """(chunks, archived trials) as the status names them."""
    h = status.get("history") or {}
    return int(h.get("configMaps") or 0), int(h.get("trials") or 0)


def trial_count(status: dict[str, Any]) -> int:
    """How many trials the status records: archived in its chunks, or in its tail."""
    return recorded(status)[1] + sum(isinstance(t, dict) for t in status.get("trials") or [])


def named_chunks(study: str, uid: str | None, status: dict[str, Any],
                 configmaps: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The chunks the status names, by number (owned by this study; others are ignored)."""
    chunks, _ = recorded(status)
    found: dict[int, dict[str, Any]] = {}
    for cm in configmaps:
        k = chunk_index(cm, study)
        if k is not None and k < chunks and owned_by(cm, uid):
            found[k] = cm
    return found


def assemble(study: str, uid: str | None, status: dict[str, Any], configmaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every trial of the study, by index: the chunks the status names, then its tail."""
    chunks, archived = recorded(status)
    found = named_chunks(study, uid, status, configmaps)
    missing = [chunk_name(study, k) for k in range(chunks) if k not in found]
    if missing:
        raise HistoryError(f"the study's history names ConfigMaps that are missing: {', '.join(missing[:5])}")
    trials: dict[int, dict[str, Any]] = {}
    for k in range(chunks):
        for t in chunk_trials(found[k]):
            trials[t["index"]] = t
    if len(trials) != archived:
        raise HistoryError(f"the history's ConfigMaps hold {len(trials)} trials, the status says {archived}")
    for t in status.get("trials") or []:
        trials[t["index"]] = t
    return [trials[i] for i in sorted(trials)]


def list_chunks(core: Any, namespace: str, study: str) -> list[dict[str, Any]]:
    """The study's history ConfigMaps as plain dicts (one list call, by label)."""
    if not study:
        return []
    items = core.list_namespaced_config_map(
        namespace, label_selector=f"{LABEL_STUDY}={study},{LABEL_HISTORY}=trials").items
    return [core.api_client.sanitize_for_serialization(cm) for cm in items]


def read_trials(core: Any, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every trial of a study object (status tail + ConfigMaps); reads no ConfigMap when the
    status names none."""
    status = obj.get("status") or {}
    meta = obj["metadata"]
    chunks, _ = recorded(status)
    cms = list_chunks(core, meta.get("namespace"), meta["name"]) if chunks else []
    return assemble(meta["name"], meta.get("uid"), status, cms)
