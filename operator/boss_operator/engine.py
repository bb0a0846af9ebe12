"""The BOSS engine: SMAC ask/tell in two phases plus teacher/student selection from the top-K.

The engine never runs anything. A backend asks it for the next trial, runs the trial
somewhere (a local process, a Kubernetes Job) and tells it the result. Its whole state is
the list of recorded trials: `Engine.replay` feeds them, in the order they happened, into
fresh SMAC instances with the same seed and gets the same proposals back. That is how the
operator survives restarts without keeping SMAC's own files.

In reproducible mode (`budget.reproducible`) results are told in trial order, never in the
order trials finish: trial i is proposed from the results of trials 0..i-L exactly (L, the lag:
twice the parallelism the study started with), and the first trial after the warm-up from all
of them, so every proposal, teacher and student is a function of the seed and the spec alone.
"""

from __future__ import annotations

import logging
import math
import random
import re
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from boss.spec import DISTILL_WEIGHT, StudySpec
from smac import HyperparameterOptimizationFacade as HPO
from smac.runhistory.dataclasses import TrialInfo, TrialValue

from . import snapshot as snap
from .optimizer import make_smac, trial_seed_of
from .space import native

log = logging.getLogger(__name__)

WARMUP = "warmup"
BOSS = "boss"

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
DIVERGED = "diverged"  # trained, but its objective was never finite: a result about its config, not a failure

# A study stops early when its first REPEATED results are failures with one and the same
# message (a typo, a missing file, a broken hook: every trial would fail alike) instead of
# spending maxFailedTrials + 1 trials on it; see Engine.repeated_failure.
REPEATED = 2


def smac_trials_of(spec: StudySpec) -> dict[str, int]:
    """Each phase's SMAC scenario size (n_trials) for a study's budget."""
    b = spec.budget
    return {WARMUP: b.warmup_trials, BOSS: max(1, b.trials - b.warmup_trials)}


def _cause(message: str | None) -> str:
    """A failure's message without what names its own trial (`boss run` adds where its log is)."""
    return re.sub(r"\s*\(log: [^()]*\)\s*$", "", message or "")


def lag_of(spec: StudySpec) -> int | None:
    """Reproducible mode's lag for a new study (Engine.lag): twice its parallelism as it starts.
    With the parallelism alone a slot that frees waits whenever the trial started just before
    the running ones is still running (a quarter of the slot time at parallelism 4, a half at 16,
    with the demo's spread of trial times: bench/reproducible.py); twice that, it rarely waits."""
    return 2 * spec.budget.parallelism if spec.budget.reproducible else None


@dataclass(frozen=True)
class SmacSettings:
    """How the engine drives SMAC. Part of a study's record (`Engine.record`): each changes every
    proposal after SMAC's first model fit, so a study replays with the settings it ran with.

    retrain_after: configs proposed from one fit of SMAC's model. SMAC's HPO facade says 8, sized
        for hundreds of trials; in a phase of 3-24 trials that is one or two fits in the whole
        phase (a 12-trial BOSS phase: 3 initial configs, then 8 from one fit), so the BOSS phase
        hardly learned from its own results. 1 refits on every result, as SMAC's BlackBox facade
        does; parallel trials still get different configs (a proposed config is never proposed
        again).
    boss_cost: what the BOSS phase's SMAC learns from a result. "value": the objective, as the
        warm-up. "gain": the objective's gain over the trial's student. A BOSS trial's score is
        mostly its student's; told the score, a model refit on every result learns that configs
        which change the student least (a tiny learning rate) score best, and proposes little
        else (docs/how-boss-works.md, "Refit on every result, learn the gain").
    """

    retrain_after: int = 1
    boss_cost: str = "gain"

    def to_record(self) -> dict[str, Any]:
        return {"retrainAfter": self.retrain_after, "bossCost": self.boss_cost}

    @classmethod
    def of_record(cls, engine: dict[str, Any] | None, recorded: bool) -> SmacSettings:
        """The settings in a study's `engine` record; a setting it lacks is the new default for a
        study with no trials yet, and what studies used before it was recorded for one with trials."""
        engine = engine or {}
        before = RECORDED_BEFORE if recorded else cls()
        return cls(retrain_after=int(engine.get("retrainAfter") or before.retrain_after),
                   boss_cost=str(engine.get("bossCost") or before.boss_cost))


