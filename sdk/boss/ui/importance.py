"""Hyperparameter importance on a study's own trials.

Method (said on the page too): a random forest (scikit-learn, 100 trees, seeded) is fit to the
succeeded trials' configs -> objective, and each hyperparameter's importance is its permutation
importance: how much the forest's R² drops when that column's values are shuffled (10 repeats,
mean and spread), normalised to sum to 1 over the hyperparameters. Numeric parameters searched on
a log scale enter as log10; categorical ones as their choice's position; a conditional parameter
absent from a config (its condition false) enters as a value outside its range, so "absent" is a
value the forest can split on. Like fANOVA, it asks the study's own data; unlike fANOVA it is
defined for any number of trials and needs nothing beyond scikit-learn, which the SDK has.
"""

from __future__ import annotations

import math
from typing import Any

MIN_TRIALS = 8
MAX_TRIALS = 2000  # the newest ones: a bounded cost however long the study
METHOD = ("permutation importance of a random forest (scikit-learn, 100 trees) fit to the succeeded trials' "
          "configs and scores: the drop in the forest's R² when one hyperparameter is shuffled, normalised")


def _column(name: str, p: dict[str, Any], trials: list[dict[str, Any]]) -> list[float]:
    values = [t["config"].get(name) for t in trials]
    if p.get("type") == "categorical" or p.get("choices"):
        choices = [str(c) for c in p.get("choices") or []]
        return [-1.0 if v is None else float(choices.index(str(v)) if str(v) in choices else len(choices)) for v in values]
    log = bool(p.get("log"))
    lo, hi = p.get("low"), p.get("high")

    def num(v: Any) -> float | None:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        if log:
            f = math.log10(f) if f > 0 else None
        return f if f is not None and math.isfinite(f) else None

    nums = [num(v) for v in values]
    known = [v for v in nums if v is not None] or [0.0]
    low = num(lo) if lo is not None else min(known)
    high = num(hi) if hi is not None else max(known)
    low = min(known) if low is None else low
    high = max(known) if high is None else high
    absent = low - (high - low or 1.0)
    return [absent if v is None else v for v in nums]


def importance(space: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any]:
    """{method, trials, params: [{name, importance, spread}] most important first} or {method, message}."""
    done = [t for t in trials if t.get("state") == "succeeded" and t.get("value") is not None]
    names = [n for n in space if any(n in t["config"] for t in done)]
    extra = sorted({k for t in done for k in t["config"]} - set(space))  # e.g. BOSS's searched distillation weight
    names += extra
    if len(done) < MIN_TRIALS:
        return {"method": METHOD, "message": f"needs at least {MIN_TRIALS} succeeded trials (has {len(done)})"}
    if not names:
        return {"method": METHOD, "message": "the study searches no hyperparameters"}
    done = done[-MAX_TRIALS:]
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    x = np.array([_column(n, space.get(n, {}), done) for n in names], dtype=float).T
    y = np.array([t["value"] for t in done], dtype=float)
    if float(np.ptp(y)) == 0.0:
        return {"method": METHOD, "message": "every succeeded trial has the same score: nothing to explain"}
    forest = RandomForestRegressor(n_estimators=100, random_state=0, min_samples_leaf=2, n_jobs=1).fit(x, y)
    got = permutation_importance(forest, x, y, n_repeats=10, random_state=0, n_jobs=1)
    means = np.clip(got.importances_mean, 0, None)
    total = float(means.sum()) or 1.0
    params = [{"name": n, "importance": float(m) / total, "spread": float(s) / total}
              for n, m, s in zip(names, means, got.importances_std, strict=True)]
    params.sort(key=lambda p: -p["importance"])
    return {"method": METHOD, "trials": len(done), "params": params}
