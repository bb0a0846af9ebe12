"""What users wrote is printed as they wrote it (issue 27): no console markup (`[bold]`), no
emoji codes (`:tada:`, and `vision:X` once printed as an emoji), and control characters shown
escaped (`\\x1b`), never acted on by the terminal, in every command."""

from __future__ import annotations

import copy
import json
import re

import yaml
from boss.cli import escape_control, print_result
from boss.cli import main as cli_main
from conftest import digits_doc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TRICKY = ["[bold]", "[/]", "[red]x[/red]", ":tada:", ":x:", ":Tada", "vision:X", "[link=http://h]", "\\[", "][",
          "\x1b[31m", "\x1b]0;title\x07", "\r", "\x00", "\x9b2J", "\x08"]
texts = st.lists(st.sampled_from(TRICKY) | st.text(st.sampled_from("ab:._-[]/ \\\x1b\x07\r\x7f"), max_size=6),
                 min_size=1, max_size=4).map("".join)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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
    assert escape_control(plugin) in err or repr(plugin) in err, err
    assert not CONTROL.search(err), "a control character reached the terminal"


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
                      "        raise ValueError('[bold]no:tada: data at [red]/x[/red] \\x1b[2J')\n")
    doc = digits_doc(**{"spec.trainer.plugin": "markup_trainer:Loud",
                        "spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 1, "maxFailedTrials": 0}})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOSS_WARM_START", "0")
    code = cli_main(["run", "study.yaml", "--run-dir", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code != 0
    assert "[bold]no:tada: data at [red]/x[/red] \\x1b[2J" in captured.out + captured.err, captured
    assert not CONTROL.search(captured.out + captured.err)
    json.dumps(captured.out)  # printable
