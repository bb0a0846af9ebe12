"""The `boss` command line.

    boss validate study.yaml          check a study; one line per problem, exit 2 when bad
    boss run study.yaml [--run-dir D] run a study on this machine (no cluster); again to continue
    boss show RUN_DIR                 the trials table, the best trial and its lineage
    boss ui [runs/]                   a live web dashboard of run folders (or --cluster)

Exit codes: 0 done, 1 the study failed, 2 bad input, 130 interrupted (run again to continue).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .runs import RunLock
from .spec import SpecError, Study, load_study

# What we print quotes what users wrote (plugin paths, names, configs, messages, paths): no
# console parses markup or emoji codes, so `a.b:Tada` or `[bold]x` prints as written, and
# control characters are shown escaped (LiteralConsole). Our own styling goes around it as
# Text parts (`styled`).
LITERAL = {"markup": False, "emoji": False, "highlight": False}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_control(text: str) -> str:
    """`text` with every control character but tab and newline written as its escape (\\x1b):
    a terminal would act on them (an ESC sequence recolours, moves the cursor or retitles the
    window; a CR overwrites the line), hiding what the user's text really holds."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class LiteralConsole(Console):
    """A console that prints the text it is given and nothing a terminal would act on: every
    segment of user text (tables and trees too) has its control characters escaped; the
    console's own styling is not text, and is kept."""

    def render_str(self, text: str, **kw: Any) -> Text:  # before rich drops CR, BEL, BS, VT, FF from it
        return super().render_str(escape_control(text), **kw)

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        for seg in super().render(renderable, options):
            if seg.control is None and _CONTROL.search(seg.text):
                seg = Segment(escape_control(seg.text), seg.style)
            yield seg


console = LiteralConsole(**LITERAL)
if not console.is_terminal:  # piped or logged: no reason to wrap the table at 80 columns
    console = LiteralConsole(width=200, **LITERAL)
err = LiteralConsole(stderr=True, **LITERAL)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of plain strings (printed as written) and (text, style) parts."""
    return Text.assemble(*(escape_control(p) if isinstance(p, str) else (escape_control(p[0]), p[1]) for p in parts))


def _fail(message: str, code: int = 2) -> int:
    err.print(styled(("error:", "bold red"), " ", message), soft_wrap=True)
    return code


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _config(c: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in c.items())


def _test_metric(metric: str) -> str:
    """The held-out split's name for the objective: val_f1 -> test_f1."""
    return "test_" + metric[4:] if metric.startswith("val_") else "test_" + metric


def trials_table(name: str, metric: str, trials: list[dict[str, Any]], best: dict[str, Any] | None) -> Table:
    """The trials as recorded (a local run's state.json or a cluster study's status)."""
    table = Table(title=f"{name}: {len(trials)} trials", header_style="bold")
    for col in ("#", "phase", "state", "teacher", "student", "config", metric, "test", "s"):
        table.add_column(col, overflow="fold", justify="right" if col in ("#", metric, "test", "s") else "left")
    for t in trials:
        extra = t.get("extra") or {}
        test = extra.get("test", {}).get(_test_metric(metric))
        style = "bold green" if best is not None and t["index"] == best["index"] else (
            "red" if t["state"] == "failed" else "yellow" if t["state"] == "diverged" else "")
        state = t["state"] if not extra.get("stoppedEarly") else f"stopped@{extra['stoppedEarly']}"
        table.add_row(
            str(t["index"]), t["phase"], state,
            "" if t.get("teacher") is None else f"#{t['teacher']}", "" if t.get("student") is None else f"#{t['student']}",
            _config(t.get("config", {})), "" if t.get("value") is None else f"{t['value']:.4f}",
            "" if test is None else f"{test:.4f}", _fmt(extra.get("seconds", "")),
            style=style,
        )
    return table


