"""The methods bench/peers.py compares, each one study at a time: `run(method, task, seed)`.

Every method trains with the task's `boss.Trainer`, over SPACE, for the task's budget of
training epochs (trials x epochs per trial), and selects on the validation split.

  boss      our engine as shipped (SMAC ask/tell in two phases, its model refit on every result,
            the BOSS phase's SMAC told each trial's gain over its student; teacher + student from
            the top-K; the shipped distillation, spec.boss.distillation's defaults), with the
            defaults (128 trials, 32 warm-up, top-K 8) scaled to the budget: warm-up = trials/4,
            top-K = max(2, trials/16). Rows of earlier defaults name the options they ran with.
  bo        the same engine with every trial a warm-up trial: SMAC, random weights
  random    configs drawn uniformly, random weights
  sd        boss's schedule and teacher/student draws, configs drawn uniformly (no BO)
  tpe-boss  the authors' reference design on Optuna: TPE warm-up study, a separate TPE study for
            the BOSS phase with alpha ~ U(0, 1) searched there only, loss alpha*CE +
            (1 - alpha)*MSE, teacher and student two distinct top-K checkpoints from both phases
  asha      Optuna TPE with its asynchronous successive-halving pruner (defaults: rungs at
            1, 4, 16 epochs, reduction factor 4); trials of up to `horizon` epochs
  pbt       Ray Tune's PopulationBasedTraining (synchronous, quantile 0.25, resample 0.25,
            factors 0.8/1.2), `population` members of `horizon` epochs, a checkpoint at
            every perturbation (every horizon/4 epochs); exploit clones weights and optimiser state
horizon = budget / population, population = max(4, trials/4) (16 epochs on both tasks).

Variants for the method study (issue item 5) are written `boss[key=value,...]`; see VARIANT_KEYS.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peers_lib import SPACE, TASKS, Stepper, StudyLog, Task, clip_config, from_bytes, to_bytes, trial_config

BENCH = Path(__file__).resolve().parent

# ---- method names and variants ---------------------------------------------------------------

BASE_METHODS = ("boss", "bo", "random", "sd", "tpe-boss", "asha", "pbt")
VARIANT_KEYS = {
    "k": "top-K size",
    "warmup": "warm-up trials",
    "w": "distillation weight: a number, or low:high[:log] to search it (BOSS phase)",
    "lrscale": "multiply a BOSS-phase trial's learning rate by this (inherited weights)",
    "pick": "teacher/student draw: random (shipped) | best-teacher (teacher = the best, student random from the rest) | "
            "best-student (student = the best, teacher random from the rest)",
    "loss": "mse-rel (shipped: the mse of row-centred logits over the centred teacher logits' mean square, "
            "never below a tenth of the student's) | mse (of raw logits, the paper's) | kl. Rows with mse-rel-t "
            "in bench/results ran it without that floor, not kept (a teacher whose logits barely vary made it "
            "explode); it no longer runs",
    "gate": "how a teacher below its student teaches (spec.boss.distillation.worseTeacher): off (teach: with "
            "w, the paper) | better (skip: not at all) | soft[:c] (fade with worseTeacherRange c, default 1: with "
            "w * max(0, 1 - gap / (c * spread)), gap its distance below the student, spread that of the results "
            "told before the trial)",
    "tell": "what SMAC learns in the BOSS phase (SmacSettings.boss_cost): gain (shipped: value minus the "
            "student's value) | value",
    "retrain": "SMAC's retrain_after in both phases: configs proposed from one model fit (shipped 1: a refit on "
               "every result, as SMAC's BlackBox facade does; 8, the HPO facade's, until issue 24 found it)",
    "es": "spec.earlyStopping rule: median | asha (grace 1 epoch, eta 3, 3 earlier trials); the study then "
          "runs trials until the same epoch budget is spent, the last one shortened to fit",
}


def parse_method(name: str) -> tuple[str, dict[str, str]]:
    """'boss[k=4,w=0.1:10:log]' -> ('boss', {'k': '4', 'w': '0.1:10:log'})."""
    if "[" not in name:
        base, opts = name, {}
    else:
        base, rest = name.split("[", 1)
        if not rest.endswith("]"):
            raise ValueError(f"bad method {name!r}: options go in [key=value,...]")
        opts = dict(kv.split("=", 1) for kv in rest[:-1].split(",") if kv)
    if base not in BASE_METHODS:
        raise ValueError(f"unknown method {base!r} (one of {', '.join(BASE_METHODS)})")
    bad = set(opts) - set(VARIANT_KEYS)
    if bad:
        raise ValueError(f"unknown option(s) {sorted(bad)} in {name!r} (known: {', '.join(VARIANT_KEYS)})")
    return base, opts


def scaled_defaults(task: Task) -> tuple[int, int]:
    """The shipped defaults (128 trials, 32 warm-up, top-K 8) scaled to the task's trial count."""
    return max(2, round(task.trials * 32 / 128)), max(2, round(task.trials * 8 / 128))


