"""Warm trial starts: forked from a server that has imported torch, yet as isolated and as
faithful to `python -m boss.trial` as a fresh interpreter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from boss.store import to_uri
from boss.trial import TrialSpec
from boss_operator import workers
from boss_operator.workers import EXIT_LOST, ColdLauncher, WarmLauncher

# A trainer plugin whose __init__ does what args["mode"] says, and never trains.
PLUGIN = '''
import json, os, signal, subprocess, sys, time

import boss

VERSION = "first"
SEEN = []


class Probe(boss.Trainer):
    def __init__(self, config, args=None, seed=0):
        super().__init__(config, args, seed)
        mode, out = self.args["mode"], self.args.get("out")
        if mode == "probe":
            import boss.trial
            SEEN.append(1)
            report = {"polluted": hasattr(boss.trial, "POLLUTED"), "env": os.environ.get("POLLUTED"),
                      "seen": len(SEEN), "sys_path": sys.path, "cwd": os.getcwd(), "argv": sys.argv,
                      "session_leader": os.getsid(0) == os.getpid(), "stdin": sys.stdin.read(),
                      "sigint": repr(signal.getsignal(signal.SIGINT)), "sigterm": repr(signal.getsignal(signal.SIGTERM)),
                      "version": sys.modules[type(self).__module__].VERSION,
                      "module_file": sys.modules[type(self).__module__].__file__}
            with open(out, "w") as f:
                json.dump(report, f)
            print("probe says hello on stdout")
            print("probe says hello on stderr", file=sys.stderr)
            sys.exit(5)
        if mode == "pollute":
            import boss.trial
            boss.trial.POLLUTED = True
            os.environ["POLLUTED"] = "yes"
            SEEN.extend([0] * 1_000_000)
            sys.path.insert(0, "/nowhere")
            raise RuntimeError("polluted everything")
        if mode == "exit7":
            os._exit(7)
        if mode == "segv":
            import ctypes
            ctypes.string_at(0)
        if mode == "sleep":
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            with open(out, "w") as f:
                f.write(str(child.pid))
            time.sleep(120)
'''


@pytest.fixture(scope="module")
def plugdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("plugins")
    (d / "wplug.py").write_text(PLUGIN)
    (d / "wplug2.py").write_text('from wplug import Probe\nVERSION = "first"\n\n\nclass Versioned(Probe):\n    pass\n')
    return d


def plug_env(plugdir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugdir), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def light(plugdir, tmp_path_factory):
    """A server that preloads boss.trial and the test plugins (which import torch), not the rest."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(workers, "DEFAULT_PRELOAD", ("boss.trial",))
        launcher = WarmLauncher(["wplug:Probe", "wplug2", "no_such_module"], env=plug_env(plugdir),
                                cwd=tmp_path_factory.mktemp("server"), fallback=False)
        assert launcher.ready()
    assert "no_such_module" in launcher.preload_errors and "wplug" not in launcher.preload_errors
    yield launcher
    launcher.close()


def probe_spec(tmp_path: Path, mode: str, index: int = 0, plugin: str = "wplug:Probe", **args) -> TrialSpec:
    return TrialSpec(study="w", index=index, phase="warmup", config={}, plugin=plugin, epochs=1,
                     args={"mode": mode, "out": str(tmp_path / f"{mode}-{index}.out"), **args},
                     output_uri=to_uri(tmp_path / f"trial-{index}"), metrics_textfile=str(tmp_path / f"{index}.prom"))


def start(launcher, spec: TrialSpec, tmp_path: Path, env: dict[str, str], cwd: Path | None = None):
    log = tmp_path / f"log-{spec.index}.txt"
    return launcher.start({**env, **spec.to_env()}, cwd or tmp_path, log), log


def test_exit_codes_and_isolation(light, plugdir, tmp_path):
    env = plug_env(plugdir)
    p, log = start(light, probe_spec(tmp_path, "pollute", 0), tmp_path, env)
    assert p.wait(60) == 1 and "RuntimeError: polluted everything" in log.read_text()
    p, _ = start(light, probe_spec(tmp_path, "exit7", 1), tmp_path, env)
    assert p.wait(60) == 7 and p.returncode == 7 and p.poll() == 7
    p, _ = start(light, probe_spec(tmp_path, "segv", 2), tmp_path, env)
    assert p.wait(60) == -signal.SIGSEGV
    p, log = start(light, probe_spec(tmp_path, "probe", 3), tmp_path, env)
    assert p.wait(60) == 5  # sys.exit(5) in the trial
    seen = json.loads((tmp_path / "probe-3.out").read_text())
    assert seen["polluted"] is False and seen["env"] is None and seen["seen"] == 1 and "/nowhere" not in seen["sys_path"]
    assert seen["session_leader"] and seen["stdin"] == "" and seen["cwd"] == str(tmp_path)
    text = log.read_text()
    assert "probe says hello on stdout" in text and "probe says hello on stderr" in text


