"""The docs that are generated stay generated, and their example outputs are the code's."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from boss.specdoc import render
from conftest import ROOT


def test_spec_reference_is_current():
    assert (ROOT / "docs" / "spec-reference.md").read_text() == render(), "run: python -m boss.specdoc > docs/spec-reference.md"


def test_trainer_reference_is_current():
    from boss.trainerdoc import render as render_trainer

    assert (ROOT / "docs" / "trainer-reference.md").read_text() == render_trainer(), \
        "run: python -m boss.trainerdoc > docs/trainer-reference.md"


def test_trainer_reference_covers_every_hook_and_attribute():
    import inspect

    import boss
    from boss.trainerdoc import HOOKS, _attributes

    public = {n for n, v in vars(boss.Trainer).items() if not n.startswith("_") and inspect.isfunction(v)}
    assert public == set(HOOKS), "a hook of boss.Trainer is missing from the reference (trainerdoc.HOOKS)"
    for name in HOOKS:
        doc = inspect.getdoc(getattr(boss.Trainer, name)) or ""
        assert doc.startswith(("Required.", "Optional.")), f"{name}: say whether it is required"
    documented = {name for name, _, _ in _attributes()}
    plain = {n for n, v in vars(boss.Trainer).items() if not n.startswith("_") and not callable(v)}
    assert plain <= documented, f"undocumented class attributes: {plain - documented}"


def _block_after(text: str, marker: str) -> str:
    """The fenced block of `text` that starts with the line `marker`."""
    start = text.index("```\n" + marker) + 4
    return text[start:text.index("```", start)].rstrip("\n")


@pytest.mark.slow
def test_the_docs_show_what_the_demo_prints(tmp_path):
    """The README's demo output and docs/how-boss-works.md's lineage are what `boss run
    examples/digits-study.yaml` prints today (the demo is reproducible: same trials every run)."""
    run_dir = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "boss.cli", "run", str(ROOT / "examples" / "digits-study.yaml"),
                        "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    readme = (ROOT / "README.md").read_text()
    shown = _block_after(readme, "best trial #")
    out = r.stdout
    start = out.index(shown.splitlines()[0].split(":")[0])
    ran = out[start:]
    ran = "\n".join(line for line in ran.splitlines() if not line.startswith(("config ", "checkpoint ")))
    assert ran.startswith(shown), f"README.md's demo output is not what the demo prints now:\n{ran}"
    state = json.loads((run_dir / "state.json").read_text())
    best = state["best"]
    how = (ROOT / "docs" / "how-boss-works.md").read_text()
    m = re.search(r"The\s+best trial, #(\d+), was initialised from #(\d+) with teacher #(\d+)", how)
    assert m and tuple(map(int, m.groups())) == (best["index"], best["student"], best["teacher"]), \
        f"docs/how-boss-works.md names another best trial than the demo's #{best['index']}"


def test_the_readmes_study_is_the_demo_study():
    """The study the README explains is examples/digits-study.yaml, with the optional parts it
    shows besides (storage, metrics, earlyStopping)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```yaml\napiVersion: boss.automl.io/v1alpha1") + 8
    shown = yaml.safe_load(readme[start:readme.index("```", start)])
    demo = yaml.safe_load((ROOT / "examples" / "digits-study.yaml").read_text())
    extras = {"storage", "metrics", "earlyStopping"}
    assert {k: v for k, v in shown["spec"].items() if k not in extras} == demo["spec"]
    assert shown["metadata"]["name"] == demo["metadata"]["name"]