def population(task: Task) -> int:
    return max(4, task.trials // 4)


def horizon(task: Task) -> int:
    return task.budget // population(task)


def run(method: str, task_name: str, seed: int, trials: int | None = None, epochs: int | None = None) -> dict[str, Any]:
    """One study of `method` on a task (trials/epochs override the task's, for quick checks)."""
    torch.set_num_threads(1)
    task = TASKS[task_name]
    if trials or epochs:
        task = dataclasses.replace(task, trials=trials or task.trials, epochs=epochs or task.epochs)
    base, opts = parse_method(method)
    log = StudyLog(method, task.name, seed)
    work = tempfile.mkdtemp(prefix=f"peers-{task.name}-{base}-{seed}-")
    try:
        if base in ("boss", "bo", "random", "sd"):
            _engine_study(base, opts, task, seed, log, work)
        elif base == "tpe-boss":
            _tpe_boss(task, seed, log, work, opts)
        elif base == "asha":
            _asha(task, seed, log)
        elif base == "pbt":
            _pbt(task, seed, log, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return log.to_dict()


# ---- our engine: boss, bo, random, sd ---------------------------------------------------------

def _distillation(opts: dict[str, str]) -> dict[str, Any]:
    from boss.spec import Distillation

    shipped = Distillation()
    d: dict[str, Any] = {"loss": opts.get("loss", shipped.loss), "weight": shipped.weight,
                         "worseTeacher": shipped.worse_teacher, "worseTeacherRange": shipped.worse_teacher_range}
    gate = opts.get("gate")
    if gate is not None:
        if gate == "off":
            d["worseTeacher"] = "teach"
        elif gate == "better":
            d["worseTeacher"] = "skip"
        elif re.fullmatch(r"soft(:[0-9.]+)?", gate):
            d["worseTeacher"], d["worseTeacherRange"] = "fade", float(gate.partition(":")[2] or 1)
        else:
            raise ValueError(f"gate must be off, better or soft[:c], got {gate!r}")
    if "w" in opts:
        parts = opts["w"].split(":")
        if len(parts) == 1:
            d["weight"] = float(parts[0])
        else:
            d["weight"] = {"low": float(parts[0]), "high": float(parts[1]), "log": len(parts) > 2 and parts[2] == "log"}
    return d


def study_doc(task: Task, seed: int, warmup: int, top_k: int, distillation: dict[str, Any],
              early_stopping: str | None = None) -> dict[str, Any]:
    doc = {
        "apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy",
        "metadata": {"name": f"peers-{task.name}-{seed}"},
        "spec": {
            "objective": {"metric": "val_accuracy", "goal": "maximize"},
            "searchSpace": SPACE,
            "budget": {"trials": task.trials, "warmupTrials": warmup, "parallelism": 1, "maxFailedTrials": task.trials},
            "boss": {"topK": top_k, "distillation": distillation},
            "trainer": {"plugin": task.plugin, "epochs": task.epochs, "args": task.args},
            "seed": seed,
        },
    }
    if early_stopping:
        # trials stop early, so a study of `budget` epochs runs more of them: room for at most one
        # epoch each (the loop stops when the epochs are spent)
        doc["spec"]["budget"]["trials"] = task.budget
        doc["spec"]["earlyStopping"] = {"rule": early_stopping, "graceEpochs": 1, "reductionFactor": 3, "minTrials": 3}
    return doc


def _engine_study(base: str, opts: dict[str, str], task: Task, seed: int, log: StudyLog, work: str) -> None:
    from boss.loop import run_trial
    from boss.spec import parse_study
    from boss.store import to_uri
    from boss_operator.space import build_space, native
    from boss_operator.trials import make_trial_spec, result_extra

    warmup, top_k = scaled_defaults(task)
    warmup = int(opts.get("warmup", warmup))
    top_k = int(opts.get("k", top_k))
    if base in ("bo", "random"):
        warmup = task.trials
    study = parse_study(study_doc(task, seed, warmup, top_k, _distillation(opts), opts.get("es")))
    engine = _engine_class(opts.get("pick", "random"))(study.spec, study.name, smac=_smac_settings(opts))
    spaces = {}
    if base in ("random", "sd"):
        spaces = {ph: build_space(study.spec, ph, seed + i) for i, ph in enumerate(("warmup", "boss"))}
    lrscale = float(opts.get("lrscale", 1.0))
    root = to_uri(work)
    spent = 0  # epochs trained: with early stopping the budget is epochs, not trials
    search = 0.0  # seconds in the engine's ask and tell (SMAC's model and acquisition): its overhead
    while not engine.finished and spent < task.budget:
        t0 = time.perf_counter()
        t = engine.ask()
        search += time.perf_counter() - t0
        if t is None:  # sequential: never happens, but never spin
            raise RuntimeError("the engine proposed nothing while no trial runs")
        if spaces:
            t.config = native(spaces[t.phase].sample_configuration())  # same bookkeeping, random configs
        spec = make_trial_spec(study, engine, t, root, metrics_textfile=f"{work}/{t.index}.prom", threads=1)
        if t.phase == "boss" and lrscale != 1.0:
            spec = spec.model_copy(update={"config": {**spec.config, "lr": spec.config["lr"] * lrscale}})
        if spent + spec.epochs > task.budget:  # early stopping: the last trial gets what is left
            spec = spec.model_copy(update={"epochs": task.budget - spent})
        try:
            r = run_trial(spec)
        except Exception as e:  # a failed trial is the engine's business, as in a real study
            t0 = time.perf_counter()
            engine.tell(t.index, failed=True, message=str(e)[:200])
            search += time.perf_counter() - t0
            log.know(float("nan"))
            continue
        for row in r["history"]:
            log.epoch(f"t{t.index}", row["val_accuracy"])
        spent += len(r["history"])
        t.extra.update(result_extra(r, "val_accuracy"))  # the curve later trials are judged by
        log.know(r["value"])
        log.offer(r["value"], r["test"]["test_accuracy"], f"trial {t.index} ({t.phase})")
        t0 = time.perf_counter()
        engine.tell(t.index, r["value"], checkpoint=r["checkpoint"], checksum=r["sha256"])
        search += time.perf_counter() - t0
    b = engine.best()
    log.info.update(search_seconds=round(search, 3), smac=engine.settings.to_record(), best_phase=b.phase if b else None, warmup=warmup, top_k=top_k, trials_run=len(engine.trials),
                    stopped_early=sum(bool(t.extra.get("stoppedEarly")) for t in engine.trials),
                    failed=len(engine.failed), lineage=_lineage_depth(engine, b),
                    trials=[_row(t.index, t.phase, t.value, t.teacher, t.student, t.config) for t in engine.trials])


def _row(index, phase, value, teacher, student, config) -> list:
    """One trial, compactly: [index, phase, value, teacher, student, config]."""
    c = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in config.items()}
    return [index, phase, None if value is None else round(value, 5), teacher, student, c]


def _lineage_depth(engine, trial) -> int:
    """How many BOSS generations the best checkpoint descends through (its student chain)."""
    depth = 0
    while trial is not None and trial.student is not None:
        depth += 1
        trial = engine.trials[trial.student]
    return depth


def _smac_settings(opts: dict[str, str]):
    """The engine's SmacSettings, the shipped ones unless `retrain` or `tell` say otherwise."""
    from boss_operator.engine import SmacSettings

    shipped = SmacSettings()
    tell = opts.get("tell", shipped.boss_cost)
    if tell not in ("value", "gain"):
        raise ValueError(f"tell must be value or gain, got {tell!r}")
    return SmacSettings(retrain_after=int(opts.get("retrain", shipped.retrain_after)), boss_cost=tell)


def _engine_class(pick: str):
    """The shipped Engine, or a subclass that changes how teacher and student are picked
    (prototypes for the method study; the engine itself is unchanged)."""
    from boss_operator.engine import Engine

    if pick not in ("random", "best-teacher", "best-student"):
        raise ValueError(f"pick must be random, best-teacher or best-student, got {pick!r}")

    class Variant(Engine):
        def pick_teacher_student(self, index: int) -> tuple[int, int]:
            if pick == "random":
                return super().pick_teacher_student(index)
            top = self.top_k()  # one of the pair is the best checkpoint so far, the other drawn from the rest
            other = random.Random(f"{self.spec.seed}:{index}").choice(top[1:]).index
            return (top[0].index, other) if pick == "best-teacher" else (other, top[0].index)

    return Variant


# ---- Optuna: the authors' reference design, and ASHA ------------------------------------------

def _suggest(trial) -> dict[str, Any]:
    c: dict[str, Any] = {}
    for name, p in SPACE.items():
        when = p.get("when")
        if when and any(c.get(k) != v for k, v in when.items()):
            continue
        if p["type"] == "float":
            c[name] = trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
        elif p["type"] == "int":
            c[name] = trial.suggest_int(name, p["low"], p["high"], log=p.get("log", False))
        else:
            c[name] = trial.suggest_categorical(name, p["choices"])
    return c


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _alpha_trainer(plugin: str, alpha: float):
    """The task's trainer with L_gt scaled by alpha: the SDK loop adds (1 - alpha) * MSE, which
    makes the reference loss alpha*CE + (1 - alpha)*MSE exactly."""
    from peers_lib import trainer_class

    base = trainer_class(plugin)

    class AlphaTrainer(base):
        def task_loss(self, logits, targets):  # also scales the reported val_loss; accuracy is unchanged
            return alpha * super().task_loss(logits, targets)

    return AlphaTrainer


def _tpe_boss(task: Task, seed: int, log: StudyLog, work: str, opts: dict[str, str]) -> None:
    from boss.loop import run_trial
    from boss.store import to_uri
    from boss.trial import TrialSpec
    from boss_operator.trials import trial_seed
    from peers_lib import trainer_class

    optuna = _optuna()
    warmup, top_k = scaled_defaults(task)
    top_k = int(opts.get("k", top_k))
    warm = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    boss = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed + 1))
    theta: list[tuple[float, int, str, str]] = []  # (val, index, checkpoint, sha256): warm-up and BOSS
    root = to_uri(work)
    rows: list[list] = []
    for i in range(task.trials):
        phase = "warmup" if i < warmup else "boss"
        study = warm if phase == "warmup" else boss
        ot = study.ask()
        config = _suggest(ot)
        kw: dict[str, Any] = {}
        trainer, pair = None, (None, None)
        if phase == "boss":
            alpha = ot.suggest_float("alpha", 0.0, 1.0)
            top = sorted(theta, key=lambda r: (-r[0], r[1]))[:top_k]
            student, teacher = random.Random(f"{seed}:{i}").sample(top, 2)
            pair = (teacher[1], student[1])
            kw = dict(distill_loss="mse", distill_weight=1.0 - alpha, teacher_uri=teacher[2], teacher_sha256=teacher[3],
                      student_uri=student[2], student_sha256=student[3])
            trainer = _alpha_trainer(task.plugin, alpha)(config, task.args, seed=trial_seed(seed, i))
        spec = TrialSpec(study=f"tpe-boss-{seed}", index=i, phase=phase, config=config, seed=trial_seed(seed, i),
                         plugin=task.plugin, args=task.args, epochs=task.epochs,
                         output_uri=f"{root}/trial-{i:04d}", metrics_textfile=f"{work}/{i}.prom", threads=1, **kw)
        if trainer is None:
            trainer = trainer_class(task.plugin)(config, task.args, seed=spec.seed)
        r = run_trial(spec, trainer)
        for row in r["history"]:
            log.epoch(f"t{i}", row["val_accuracy"])
        log.know(r["value"])
        log.offer(r["value"], r["test"]["test_accuracy"], f"trial {i} ({phase})")
        study.tell(ot, r["value"])
        theta.append((r["value"], i, r["checkpoint"], r["sha256"]))
        cfg = {**config, "alpha": alpha} if phase == "boss" else config
        rows.append(_row(i, phase, r["value"], *pair, cfg))
    log.info.update(warmup=warmup, top_k=top_k, trials=rows)


