"""The engine's SMAC state as JSON, so that a restart replays a bounded tail, not the whole study.

Replaying every recorded trial through SMAC costs one `ask` per trial, and asks grow with the
history (a model fit every 8 trials, predictions over every point): 40 s at 500 trials, and
roughly quadratic beyond. But an ask's only lasting effects are the runhistory (rebuilt from the
recorded trials without asking), the config selector's iteration state (optimizer.py keeps it
in attributes) and the states of SMAC's random number generators. A snapshot holds the last
two; restoring it into a fresh SMAC whose runhistory was rebuilt up to the same point gives an
engine that proposes exactly what the uninterrupted one would (tests/test_history.py compares
them).

JSON only, never pickle: the snapshot lives in ConfigMaps that anyone who may write ConfigMaps
in the study's namespace could change, and unpickling runs code. A snapshot is also checked
against the trials it claims to follow (a digest), and an engine restored from one still
replays the tail through SMAC and compares every proposal with the recorded one; a mismatch
falls back to the full replay.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import numpy as np
from ConfigSpace import Configuration
from smac.main.exceptions import ConfigurationSpaceExhaustedException

VERSION = 2  # 2: the selector's config computed ahead (ready, readyError)
READABLE = (1, 2)  # a version-1 snapshot is a version 2 with nothing computed ahead
_MODULES = ("smac", "ConfigSpace", "boss_operator")
_SKIP = {"_runhistory", "runhistory", "_processed_configs", "_initial_design_configs", "_batch", "_ready",
         "_ready_error"}


def _rngs(root: Any) -> dict[str, Any]:
    """Every numpy RNG reachable from SMAC's object graph, by a path that is the same in every
    process (attributes in sorted order; each RNG once, under its first path)."""
    seen: set[int] = set()
    found: dict[str, Any] = {}

    def walk(o: Any, path: str, depth: int) -> None:
        if id(o) in seen or depth > 10:
            return
        seen.add(id(o))
        if isinstance(o, (np.random.RandomState, np.random.Generator)):
            found[path] = o
            return
        if isinstance(o, dict):
            if len(o) <= 64:
                for k in sorted(o, key=repr):
                    walk(o[k], f"{path}[{k!r}]", depth + 1)
            return
        if isinstance(o, (list, tuple)):
            if len(o) <= 64:
                for i, v in enumerate(o):
                    walk(v, f"{path}[{i}]", depth + 1)
            return
        if not (type(o).__module__ or "").startswith(_MODULES):
            return
        attrs = getattr(o, "__dict__", None)
        if attrs is None:
            return
        for k in sorted(attrs):
            if k not in _SKIP:
                walk(attrs[k], f"{path}.{k}", depth + 1)

    walk(root, "", 0)
    return found


def _rng_state(rng: Any) -> dict[str, Any]:
    if isinstance(rng, np.random.RandomState):
        name, keys, pos, has_gauss, gauss = rng.get_state()
        return {"kind": "RandomState", "name": name, "keys": base64.b64encode(keys.astype("<u4").tobytes()).decode(),
                "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return {"kind": "Generator", "state": json.loads(json.dumps(rng.bit_generator.state, default=int))}


def _set_rng_state(rng: Any, state: dict[str, Any]) -> None:
    if state["kind"] == "RandomState":
        keys = np.frombuffer(base64.b64decode(state["keys"]), dtype="<u4").astype(np.uint32)
        rng.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]))
    else:
        rng.bit_generator.state = state["state"]


def smac_state(smac: Any) -> dict[str, Any]:
    """One phase's SMAC: its RNGs and its config selector's iteration state (with the next config
    if it was computed ahead; one that is due is computed first, so a snapshot never owes one)."""
    sel = smac._config_selector
    sel.settle()
    return {
        "rngs": {path: _rng_state(rng) for path, rng in _rngs(smac).items()},
        "selector": {
            "stage": sel._stage, "initPos": sel._init_pos, "yields": sel.yields, "sampled": list(sel.sampled),
            "batch": [vector_of(c) for c in sel._batch], "exhaustedAfterBatch": sel._exhausted_after_batch,
            "previousEntries": int(sel._previous_entries), "maxNewConfigTries": int(sel._max_new_config_tries),
            "ready": None if sel._ready is None else vector_of(sel._ready),
            "readyError": None if sel._ready_error is None else str(sel._ready_error),
        },
    }


def vector_of(config: Configuration) -> str:
    """A config as SMAC encodes it (float64, base64): its values would not give back the same bits."""
    return base64.b64encode(np.asarray(config.get_array(), dtype="<f8").tobytes()).decode()


def config_of(cs: Any, vector: str) -> Configuration:
    return Configuration(cs, vector=np.frombuffer(base64.b64decode(vector), dtype="<f8").astype(np.float64))


def restore_smac(smac: Any, state: dict[str, Any], processed: list[Configuration]) -> None:
    """Set a fresh SMAC, whose runhistory already holds what the snapshotted one held, to the
    snapshot's state. `processed`: the configs its selector had handed out, in order."""
    sel, s = smac._config_selector, state["selector"]
    cs = smac.scenario.configspace
    sel._stage, sel._init_pos, sel.yields = s["stage"], s["initPos"], s["yields"]
    sel.sampled = list(s["sampled"])
    sel._exhausted_after_batch = s["exhaustedAfterBatch"]
    sel._max_new_config_tries = s["maxNewConfigTries"]
    sampled = set(sel.sampled)
    batch = [config_of(cs, v) for v in s["batch"]]
    ready = None if s.get("ready") is None else config_of(cs, s["ready"])
    # handed out, then the one computed ahead (unless it is a random one SMAC does not count), then the batch
    ahead = [ready] if ready is not None and sel.yields not in sampled else []
    sel._processed_configs = [c for i, c in enumerate(processed) if i not in sampled] + ahead + batch
    sel._batch = batch
    sel._ready, sel._owed = ready, False
    sel._ready_error = None if s.get("readyError") is None else ConfigurationSpaceExhaustedException(s["readyError"])
    sel._previous_entries = s["previousEntries"]
    if sel._stage == "loop" and sel._previous_entries >= 0:
        X, Y, X_configurations = sel._collect_data()
        if Y.shape[0] == sel._previous_entries:
            # no result since the model was last fitted: the next search reuses that model, so fit
            # it again now (scikit-learn's forest with a fixed seed: the same data, the same trees)
            sel.fit(X, Y, X_configurations)
    rngs = _rngs(smac)
    if set(rngs) != set(state["rngs"]):
        raise ValueError(f"the snapshot's RNGs {sorted(state['rngs'])} are not this SMAC's {sorted(rngs)}")
    for path, rng in rngs.items():
        _set_rng_state(rng, state["rngs"][path])


def digest(trials: list[dict[str, Any]], proposed: int, told: int) -> str:
    """What a snapshot follows: the first `proposed` trials as proposed, and the first `told`
    results. A snapshot whose digest differs from the recorded trials' is not used."""
    asked = [(t["index"], t["phase"], t["config"], t["teacher"], t["student"], t["asked_after"], t["origin"])
             for t in trials[:proposed]]
    results = sorted(((t["told"], t["index"], t["state"], t["value"]) for t in trials
                      if t.get("told") is not None and t["told"] < told), key=lambda r: r[0])
    raw = json.dumps([asked, results], sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()
