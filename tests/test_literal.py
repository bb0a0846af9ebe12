"""What users wrote is printed as they wrote it (issue 27): no console markup (`[bold]`), no
emoji codes (`:tada:`, and `vision:X` once printed as an emoji), in every command."""

from __future__ import annotations

import copy
import json

import yaml
from boss.cli import main as cli_main
from boss.cli import print_result
from conftest import digits_doc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TRICKY = ["[bold]", "[/]", "[red]x[/red]", ":tada:", ":x:", ":Tada", "vision:X", "[link=http://h]", "\\[", "]["]
texts = st.lists(st.sampled_from(TRICKY) | st.text(st.sampled_from("ab:._-[]/ \\"), max_size=6), min_size=1,
                 max_size=4).map("".join)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(texts)
def test_an_error_line_quotes_the_users_plugin_as_written(tmp_path_factory, capsys, text):
    doc = digits_doc()
    doc["spec"]["trainer"]["plugin"] = "mytrainers.vision:" + text
    path = tmp_path_factory.mktemp("lit") / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli_main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    plugin = doc["spec"]["trainer"]["plugin"]
    assert plugin in err or repr(plugin) in err, err


def test_the_result_table_and_lineage_print_configs_and_names_as_written(capsys):
    trials = [{"index": i, "phase": "warmup" if i < 2 else "boss", "state": "succeeded", "value": 0.5 + i / 10,
               "config": {"optimizer": f"[bold]adam:tada:{i}"}, "teacher": None if i < 2 else 0,
               "student": None if i < 2 else 1, "extra": {"seconds": 1.0}} for i in range(3)]
    trials.append({**copy.deepcopy(trials[0]), "index": 3, "state": "failed", "value": None,
                   "message": "[red]boom:x:[/red]"})
    print_result("study:tada:[bold]", {"objective": {"metric": "val_accuracy"}}, trials, where="runs/[dim]x:tada:")
    out = capsys.readouterr().out
    for literal in ("[bold]adam:tada:2", "study:tada:[bold]", "runs/[dim]x:tada:"):
        assert literal in out, (literal, out)
    assert "🎉" not in out


def test_boss_run_prints_a_failed_trials_message_as_written(tmp_path, capsys, monkeypatch):
    """A trial that fails with markup and emoji codes in its message (a user's exception)."""
    module = tmp_path / "markup_trainer.py"
    module.write_text("import boss\n\n\nclass Loud(boss.Trainer):\n"
                      "    def __init__(self, config, args=None, seed=0):\n"
                      "        raise ValueError('[bold]no:tada: data at [red]/x[/red]')\n")
    doc = digits_doc(**{"spec.trainer.plugin": "markup_trainer:Loud",
                        "spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 1, "maxFailedTrials": 0}})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOSS_WARM_START", "0")
    code = cli_main(["run", "study.yaml", "--run-dir", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code != 0
    assert "[bold]no:tada: data at [red]/x[/red]" in captured.out + captured.err, captured
    json.dumps(captured.out)  # printable