# what every study recorded before SmacSettings were kept ran with
RECORDED_BEFORE = SmacSettings(retrain_after=8, boss_cost="value")


def recorded_ahead(engine: dict[str, Any] | None, recorded: bool) -> bool:
    """Engine.ahead of a study from its record: what its `engine` entry says; without one, a new
    study computes ahead and one recorded before that existed replays as it was recorded."""
    return bool((engine or {}).get("computeAhead", not recorded))


class ReplayError(RuntimeError):
    """Recorded trials that the engine cannot reproduce (the spec or the code changed)."""


@dataclass
class Trial:
    """One trial as the engine and its backends record it. `to_dict()` is what gets stored."""

    index: int
    phase: str
    config: dict[str, Any]
    teacher: int | None = None
    student: int | None = None
    asked_after: int = 0  # how many results the engine had been told when it proposed this trial
    origin: str = "smac"
    state: str = RUNNING
    value: float | None = None
    told: int | None = None  # position of this trial's result in the sequence of results
    checkpoint: str | None = None
    checksum: str | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # backend bookkeeping (times, test metrics)
    # SMAC's own encoding of the proposed config (float64, base64): the values above do not give
    # back the same bits, and a replay from a snapshot rebuilds SMAC's runhistory from this
    vector: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    @property
    def done(self) -> bool:
        return self.state != RUNNING


