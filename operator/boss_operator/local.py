"""The embedded backend: a whole study on one machine, trials as local processes.

Trials run in the folder where the run was started, with $PYTHONPATH made absolute: the
plugin imports, and relative paths in `trainer.args` resolve, as they do for `boss validate`
in that folder. The run folder holds everything: `study.yaml` (what was asked), `state.json` (every trial
the engine proposed, in order, with its result), `trials/NNNN/` (each trial's log and
metrics) and, unless the study names other storage, `checkpoints/`. Running the same study
again in the same folder replays `state.json` into the engine and carries on: trials that
were running when it stopped run again with the same config, teacher and student.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from boss.plugins import absolute_pythonpath
from boss.runs import INTERRUPTED, STATE, STUDY, RunLock, read_state
from boss.spec import SpecError, Study, growth, parse_study
from boss.store import CheckpointError, Store, to_uri
from boss.trial import TrialSpec, parse_result_file

from .engine import DIVERGED, FAILED, Engine, SmacSettings, Trial, recorded_ahead, smac_trials_of
from .readback import read_back
from .trials import make_trial_spec, result_extra
from .workers import ColdLauncher, Launcher, TrialHandle, WarmLauncher

Event = Callable[[str, Engine, Trial | None], None]


class Interrupted(Exception):
    """The run was stopped (Ctrl-C or SIGTERM); running it again continues the study."""


@dataclass
class _Running:
    trial: Trial
    spec: TrialSpec
    proc: TrialHandle
    started: float
    ended: float | None = None  # when the process exited (its objective may still be on its way)


class LocalRun:
    """Runs (or continues) one study in `run_dir` with up to `parallelism` trial processes."""

    def __init__(self, study: Study, run_dir: str | Path, *, python: str = sys.executable,
                 on_event: Event | None = None, poll: float = 0.1, workdir: str | Path | None = None,
                 launcher: Launcher | None = None):
        self.study = study
        self.run_dir = Path(run_dir).resolve()
        self.workdir = Path(workdir or os.getcwd()).resolve()  # trials run here, as `boss validate` checks
        self.interrupted = False
        self.grew = ""  # what a continued run's budget grew by ("budget.trials 10 -> 14")
        self._held = _HeldInterrupt()  # Ctrl-C and SIGTERM wait while a start or a result is recorded
        self.python = python
        self.launcher = launcher  # made by run() unless given: warm (forked) trial starts on Linux
        self.on_event = on_event or (lambda kind, engine, trial: None)
        self.poll = poll
        spec = study.spec
        if spec.metrics.prometheus and not spec.metrics.pushgateway:
            raise SpecError("spec.metrics.prometheus: needs spec.metrics.pushgateway too "
                            "(trials push there, and Prometheus scrapes it)")
        self.root = to_uri(spec.storage.uri) if spec.storage.uri else to_uri(self.run_dir / "checkpoints")
        self.store = Store(spec.storage.endpoint)
        cores = os.cpu_count() or 1
        processes = spec.budget.parallelism * spec.trainer.gpus  # trainer.gpus: processes per trial
        self.threads = max(1, cores // min(processes, cores))
        self.engine = self._load()

    # ---- the run folder ----------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE

    def _load(self) -> Engine:
        doc = self.study.to_document()
        state = self.state_path
        if not state.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / STUDY).write_text(yaml.safe_dump(doc, sort_keys=False))
            return Engine(self.study.spec, self.study.name)
        try:
            saved = read_state(self.run_dir)
        except SpecError as e:
            raise SpecError(f"{e}; move the folder away to start over") from None
        diff, self.grew = growth(saved["study"], doc, len(saved.get("trials") or []))
        if diff:
            raise SpecError(
                f"{self.run_dir} holds a run of a different study ({diff} changed; only budget.trials, "
                "budget.maxFailedTrials and budget.parallelism may change); use another --run-dir, or --fresh "
                "to start this one over (the earlier run is moved aside)"
            )
        engine = saved.get("engine") or {}
        started = parse_study(saved["study"]).spec if "smacTrials" not in engine else None
        e = Engine.replay(self.study.spec, saved["trials"], self.study.name,
                          ahead=recorded_ahead(engine, bool(saved.get("trials"))),
                          smac_trials=engine.get("smacTrials") or smac_trials_of(started),
                          lag=engine.get("lag"), failure_floor=int(engine.get("failureFloor") or 0),
                          smac=SmacSettings.of_record(engine, bool(saved.get("trials"))))
        if self.grew:
            e.grown()
        return e

    def save(self) -> None:
        """Write the state atomically: a crash leaves the old state or the new, never half."""
        e = self.engine
        best = e.best()
        state = {
            "study": self.study.to_document(),
            "status": self.status(),
            "message": e.outcome()[2] if e.finished else None,
            "runner": None if self.interrupted or e.finished else {"pid": os.getpid(), "host": socket.gethostname()},
            "best": best.to_dict() if best else None,
            "trials": [t.to_dict() for t in e.trials],
            "engine": e.record(),
        }
        tmp = self.state_path.with_name(f"{STATE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_path)

    def status(self) -> str:
        e = self.engine
        if e.finished:
            return e.outcome()[0]
        if self.interrupted:
            return INTERRUPTED
        return "Distilling" if e.phase == "boss" else "WarmingUp"

    # ---- running -------------------------------------------------------------------------------

    def run(self) -> Engine:
        """Run until the budget is spent or too many trials failed; returns the engine."""
        self._held = _HeldInterrupt()  # each run stops on its own first Ctrl-C
        lock = RunLock(self.run_dir)  # one writer: a second run of this folder stops here, in one line
        try:
            self.engine = self._load()  # what the last writer left (it may have written since we read it)
            return self._run()
        finally:
            lock.release()

    def _run(self) -> Engine:
        running: dict[int, _Running] = {}
        held = self._held
        previous = signal.getsignal(signal.SIGTERM)
        previous_int = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGTERM, held.handler)
        if previous_int is not signal.SIG_IGN:  # a shell's background job keeps ignoring Ctrl-C
            signal.signal(signal.SIGINT, held.handler)
        own = self.launcher is None
        if own and not self.engine.finished:
            self.launcher = self._make_launcher()
        try:
            for t in self.engine.running:  # running when the last run stopped: run them again
                self._launch(t, running)
            while not self.engine.finished:
                while len(running) < self.study.spec.budget.parallelism:
                    t = self.engine.ask()
                    if t is None:
                        break
                    self.save()  # the proposal is recorded before its process starts
                    self._launch(t, running)
                self.engine.settle()  # while the trials run, not after the next one ends
                if not running:
                    break
                for index, r in list(running.items()):
                    if r.proc.poll() is not None and self._finish(r):
                        del running[index]
                time.sleep(self.poll)
            self.save()
            return self.engine
        except KeyboardInterrupt:
            # a second Ctrl-C (or timeout's signal to the whole group) must not cut the clean
            # stop short and leave trial processes running on their own
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # both put back as they were below
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._stop_all(running)
            self.interrupted = True
            self.save()
            raise Interrupted(f"stopped with {len(self.engine.running)} trial(s) unfinished") from None
        finally:
            if own and self.launcher is not None:
                self.launcher.close()
                self.launcher = None
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)

    def _base_env(self) -> dict[str, str]:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        pythonpath = absolute_pythonpath(os.environ, str(self.workdir))
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        return env

    def _make_launcher(self) -> Launcher:
        """Trials forked from a process that has imported torch and the plugin (under 0.5 s a
        start instead of seconds), each still its own process; BOSS_WARM_START=0, an OS
        without fork, or trainer.gpus > 1 (torchrun) starts a fresh interpreter per trial."""
        gpus = self.study.spec.trainer.gpus
        if gpus > 1 or sys.platform != "linux" or os.environ.get("BOSS_WARM_START", "1") == "0":
            return ColdLauncher(self.python, processes=gpus)
        preload = [] if self.study.spec.trainer.script else [self.study.spec.trainer.plugin]
        return WarmLauncher(preload, python=self.python, cwd=self.workdir,
                            env=self._base_env())

    def _trial_dir(self, index: int) -> Path:
        return self.run_dir / "trials" / f"{index:04d}"

    def _launch(self, trial: Trial, running: dict[int, _Running]) -> None:
        """Start a trial's process and add it to `running`. Ctrl-C and SIGTERM wait while it
        starts: between its start and `running` the process would have no handle, and it runs
        in a session of its own, so the clean stop would leave it running beside the next run."""
        ready = getattr(self.launcher, "ready", None)
        if ready is not None:
            ready()  # a warm launcher still importing: a long wait, interruptible
        with self._held.holding():
            running[trial.index] = self._start(trial)

    def _start(self, trial: Trial) -> _Running:
        d = self._trial_dir(trial.index)
        d.mkdir(parents=True, exist_ok=True)
        textfile = None if self.study.spec.metrics.pushgateway else str(d / "metrics.prom")
        if textfile and os.path.exists(textfile):
            os.remove(textfile)  # a rerun must not read an old attempt's objective
        ts = make_trial_spec(self.study, self.engine, trial, self.root,
                             metrics_textfile=textfile, threads=self.threads)
        env = {**self._base_env(), **ts.to_env()}
        with open(d / "log.txt", "ab") as log:
            log.write(f"--- trial {trial.index} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        if self.launcher is None:
            self.launcher = self._make_launcher()
        proc = self.launcher.start(env, self.workdir, d / "log.txt")
        trial.extra["started"] = time.time()
        trial.extra["log"] = str(d / "log.txt")
        self.on_event("start", self.engine, trial)
        return _Running(trial, ts, proc, time.time())

    def _finish(self, r: _Running) -> bool:
        """Record a trial whose process ended; False while its objective is not yet scraped."""
        if r.ended is None:
            r.ended = time.time()
        t, ts = r.trial, r.spec
        t.extra["seconds"] = round(r.ended - r.started, 3)
        failed, diverged, message, value, result = False, False, None, None, None
        metrics = self.study.spec.metrics
        if r.proc.returncode != 0:
            failed, message = True, _last_line(t.extra["log"]) or f"exit code {r.proc.returncode}"
            # "boss.trial: trial 3 failed: X": the table and the progress line say which trial failed
            message = re.sub(r"^(?:boss\.trial: )?trial \d+ failed(?: \((process [^)]*)\))?: ",
                             lambda m: f"{m.group(1)}: " if m.group(1) else "", message)
            message = f"{message} (log: boss logs {self.run_dir} {t.index})"
        else:
            try:
                result = parse_result_file(self.store.read(ts.result_uri), ts.objective.metric)
                if (result["study"], result["trial"], result["metric"]) != (ts.study, t.index, ts.objective.metric):
                    raise ValueError(f"it is the result of {result['study']} trial {result['trial']} "
                                     f"({result['metric']}), not of {ts.study} trial {t.index}")
            except (OSError, CheckpointError, ValueError) as e:
                failed, message, result = True, f"cannot read the trial's result back: {e}", None
            else:
                diverged = bool(result.get("diverged"))
        if result and not diverged:
            rb = read_back(result, ts.objective.metric, ts.study, ts.index, pushgateway=ts.pushgateway,
                           prometheus=metrics.prometheus, textfile=ts.metrics_textfile,
                           wait_seconds=metrics.wait_seconds, since_end=lambda: time.time() - r.ended)
            if rb is None:
                return False  # Prometheus has not scraped the Pushgateway since the trial ended
            value = rb.value
            if value is None:
                failed, message = True, rb.problem
            else:
                t.extra["objectiveFrom"] = rb.source
                if rb.problem:
                    t.extra["warning"] = f"{rb.problem}; used the result in storage"
                    self.on_event("warn", self.engine, t)
        if result:
            t.extra.update(result_extra(result, ts.objective.metric))
        with self._held.holding():  # a result half told (its place in the order, not its state) must not be saved
            self.engine.tell(t.index, value, checkpoint=ts.checkpoint_uri,
                             checksum=(result or {}).get("sha256"), failed=failed, diverged=diverged, message=message)
            self.save()
        self.on_event("fail" if t.state == FAILED else "diverged" if t.state == DIVERGED else "end", self.engine, t)
        return True

    def _stop_all(self, running: dict[int, _Running], grace: float = 10.0) -> None:
        for r in running.values():
            _signal_group(r.proc, signal.SIGTERM)
        deadline = time.time() + grace
        for r in running.values():
            try:
                r.proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal_group(r.proc, signal.SIGKILL)
                r.proc.wait()


def _signal_group(proc: TrialHandle, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class _HeldInterrupt:
    """The run's SIGINT/SIGTERM handler: KeyboardInterrupt at once, except inside `holding()`,
    which raises it on leaving (a signal mask would be inherited by the trial's process)."""

    def __init__(self) -> None:
        self.held = False
        self.pending = False
        self.raised = False  # the first press stops the run; later ones must not cut its clean stop short

    def handler(self, signum: int, frame: Any) -> None:
        if self.raised:
            return
        if self.held:
            self.pending = True
            return
        self.raised = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def holding(self):
        self.held = True
        try:
            yield
        finally:
            self.held = False
        if self.pending:
            self.pending, self.raised = False, True
            raise KeyboardInterrupt


def _last_line(path: str) -> str | None:
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None
