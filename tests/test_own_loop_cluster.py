"""A training script of one's own as trial Jobs on the real control plane and node: the stock
trainer image runs `python -m boss.trial`, which runs the study's `trainer.script` (here a module
from a ConfigMap on PYTHONPATH, as tests/test_operator.py brings its trainers)."""

from __future__ import annotations

import pytest
from boss.store import Store
from conftest import ROOT
from test_operator import (
    FINAL_PHASES,
    cluster,  # noqa: F401  (the fixture, by its name)
    study_doc,
    wait_phase,
    with_test_trainers,
)


@pytest.mark.slow
def test_a_script_study_runs_as_jobs_through_both_phases(cluster):  # noqa: F811
    c = cluster
    c.op.start()
    with c.node():
        doc = study_doc(c, "own-script", **{"spec.trainer.epochs": 2,
                                            "spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 2,
                                                            "maxFailedTrials": 0},
                                            "spec.boss.topK": 2,
                                            # every BOSS trial distils, whichever network teaches
                                            "spec.boss.distillation.worseTeacher": "teach"})
        doc["spec"]["trainer"].pop("plugin", None)
        doc["spec"]["trainer"].pop("args", None)
        doc["spec"]["trainer"]["script"] = "own_script"  # a module on the pods' PYTHONPATH
        source = (ROOT / "tests" / "own_loop" / "script_probe.py").read_text()
        c.apply(with_test_trainers(c, doc, modules={"own_script.py": source}))
        study = wait_phase(c, "own-script", FINAL_PHASES, timeout=600)
        log = c.k8s.kubectl("logs", "-n", c.ns, "job/own-script-t0003").stdout
    status = study["status"]
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert status["trialsCompleted"] == 4 and status["trialsFailed"] == 0
    trials = status["trials"]
    assert [t["phase"] for t in trials] == ["warmup", "warmup", "boss", "boss"]
    for t in trials:
        assert 0 < t["value"] <= 1 and t["extra"]["objectiveFrom"] == "terminationMessage"
        Store(c.s3).load_checkpoint(t["checkpoint"], t["checksum"])  # the script's best weights, intact
    assert "script own_script" in log and "student from s3://" in log and "distill_loss=" in log
