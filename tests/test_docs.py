"""The docs that are generated stay generated."""

from boss.specdoc import render
from conftest import ROOT


def test_spec_reference_is_current():
    assert (ROOT / "docs" / "spec-reference.md").read_text() == render(), "run: python -m boss.specdoc > docs/spec-reference.md"
