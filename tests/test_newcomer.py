"""A newcomer's own trainer, as the docs tell them to run it: examples/breast-cancer.

Each test here failed on the code before the issue "A newcomer's own trainer must just work":
the documented `PYTHONPATH=. boss run` failed every trial, exit 0 with nothing succeeded,
tracebacks where one line was promised, messages that did not name the hook's contract, and
architecture parameters that broke every BOSS-phase trial.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from boss.loop import run_trial
from boss.store import to_uri
from boss.trial import TrialError, TrialSpec
from boss_operator.engine import BOSS, Engine
from conftest import EXAMPLES, write_study

BOSS_BIN = str(Path(sys.executable).parent / "boss")


@pytest.fixture()
def project(tmp_path) -> Path:
    """The example copied to a folder of the user's: a package, a study, data it writes itself."""
    root = tmp_path / "project"
    shutil.copytree(EXAMPLES / "breast-cancer", root, ignore=shutil.ignore_patterns("data", "__pycache__"))
    subprocess.run([sys.executable, "-m", "mytrainers.data"], cwd=root, check=True, capture_output=True)
    return root


def boss(*args, cwd: Path, pythonpath: str | None = ".", timeout: float = 600) -> subprocess.CompletedProcess:
    """The `boss` command as a user types it in `cwd`, with PYTHONPATH as given (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([BOSS_BIN, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    return r.stderr


def small(project: Path, **spec) -> Path:
    doc = yaml.safe_load((project / "study.yaml").read_text())
    doc["spec"].update(spec)
    return write_study(project, doc, "small.yaml")


@pytest.mark.slow
def test_the_documented_launch_runs_a_study_of_ones_own_trainer(project):
    study = small(project, budget={"trials": 6, "warmupTrials": 3, "parallelism": 2, "maxFailedTrials": 0},
                  trainer={"plugin": "mytrainers.cancer:CancerTrainer", "epochs": 2, "args": {"data": "data/cancer.npz"}},
                  boss={"topK": 3, "distillation": {"loss": "mse", "weight": 1.0}})
    assert "ok: study cancer-mlp" in boss("validate", study.name, cwd=project).stdout
    r = boss("run", study.name, "--run-dir", "runs/cancer", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    state = json.loads((project / "runs" / "cancer" / "state.json").read_text())
    assert state["status"] == "Succeeded" and all(t["state"] == "succeeded" for t in state["trials"])
    trials = state["trials"]
    for t in trials:  # every BOSS trial took the student's shape; its teacher may have another
        if t["phase"] == BOSS:
            assert t["config"]["hidden"] == trials[t["student"]]["config"]["hidden"]
    # the summary names the study's own metric, on validation and on the test split
    assert "val_f1 = " in r.stdout and "test_f1 = " in r.stdout and "test_accuracy" not in r.stdout
    best = boss("best", "runs/cancer", cwd=project)
    assert best.returncode == 0 and "val_f1 = " in best.stdout and "test_f1 = " in best.stdout
    # a pipe that closes early is no error
    piped = subprocess.run(f"'{BOSS_BIN}' show runs/cancer | head -1", shell=True, cwd=project,
                           capture_output=True, text=True, timeout=120)
    assert piped.stdout.strip() and "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_validate_imports_the_plugin_as_a_trial_would(project, tmp_path):
    # a trial runs in the folder where boss starts, so the plugin next to the study is found there
    assert boss("validate", "study.yaml", cwd=project, pythonpath=None).returncode == 0
    # from elsewhere, with a relative PYTHONPATH that points nowhere: one line saying where it looked
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    err = one_line_error(boss("validate", project / "study.yaml", cwd=elsewhere))
    assert "cannot import mytrainers.cancer" in err and "current folder" in err


@pytest.mark.parametrize("source,expected", [
    ("import torch\nclass CancerTrainer(:\n", "has a syntax error: "),
    ("raise RuntimeError('no GPU driver here')\n", "importing mytrainers.cancer raised RuntimeError at cancer.py:1: "
                                                    "no GPU driver here"),
    ("import sys\nsys.exit(3)\n", "importing mytrainers.cancer raised SystemExit"),
    ("import not_installed_anywhere\n", "cannot import mytrainers.cancer (No module named 'not_installed_anywhere')"),
    ("class CancerTrainer:\n    pass\n", "CancerTrainer is not a boss.Trainer subclass"),
])
def test_a_broken_plugin_is_one_line(project, source, expected):
    (project / "mytrainers" / "cancer.py").write_text(source)
    for command in ("validate", "run"):
        err = one_line_error(boss(command, "study.yaml", cwd=project))
        assert "spec.trainer.plugin: trainer plugin mytrainers.cancer:CancerTrainer" in err and expected in err
    assert not (project / "runs").exists()  # nothing was started


def test_a_study_file_that_is_not_utf8_or_repeats_a_key_is_one_line(project):
    (project / "latin1.yaml").write_bytes((project / "study.yaml").read_text().replace("# A study", "# Étude")
                                          .encode("latin-1"))
    err = one_line_error(boss("validate", "latin1.yaml", cwd=project))
    assert "not UTF-8 text (byte 0xc9 at line 1)" in err
    lines = (project / "study.yaml").read_text().splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("    lr:"))
    lines.insert(first + 1, "    lr: {type: float, low: 0.1, high: 1}")  # the same key again, lower down
    (project / "twice.yaml").write_text("\n".join(lines))
    for command in ("validate", "run"):
        err = one_line_error(boss(command, "twice.yaml", cwd=project))
        assert f"at line {first + 2}, column 5: duplicate key 'lr' (first given at line {first + 1})" in err


def test_an_architecture_parameter_the_study_does_not_mark_is_refused(project):
    text = (project / "study.yaml").read_text().replace(", architecture: true", "")
    (project / "unmarked.yaml").write_text(text)
    err = one_line_error(boss("validate", "unmarked.yaml", cwd=project))
    assert "spec.searchSpace.hidden: CancerTrainer says 'hidden' shapes the model" in err


def test_nothing_succeeded_is_a_failed_study(tmp_path, monkeypatch):
    """Failures within maxFailedTrials, but not one success: exit 1, Failed, and why."""
    tests = str(Path(__file__).parent)
    doc = yaml.safe_load((EXAMPLES / "digits-study.yaml").read_text())
    doc["spec"].update(budget={"trials": 2, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 5},
                       trainer={"plugin": "flaky_trainers:AlwaysFails", "epochs": 1})
    study = write_study(tmp_path, doc)
    r = boss("run", study, "--run-dir", tmp_path / "run", cwd=tmp_path, pythonpath=tests)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "study failed: none of the 2 trials succeeded" in r.stderr
    # each failure says where its log is
    assert f"(log: boss logs {tmp_path / 'run'} 0)" in r.stdout
    status = boss("status", tmp_path / "run", cwd=tmp_path)
    assert "Failed" in status.stdout and "none of the 2 trials succeeded" in status.stdout


def _engine(trials=6, warmup=3, arch=False, **budget):
    from boss.spec import parse_study

    doc = yaml.safe_load((EXAMPLES / "digits-study.yaml").read_text())
    doc["spec"]["budget"] = {"trials": trials, "warmupTrials": warmup, "parallelism": 1, **budget}
    doc["spec"]["boss"]["topK"] = 3
    if arch:
        doc["spec"]["searchSpace"]["width"] = {"type": "categorical", "choices": [8, 16, 32], "architecture": True}
    return Engine(parse_study(doc).spec, "e")


def test_a_study_whose_boss_phase_produced_nothing_is_not_a_success():
    e = _engine(maxFailedTrials=10)
    for _ in range(3):
        t = e.ask()
        e.tell(t.index, 0.9, checkpoint=f"mem://{t.index}", checksum="0")
    while (t := e.ask()) is not None:
        e.tell(t.index, failed=True, message="the student checkpoint does not fit")
    assert e.finished and e.outcome()[:2] == ("Failed", "NoDistilledTrial")
    assert "all 3 BOSS-phase trials failed (first: the student checkpoint does not fit)" in e.outcome()[2]
    assert e.best() is not None  # the best warm-up checkpoint is still reported

    e = _engine(maxFailedTrials=10)
    t = e.ask()
    e.tell(t.index, 0.9, checkpoint="mem://0", checksum="0")
    while (t := e.ask()) is not None:  # one warm-up success is not enough to distil
        e.tell(t.index, failed=True, message="out of memory")
    assert e.outcome()[1] == "NoBossPhase" and "never ran" in e.outcome()[2]


def test_boss_trials_take_the_architecture_of_their_student():
    e = _engine(trials=12, warmup=4, arch=True)
    while (t := e.ask()) is not None:
        e.tell(t.index, 0.5 + 0.01 * t.config["width"] + 0.001 * t.index, checkpoint=f"mem://{t.index}", checksum="0")
    boss_trials = [t for t in e.trials if t.phase == BOSS]
    assert boss_trials and all(t.config["width"] == e.trials[t.student].config["width"] for t in boss_trials)
    assert len({t.config["width"] for t in e.trials if t.phase != BOSS}) > 1  # searched in the warm-up
    assert "width" not in e._smac[BOSS].scenario.configspace  # the BOSS-phase search leaves it to the student
    replayed = Engine.replay(e.spec, [t.to_dict() for t in e.trials], "e")
    assert [t.config for t in replayed.trials] == [t.config for t in e.trials]


class _Tiny(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))

    def forward(self, x):
        return self.body(x)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)


def _trainer_class(**hooks):
    import boss

    base = {
        "architecture": ("width",),
        "configure_model": lambda self: _Tiny(self.config.get("width", 8)),
        "train_dataloader": lambda self: _data(),
        "val_dataloader": lambda self: _data(),
        "configure_optimizers": lambda self, model, epochs, steps: torch.optim.SGD(model.parameters(), lr=0.1),
    }
    base.update(hooks)
    return type("UserTrainer", (boss.Trainer,), base)


def _spec(tmp_path, index=0, **kw):
    base = dict(study="c", index=index, phase="warmup", config={"width": 8}, plugin="x.y:Z", epochs=1,
                output_uri=to_uri(tmp_path / f"t{index}"), metrics_textfile=str(tmp_path / f"{index}.prom"))
    base.update(kw)
    return TrialSpec(**base)


@pytest.mark.parametrize("hooks,expected", [
    ({"configure_model": lambda self: None},
     "UserTrainer.configure_model() must return a torch.nn.Module (the model), but returned None"),
    ({"evaluate": lambda self, model, loader, device: 0.93},
     "UserTrainer.evaluate() must return a dict of metric name -> number (e.g. {'accuracy': 0.93}), "
     "but returned 0.93 on the val split"),
    ({"evaluate": lambda self, model, loader, device: {"accuracy": "high"}},
     "UserTrainer.evaluate() must return numbers; 'accuracy' is 'high'"),
    ({"train_dataloader": lambda self: None},
     "UserTrainer.train_dataloader() must return an iterable of (inputs, targets) batches, e.g. a DataLoader, "
     "but returned None"),
    ({"configure_optimizers": lambda self, model, epochs, steps: None},
     "UserTrainer.configure_optimizers() must return a torch.optim.Optimizer or (optimizer, scheduler or None), "
     "but returned None"),
    ({"task_loss": lambda self, logits, targets: torch.nn.functional.cross_entropy(logits, targets, reduction="none")},
     "UserTrainer.task_loss() must return a scalar tensor (reduce over the batch, e.g. .mean()), "
     "but returned a tensor of shape [16]"),
    ({"configure_model": lambda self: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)).__class__},
     "configure_model() must return a torch.nn.Module (the model), but returned a builtins.type"),
])
def test_a_broken_contract_names_the_hook_and_what_it_returned(tmp_path, hooks, expected):
    cls = _trainer_class(**hooks)
    with pytest.raises(TrialError) as e:
        run_trial(_spec(tmp_path), trainer=cls({"width": 8}))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_missing_hook_and_a_wrong_model_output_are_named(tmp_path):
    import boss

    class NoData(boss.Trainer):
        def configure_model(self):
            return _Tiny(8)

    with pytest.raises(TrialError, match=r"NoData must define train_dataloader\(\)"):
        run_trial(_spec(tmp_path), trainer=NoData({}))

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x), x

    cls = _trainer_class(configure_model=lambda self: Pair())
    with pytest.raises(TrialError, match="must return the logits as one tensor, but returned a builtins.tuple"):
        run_trial(_spec(tmp_path, 1), trainer=cls({}))


def test_a_student_that_does_not_fit_names_the_shapes_and_a_teacher_of_another_shape_is_fine(tmp_path):
    cls = _trainer_class()
    wide = run_trial(_spec(tmp_path, 0, config={"width": 32}), trainer=cls({"width": 32}))
    narrow = _spec(tmp_path, 1, phase="boss", config={"width": 8}, distill_weight=1.0,
                   student_uri=wide["checkpoint"], student_sha256=wide["sha256"])
    with pytest.raises(TrialError) as e:
        run_trial(narrow, trainer=cls({"width": 8}))
    msg = str(e.value)
    assert "the student checkpoint" in msg and "body.0.weight is [32, 4] in the checkpoint but [8, 4] in this " \
        "trial's model (and 2 more)" in msg and "architecture: true" in msg
    # a teacher of width 32 distils into a student of width 8: only its logits are used
    small = run_trial(_spec(tmp_path, 2, config={"width": 8}), trainer=cls({"width": 8}))
    distilled = _spec(tmp_path, 3, phase="boss", config={"width": 8}, distill_weight=1.0,
                      student_uri=small["checkpoint"], student_sha256=small["sha256"],
                      teacher_uri=wide["checkpoint"], teacher_sha256=wide["sha256"], teacher_config={"width": 32})
    result = run_trial(distilled, trainer=cls({"width": 8}))
    assert result["history"][0]["distill_loss"] > 0
