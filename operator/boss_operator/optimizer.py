"""SMAC for one phase of a study: the HPO facade, set up for ask/tell and for exact replay."""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

import numpy as np
from boss.spec import StudySpec
from smac import HyperparameterOptimizationFacade as HPO
from smac import Scenario
from smac.acquisition.maximizer.local_search import LocalSearch
from smac.main.config_selector import ConfigSelector
from smac.main.exceptions import ConfigurationSpaceExhaustedException
from smac.model.random_forest import RandomForest

from .space import build_space


class _OrderedLocalSearch(LocalSearch):
    """SMAC's local search collects its start points in a set of Configurations, whose hash is
    salted per process (PYTHONHASHSEED). The order of the searches, and so the proposals, then
    differ between processes, and replay after a restart would not give the same configs.
    Sorting the start points makes the order the same everywhere."""

    def _get_initial_points(self, *args: Any, **kwargs: Any):
        return sorted(super()._get_initial_points(*args, **kwargs), key=repr)


class _SeenConfigs(list):
    """The configs a selector has handed out, with a set beside the list: SMAC asks `config not
    in processed` for every challenger, a scan of the whole study per question (Configuration's
    hash is its repr, its equality its values: the same test)."""

    def __init__(self, configs: Any = ()):
        super().__init__(configs)
        self._keys = {repr(c) for c in self}

    def append(self, config: Any) -> None:
        super().append(config)
        self._keys.add(repr(config))

    def __contains__(self, config: Any) -> bool:
        return repr(config) in self._keys


