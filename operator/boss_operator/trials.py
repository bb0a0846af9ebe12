"""From an engine's trial to the TrialSpec a trial process runs: one place for both backends."""

from __future__ import annotations

from boss.spec import DISTILL_WEIGHT, Study
from boss.store import join
from boss.trial import TrialSpec

from .engine import BOSS, Engine, Trial


def trial_uri(root: str, study: str, index: int) -> str:
    """Where a trial's checkpoint and result live: <root>/<study>/trial-0007."""
    return join(root, study, f"trial-{index:04d}")


def trial_seed(seed: int, index: int) -> int:
    return (seed * 100_003 + index) % 2**31


def make_trial_spec(study: Study, engine: Engine, trial: Trial, root: str, **where: object) -> TrialSpec:
    """The trial's full instructions. `where` sets the backend's parts (metrics, threads...)."""
    spec = study.spec
    dist = spec.boss.distillation
    config = dict(trial.config)
    weight = 0.0
    if trial.phase == BOSS:
        weight = float(config.pop(DISTILL_WEIGHT)) if dist.searched else float(dist.weight)
    teacher = engine.trials[trial.teacher] if trial.teacher is not None else None
    student = engine.trials[trial.student] if trial.student is not None else None
    if teacher is not None and student is not None:
        weight *= engine.teacher_share(trial)
        if weight == 0:
            teacher = None  # it does not teach: nothing to fetch (the record keeps who was drawn)
    return TrialSpec(
        study=study.name,
        index=trial.index,
        phase=trial.phase,
        config=config,
        seed=trial_seed(spec.seed, trial.index),
        plugin=spec.trainer.plugin,
        script=spec.trainer.script,
        args=spec.trainer.args,
        epochs=spec.trainer.epochs,
        objective=spec.objective,
        distill_loss=dist.loss,
        distill_weight=weight,
        temperature=dist.temperature,
        teacher_uri=teacher.checkpoint if teacher else None,
        teacher_sha256=teacher.checksum if teacher else None,
        teacher_config=_architecture_of(engine, teacher, config),
        student_uri=student.checkpoint if student else None,
        student_sha256=student.checksum if student else None,
        output_uri=trial_uri(root, study.name, trial.index),
        storage_endpoint=spec.storage.endpoint,
        pushgateway=spec.metrics.pushgateway,
        # kept in memory since its ask; after a replay from a cluster's record (which leaves the
        # thresholds out) computed again from the results that came before its ask: the same
        early_stop=trial.extra.get("earlyStop") or engine.early_stop(trial.phase, upto=trial.asked_after),
        **where,
    )


def _architecture_of(engine: Engine, teacher: Trial | None, config: dict) -> dict | None:
    """The teacher's architecture values where they differ from the trial's (None: same shape)."""
    if teacher is None:
        return None
    mine = {k: config.get(k) for k in engine.architecture}
    theirs = {k: teacher.config.get(k) for k in engine.architecture}
    return None if mine == theirs else theirs  # None: inactive for the teacher


def result_extra(result: dict, metric: str) -> dict:
    """What a backend records of a finished trial's result: its test metrics, best epoch, the
    per-epoch objective (what early stopping judges later trials by) and whether it was stopped.
    `result` is the trial's result.json (local) or its termination message (cluster: `curve`
    instead of `history`)."""
    if "curve" in result:
        curve = list(result.get("curve") or [])
    else:
        curve = [row.get(metric) for row in result.get("history") or []]
    extra = {"test": result.get("test", {}), "best_epoch": result.get("best_epoch"),
             "curve": [v if isinstance(v, (int, float)) and v == v and abs(v) != float("inf") else None for v in curve]}
    if result.get("stopped_early"):
        extra["stoppedEarly"] = result["stopped_early"]
    return extra
