"""The dashboard's screenshots in docs/img/, taken with headless Chromium (tests/cdp.py).

    PYTHONPATH=sdk:operator:tests .venv/bin/python tests/ui_screenshots.py [--out docs/img]

Runs the demo study (examples/digits-study.yaml) into a temporary runs/ folder with `boss run`
while `boss ui` serves that folder, takes the study page while the run is going (trials running,
curves growing), then the finished study, its lineage, a trial page and the studies page.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from cdp import Browser  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    out = Path(ap.parse_args().out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "sdk"), str(ROOT / "operator"), str(ROOT / "tests")])}
    boss = [sys.executable, "-m", "boss.cli"]
    with tempfile.TemporaryDirectory(prefix="boss-ui-shots-") as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        subprocess.run(boss + ["run", str(ROOT / "examples" / "digits-study.yaml"), "--run-dir", str(runs / "digits-earlier"), "-q"],
                       check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        ui = subprocess.Popen(boss + ["ui", str(runs), "--port", "0"], stdout=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
        run = None
        try:
            url = ui.stdout.readline().split(" at ")[1].split()[0].rstrip("/")
            with Browser(width=1400, height=1000) as b:
                run = subprocess.Popen(boss + ["run", str(ROOT / "examples" / "digits-study.yaml"), "--run-dir",
                                               str(runs / "digits-demo"), "-q"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                       start_new_session=True)
                state = runs / "digits-demo" / "state.json"
                while not state.exists() or sum(t["state"] == "succeeded" for t in json.loads(state.read_text())["trials"]) < 9:
                    time.sleep(0.05)
                b.go(f"{url}/#/")
                b.wait("document.querySelectorAll('#studies tbody tr').length === 2")
                b.screenshot(out / "ui-studies.png", full=False)
                b.go(f"{url}/#/s/digits-demo")
                b.wait("document.querySelectorAll('#trials tbody tr').length > 0")
                time.sleep(0.8)
                b.screenshot(out / "ui-study-running.png", full=False)
                run.wait(300)
                b.wait("document.getElementById('phase').textContent === 'Succeeded'", 30)
                b.wait("document.querySelectorAll('#importance .bar').length > 0", 60)
                time.sleep(0.5)
                b.screenshot(out / "ui-study.png")
                b.screenshot(out / "ui-lineage.png", selector="#lineage")
                b.js("{ const s = document.getElementById('lineage-y'); s.value = 'rank'; s.dispatchEvent(new Event('change')); }")
                b.screenshot(out / "ui-lineage-rank.png", selector="#lineage")
                best = b.js("+document.querySelector('#lineage circle.node.best').dataset.trial")
                b.go(f"{url}/#/s/digits-demo/t/{best}")
                b.wait("document.getElementById('log') && document.getElementById('log').textContent.length > 0")
                time.sleep(0.5)
                b.screenshot(out / "ui-trial.png")
                assert not b.errors, b.errors
        finally:
            if run is not None and run.poll() is None:
                os.killpg(run.pid, signal.SIGINT)
                run.wait(60)
            os.killpg(ui.pid, signal.SIGINT)
            ui.wait(20)
    for name in ("ui-studies", "ui-study-running", "ui-study", "ui-lineage", "ui-lineage-rank", "ui-trial"):
        print(out / f"{name}.png")


if __name__ == "__main__":
    main()