def test_parallel_trials_do_not_share(light, plugdir, tmp_path):
    procs = [start(light, probe_spec(tmp_path, "probe", i), tmp_path, plug_env(plugdir))[0] for i in range(3)]
    assert len({p.pid for p in procs}) == 3
    assert [p.wait(60) for p in procs] == [5, 5, 5]
    assert [json.loads((tmp_path / f"probe-{i}.out").read_text())["seen"] for i in range(3)] == [1, 1, 1]


def test_same_import_path_as_a_fresh_interpreter(light, plugdir, tmp_path):
    """sys.path, argv and signal handlers as `python -m boss.trial` with that env and cwd has them,
    a relative $PYTHONPATH entry included."""
    work = tmp_path / "work"
    (work / "rel").mkdir(parents=True)
    env = {**plug_env(plugdir), "PYTHONPATH": os.pathsep.join(["rel", str(plugdir), os.environ.get("PYTHONPATH", "")])}
    seen = {}
    for name, launcher in (("cold", ColdLauncher()), ("warm", light)):
        spec = probe_spec(tmp_path, "probe", index=len(seen))
        p, _ = start(launcher, spec, tmp_path, env, cwd=work)
        assert p.wait(60) == 5
        seen[name] = json.loads(Path(spec.args["out"]).read_text())
    cold, warm = seen["cold"], seen["warm"]
    assert cold["sys_path"][:2] == [str(work), str(work / "rel")]
    for key in ("sys_path", "argv", "sigint", "sigterm", "cwd", "module_file"):
        assert warm[key] == cold[key], key


def test_preloaded_plugin_changed_or_found_elsewhere(light, plugdir, tmp_path):
    """A trial imports its plugin afresh where a cold start would get another file than the preload."""
    env = plug_env(plugdir)
    other = tmp_path / "other"
    other.mkdir()
    (other / "wplug2.py").write_text((plugdir / "wplug2.py").read_text().replace('"first"', '"elsewhere"'))
    versions = []
    for i, cwd in enumerate([tmp_path, other]):  # the trial's folder comes first on its path
        p, _ = start(light, probe_spec(tmp_path, "probe", i, plugin="wplug2:Versioned"), tmp_path, env, cwd=cwd)
        assert p.wait(60) == 5
        versions.append(json.loads((tmp_path / f"probe-{i}.out").read_text())["version"])
    assert versions == ["first", "elsewhere"]
    original = plugdir / "wplug2.py"
    text = original.read_text()
    try:
        original.write_text(text.replace('"first"', '"edited"'))
        st = original.stat()
        os.utime(original, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        p, _ = start(light, probe_spec(tmp_path, "probe", 2, plugin="wplug2:Versioned"), tmp_path, env)
        assert p.wait(60) == 5
        assert json.loads((tmp_path / "probe-2.out").read_text())["version"] == "edited"
    finally:
        original.write_text(text)


def test_killpg_stops_the_trial_and_its_children(light, plugdir, tmp_path):
    spec = probe_spec(tmp_path, "sleep")
    p, _ = start(light, spec, tmp_path, plug_env(plugdir))
    out = Path(spec.args["out"])
    deadline = time.time() + 60
    while not out.exists() or not out.read_text():
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.05)
    grandchild = int(out.read_text())
    assert os.getpgid(grandchild) == p.pid
    assert p.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(0.2)
    os.killpg(p.pid, signal.SIGTERM)
    assert p.wait(10) == -signal.SIGTERM and p.poll() == -signal.SIGTERM
    deadline = time.time() + 10
    while not workers._gone(grandchild):
        assert time.time() < deadline, "the trial's own child survived killpg"
        time.sleep(0.05)


def test_warm_start_is_quick_and_errors_are_popen_like(light, tmp_path):
    t0 = time.monotonic()
    p = light.start({k: v for k, v in os.environ.items() if k != "BOSS_TRIAL"}, tmp_path, tmp_path / "log.txt")
    assert p.wait(30) == 2  # boss.trial's EXIT_BAD_SPEC
    assert time.monotonic() - t0 < 2.0  # a cold start takes seconds before it can even fail
    assert "BOSS_TRIAL is not set" in (tmp_path / "log.txt").read_text()
    with pytest.raises(FileNotFoundError):
        light.start(dict(os.environ), tmp_path / "missing", tmp_path / "log.txt")
    with pytest.raises(FileNotFoundError):
        light.start(dict(os.environ), tmp_path, tmp_path / "missing" / "log.txt")