def _asha(task: Task, seed: int, log: StudyLog) -> None:
    from boss_operator.trials import trial_seed

    optuna = _optuna()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.SuccessiveHalvingPruner())
    spent, i, h = 0, 0, horizon(task)
    rungs: dict[int, int] = {}
    while spent < task.budget:
        ot = study.ask()
        st = Stepper(task.plugin, task.args, _suggest(ot), trial_seed(seed, i), h)
        pruned = False
        while st.epoch < h and spent < task.budget:
            val = st.train_epoch()
            spent += 1
            log.epoch(f"t{i}", val)
            log.know(val)
            ot.report(val, st.epoch)
            if ot.should_prune():
                pruned = True
                break
        rungs[st.epoch] = rungs.get(st.epoch, 0) + 1
        log.offer(st.best_val, st.test_of_best(), f"trial {i} ({st.epoch} epochs)")
        if pruned or st.epoch < h:
            study.tell(ot, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(ot, st.best_val)
        i += 1
    log.info.update(trials=i, epochs_per_trial=dict(sorted(rungs.items())), horizon=h)


# ---- Ray Tune: Population Based Training --------------------------------------------------------

def _ray():
    import ray

    if not ray.is_initialized():
        paths = [str(BENCH), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)  # the workers import this module
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=100 * 1024**2)
    return ray