class Engine:
    """Proposes trials for one study and keeps its observations (Λ, Λ') and checkpoints (Θ)."""

    def __init__(self, spec: StudySpec, name: str = "study", ahead: bool = True,
                 smac_trials: dict[str, int] | None = None, lag: int | None = None, failure_floor: int = 0,
                 smac: SmacSettings = SmacSettings()):
        self.spec = spec
        self.settings = smac
        self.name = name
        # results before this one are not judged by `repeated_failure`: the budget grew after
        # them (`grown`), i.e. the user fixed the cause and went on
        self.failure_floor = failure_floor
        # reproducible mode (module docstring): a result is held until a proposal is due that
        # must see it. Recorded with the study, as the parallelism it comes from may change.
        self.lag = lag if lag is not None else lag_of(spec)
        # each phase's SMAC is sized by the budget the study started with (its initial design
        # depends on it): a study whose budget grew later replays exactly as it was recorded
        self.smac_trials = dict(smac_trials or smac_trials_of(spec))
        # compute each phase's next config as soon as it is due (right after an ask) instead of in
        # the ask that takes it: a backend calls `settle` once the trials it asked for run, and
        # the model fit and acquisition search every few trials leave the path from a finished
        # trial to the next one. It changes which results that search sees (the ones before the
        # ask that made it due), so it is part of a study's record: studies recorded without it
        # replay without it (`Engine.replay(..., ahead=False)`). Reproducible mode never does: the
        # next config is due only once the results it must see are in.
        self.ahead = ahead and self.lag is None
        self.trials: list[Trial] = []
        self._smac: dict[str, HPO] = {}
        self._seeds: dict[str, int] = {}  # per phase: the seed of SMAC's trials
        self._infos: dict[int, TrialInfo] = {}
        self._told = 0

    # ---- the public protocol: ask, tell, replay -------------------------------------------

    def ask(self) -> Trial | None:
        """The next trial to run, or None when nothing may start now: the budget is spent, too
        many trials failed, the warm-up is still running, or (reproducible mode) a result it must
        see is not in yet."""
        index = len(self.trials)
        if index >= self.spec.budget.trials:
            return None
        if self.lag is not None and not self._admit(self._due(index)):
            return None
        phase = self._next_phase()
        if phase is None:
            return None
        config, info, origin = self._propose(phase, index)
        trial = Trial(index=index, phase=phase, config=config, asked_after=self._told, origin=origin,
                      vector=snap.vector_of(info.config))
        rule = self.early_stop(phase, upto=self._told)
        if rule is not None:  # fixed now, so a rerun after a restart judges the trial the same way
            trial.extra["earlyStop"] = rule
        if phase == BOSS:
            trial.teacher, trial.student = self.pick_teacher_student(index)
            student = self.trials[trial.student].config  # its weights fit only its own shape
            trial.config = {**config, **{k: student[k] for k in self.architecture if k in student}}
        self._infos[index] = info
        self.trials.append(trial)
        if self.ahead and self._asks_again(phase) and len(self.running) > 1:
            # with one trial at a time its result is the next thing to happen: wait for it
            self._smac[phase]._config_selector.owe()
        return trial

    def settle(self) -> None:
        """Compute now the next config that is due (see `ahead`): a backend calls it when the
        trials it asked for have started, so that the ask after the next result is fast. Calling
        it or not never changes a proposal: a due config is computed before the next tell or ask
        anyway, from the same state."""
        for smac in self._smac.values():
            smac._config_selector.settle()

    def tell(
        self,
        index: int,
        value: float | None = None,
        *,
        checkpoint: str | None = None,
        checksum: str | None = None,
        failed: bool = False,
        diverged: bool = False,
        message: str | None = None,
    ) -> Trial:
        """Record a trial's result. Telling a finished trial again changes nothing.

        `diverged`: the trial ran but its objective was never finite. That says something about
        its config, so SMAC is told it, as the worst cost seen so far (SMAC's own crash cost is
        infinite, which its random forest cannot fit; the worst seen keeps the model's scale
        while ranking the config below every finished one); it never counts against
        `maxFailedTrials`, and has no checkpoint to teach or seed.

        In reproducible mode the result is held: SMAC, the top-K and early stopping see it when
        the first proposal that must see it is asked (`_admit`)."""
        if not 0 <= index < len(self.trials):
            raise KeyError(f"trial {index} was never proposed")
        self.settle()  # a config due before this result is computed without it
        t = self.trials[index]
        if t.done:
            return t
        if diverged and not failed:
            t.state, t.message = DIVERGED, message or "the objective was never finite (the training diverged)"
        else:
            if not failed and (value is None or not math.isfinite(value)):
                failed, message = True, message or f"objective is not a finite number: {value!r}"
            if not failed and not checkpoint:
                failed, message = True, message or "trial reported a score without a checkpoint"
            if failed:
                t.state, t.message = FAILED, message
            else:
                t.state, t.value, t.checkpoint, t.checksum, t.message = (
                    SUCCEEDED, float(value), checkpoint, checksum, message)
        if self.lag is None:
            self._tell_smac(t)
        return t

    def _tell_smac(self, t: Trial) -> None:
        """Make a finished trial's result the next one seen (`told`): by SMAC, the top-K and
        early stopping."""
        t.told = self._told
        self._told += 1
        if t.state == DIVERGED:
            worst = self._worst_value(t.told)
            if worst is not None:  # before any finished trial there is no scale to put it on
                # as if it had ended at the worst score seen (with gains: fallen from its student's to it)
                self._smac[t.phase].tell(self._infos[t.index], TrialValue(cost=self._cost(t, worst)), save=False)
        elif t.state == SUCCEEDED:
            assert t.value is not None
            self._smac[t.phase].tell(self._infos[t.index], TrialValue(cost=self._cost(t, t.value)), save=False)
        # A failed trial says nothing about its config (most failures are infrastructure; a
        # diverging config ends diverged, not failed), so SMAC is not told.

    def _due(self, index: int) -> int:
        """Reproducible mode: how many results (trials 0..n-1) trial `index` is proposed from:
        those of trials 0..index-lag, and all earlier ones for a trial after the warm-up (the
        BOSS phase starts from every warm-up checkpoint)."""
        assert self.lag is not None
        warm = sum(t.phase == WARMUP for t in self.trials)
        if self.phase == WARMUP and warm >= self.spec.budget.warmup_trials:
            return index
        return max(0, index - self.lag + 1)

    def _admit(self, upto: int) -> bool:
        """Reproducible mode: tell the held results of trials before `upto`, in trial order;
        False while one of them still runs."""
        while self._told < upto:
            t = self.trials[self._told]
            if not t.done:
                return False
            self._tell_smac(t)
        return True

    @classmethod
    def replay(cls, spec: StudySpec, records: Iterable[Trial | dict[str, Any]], name: str = "study",
               snapshots: Iterable[dict[str, Any]] = (), ahead: bool = True,
               smac_trials: dict[str, int] | None = None, lag: int | None = None,
               failure_floor: int = 0, smac: SmacSettings = SmacSettings()) -> Engine:
        """Rebuild an engine from recorded trials: same seed, same order, same proposals.

        With `snapshots` (Engine.snapshot(), newest first), the trials a usable one covers are put
        into SMAC's runhistory without asking SMAC, its state is restored, and only the trials
        after it are asked again and compared: seconds instead of one ask per trial. A snapshot
        that does not fit the records, or a tail that then replays differently, falls back to
        the next snapshot, and finally to asking for every trial."""
        recs = sorted((r if isinstance(r, Trial) else Trial.from_dict(r) for r in records), key=lambda r: r.index)
        if [r.index for r in recs] != list(range(len(recs))):
            raise ReplayError(f"recorded trial indices are not 0..{len(recs) - 1}")
        results = sorted((r for r in recs if r.told is not None), key=lambda r: r.told)
        if [r.told for r in results] != list(range(len(results))):
            raise ReplayError("recorded result order has gaps")
        if (lag if lag is not None else lag_of(spec)) is not None and any(r.told != r.index for r in results):
            raise ReplayError("a reproducible study's results are recorded out of trial order")
        dicts: list[dict[str, Any]] | None = None
        for s in snapshots:
            if not isinstance(s, dict) or s.get("version") not in snap.READABLE:
                continue
            p, k = s.get("proposed"), s.get("told")
            if not (isinstance(p, int) and isinstance(k, int) and 0 <= p <= len(recs) and 0 <= k <= len(results)):
                continue
            if any(r.vector is None for r in recs[:p]):
                continue
            dicts = dicts if dicts is not None else [r.to_dict() for r in recs]
            if snap.digest(dicts, p, k) != s.get("digest"):
                continue
            try:
                return cls._replay(spec, recs, results, name, s, ahead, smac_trials, lag, failure_floor, smac)
            except (ReplayError, ValueError, KeyError, TypeError) as e:
                log.warning("%s: the snapshot after %d trials does not replay (%s); trying without it", name, p, e)
        return cls._replay(spec, recs, results, name, None, ahead, smac_trials, lag, failure_floor, smac)

    @classmethod
    def _replay(cls, spec: StudySpec, recs: list[Trial], results: list[Trial], name: str,
                snapshot: dict[str, Any] | None, ahead: bool, smac_trials: dict[str, int] | None = None,
                lag: int | None = None, failure_floor: int = 0, smac: SmacSettings = SmacSettings()) -> Engine:
        eng = cls(spec, name, ahead, smac_trials, lag, failure_floor, smac)
        pending = iter(results)

        def tell(r: Trial) -> None:
            if r.index >= len(eng.trials):
                raise ReplayError(f"trial {r.index}'s result is recorded before the trial was proposed")
            eng.tell(r.index, r.value, checkpoint=r.checkpoint, checksum=r.checksum,
                     failed=r.state == FAILED, diverged=r.state == DIVERGED, message=r.message)

        def tell_next() -> None:
            r = next(pending, None)
            if r is None:
                raise ReplayError("a trial was proposed after more results than were recorded")
            tell(r)

        held = 0  # reproducible mode: the results of trials before this one are told (held)

        def catch_up(told: int, before: int) -> None:
            """Tell what the engine had been told when trial `before` was proposed after `told` results."""
            nonlocal held
            if eng.lag is None:
                while eng._told < told:
                    tell_next()
                return
            for r in recs[held:before]:
                if r.done:
                    tell(r)
            held = max(held, before)
            if not eng._admit(told):
                raise ReplayError(f"{told} results were told in trial order, but a trial before then is not finished")

        skip = snapshot["proposed"] if snapshot else 0

        def restore() -> None:
            catch_up(snapshot["told"], skip)
            eng._restore(snapshot)

        if snapshot and skip == 0:
            restore()
        for r in recs:
            if r.index < skip:
                catch_up(r.asked_after, r.index)
                eng._record(r)
                if r.index == skip - 1:
                    restore()
                continue
            if eng.lag is None:
                catch_up(r.asked_after, r.index)
            else:
                catch_up(0, r.index)  # the ask tells what the proposal must see itself
            t = eng.ask()
            if t is None:
                raise ReplayError(f"trial {r.index} was recorded but the engine would not propose it now")
            mine = (t.phase, t.config, t.teacher, t.student, t.asked_after)
            theirs = (r.phase, r.config, r.teacher, r.student, r.asked_after)
            if mine[:4] != theirs[:4] or (eng.lag is not None and mine != theirs):
                raise ReplayError(f"trial {r.index} replays as {mine[:4]}, recorded as {theirs[:4]}")
            t.extra = dict(r.extra)
        catch_up(len(results), len(recs))
        for r in recs:  # keep the backend's bookkeeping of trials still running
            eng.trials[r.index].extra = dict(r.extra)
        return eng

    def record(self) -> dict[str, Any]:
        """What a study's record keeps of its engine, besides the trials, for `replay`."""
        out: dict[str, Any] = {"computeAhead": self.ahead, "smacTrials": self.smac_trials,
                               **self.settings.to_record()}
        if self.lag is not None:
            out["lag"] = self.lag
        if self.failure_floor:
            out["failureFloor"] = self.failure_floor
        return out

    def grown(self) -> None:
        """The budget grew (a user's way on after fixing what failed): the failures so far no
        longer stop the study as a repeated failure."""
        self.failure_floor = self._told

    def snapshot(self) -> dict[str, Any]:
        """The engine's state now, as JSON (snapshot.py): what `replay` needs besides the trials."""
        dicts = [t.to_dict() for t in self.trials]
        return {"version": snap.VERSION, "proposed": len(self.trials), "told": self._told,
                "digest": snap.digest(dicts, len(self.trials), self._told),
                "smac": {phase: snap.smac_state(smac) for phase, smac in self._smac.items()}}

    def _record(self, r: Trial) -> None:
        """Put a recorded trial into SMAC's runhistory as its ask did, without asking SMAC."""
        if r.asked_after != self._told:
            raise ReplayError(f"trial {r.index} was proposed after {r.asked_after} results, not {self._told}")
        smac = self._smac_for(r.phase)
        config = snap.config_of(smac.scenario.configspace, r.vector or "")
        if r.origin == "smac":
            info = TrialInfo(config=config, seed=self._seeds[r.phase])
            smac.runhistory.add_running_trial(info)
            smac._config_selector.yields += 1
        else:  # SMAC could not propose: a random config that SMAC learns of only from its result
            info = TrialInfo(config=config, seed=0)
        t = Trial(index=r.index, phase=r.phase, config=dict(r.config), teacher=r.teacher, student=r.student,
                  asked_after=r.asked_after, origin=r.origin, vector=r.vector, extra=dict(r.extra))
        self._infos[r.index] = info
        self.trials.append(t)

    def _restore(self, state: dict[str, Any]) -> None:
        """Set SMAC's state to a snapshot's, the runhistory being rebuilt up to the same point."""
        if (state["proposed"], state["told"]) != (len(self.trials), self._told):
            raise ReplayError("the snapshot is not at this point of the replay")
        for phase, smac_state in state["smac"].items():
            smac = self._smac_for(phase)
            handed = [self._infos[t.index].config for t in self.trials if t.phase == phase and t.origin == "smac"]
            snap.restore_smac(smac, smac_state, handed)
        if set(state["smac"]) != set(self._smac):
            raise ReplayError("the snapshot has a SMAC for other phases than the replay")

    @property
    def architecture(self) -> list[str]:
        """The parameters that shape the model: searched in the warm-up, inherited in the BOSS phase."""
        return [n for n, p in self.spec.search_space.items() if p.architecture]

    # ---- the study's standing ---------------------------------------------------------------

    @property
    def running(self) -> list[Trial]:
        return [t for t in self.trials if t.state == RUNNING]

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.state == FAILED]

    @property
    def succeeded(self) -> list[Trial]:
        return [t for t in self.trials if t.state == SUCCEEDED]

    @property
    def diverged(self) -> list[Trial]:
        return [t for t in self.trials if t.state == DIVERGED]

    def _cost(self, t: Trial, value: float) -> float:
        """What SMAC is told of trial `t` ending at `value` (SMAC minimises): the value, or in the
        BOSS phase with boss_cost "gain" its gain over the trial's student's value."""
        if t.phase == BOSS and self.settings.boss_cost == "gain" and t.student is not None:
            value -= self.trials[t.student].value or 0.0
        return -value if self.spec.objective.goal == "maximize" else value

    def _worst_value(self, told: int) -> float | None:
        """The worst objective among the finished trials whose results came before result `told`."""
        values = [t.value for t in self.trials
                  if t.state == SUCCEEDED and t.told is not None and t.told < told and t.value is not None]
        if not values:
            return None
        return min(values) if self.spec.objective.goal == "maximize" else max(values)

    def _judged(self) -> list[Trial]:
        """The results the failure rules judge, in the order they were told. In reproducible
        mode those the next proposal sees, so when a study stops does not depend on timing."""
        if self.lag is None:
            return sorted((t for t in self.trials if t.told is not None), key=lambda t: t.told)
        seen = max(self._told, self._due(len(self.trials)))
        return [t for t in self.trials[:seen] if t.done]

    @property
    def too_many_failures(self) -> bool:
        """More failures than maxFailedTrials: no new trial starts."""
        return sum(t.state == FAILED for t in self._judged()) > self.spec.budget.max_failed_trials

    @property
    def repeated_failure(self) -> str | None:
        """The message, when the first REPEATED results (since the budget last grew) failed with
        that same message and no result since is a success or a divergence: no new trial starts.
        Only where maxFailedTrials would let more fail; a later success lifts it."""
        if self.spec.budget.max_failed_trials < REPEATED:
            return None
        judged = [t for t in self._judged() if (t.told if t.told is not None else t.index) >= self.failure_floor]
        if len(judged) < REPEATED or any(t.state != FAILED for t in judged):
            return None
        first = {_cause(t.message) for t in judged[:REPEATED]}
        return _cause(judged[0].message) if len(first) == 1 and judged[0].message else None

    @property
    def finished(self) -> bool:
        """No trial runs and none will start: the budget is spent or the study has failed."""
        if self.running:
            return False
        return (self.too_many_failures or self.repeated_failure is not None
                or len(self.trials) >= self.spec.budget.trials)

    def outcome(self) -> tuple[str, str, str]:
        """A finished study's (phase, reason, message): Succeeded only if it found what it promises.

        Failures within `maxFailedTrials` are tolerated, but a study with no successful trial, or
        whose BOSS phase produced no distilled checkpoint, did not do its job and says so; its best
        checkpoint, if any, is still reported.
        """
        b, n = self.spec.budget, len(self.trials)
        if len(self.failed) > b.max_failed_trials:
            return "Failed", "TooManyFailedTrials", f"{len(self.failed)} trials failed; maxFailedTrials is {b.max_failed_trials}"
        repeated = self.repeated_failure
        if repeated is not None and len(self.trials) < b.trials:
            return "Failed", "RepeatedFailure", (
                f"the first {REPEATED} trials failed with the same error, so no more were started: {repeated}")
        if not self.succeeded:
            return "Failed", "NoTrialSucceeded", f"none of the {n} trials succeeded"
        boss = [t for t in self.trials if t.phase == BOSS]
        if self.spec.boss_trials > 0 and not any(t.state == SUCCEEDED for t in boss):
            if not boss:
                return "Failed", "NoBossPhase", (
                    f"the BOSS phase never ran: only {len(self.succeeded)} of {n} warm-up trials succeeded "
                    "and distillation needs two checkpoints; the best is a warm-up (plain BO) checkpoint")
            return "Failed", "NoDistilledTrial", (
                f"all {len(boss)} BOSS-phase trials failed (first: {boss[0].message or 'no message'}); "
                "the best is a warm-up (plain BO) checkpoint")
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return "Succeeded", "BudgetSpent", f"{n} trials run{failed}"

    @property
    def phase(self) -> str:
        """Warm-up until the first BOSS trial is proposed."""
        return BOSS if any(t.phase == BOSS for t in self.trials) else WARMUP

    def score(self, t: Trial) -> float:
        """Higher is better, whatever the goal."""
        assert t.value is not None
        return t.value if self.spec.objective.goal == "maximize" else -t.value

    def best(self) -> Trial | None:
        done = self.succeeded
        return max(done, key=lambda t: (self.score(t), -t.index)) if done else None

    def top_k(self) -> list[Trial]:
        """Θ's top-K: the best fully trained checkpoints, warm-up and BOSS trials alike (a trial
        stopped early holds a network trained for fewer epochs: it never teaches nor seeds), of
        the results told: in reproducible mode one held back is not in it until a proposal sees it
        or the whole budget is proposed (the last results are never told: no proposal sees them)."""
        every = len(self.trials) >= self.spec.budget.trials
        full = [t for t in self.succeeded if not t.extra.get("stoppedEarly") and (every or t.told is not None)]
        ranked = sorted(full, key=lambda t: (-self.score(t), t.index))
        return ranked[: self.spec.boss.top_k]

    def early_stop(self, phase: str, upto: int | None = None) -> dict[str, Any] | None:
        """The early-stopping thresholds for a new trial of `phase`, by epoch, from the per-epoch
        curves of the trials of the same phase that finished before it (each phase is its own
        population: BOSS trials start from trained weights, so they would never trail warm-up
        curves). None without `spec.earlyStopping`.

        `upto`: only the first `upto` results count, i.e. the thresholds of a trial proposed
        after that many (its `asked_after`): a function of the record, so a cluster need not
        store them (they would grow the status with epochs x parallelism)."""
        es = self.spec.early_stopping
        if es is None:
            return None
        maximize = self.spec.objective.goal == "maximize"
        curves = [[v for v in t.extra["curve"]] for t in self.trials
                  if t.phase == phase and t.state == SUCCEEDED and t.extra.get("curve")
                  and (upto is None or (t.told is not None and t.told < upto))]
        epochs = self.spec.trainer.epochs
        thresholds: dict[int, float] = {}
        if es.rule == "median":
            candidates = range(es.grace_epochs, epochs)  # never at the last epoch: nothing left to save
        else:
            candidates, e = [], es.grace_epochs
            while e < epochs:
                candidates.append(e)
                e *= es.reduction_factor
        for e in candidates:
            reached = [c[:e] for c in curves if len(c) >= e and all(v is not None and math.isfinite(v) for v in c[:e])]
            if len(reached) < es.min_trials:
                continue
            if es.rule == "median":
                thresholds[e] = statistics.median(sum(c) / e for c in reached)
            else:
                ranked = sorted((c[e - 1] for c in reached), reverse=maximize)
                keep = max(1, (len(ranked) + 1) // es.reduction_factor)  # the top 1/η, this trial included
                thresholds[e] = ranked[keep - 1]
        return {"rule": es.rule, "thresholds": thresholds} if thresholds else None

    def teacher_share(self, trial: Trial) -> float:
        """The share of the distillation weight a BOSS trial's teacher teaches with: 1 unless it
        scored below the student; then, with `worseTeacher: fade`, falling linearly to 0 at
        `worseTeacherRange` x the spread of the results told before the trial was proposed (a
        function of the record, so a rerun after a restart trains the same). A teacher far below
        its student drags it down; one close below still regularises (docs/how-boss-works.md)."""
        d = self.spec.boss.distillation
        teacher, student = self.trials[trial.teacher], self.trials[trial.student]
        gap = self.score(student) - self.score(teacher)
        if gap <= 0 or d.worse_teacher == "teach":
            return 1.0
        if d.worse_teacher == "skip":
            return 0.0
        told = [t.value for t in self.succeeded if t.told is not None and t.told < trial.asked_after
                and t.value is not None and math.isfinite(t.value)]
        spread = (max(told) - min(told)) * d.worse_teacher_range if told else 0.0
        return max(0.0, 1.0 - gap / spread) if spread > 0 else 0.0

    def pick_teacher_student(self, index: int) -> tuple[int, int]:
        """Two different top-K checkpoints at random, seeded by the study seed and trial index."""
        top = self.top_k()
        if len(top) < 2:
            raise RuntimeError("the BOSS phase needs two successful checkpoints")
        rng = random.Random(f"{self.spec.seed}:{index}")
        teacher, student = rng.sample(top, 2)
        return teacher.index, student.index

    # ---- internals ---------------------------------------------------------------------------

    def _asks_again(self, phase: str) -> bool:
        """Whether this phase's SMAC is asked again as planned (the warm-up's extra trials after
        failures are not planned: their configs are computed when asked)."""
        b = self.spec.budget
        if phase == WARMUP:
            return sum(t.phase == WARMUP for t in self.trials) < b.warmup_trials
        return len(self.trials) < b.trials

    def _next_phase(self) -> str | None:
        b = self.spec.budget
        if self.too_many_failures or self.repeated_failure is not None or len(self.trials) >= b.trials:
            return None
        warm = [t for t in self.trials if t.phase == WARMUP]
        if self.phase == WARMUP:
            if len(warm) < b.warmup_trials:
                return WARMUP
            if any(t.state == RUNNING for t in warm):
                return None  # the BOSS phase starts from the finished warm-up checkpoints
            if len(self.top_k()) < 2:
                return WARMUP  # failures left fewer than two checkpoints: warm up a little more
        return BOSS

    def _smac_for(self, phase: str) -> HPO:
        if phase not in self._smac:
            seed = self.spec.seed + (0 if phase == WARMUP else 1)
            self._smac[phase] = make_smac(self.spec, phase, self.name, seed, self.smac_trials[phase],
                                          retrain_after=self.settings.retrain_after)
            self._seeds[phase] = trial_seed_of(self._smac[phase])
        return self._smac[phase]

    def _propose(self, phase: str, index: int) -> tuple[dict[str, Any], TrialInfo, str]:
        smac = self._smac_for(phase)
        try:
            # what smac.ask() does with one evaluation per config, minus the intensifier's
            # generator, whose state could not be written down (optimizer.py)
            info = TrialInfo(config=smac._config_selector.next_config(), seed=self._seeds[phase])
            smac.runhistory.add_running_trial(info)
            origin = "smac"
        except Exception as e:  # SMAC gives up on small, exhausted spaces
            cs = smac.scenario.configspace
            cs.seed(self.spec.seed * 100_003 + index)
            config = cs.sample_configuration()
            info = TrialInfo(config=config, seed=0)
            origin = f"random (SMAC could not propose: {str(e)[:120]})"
            log.warning("trial %d: %s", index, origin)
        config = native(info.config)
        if phase == BOSS and not self.spec.boss.distillation.searched:
            config.pop(DISTILL_WEIGHT, None)
        return config, info, origin