class ResumableConfigSelector(ConfigSelector):
    """SMAC 2.4.1's ConfigSelector with its iteration state in attributes instead of a
    generator's frame, so that the state can be written down (snapshot.py) and set again.

    SMAC's `__iter__` is a generator: after each retrain it lazily walks the acquisition
    maximizer's challengers, yielding up to `retrain_after` new ones. This class does the same
    walk eagerly into `_batch` at the same moment and hands the batch out one by one: the
    challengers' lazy random interleaving draws from RNGs nothing else touches in between, so
    the configs, and every RNG's state after them, are the same as SMAC's (the engine's tests
    compare the two). `sampled` lists the positions of yields that SMAC does not count as
    processed (a random config while there is no data to fit)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._stage = "start"  # start -> init (initial design) -> loop -> dead (space exhausted)
        self._init_pos = 0
        self._batch: list[Any] = []
        self._exhausted_after_batch = False
        self.yields = 0  # configs handed out so far
        self.sampled: list[int] = []  # which of them SMAC does not count as processed
        # the next config, computed ahead (owe/settle) or not yet: a config, or what computing it raised
        self._ready: Any = None
        self._ready_error: Exception | None = None
        self._owed = False

    @property
    def _processed_configs(self) -> _SeenConfigs:
        return self._seen

    @_processed_configs.setter
    def _processed_configs(self, configs: Any) -> None:
        self._seen = configs if isinstance(configs, _SeenConfigs) else _SeenConfigs(configs)

    def __iter__(self):  # what SMAC's intensifier would use; the engine calls next_config()
        while True:
            yield self.next_config()

    def next_config(self) -> Any:
        self.settle()
        if self._ready_error is not None:
            error, self._ready_error = self._ready_error, None
            raise error
        if self._ready is not None:
            config, self._ready = self._ready, None
        else:
            config = self._next()
        self.yields += 1
        return config

    def owe(self) -> None:
        """The next config is due now, as of this moment (the model fit on the results told so far),
        though it may be computed later: by `settle`, at the latest before the next result or ask.
        Its inputs cannot change before then, so when it is computed does not change what it is."""
        self._owed = True

    def settle(self) -> None:
        """Compute the config that `owe` made due (a model fit and an acquisition search every
        `retrain_after` configs: the slow part of an ask), and keep it for the next ask."""
        if not self._owed:
            return
        self._owed = False
        try:
            self._ready = self._next()
        except Exception as e:  # raised to the ask that takes it, as computing it then would
            self._ready_error = e

    def _next(self) -> Any:
        if self._stage == "dead":
            raise ConfigurationSpaceExhaustedException()
        if self._stage == "start":
            self._processed_configs = self._runhistory.get_configs()
            self._max_new_config_tries += len(self._processed_configs)
            self._stage = "init"
        if self._stage == "init":
            while self._init_pos < len(self._initial_design_configs):
                config = self._initial_design_configs[self._init_pos]
                self._init_pos += 1
                if config not in self._processed_configs:
                    self._processed_configs.append(config)
                    return config
            self._stage = "loop"
        if not self._batch:
            if self._exhausted_after_batch:
                self._stage = "dead"
                raise ConfigurationSpaceExhaustedException()
            self._fill()
            if not self._batch:  # nothing new at all
                self._stage = "dead"
                raise ConfigurationSpaceExhaustedException()
        return self._batch.pop(0)

    def fit(self, X: Any, Y: Any, X_configurations: Any) -> None:
        """Train the model and update the acquisition function, as SMAC does before a search."""
        self._model.train(X, Y)
        x_best_array, best_observation = self._predicted_best(X_configurations)
        self._acquisition_function.update(model=self._model, eta=best_observation, incumbent_array=x_best_array,
                                          num_data=len(self._get_evaluated_configs()), X=X_configurations)

    def _predicted_best(self, X: Any) -> tuple[Any, float]:
        """SMAC's `_get_x_best`: the evaluated config the model predicts best. SMAC predicts one
        row at a time (two thirds of an ask at 1,500 trials); one call for all rows gives the same
        numbers (each row's mean over the trees is summed alike) and a stable sort the same tie."""
        if len(X) == 0 or not self._predict_x_best:
            return self._get_x_best(X)
        means = self._model.predict_marginalized(np.asarray(X))[0][:, 0]
        i = int(np.argsort(means, kind="stable")[0])
        return X[i], means[i]

    def _fill(self) -> None:
        """One turn of SMAC's `while True` loop, its yields collected into `_batch`."""
        if (mo := self._runhistory_encoder.multi_objective_algorithm) is not None:
            mo.update_on_iteration_start()
        X, Y, X_configurations = self._collect_data()
        previous_configs = self._runhistory.get_configs()
        if X.shape[0] == 0:
            self._batch = [self._scenario.configspace.sample_configuration()]
            self.sampled.append(self.yields)  # not added to the processed configs, as in SMAC
            return
        if self._previous_entries != Y.shape[0]:
            self.fit(X, Y, X_configurations)
        self._previous_entries = Y.shape[0]
        challengers = self._acquisition_maximizer.maximize(previous_configs, random_design=self._random_design)
        batch: list[Any] = []
        retrain, counter, failed_counter = False, 0, 0
        for config in challengers:
            if config not in self._processed_configs:
                counter += 1
                self._processed_configs.append(config)
                batch.append(config)
                if counter == self._retrain_after:
                    retrain = True
                    break
            else:
                failed_counter += 1
                if failed_counter == self._max_new_config_tries:
                    break
        if not retrain:
            retries = 0
            while counter < self._retrain_after and retries < self._max_new_config_tries:
                config = self._scenario.configspace.sample_configuration()
                if config not in self._processed_configs:
                    counter += 1
                    config.origin = "Random Search (max retries, no candidates)"
                    self._processed_configs.append(config)
                    batch.append(config)
                else:
                    retries += 1
                if retries == self._max_new_config_tries:
                    self._exhausted_after_batch = True
                    break
        self._batch = batch


def _incremental_bounds(runhistory: Any) -> None:
    """SMAC's runhistory recomputes its objective bounds (min and max of every successful cost)
    from all its entries on every add: two scans of the study per trial, most of a 5,000-trial
    replay. The engine only adds (a running trial, then its one result), so folding each new
    successful cost into the bounds gives the same numbers in constant time."""
    from smac.runhistory.enumerations import StatusType

    full = runhistory._update_objective_bounds
    full()
    add = runhistory._add

    def _add(k: Any, v: Any, status: Any) -> None:
        old = runhistory._data.get(k)
        runhistory._update_objective_bounds = lambda: None
        try:
            add(k, v, status)
        finally:
            del runhistory._update_objective_bounds
        costs = v.cost if isinstance(v.cost, (list, tuple)) else [v.cost]
        bounds = runhistory._objective_bounds
        if (old is not None and old.status == StatusType.SUCCESS) or len(bounds) != len(costs):
            full()  # a result replaced (the engine never does), or the first one: SMAC's own way
        elif v.status == StatusType.SUCCESS:
            runhistory._objective_bounds = [(min(lo, np.float64(c)), max(hi, np.float64(c)))
                                            for (lo, hi), c in zip(bounds, costs, strict=True)]

    runhistory._add = _add


def trial_seed_of(smac: HPO) -> int:
    """The seed SMAC's intensifier gives every trial of a deterministic scenario (drawn once from
    its RNG on its first trial): the engine asks the config selector directly and builds the
    TrialInfo itself, as the intensifier would with one evaluation per config."""
    intensifier = smac._intensifier
    intensifier.__post_init__()
    return intensifier.get_instance_seed_keys_of_interest()[0].seed


def make_smac(spec: StudySpec, phase: str, name: str, seed: int, n_trials: int,
              selector: type[ConfigSelector] = ResumableConfigSelector, retrain_after: int = 8) -> HPO:
    """One evaluation per config, no files kept, no prompts, the same proposals in any process."""
    cs = build_space(spec, phase, seed)
    out = tempfile.mkdtemp(prefix="boss-smac-")
    try:
        scenario = Scenario(cs, name=f"{name}-{phase}", output_directory=out, deterministic=True,
                            n_trials=n_trials, seed=seed)
        maximizer = HPO.get_acquisition_maximizer(scenario)
        maximizer._local_search.__class__ = _OrderedLocalSearch  # same state, ordered start points
        smac = HPO(
            scenario,
            target_function=_never_called,
            model=_forest(scenario),
            intensifier=HPO.get_intensifier(scenario, max_config_calls=1),
            config_selector=selector(scenario, retrain_after=retrain_after, max_new_config_tries=64),
            acquisition_maximizer=maximizer,
            overwrite=True,  # never let SMAC ask on stdin about an old run
            logging_level=logging.WARNING + 10,
        )
        _incremental_bounds(smac.runhistory)
        return smac
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
