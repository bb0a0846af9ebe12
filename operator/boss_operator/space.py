"""ConfigSpace search spaces built from a study spec, one per phase."""

from __future__ import annotations

from typing import Any

import numpy as np
from boss.spec import DISTILL_WEIGHT, Param, StudySpec
from ConfigSpace import (
    AndConjunction,
    Categorical,
    ConfigurationSpace,
    EqualsCondition,
    Float,
    InCondition,
    Integer,
)


def _hyperparameter(name: str, p: Param):
    kw = {} if p.default is None else {"default": p.default}
    if p.type == "categorical":
        return Categorical(name, list(p.choices or []), **kw)
    if p.type == "int":
        kw = {k: int(v) for k, v in kw.items()}
        return Integer(name, (int(p.low), int(p.high)), log=p.log, **kw)
    return Float(name, (float(p.low), float(p.high)), log=p.log, **kw)


def build_space(spec: StudySpec, phase: str, seed: int) -> ConfigurationSpace:
    """The warm-up space is the user's. The BOSS space leaves out the architecture parameters
    (a BOSS trial takes them from its student) and adds a searched distillation weight."""
    cs = ConfigurationSpace(seed=seed)
    space = {n: p for n, p in spec.search_space.items() if not (phase == "boss" and p.architecture)}
    hps = {name: _hyperparameter(name, p) for name, p in space.items()}
    if phase == "boss" and spec.boss.distillation.searched:
        w = spec.boss.distillation.weight
        hps[DISTILL_WEIGHT] = Float(DISTILL_WEIGHT, (w.low, w.high), log=w.log)
    cs.add(list(hps.values()))
    for name, p in space.items():
        conds = []
        for parent, values in (p.when or {}).items():
            vals = values if isinstance(values, list) else [values]
            if len(vals) == 1:
                conds.append(EqualsCondition(hps[name], hps[parent], vals[0]))
            else:
                conds.append(InCondition(hps[name], hps[parent], vals))
        if len(conds) == 1:
            cs.add(conds[0])
        elif conds:
            cs.add(AndConjunction(*conds))
    return cs


def native(config: Any) -> dict[str, Any]:
    """A Configuration as plain JSON-able Python values (ConfigSpace hands out numpy scalars)."""
    out: dict[str, Any] = {}
    for k, v in dict(config).items():
        if isinstance(v, np.generic):
            v = v.item()
        out[str(k)] = v
    return out
