"""The `boss` command line.

    boss validate study.yaml          check a study; one line per problem, exit 2 when bad
    boss run study.yaml [--run-dir D] run a study on this machine (no cluster); again to continue
    boss show RUN_DIR                 the trials table, the best trial and its lineage

Exit codes: 0 done, 1 the study failed, 2 bad input, 130 interrupted (run again to continue).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from .spec import SpecError, Study, load_study

console = Console()
if not console.is_terminal:  # piped or logged: no reason to wrap the table at 80 columns
    console = Console(width=200)
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> int:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return code


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _config(c: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in c.items())


def trials_table(study: Study, engine: Any) -> Table:
    metric = study.spec.objective.metric
    best = engine.best()
    table = Table(title=f"{study.name}: {len(engine.trials)} trials", header_style="bold")
    for col in ("#", "phase", "state", "teacher", "student", "config", metric, "test", "s"):
        table.add_column(col, overflow="fold", justify="right" if col in ("#", metric, "test", "s") else "left")
    for t in engine.trials:
        test = t.extra.get("test", {}).get(metric.replace("val_", "test_", 1))
        style = "bold green" if best is not None and t.index == best.index else ("red" if t.state == "failed" else "")
        table.add_row(
            str(t.index), t.phase, t.state,
            "" if t.teacher is None else f"#{t.teacher}", "" if t.student is None else f"#{t.student}",
            _config(t.config), "" if t.value is None else f"{t.value:.4f}",
            "" if test is None else f"{test:.4f}", _fmt(t.extra.get("seconds", "")),
            style=style,
        )
    return table


def lineage_tree(engine: Any, index: int) -> Tree:
    """The checkpoints a trial descends from; each shown once (lineage is a DAG)."""
    shown: set[int] = set()

    def label(i: int, role: str) -> str:
        t = engine.trials[i]
        score = "" if t.value is None else f" {t.value:.4f}"
        return f"{role}#{i} [dim]{t.phase}{score}[/]"

    def grow(node: Tree, i: int) -> None:
        shown.add(i)
        t = engine.trials[i]
        for role, j in (("student init ", t.student), ("teacher ", t.teacher)):
            if j is None:
                continue
            if j in shown:
                node.add(label(j, role) + " [dim](above)[/]")
            else:
                grow(node.add(label(j, role)), j)

    root = Tree(label(index, "best "))
    grow(root, index)
    return root


def print_result(study: Study, engine: Any, run_dir: Path | None = None) -> None:
    console.print(trials_table(study, engine))
    best = engine.best()
    metric = study.spec.objective.metric
    if best is None:
        console.print("[red]no trial succeeded[/]")
        return
    test = best.extra.get("test", {})
    console.print(f"[bold]best[/] trial #{best.index} ({best.phase}): {metric} = [bold green]{best.value:.4f}[/]"
                  + "".join(f", {k} = {v:.4f}" for k, v in test.items() if k.endswith("accuracy")))
    console.print(f"[bold]config[/] {_config(best.config)}")
    console.print(f"[bold]checkpoint[/] {best.checkpoint}")
    ancestry = engine.lineage(best.index)
    console.print(f"[bold]lineage[/] ({len(ancestry) - 1} ancestor checkpoint(s)):")
    console.print(lineage_tree(engine, best.index))
    if run_dir is not None:
        console.print(f"[dim]run folder: {run_dir}[/]")


def cmd_validate(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    _check_plugin(study)
    s = study.spec
    console.print(f"{args.study}: ok: study {study.name}, {s.budget.trials} trials "
                  f"({s.budget.warmup_trials} warm-up), {len(s.search_space)} hyperparameters, "
                  f"trainer {s.trainer.plugin}")
    return 0


def _check_plugin(study: Study) -> None:
    from .plugins import PluginError, load_trainer_class

    try:
        load_trainer_class(study.spec.trainer.plugin)
    except PluginError as e:
        raise SpecError(f"spec.trainer.plugin: {e}") from None


def cmd_run(args: argparse.Namespace) -> int:
    study = load_study(args.study)
    _check_plugin(study)
    try:
        from boss_operator.local import Interrupted, LocalRun
    except ImportError:
        return _fail("`boss run` needs the engine: pip install boss-operator")
    run_dir = Path(args.run_dir or Path("runs") / study.name)
    if args.fresh and run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    budget = study.spec.budget
    metric = study.spec.objective.metric
    human = err if args.output == "json" else console  # keep stdout machine-readable

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[best]}"), console=human,
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
            elif kind == "fail":
                progress.console.print(f"[red]trial {trial.index:>3} failed:[/] {trial.message}", highlight=False)

        try:
            local = LocalRun(study, run_dir, on_event=on_event)
        except SpecError:
            raise
        except Exception as e:  # a replay that no longer matches, an unreadable run folder
            return _fail(f"{run_dir}: cannot continue this run: {e}")
        resumed = len(local.engine.trials)
        if resumed and not args.quiet:
            progress.console.print(f"continuing {run_dir}: {resumed} trial(s) recorded", highlight=False)
        on_event("resume", local.engine, None)
        try:
            engine = local.run()
        except Interrupted as e:
            progress.stop()
            return _fail(f"interrupted: {e}; run the same command again to continue", 130)
    status = local.status()
    if args.output == "json":
        best = engine.best()
        print(json.dumps({"study": study.name, "status": status, "runDir": str(run_dir),
                          "best": best.to_dict() if best else None}, indent=2))
    else:
        print_result(study, engine, run_dir)
    if status == "Failed":
        return _fail(f"study failed: {len(engine.failed)} trials failed "
                     f"(maxFailedTrials is {budget.max_failed_trials})", 1)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from boss_operator.local import load_run

    study, engine, saved = load_run(args.run_dir)
    if args.output == "json":
        print(json.dumps(saved, indent=2))
    else:
        console.print(f"status: {saved.get('status')}")
        print_result(study, engine, Path(args.run_dir))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="boss", description="BOSS: Bayesian Optimization meets Self-Distillation")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a study file")
    v.add_argument("study")
    v.set_defaults(func=cmd_validate)
    r = sub.add_parser("run", help="run a study on this machine (no cluster)")
    r.add_argument("study")
    r.add_argument("--run-dir", help="where state, logs and checkpoints go (default runs/<study>)")
    r.add_argument("--fresh", action="store_true", help="delete the run folder first and start over")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no per-trial lines")
    r.add_argument("--output", "-o", choices=["table", "json"], default="table")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("show", help="show a local run's trials, best trial and lineage")
    s.add_argument("run_dir")
    s.add_argument("--output", "-o", choices=["table", "json"], default="table")
    s.set_defaults(func=cmd_show)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