def test_server_death_and_caller_death(plugdir, tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "DEFAULT_PRELOAD", ("boss.trial",))
    env = plug_env(plugdir)
    with WarmLauncher(env=env, fallback=False) as launcher:
        spec = probe_spec(tmp_path, "sleep")
        p, log = start(launcher, spec, tmp_path, env)
        os.kill(launcher.server_pid, signal.SIGKILL)  # its trial lives on, its exit status is lost
        time.sleep(0.5)
        assert p.poll() is None
        os.killpg(p.pid, signal.SIGKILL)
        assert p.wait(30) == EXIT_LOST and "exit status is unknown" in log.read_text()
        p = launcher.start(env, tmp_path, tmp_path / "again.txt")  # a new server
        assert p.wait(30) == 2
    # the caller dies with a trial running: its server stops the trial
    script = textwrap.dedent(f"""
        import os, sys
        from boss_operator import workers
        workers.DEFAULT_PRELOAD = ("boss.trial",)
        launcher = workers.WarmLauncher(fallback=False)
        env = {json.dumps({**env, **probe_spec(tmp_path, "sleep", 1).to_env()})}
        p = launcher.start(env, {str(tmp_path)!r}, {str(tmp_path / "orphan.txt")!r})
        print(p.pid, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout)
    deadline = time.time() + 30
    while not workers._gone(pid):
        assert time.time() < deadline, "a trial outlived the process that started it"
        time.sleep(0.1)


def test_exits_reported_together_survive_the_servers_death(plugdir, tmp_path, monkeypatch):
    """Two trials' exits in one read, the server dead before the first reap: both exit codes
    are recorded (the reap's broken pipe once ended `boss run` with an AssertionError)."""
    import select
    import socket

    def lines_waiting(sock) -> int:  # what the server said that the launcher has not read yet
        if not select.select([sock], [], [], 0)[0]:
            return 0
        return sock.recv(1 << 16, socket.MSG_PEEK).count(b"\n")

    monkeypatch.setattr(workers, "DEFAULT_PRELOAD", ("boss.trial",))
    env = plug_env(plugdir)
    with WarmLauncher(env=env, fallback=False) as launcher:
        procs = [start(launcher, probe_spec(tmp_path, "exit7", i), tmp_path, env)[0] for i in range(2)]
        deadline = time.time() + 60
        while lines_waiting(launcher._sock) < 2:
            assert time.time() < deadline, "the server never reported both exits"
            time.sleep(0.05)
        os.kill(launcher.server_pid, signal.SIGKILL)
        launcher._server.wait(30)
        assert [p.wait(30) for p in procs] == [7, 7]


def test_digits_trial_warm_equals_cold(tmp_path):
    """A real trial forked from the full server (torch preloaded) writes the same result as a cold one."""
    launcher = WarmLauncher(["boss.trainers.digits:DigitsTrainer"], fallback=False)  # starts importing now
    try:
        results = {}
        for name, how in (("cold", ColdLauncher()), ("warm", launcher)):
            spec = TrialSpec(study="d", index=0, phase="warmup", config={"lr": 0.05, "optimizer": "sgd", "momentum": 0.9,
                             "batch_size": 64, "weight_decay": 1e-4}, plugin="boss.trainers.digits:DigitsTrainer",
                             epochs=1, args={"train_fraction": 0.3}, output_uri=to_uri(tmp_path / name / "trial"),
                             metrics_textfile=str(tmp_path / f"{name}.prom"), threads=1)
            (tmp_path / name).mkdir()
            p = how.start({**os.environ, **spec.to_env(), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
                          tmp_path / name, tmp_path / name / "log.txt")
            assert p.wait(120) == 0, (tmp_path / name / "log.txt").read_text()
            results[name] = json.loads((tmp_path / name / "trial" / "result.json").read_text())
        assert launcher.preload_errors == {}
        cold, warm = results["cold"], results["warm"]
        for key in ("value", "sha256", "history", "test", "best_epoch", "device"):
            assert warm[key] == cold[key], key
        assert (tmp_path / "warm.prom").read_text() == (tmp_path / "cold.prom").read_text()
    finally:
        launcher.close()