def _member_class():
    from ray import tune

    class PBTMember(tune.Trainable):
        """One PBT member in a Ray actor: an epoch per step, its weights and optimiser state in
        checkpoints. Actors are reused between members (reset_config), so pausing and exploiting
        cost a checkpoint, not a process start."""

        def setup(self, config: dict[str, Any], *, plugin: str, args: dict[str, Any], horizon: int, seed: int,
                  log_path: str) -> None:
            torch.set_num_threads(1)
            self.fixed = dict(plugin=plugin, args=args, horizon=horizon, seed=seed, log_path=log_path)
            self._start(config)

        def _start(self, config: dict[str, Any]) -> None:
            f = self.fixed
            self.member = int(self.trial_name.rsplit("_", 1)[-1])
            self.cfg = clip_config(config)
            self.st = Stepper(f["plugin"], f["args"], self.cfg, f["seed"] * 1_000 + self.member, f["horizon"])
            self.cloned: int | None = None

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self._start(new_config)
            return True

        def step(self) -> dict[str, Any]:
            st = self.st
            val = st.train_epoch()
            row = {"trial": f"m{self.member}", "epoch": st.epoch, "val": val, "t": time.time(),
                   "config": trial_config(self.cfg)}
            if self.cloned is not None:
                row["cloned"], self.cloned = self.cloned, None
            if st.best_val == val:  # a new best of this member since it (re)started: the test split for it
                row["test"] = st.test_of_best()
            with open(self.fixed["log_path"], "a") as f:
                f.write(json.dumps(row) + "\n")
            return {"val_accuracy": val, "epoch": st.epoch}

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            Path(checkpoint_dir, "state.pt").write_bytes(to_bytes({**self.st.state(), "member": self.member}))

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            state = from_bytes(Path(checkpoint_dir, "state.pt").read_bytes())
            self.st.restore(state, self.cfg)
            if int(state["member"]) != self.member:
                self.cloned = int(state["member"])  # PBT's exploit: another member's weights

    return PBTMember