def lineage_tree(trials: list[dict[str, Any]], index: int) -> tuple[Tree, int]:
    """The checkpoints a trial descends from, each shown once (lineage is a DAG), and their count."""
    shown: set[int] = set()

    def label(i: int, role: str) -> Text:
        t = trials[i]
        score = "" if t.get("value") is None else f" {t['value']:.4f}"
        return styled(f"{role}#{i} ", (f"{t['phase']}{score}", "dim"))

    def grow(node: Tree, i: int) -> None:
        shown.add(i)
        for role, j in (("student init ", trials[i].get("student")), ("teacher ", trials[i].get("teacher"))):
            if j is None:
                continue
            if j in shown:
                node.add(label(j, role) + styled((" (above)", "dim")))
            else:
                grow(node.add(label(j, role)), j)

    root = Tree(label(index, "best "))
    grow(root, index)
    return root, len(shown) - 1


def print_result(name: str, spec: dict[str, Any], trials: list[dict[str, Any]], where: str | None = None) -> None:
    from .report import best_trial

    objective = spec.get("objective", {})
    metric = objective.get("metric", "val_accuracy")
    best = best_trial(trials, objective.get("goal", "maximize") == "maximize")
    console.print(trials_table(name, metric, trials, best))
    if best is None:
        console.print(styled(("no trial succeeded", "red")))
        return
    test = (best.get("extra") or {}).get("test", {})
    test_metric = _test_metric(metric)
    console.print(styled(("best", "bold"), f" trial #{best['index']} ({best['phase']}): {metric} = ",
                         (f"{best['value']:.4f}", "bold green"),
                         f", {test_metric} = {test[test_metric]:.4f}" if isinstance(test.get(test_metric), (int, float))
                         else ""))
    console.print(styled(("config", "bold"), f" {_config(best['config'])}"))
    console.print(styled(("checkpoint", "bold"), f" {best.get('checkpoint')}"))
    tree, ancestors = lineage_tree(trials, best["index"])
    console.print(styled(("lineage", "bold"), f" ({ancestors} ancestor checkpoint(s)):"))
    console.print(tree)
    if where is not None:
        console.print(styled((where, "dim")))


