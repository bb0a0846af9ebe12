"""SMAC for one phase of a study: the HPO facade, set up for ask/tell and for exact replay."""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

from smac import HyperparameterOptimizationFacade as HPO
from smac import Scenario
from smac.acquisition.maximizer.local_search import LocalSearch

from boss.spec import StudySpec

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
            intensifier=HPO.get_intensifier(scenario, max_config_calls=1),
            config_selector=HPO.get_config_selector(scenario, retries=64),
            acquisition_maximizer=maximizer,
            overwrite=True,  # never let SMAC ask on stdin about an old run
            logging_level=logging.WARNING + 10,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)  # SMAC's files are never read: replay is the state


def _never_called(config: Any, seed: int = 0) -> float:
    raise RuntimeError("the BOSS engine runs trials through a backend, never through SMAC")