def _pbt(task: Task, seed: int, log: StudyLog, work: str) -> None:
    ray = _ray()
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    p, h = population(task), horizon(task)
    interval = max(1, h // 4)
    domains = {
        "lr": tune.loguniform(SPACE["lr"]["low"], SPACE["lr"]["high"]),
        "weight_decay": tune.loguniform(SPACE["weight_decay"]["low"], SPACE["weight_decay"]["high"]),
        "optimizer": tune.choice(SPACE["optimizer"]["choices"]),
        "momentum": tune.uniform(SPACE["momentum"]["low"], SPACE["momentum"]["high"]),
        "batch_size": tune.lograndint(SPACE["batch_size"]["low"], SPACE["batch_size"]["high"] + 1),
    }
    mutations = {**domains, "optimizer": list(SPACE["optimizer"]["choices"])}
    scheduler = PopulationBasedTraining(time_attr="epoch", perturbation_interval=interval,
                                        hyperparam_mutations=mutations, custom_explore_fn=clip_config, synch=True)
    random.seed(seed)  # PBT's explore draws from these
    np.random.seed(seed)
    log_path = f"{work}/epochs.jsonl"
    trainable = tune.with_parameters(_member_class(), plugin=task.plugin, args=task.args, horizon=h, seed=seed,
                                     log_path=log_path)
    tuner = tune.Tuner(
        trainable, param_space=domains,
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", scheduler=scheduler, num_samples=p,
                                    search_alg=BasicVariantGenerator(random_state=seed), reuse_actors=True),
        run_config=tune.RunConfig(name="pbt", storage_path=f"{work}/ray", stop={"epoch": h}, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    log.started = time.time()  # Ray itself was started once per worker process, before this study
    grid = tuner.fit()
    if grid.errors:
        raise RuntimeError(f"PBT: {len(grid.errors)} member(s) failed: {grid.errors[0]}")
    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines()]
    for r in rows:
        log.epoch(r["trial"], r["val"])
        log.know(r["val"], when=r["t"])
        if "test" in r:
            log.offer(r["val"], r["test"], f"member {r['trial']} epoch {r['epoch']} {r['config']}")
    log.info.update(population=p, horizon=h, interval=interval, epochs=len(rows),
                    exploits=sum("cloned" in r for r in rows))
    del ray