def cmd_validate(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    _check_plugin(study)
    s = study.spec
    tried = ""
    if args.try_:
        tried = _try_trainer(study)
    console.print(f"{args.study}: ok: study {study.name}, {s.budget.trials} trials "
                  f"({s.budget.warmup_trials} warm-up), {len(s.search_space)} hyperparameters, "
                  f"trainer {s.trainer.script or s.trainer.plugin}{tried}", soft_wrap=True)
    return 0


def _try_trainer(study: Study) -> str:
    """`boss validate --try`: one step of the trainer with the search space's default config."""
    if study.spec.trainer.script:
        raise SpecError(f"{study.name}: --try runs one step of a Trainer plugin; try a script by running it "
                        f"(python {study.spec.trainer.script}: outside a study it trains on its defaults)")
    try:
        from boss_operator.space import build_space, native
    except ImportError:
        raise SpecError("--try needs the engine: pip install boss-operator") from None
    from .loop import try_trainer
    from .trial import TrialError

    config = native(build_space(study.spec, "warmup", study.spec.seed).get_default_configuration())
    try:
        got = try_trainer(study, config)
    except TrialError as e:
        raise SpecError(f"{study.name}: one step of the trainer failed: {e}") from None
    except Exception as e:  # the user's code raised: its first line, the traceback with -v
        first = (str(e).strip().splitlines() or [""])[0]
        raise SpecError(f"{study.name}: one step of the trainer (default config {_config(config)}) failed: "
                        f"{type(e).__name__}: {first}") from None
    metric = study.spec.objective.metric
    return f"; one step tried: {metric}={got[metric]:.4f} on one validation batch"


def _check_plugin(study: Study) -> None:
    """Import the plugin as a trial started here would, and check what it declares."""
    from .plugins import PluginError, check_plugin, check_script

    if study.spec.trainer.script:
        try:
            check_script(study.spec.trainer.script)
        except PluginError as e:
            raise SpecError(f"spec.trainer.script: {e}") from None
        return
    try:
        cls = check_plugin(study.spec.trainer.plugin)
    except PluginError as e:
        raise SpecError(f"spec.trainer.plugin: {e}") from None
    space = study.spec.search_space
    for name in getattr(cls, "architecture", ()):
        if name in space and not space[name].architecture:
            raise SpecError(f"spec.searchSpace.{name}: {cls.__name__} says {name!r} shapes the model "
                            f"(Trainer.architecture); mark it `architecture: true` so BOSS-phase trials "
                            f"take it from their student checkpoint")


class _FirstPressInterrupts:
    """SIGINT handler: the first Ctrl-C starts the clean stop, later ones are ignored.

    Python's default handler would let a second press that lands after the stop finished
    kill the process by SIGINT, so the exit code (130) and the continue message could be lost.
    """

    pressed = False

    def __call__(self, signum: int, frame: Any) -> None:
        if not self.pressed:
            self.pressed = True
            raise KeyboardInterrupt


def _reproducible(study: Study) -> Study:
    """The study with budget.reproducible set (`boss run --reproducible`)."""
    spec = study.spec
    budget = spec.budget.model_copy(update={"reproducible": True})
    return study.model_copy(update={"spec": spec.model_copy(update={"budget": budget})})


def cmd_run(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    if args.reproducible:
        study = _reproducible(study)
    _check_plugin(study)
    if study.spec.trainer.pod_template or study.spec.trainer.queue_name:
        err.print("note: trainer.podTemplate and trainer.queueName shape trial pods on a cluster; "
                  "a local run ignores them (and shmSize)", highlight=False, soft_wrap=True)
    try:
        from boss_operator.local import Interrupted, LocalRun
    except ImportError:
        return _fail("`boss run` needs the engine: pip install boss-operator")
    run_dir = Path(args.run_dir or Path("runs") / study.name)
    if args.fresh and run_dir.exists():
        with RunLock(run_dir):  # never under a run that is writing it
            aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(aside)
        err.print(f"--fresh: the earlier run is kept in {aside} (delete it when you no longer need it)",
                  soft_wrap=True)
    budget = study.spec.budget
    metric = study.spec.objective.metric
    human = err if args.output == "json" else console  # keep stdout machine-readable

    with Progress(TextColumn("{task.description}", markup=False, style="bold"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[best]}", markup=False), console=human,
                  disable=args.quiet) as progress:
        task = progress.add_task(study.name, total=budget.trials, best="")

        def on_event(kind: str, engine: Any, trial: Any) -> None:
            done = sum(t.done for t in engine.trials)
            best = engine.best()
            desc = f"{study.name} [{engine.phase}] {len(engine.running)} running"
            progress.update(task, completed=done, description=desc,
                            best="" if best is None else f"best {metric}={best.value:.4f} (#{best.index})")
            if kind == "end" and not args.quiet:
                src = "" if trial.teacher is None else f" teacher #{trial.teacher} student #{trial.student}"
                progress.console.print(f"trial {trial.index:>3} {trial.phase:<6} {metric}={trial.value:.4f}"
                                       f"  {trial.extra.get('seconds', 0):.1f}s{src}", highlight=False)
            elif kind == "warn" and not args.quiet:
                progress.console.print(styled((f"trial {trial.index:>3} warning:", "yellow"),
                                              f" {trial.extra['warning']}"), soft_wrap=True)
            elif kind == "diverged" and not args.quiet:
                progress.console.print(styled((f"trial {trial.index:>3} {trial.phase:<6} diverged:", "yellow"),
                                              f" {trial.message}"), soft_wrap=True)
            elif kind == "fail":  # one line however long: the log command in it must paste whole
                progress.console.print(styled((f"trial {trial.index:>3} failed:", "red"), f" {trial.message}"),
                                       soft_wrap=True)

        try:
            local = LocalRun(study, run_dir, on_event=on_event)
        except SpecError:
            raise
        except Exception as e:  # a replay that no longer matches, an unreadable run folder
            return _fail(f"{run_dir}: cannot continue this run: {e}")
        resumed = len(local.engine.trials)
        if resumed and not args.quiet:
            grew = f" ({local.grew})" if local.grew else ""
            progress.console.print(f"continuing {run_dir}: {resumed} trial(s) recorded{grew}")
        on_event("resume", local.engine, None)
        previous_int = signal.signal(signal.SIGINT, _FirstPressInterrupts())
        try:
            engine = local.run()
            signal.signal(signal.SIGINT, previous_int)  # as it was (`main` called from Python)
        except Interrupted as e:
            # the run took the first Ctrl-C; later presses, up to the process's end, change nothing
            # (one landing in a finalizer at exit would print a traceback)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            progress.stop()
            return _fail(f"interrupted: {e}; run the same command again to continue", 130)
    status = local.status()
    if args.output == "json":
        best = engine.best()
        print(json.dumps({"study": study.name, "status": status, "runDir": str(run_dir),
                          "best": best.to_dict() if best else None}, indent=2))
    else:
        print_result(study.name, study.to_document()["spec"], [t.to_dict() for t in engine.trials],
                     f"run folder: {run_dir}")
    if status == "Failed":
        _, reason, message = engine.outcome()
        more = (" once the cause is fixed, raise spec.budget.maxFailedTrials (and budget.trials for the trials to "
                "run again) and run the same command: the recorded trials are kept"
                if reason in ("TooManyFailedTrials", "RepeatedFailure") else "")
        return _fail(f"study failed: {message}; the trials' logs: boss logs {run_dir} N;{more}".rstrip(";"), 1)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """status / trials / best / show: the same for a run folder and for a cluster study."""
    study, trials = _load_any(args.target, getattr(args, "namespace", None))
    name, spec = study["metadata"]["name"], study["spec"]
    from .report import best_trial

    best = best_trial(trials, spec.get("objective", {}).get("goal", "maximize") == "maximize")
    status = study.get("status") or {}
    what = args.command
    counts = {state: sum(t["state"] == state for t in trials)
              for state in ("succeeded", "failed", "diverged", "running", "interrupted")}
    # on a cluster with Kueue: proposed trials whose Job waits for admission are queued, not running
    counts["queued"] = min(int(status.get("trialsQueued") or 0), counts["running"])
    counts["running"] -= counts["queued"]
    finished = counts["succeeded"] + counts["failed"] + counts["diverged"]
    if args.output == "json":
        out = {"status": {"name": name, "phase": status.get("phase"), "message": status.get("message"),
                          "trials": len(trials), "budget": spec.get("budget", {}).get("trials"),
                          "finished": finished, **counts, "best": best},
               "trials": trials, "best": best}.get(what, {"study": study, "trials": trials, "best": best})
        print(json.dumps(out, indent=2, default=str))
    elif what == "status":
        line = (f"{name}: {status.get('phase', '?')}, {finished}/{spec.get('budget', {}).get('trials', '?')} "
                f"trials finished ({counts['failed']} failed" + (f", {counts['diverged']} diverged" if counts["diverged"] else "")
                + f"), {counts['running']} running")
        if counts["queued"]:
            line += f", {counts['queued']} queued (waiting for Kueue to admit their Jobs)"
        if counts["interrupted"]:
            line += f", {counts['interrupted']} interrupted (run `boss run` again to continue)"
        console.print(line, highlight=False)
        if status.get("message"):
            console.print(status["message"], highlight=False, soft_wrap=True)
        if best:
            console.print(f"best: trial #{best['index']} {spec.get('objective', {}).get('metric')}={best['value']:.4f}")
        if status.get("phase") == "Failed":
            return 1  # as `boss run` of it did: scripts and CI can tell
    elif what == "trials":
        console.print(trials_table(name, spec.get("objective", {}).get("metric", "val_accuracy"), trials, best))
    elif what == "best":
        if best is None:
            return _fail(f"{name}: no trial has succeeded yet", 1)
        metric = spec.get("objective", {}).get("metric", "val_accuracy")
        test = (best.get("extra") or {}).get("test", {}).get(_test_metric(metric))
        console.print(f"trial #{best['index']} ({best['phase']}): {metric} = {best['value']:.4f}"
                      + ("" if test is None else f", {_test_metric(metric)} = {test:.4f}")
                      + f"\nconfig {_config(best['config'])}\ncheckpoint {best.get('checkpoint')}", highlight=False)
    else:
        console.print(f"status: {status.get('phase')}")
        print_result(name, spec, trials, f"{args.target}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if Path(args.target).is_dir():
        log = Path(args.target) / "trials" / f"{args.trial:04d}" / "log.txt"
        if not log.exists():
            return _fail(f"{args.target}: no log for trial {args.trial}")
        sys.stdout.write(log.read_text(errors="replace"))
        return 0
    from .client import BossClient, StudyNotFound

    try:
        sys.stdout.write(BossClient(namespace=args.namespace).logs(args.target, args.trial))
    except StudyNotFound as e:
        return _fail(str(e))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from .client import BossClient

    study = load_study(args.study)
    obj = BossClient(namespace=args.namespace).create(study)
    console.print(f"created BossStudy {obj['metadata']['name']} in namespace {obj['metadata'].get('namespace')}; "
                  f"watch it with: boss status {obj['metadata']['name']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    study, trials = _load_any(args.target, args.namespace)
    out = Path(args.out or (Path(args.target) / "report" if Path(args.target).is_dir() else Path(f"{args.target}-report")))
    path = write_report(study, trials, out)
    console.print(f"report: {path}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        from .ui.server import run_cli
    except ImportError as e:  # aiohttp: the `ui` extra (kopf brings it with the operator)
        return _fail(f"`boss ui` needs aiohttp: pip install 'boss-sdk[ui]' ({e})")
    return run_cli(args.target, args.cluster, args.namespace, args.all_namespaces, args.host, args.port)


def _load_any(target: str, namespace: str | None) -> tuple[dict, list[dict]]:
    """A local run folder, or the name of a BossStudy on the cluster of the current kubeconfig."""
    if Path(target).exists() or "/" in target:
        from .runs import as_seen_now, read_state

        if not Path(target).is_dir():
            raise SpecError(f"{target}: not a BOSS run folder")
        saved = as_seen_now(read_state(target))
        return {**saved["study"], "status": {"phase": saved.get("status"), "message": saved.get("message")}}, saved["trials"]
    from .client import BossClient, StudyNotFound
    from .history import HistoryError

    try:
        bc = BossClient(namespace=namespace)
        obj = bc.get(target)
    except StudyNotFound as e:
        raise SpecError(str(e)) from None
    except Exception as e:  # no kubeconfig, no cluster: say so in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        runs = Path("runs") / target
        hint = f"; did you mean the run folder {runs}?" if (runs / "state.json").exists() else \
            " (a local run's folder is runs/NAME, or its --run-dir)"
        raise SpecError(f"{target}: not a run folder, and no cluster to ask ({first}){hint}") from None
    try:  # the history ConfigMaps: a refusal (403) goes to main() as the API server's own words
        trials = bc.trials_of(obj)
    except HistoryError as e:
        raise SpecError(f"{target}: {e}") from None
    status = dict(obj.get("status") or {})
    final = [c for c in status.get("conditions") or [] if c.get("type") == status.get("phase") == "Failed"]
    if final:
        status["message"] = final[0].get("message")
    study = {"metadata": obj["metadata"], "spec": status.get("studySpec") or obj.get("spec", {}), "status": status}
    return study, trials


def _api_message(e: Exception) -> str:
    """The API server's own one-line message from an ApiException's JSON body."""
    try:
        message = json.loads(getattr(e, "body", "") or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f": {' '.join(str(message).split())}" if message else ""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="boss", description="BOSS: Bayesian Optimization meets Self-Distillation")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a study file")
    v.add_argument("study")
    v.add_argument("--try", dest="try_", action="store_true",
                   help="also run one training step and one validation batch of the trainer (default config, "
                        "CPU, nothing saved): catches an objective metric the trainer does not report, or a hook "
                        "that breaks its contract, before any trial runs")
    v.set_defaults(func=cmd_validate)
    r = sub.add_parser("run", help="run a study on this machine (no cluster)")
    r.add_argument("study")
    r.add_argument("--run-dir", help="where state, logs and checkpoints go (default runs/<study>)")
    r.add_argument("--fresh", action="store_true", help="start over: the run folder is moved aside (NAME.old-TIME), "
                   "nothing is deleted")
    r.add_argument("--reproducible", action="store_true",
                   help="as budget.reproducible: true: the same seed gives the same trials whatever order they "
                        "finish in (a free slot may wait for an earlier trial)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no per-trial lines")
    r.add_argument("--output", "-o", choices=["table", "json"], default="table")
    r.set_defaults(func=cmd_run)
    for what, text in (("show", "the trials, the best trial and its lineage"), ("status", "phase and progress"),
                       ("trials", "the trials table"), ("best", "the best trial: value, config, checkpoint")):
        sp = sub.add_parser(what, help=f"{text} of a run folder or a cluster study")
        sp.add_argument("target", help="a run folder, or the name of a BossStudy on the cluster")
        sp.add_argument("--namespace", "-n", help="the study's namespace (cluster studies)")
        sp.add_argument("--output", "-o", choices=["table", "json"], default="table")
        sp.set_defaults(func=cmd_show)
    lg = sub.add_parser("logs", help="a trial's log (run folder or cluster)")
    lg.add_argument("target")
    lg.add_argument("trial", type=int)
    lg.add_argument("--namespace", "-n")
    lg.set_defaults(func=cmd_logs)
    sb = sub.add_parser("submit", help="create a BossStudy on the cluster of the current kubeconfig")
    sb.add_argument("study")
    sb.add_argument("--namespace", "-n")
    sb.set_defaults(func=cmd_submit)
    rp = sub.add_parser("report", help="write an HTML report (and PNGs) of a local run or a cluster study")
    rp.add_argument("target", help="a run folder, or the name of a BossStudy on the cluster")
    rp.add_argument("--out", help="folder for report.html and the PNGs")
    rp.add_argument("--namespace", "-n", help="the study's namespace (cluster studies)")
    rp.set_defaults(func=cmd_report)
    ui = sub.add_parser("ui", help="a live web dashboard of run folders, or of the studies on a cluster")
    ui.add_argument("target", nargs="?", help="a run folder, or a folder of them (default runs/)")
    ui.add_argument("--cluster", action="store_true", help="the BossStudies of the current kubeconfig, read with its rights")
    ui.add_argument("--namespace", "-n", help="with --cluster: the namespace (default the kubeconfig's)")
    ui.add_argument("--all-namespaces", "-A", action="store_true", help="with --cluster: every namespace you may read")
    ui.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", "-p", type=int, help="default 8765, or a free port if that one is taken")
    ui.set_defaults(func=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `boss show RUN | head`: the reader has gone, which is no error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except OSError:
            pass
        return 0
    except SpecError as e:
        return _fail(str(e))
    except Exception as e:  # the cluster commands: no kubeconfig, or the API server said no
        kinds = {k.__name__ for k in type(e).__mro__}
        if "ConfigException" in kinds:
            return _fail(f"no cluster to talk to: {str(e).strip().splitlines()[0]}")
        if "ApiException" in kinds:  # also its subclasses (NotFoundException, ForbiddenException...)
            return _fail(f"the Kubernetes API refused: {getattr(e, 'status', '')} {getattr(e, 'reason', '')}"
                         f"{_api_message(e)}".strip(), 1)
        raise
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
