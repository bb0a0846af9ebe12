"""The docs that are generated stay generated."""

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
