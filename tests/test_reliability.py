"""What may happen to a trial or to storage must never lose a finished trial or corrupt the search."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import boto3
import pytest
import torch
from boss.loop import run_trial
from boss.metrics import read_objective
from boss.store import CheckpointError, StorageError, Store, to_uri
from boss.trial import TrialSpec
from conftest import BIN, ROOT, free_port, wait_http

CONFIG = {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "weight_decay": 1e-4}


def env(**extra: str) -> dict[str, str]:
    """This process's environment now (fixtures may have set credentials), with the test plugins."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def spec(tmp_path, name: str, **kw) -> TrialSpec:
    base = dict(study="r", index=0, phase="warmup", config=CONFIG, plugin="boss.trainers.digits:DigitsTrainer",
                epochs=4, args={"train_fraction": 0.5}, output_uri=to_uri(tmp_path / name),
                metrics_textfile=str(tmp_path / f"{name}.prom"), threads=1)
    base.update(kw)
    return TrialSpec(**base)


def run_process(ts: TrialSpec) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "boss.trial"], env=env(**ts.to_env()),
                          capture_output=True, text=True, timeout=300)


# ---- preemption ---------------------------------------------------------------------------


def test_a_preempted_trial_resumes_where_it_stopped_and_ends_the_same(tmp_path):
    args = {"train_fraction": 0.5, "die_after_epoch": 3, "marker": str(tmp_path / "done-once")}
    (tmp_path / "done-once").write_text("")  # the reference run is never preempted
    reference = run_process(spec(tmp_path, "reference", plugin="flaky_trainers:PreemptedOnce", args=args))
    assert reference.returncode == 0, reference.stderr
    (tmp_path / "done-once").unlink()

    ts = spec(tmp_path, "preempted", plugin="flaky_trainers:PreemptedOnce", args=args)
    first = run_process(ts)
    assert first.returncode == 137  # killed mid-epoch 3, after epoch 2's resume point was saved
    assert Store().exists(ts.output_uri + "/resume.safetensors") and not Store().exists(ts.result_uri)
    again = run_process(ts)  # the Job's retry
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch 2 of 4" in again.stderr
    got = Store().read_json(ts.result_uri)
    want = Store().read_json(to_uri(tmp_path / "reference" / "result.json"))
    assert got["history"] == want["history"] and got["value"] == want["value"]
    a, _ = Store().load_checkpoint(got["checkpoint"], got["sha256"])
    b, _ = Store().load_checkpoint(want["checkpoint"], want["sha256"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not Store().exists(ts.output_uri + "/resume.safetensors")  # cleaned up once done


def test_a_resume_point_of_another_trial_is_ignored(tmp_path):
    ts = spec(tmp_path, "t", epochs=2)
    other = spec(tmp_path, "t", epochs=2, config={**CONFIG, "lr": 0.01})
    Store().write(ts.output_uri + "/resume.safetensors", b"not even safetensors")
    assert run_trial(ts)["best_epoch"] >= 1  # a torn file: start over, do not trust it
    assert run_trial(other)["history"][0]["epoch"] == 1


# ---- storage faults -------------------------------------------------------------------------


@pytest.fixture()
def flaky_s3(monkeypatch):
    """An S3 server on a fixed port that the test can stop and start again."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]

    class Server:
        proc: subprocess.Popen | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_http(url + "/moto-api/")
            boto3.client("s3", endpoint_url=url).create_bucket(Bucket="ckpt")

        def stop(self) -> None:
            self.proc.terminate()
            self.proc.wait(10)

    server = Server()
    server.start()
    yield url, server
    if server.proc.poll() is None:
        server.stop()


def _unavailable_first(target: str, dropped: int) -> tuple[str, threading.Event]:
    """A loopback port that answers its first `dropped` requests 503 Service Unavailable (what
    S3 and its load balancers say in an outage), then forwards each connection to `target`: an
    endpoint that is down for a while and comes back with its data. Counting requests, not
    seconds, so that a retry hidden below Store shows as a missing log line whatever the load."""
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    host, target_port = target.split("://", 1)[1].split(":")
    done = threading.Event()

    def pipe(a, b):
        try:
            while chunk := a.recv(65536):
                b.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def unavailable(conn):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(65536)):
                head += chunk
            body = b"<Error><Code>ServiceUnavailable</Code><Message>down for a test</Message></Error>"
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def serve():
        seen = 0
        with srv:
            while not done.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                seen += 1
                if seen <= dropped:
                    threading.Thread(target=unavailable, args=(conn,), daemon=True).start()
                    continue
                upstream = socket.create_connection((host, int(target_port)))
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{port}", done


def test_an_outage_is_retried_with_backoff(flaky_s3, capfd):
    url, server = flaky_s3
    flaky, done = _unavailable_first(url, 3)  # three requests fail, then the server with its bucket answers
    try:
        store = Store(flaky, attempts=8, backoff=0.25)
        started = time.time()
        store.write("s3://ckpt/a/result.json", b'{"ok": true}')
        assert time.time() - started >= 0.25 + 0.5 + 1.0  # our backoff, doubling
        assert store.read("s3://ckpt/a/result.json") == b'{"ok": true}'
        err = capfd.readouterr().err
        # one logged retry per failed request: no library retries silently underneath
        assert [line.split("retrying in ")[1] for line in err.splitlines() if "retrying in" in line] == \
            ["0.2s", "0.5s", "1.0s"], err
    finally:
        done.set()


def test_storage_down_for_good_fails_clearly(flaky_s3):
    url, server = flaky_s3
    server.stop()
    with pytest.raises(StorageError, match="write failed after 3 attempts"):
        Store(url, attempts=3, backoff=0.05).write("s3://ckpt/x", b"x")
    with pytest.raises(CheckpointError, match="not found"):  # an answer, not an outage: no retry
        Store().read(to_uri("/nonexistent/boss/file"))


def test_a_trial_that_cannot_save_its_checkpoint_reports_no_score(tmp_path, flaky_s3):
    url, server = flaky_s3
    ts = spec(tmp_path, "nosave", epochs=6, output_uri="s3://ckpt/r/trial-0000", storage_endpoint=url)
    proc = subprocess.Popen([sys.executable, "-m", "boss.trial"], stderr=subprocess.PIPE, text=True,
                            env=env(**ts.to_env(), BOSS_STORAGE_ATTEMPTS="3", BOSS_STORAGE_BACKOFF="0.1"))
    store = Store(url)
    deadline = time.time() + 120
    while not store.exists(ts.output_uri + "/resume.safetensors"):  # training, storage up
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
        time.sleep(0.1)
    server.stop()  # storage goes away before the final checkpoint
    err = proc.communicate(timeout=180)[1]
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("boss.trial: trial 0 failed: cannot save the checkpoint") and "after 3 attempts" in last
    assert "no resume point after epoch" in err  # losing a resume point alone did not stop it
    assert read_objective((tmp_path / "nosave.prom").read_text(), "val_accuracy") is None  # never a score


# ---- metrics faults -------------------------------------------------------------------------


def test_a_pushgateway_that_is_down_costs_a_warning_not_the_trial(tmp_path, capfd):
    dead = f"http://127.0.0.1:{free_port()}"
    r = run_trial(spec(tmp_path, "nopush", epochs=1, pushgateway=dead, metrics_textfile=None))
    assert r["value"] > 0 and Store().exists(r["checkpoint"])
    assert "cannot push metrics" in capfd.readouterr().err
