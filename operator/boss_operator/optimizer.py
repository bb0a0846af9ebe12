"""SMAC for one phase of a study: the HPO facade, set up for ask/tell and for exact replay."""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

from boss.spec import StudySpec
from smac import HyperparameterOptimizationFacade as HPO
from smac import Scenario
from smac.acquisition.maximizer.local_search import LocalSearch
from smac.model.random_forest import RandomForest

from .space import build_space


class _OrderedLocalSearch(LocalSearch):
    """SMAC's local search collects its start points in a set of Configurations, whose hash is
    salted per process (PYTHONHASHSEED). The order of the searches, and so the proposals, then
    differ between processes, and replay after a restart would not give the same configs.
    Sorting the start points makes the order the same everywhere."""

    def _get_initial_points(self, *args: Any, **kwargs: Any):
        return sorted(super()._get_initial_points(*args, **kwargs), key=repr)


def make_smac(spec: StudySpec, phase: str, name: str, seed: int, n_trials: int) -> HPO:
    """One evaluation per config, no files kept, no prompts, the same proposals in any process."""
    cs = build_space(spec, phase, seed)
    out = tempfile.mkdtemp(prefix="boss-smac-")
    try:
        scenario = Scenario(cs, name=f"{name}-{phase}", output_directory=out, deterministic=True,
                            n_trials=n_trials, seed=seed)
        maximizer = HPO.get_acquisition_maximizer(scenario)
        maximizer._local_search.__class__ = _OrderedLocalSearch  # same state, ordered start points
        return HPO(
            scenario,
            target_function=_never_called,
            model=_forest(scenario),
            intensifier=HPO.get_intensifier(scenario, max_config_calls=1),
            config_selector=HPO.get_config_selector(scenario, retries=64),
            acquisition_maximizer=maximizer,
            overwrite=True,  # never let SMAC ask on stdin about an old run
            logging_level=logging.WARNING + 10,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)  # SMAC's files are never read: replay is the state


def _forest(scenario: Scenario) -> RandomForest:
    """The facade's own random forest (same trees: fully grown, random splits), made cheap:
    - n_jobs=1: with the default -1 each of the ~300 predictions of an acquisition search
      goes through joblib's thread pool, which polls with sleeps (2/3 of a slow ask on 2 cores);
    - max_leaf_nodes=None: SMAC's 2**20 makes scikit-learn use its best-first builder sized
      for a million leaves, 100 ms a tree on 130 points instead of under 1 ms.
    """
    return RandomForest(
        log_y=True, n_trees=10, bootstrapping=True, ratio_features=1.0, min_samples_split=2,
        min_samples_leaf=1, max_depth=2**20, max_leaf_nodes=None, configspace=scenario.configspace,
        instance_features=scenario.instance_features, seed=scenario.seed, n_jobs=1,
    )


def _never_called(config: Any, seed: int = 0) -> float:
    raise RuntimeError("the BOSS engine runs trials through a backend, never through SMAC")
