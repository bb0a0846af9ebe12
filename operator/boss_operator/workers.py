"""Starting trial processes: cold (a fresh `python -m boss.trial` each) or warm (forked).

A fresh interpreter spends seconds importing torch (and torch._dynamo, which the optimisers
pull in at their first step) before a trial does any work. `WarmLauncher` pays that once: a
server process imports torch, numpy, boss and, best effort, the trainer plugin's module, then
forks one child per trial. Each child is still its own process in its own session, started
from the server's clean state, so a crash, a leak, a changed global or a segfault ends with
that trial. The server never touches CUDA: a child initialises it itself, as a fresh
interpreter would, and sees the CUDA_VISIBLE_DEVICES of its own environment.

A child's import path is the one `python -m boss.trial` in `cwd` with `env` would have (the
folder, then $PYTHONPATH, then the installed packages). Modules that a preload imported from
those folders (the user's plugin) are dropped in a child that would find them elsewhere, or
whose files changed since, so it imports them afresh as a cold start would.

`ColdLauncher` is the plain way, and the fallback where the server cannot start.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

# What every trial imports. torch._dynamo: torch.optim imports it at the first step (~2-3 s);
# s3fs (with aiobotocore): a trial with object storage, 1-3 s of CPU; scikit-learn's: the digits
# trainer's data, about as much (none of these imports starts a thread).
DEFAULT_PRELOAD = ("numpy", "torch", "torch._dynamo", "safetensors.torch", "fsspec.implementations.local",
                   "s3fs", "sklearn.datasets", "sklearn.model_selection", "boss.trial", "boss.loop")
EXIT_LOST = 1  # a trial whose server died before reporting it: its exit status is unknown
_PYTHONPATH = "_BOSS_WORKER_PYTHONPATH"  # the caller's $PYTHONPATH, kept out of the server's own start-up
_PKG_PARENT = str(Path(__file__).resolve().parent.parent)


class TrialHandle(Protocol):
    """What LocalRun needs of a started trial (subprocess.Popen has it too)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Launcher(Protocol):
    def start(self, env: Mapping[str, str], cwd: str | Path, log_path: str | Path) -> TrialHandle: ...

    def close(self) -> None: ...


class WarmLauncherError(RuntimeError):
    """The fork server could not start (see the message for its output)."""


class ColdLauncher:
    """A fresh interpreter per trial, as a Kubernetes Job runs it: slow to start, nothing shared.

    `processes` > 1 (trainer.gpus) runs each trial under torchrun (`python -m boss.distributed N`),
    which a fork server cannot start: its processes are fresh interpreters anyway."""

    def __init__(self, python: str = sys.executable, processes: int = 1):
        self.python = python
        self.command = ["-m", "boss.distributed", str(processes)] if processes > 1 else ["-m", "boss.trial"]

    def start(self, env: Mapping[str, str], cwd: str | Path, log_path: str | Path) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen([self.python, *self.command], env=dict(env), cwd=cwd, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> ColdLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrialProcess:
    """A trial forked by a WarmLauncher, with Popen's pid, returncode, poll(), wait() and signals.

    The trial is the server's child, not ours: its exit status arrives over the server's socket.
    A trial killed by a signal has returncode -signum, as with Popen."""

    def __init__(self, launcher: WarmLauncher, pid: int, log_path: str):
        self._launcher = launcher
        self.pid = pid
        self.log_path = log_path
        self.args = ["boss.trial", f"(forked by {launcher.server_pid})"]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._launcher._pump(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._launcher._pump(0.5 if left is None else min(left, 0.5))
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __repr__(self) -> str:
        return f"<TrialProcess pid={self.pid} returncode={self.returncode}>"


class WarmLauncher:
    """Trials forked from a server that has already imported what they need.

    `preload`: more modules to import in the server, best effort (a `module:Class` plugin name
    works too); a module that fails to import is left to the trial, which reports the error
    itself. `python`, `env` and `cwd`: the server's interpreter, environment and folder (default:
    this process's); preloads are found as a trial in `cwd` with `env` would find them.
    `fallback`: where the server cannot start, start trials cold (`cold_reason` says why)
    instead of raising WarmLauncherError.

    The server starts in the background at once; `start()` waits for it the first time. It
    stops when `close()` is called or when this process exits. `close()` (and leaving a `with`
    block) stops trials still running (SIGTERM to their process groups, SIGKILL after `grace`
    seconds): nothing could learn their exit status afterwards."""

    def __init__(self, preload: Sequence[str] = (), *, python: str = sys.executable,
                 env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 fallback: bool = True, ready_timeout: float = 300.0):
        self.preload = [m.partition(":")[0] for m in preload if m.partition(":")[0]]
        self.python = python
        self.env = dict(os.environ if env is None else env)
        self.cwd = str(Path(cwd or os.getcwd()).resolve())
        self.fallback = fallback
        self.ready_timeout = ready_timeout
        self.preload_errors: dict[str, str] = {}  # module -> why the server could not import it
        self.cold_reason: str | None = None
        self.server_pid: int | None = None
        self._cold: ColdLauncher | None = None
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._procs: dict[int, TrialProcess] = {}  # pid -> handle, until its exit is known
        self._lost: dict[int, TrialProcess] = {}  # trials of a server that died
        self._replies: dict[int, dict[str, Any]] = {}
        self._hello: dict[str, Any] | None = None
        self._server: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._buf = b""
        self._spawn()

    # ---- the server ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        mine, theirs = socket.socketpair()
        env = {k: v for k, v in self.env.items() if k != "PYTHONPATH"}
        if "PYTHONPATH" in self.env:
            env[_PYTHONPATH] = self.env["PYTHONPATH"]
        config = {"fd": theirs.fileno(), "preload": list(DEFAULT_PRELOAD), "extras": self.preload}
        # base: the interpreter's own sys.path, without -c's '' (the trial's folders come in _serve)
        boot = (f"import sys; base = sys.path[0 if sys.flags.safe_path else 1:]; sys.path.insert(0, {_PKG_PARENT!r}); "
                f"from boss_operator.workers import _serve; _serve(base, {json.dumps(config)!r})")
        self._stderr = tempfile.TemporaryFile()
        self._server = subprocess.Popen([self.python, "-c", boot], env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                        stdout=self._stderr, stderr=self._stderr, pass_fds=[theirs.fileno()],
                                        start_new_session=True)  # Ctrl-C and `timeout` are the caller's to handle
        theirs.close()
        self._sock, self._buf, self._hello = mine, b"", None
        self.server_pid = self._server.pid

    def _ready(self) -> bool:
        """Wait for the server's hello; False (after falling back) or WarmLauncherError if it died."""
        if self._cold is not None:
            return False
        if self._sock is None:
            self._spawn()  # the last server died or was closed: a new one for the next trials
        deadline = time.monotonic() + self.ready_timeout
        while self._hello is None:
            if self._sock is None or time.monotonic() > deadline:
                return self._give_up(f"the warm-start server did not start: {self._output()}")
            self._pump(min(1.0, max(0.0, deadline - time.monotonic())))
        unsafe = self._hello.get("unsafe")
        if unsafe and self.preload:  # a plugin's import did it: preload only what is known to be safe
            self.preload_errors.update({m: f"not preloaded: {unsafe}" for m in self.preload})
            self.preload = []
            self._drop_server()
            return self._ready()
        if unsafe:
            return self._give_up(f"the warm-start server cannot fork trials safely: {unsafe}")
        return True

    def _give_up(self, reason: str) -> bool:
        self._drop_server()
        if not self.fallback:
            raise WarmLauncherError(reason)
        self.cold_reason = reason
        self._cold = ColdLauncher(self.python)
        print(f"boss: warning: {reason.splitlines()[0]}; starting each trial in a fresh interpreter",
              file=sys.stderr)
        return False

    def _output(self) -> str:
        """The end of what the server printed (it prints only when something is wrong)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-2000:] or "no output"

    def _drop_server(self) -> None:
        """Close the socket (the server exits on its end of file) and wait for the server."""
        if self._sock is not None:
            self._sock.close()
        self._sock, self._hello = None, None
        if self._server is not None and self._server.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._server.wait(10)
            if self._server.poll() is None:
                self._server.kill()
                self._server.wait()
        self._lost.update(self._procs)  # normally none: close() waits for them
        self._procs.clear()

    def _send(self, msg: dict[str, Any]) -> None:
        if self._sock is None:  # the server is gone (a send before this one found out)
            return
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError:
            self._server_gone()

    def _pump(self, timeout: float) -> None:
        """Read what the server has said within `timeout` seconds, and act on it."""
        with self._lock:
            if self._lost:
                self._check_lost()
            if self._sock is None:
                time.sleep(min(timeout, 0.05))
                return
            if not select.select([self._sock], [], [], timeout)[0]:
                return
            try:
                data = self._sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self._server_gone()
                return
            self._buf += data
            reaps: list[int] = []
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                self._on(json.loads(line), reaps)
            # every exit said is recorded first: a reap that finds the server gone (broken pipe)
            # must not lose the exits it had reported in the same read
            for pid in reaps:
                self._send({"op": "reap", "pid": pid})  # only now may its pid be reused

    def _on(self, msg: dict[str, Any], reaps: list[int]) -> None:
        if "hello" in msg:
            self._hello = msg
            self.preload_errors.update(msg.get("errors") or {})
        elif "exit" in msg:
            p = self._procs.pop(msg["exit"], None)
            if p is not None:
                p.returncode = msg["rc"]
            reaps.append(msg["exit"])
        elif "id" in msg:
            self._replies[msg["id"]] = msg

    def _server_gone(self) -> None:
        """The server died: its children went to init, which keeps their exit status to itself."""
        self._drop_server()
        self._check_lost()

    def _check_lost(self) -> None:
        for pid, p in list(self._lost.items()):
            if _gone(pid):
                del self._lost[pid]
                with contextlib.suppress(OSError), open(p.log_path, "ab") as log:
                    log.write(b"\nboss: the warm-start server died; this trial's exit status is unknown\n")
                p.returncode = EXIT_LOST

    # ---- trials --------------------------------------------------------------------------------

    def start(self, env: Mapping[str, str], cwd: str | Path, log_path: str | Path) -> TrialHandle:
        """Start `python -m boss.trial` as if with this env, in cwd, output appended to log_path."""
        with self._lock:
            if not self._ready():
                assert self._cold is not None
                return self._cold.start(env, cwd, log_path)
            cwd, log_path = str(Path(cwd).resolve()), str(Path(log_path).resolve())
            if not os.path.isdir(cwd):  # as Popen would, before anything runs
                raise FileNotFoundError(2, "No such file or directory", cwd)
            open(log_path, "ab").close()
            n = next(self._ids)
            self._send({"op": "start", "id": n, "env": dict(env), "cwd": cwd, "log": log_path})
            while n not in self._replies:
                if self._sock is None:
                    raise OSError(f"the warm-start server died while starting a trial: {self._output()}")
                self._pump(1.0)
            reply = self._replies.pop(n)
            if "error" in reply:
                raise OSError(reply["errno"], reply["error"], reply.get("filename"))
            p = TrialProcess(self, reply["pid"], log_path)
            self._procs[p.pid] = p
            return p

    def ready(self) -> bool:
        """Wait until the server has imported everything; False where trials will start cold."""
        with self._lock:
            return self._ready()

    def close(self, grace: float = 5.0) -> None:
        with self._lock:
            running = [p for p in list(self._procs.values()) if p.poll() is None]
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for p in running:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(p.pid, sig)
                deadline = time.monotonic() + grace
                for p in running:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(max(0.0, deadline - time.monotonic()))
                running = [p for p in running if p.returncode is None]
                if not running:
                    break
            self._drop_server()

    @property
    def warm(self) -> bool:
        """Whether trials start forked (False once the launcher fell back to cold starts)."""
        return self._cold is None

    def __enter__(self) -> WarmLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except OSError:  # no /proc (macOS)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


# ---- in the server ---------------------------------------------------------------------------------


def fresh_sys_path(env: Mapping[str, str], cwd: str, base: Sequence[str]) -> list[str]:
    """sys.path of `python -m` started in `cwd` with `env`, given the interpreter's own part
    `base` (stdlib, site-packages): the folder, then $PYTHONPATH made absolute from it."""
    extra = env.get("PYTHONPATH")
    entries = [os.path.abspath(os.path.join(cwd, p or ".")) for p in extra.split(os.pathsep)] if extra else []
    tail: list[str] = []
    for p in [*entries, *base]:
        if p not in tail:
            tail.append(p)
    return tail if env.get("PYTHONSAFEPATH") else [cwd, *tail]


_SIGINT: Any = signal.default_int_handler  # what SIGINT does in a trial: as in `python -m boss.trial`


def _serve(base: list[str], config: str) -> None:
    """The server's main loop: import, then fork a trial per request and report its exit."""
    global _SIGINT
    cfg = json.loads(config)
    # a fresh interpreter keeps SIGINT ignored when its parent ignores it (a background shell):
    # remember which a cold trial would get, before the server ignores it for itself
    _SIGINT = signal.SIG_IGN if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=cfg["fd"])
    if _PYTHONPATH in os.environ:
        os.environ["PYTHONPATH"] = os.environ.pop(_PYTHONPATH)
    head = fresh_sys_path(os.environ, os.getcwd(), base)
    sys.path[:] = head
    errors: dict[str, str] = {}
    for name in cfg["preload"]:
        _try_import(name, errors)
    before = set(sys.modules)
    for name in cfg["extras"]:
        _try_import(name, errors)
    user = _user_modules(set(sys.modules) - before, set(head) - set(base))
    unsafe = None
    torch_cuda = sys.modules.get("torch.cuda")
    if torch_cuda is not None and torch_cuda.is_initialized():  # a flag, it does not initialise anything
        unsafe = "CUDA was initialised while importing"
    elif threading.active_count() > 1:
        unsafe = "threads were started while importing: " + ", ".join(t.name for t in threading.enumerate()[1:])
    gc.collect()
    gc.freeze()  # a child's collections skip the preloaded objects: faster, and their pages stay shared
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    own = [sock.fileno(), wake_r, wake_w]
    children: dict[int, bool] = {}  # pid -> its exit was reported (it is reaped when the caller says so)

    def send(msg: dict[str, Any]) -> None:
        sock.sendall(json.dumps(msg).encode() + b"\n")

    try:
        send({"hello": os.getpid(), "errors": errors, "unsafe": unsafe})
        buf = b""
        while True:
            ready = select.select([sock, wake_r], [], [], 1.0)[0]
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            for pid, reported in list(children.items()):
                rc = None if reported else _exited(pid)
                if rc is not None:
                    children[pid] = True
                    send({"exit": pid, "rc": rc})
            if sock not in ready:
                continue
            data = sock.recv(1 << 16)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg["op"] == "start":
                    send(_fork(msg, children, own, base, user))
                elif msg["op"] == "reap":
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(msg["pid"], 0)
                    children.pop(msg["pid"], None)
    except OSError:  # the caller is gone
        pass
    _stop(children)


def _try_import(name: str, errors: dict[str, str]) -> None:
    try:
        importlib.import_module(name)
    except (Exception, SystemExit) as e:  # the trial imports it again and reports the error itself
        errors[name] = f"{type(e).__name__}: {e}"


def _entry(module: Any) -> str | None:
    """The sys.path entry a top-level module was found in."""
    spec = getattr(module, "__spec__", None)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return os.path.dirname(list(spec.submodule_search_locations)[0])
    return os.path.dirname(spec.origin) if spec.origin and os.path.isabs(spec.origin) else None


def _signature(spec: Any) -> tuple[str | None, tuple[str, ...]]:
    return (None, ()) if spec is None else (spec.origin, tuple(spec.submodule_search_locations or ()))


def _user_modules(added: set[str], folders: set[str]) -> dict[str, Any]:
    """What the extra preloads imported from the trial's own folders (cwd, $PYTHONPATH): the files
    with their mtimes, and where each top-level package was found."""
    files: dict[str, tuple[str | None, int]] = {}
    tops: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for name in added:
        top = name.partition(".")[0]
        if top not in sys.modules or _entry(sys.modules[top]) not in folders:
            continue
        tops[top] = _signature(sys.modules[top].__spec__)
        f = getattr(sys.modules[name], "__file__", None)
        try:
            files[name] = (f, os.stat(f).st_mtime_ns if f else 0)
        except OSError:
            files[name] = (f, -1)
    return {"files": files, "tops": tops}


def _drop_stale(user: dict[str, Any]) -> None:
    """Forget the preloaded user modules where a fresh `python -m boss.trial` would not get the same:
    a file changed since, or this trial's import path finds the package elsewhere."""
    from importlib.machinery import PathFinder

    stale = False
    for f, mtime in user["files"].values():
        if f:
            try:
                stale = stale or os.stat(f).st_mtime_ns != mtime
            except OSError:
                stale = True
    for top, sig in user["tops"].items():
        stale = stale or _signature(PathFinder.find_spec(top, sys.path)) != sig
    if stale:
        for name in user["files"]:
            sys.modules.pop(name, None)


def _exited(pid: int) -> int | None:
    """The child's exit code (-signum if a signal ended it), leaving it a zombie: its pid stays
    taken until the caller has seen the exit, as with Popen."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return -signal.SIGKILL
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _fork(msg: dict[str, Any], children: dict[int, bool], own: list[int], base: list[str],
          user: dict[str, Any]) -> dict[str, Any]:
    for stream in (sys.stdout, sys.stderr):  # nothing of the server's may end up in a trial's log
        stream.flush()
    r, w = os.pipe()  # the child's set-up errors, as Popen reports an exec failure
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        return {"id": msg["id"], "error": f"cannot fork: {e.strerror}", "errno": e.errno}
    if pid == 0:  # never returns
        os.close(r)
        _child(msg, w, own, base, user)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read()
    if err:
        os.waitpid(pid, 0)
        failure = json.loads(err)
        return {"id": msg["id"], **failure}
    children[pid] = False
    return {"id": msg["id"], "pid": pid}


def _child(msg: dict[str, Any], w: int, own: list[int], base: list[str], user: dict[str, Any]) -> None:
    """Become `python -m boss.trial` with the request's env, cwd and log; exit with its code."""
    code: int = 1
    interrupted = False
    try:
        try:
            os.setsid()  # its own session and process group: os.killpg(pid) reaches its workers too
            signal.set_wakeup_fd(-1)
            for fd in own:
                os.close(fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, _SIGINT)
            os.chdir(msg["cwd"])
            log = os.open(msg["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            null = os.open(os.devnull, os.O_RDONLY)
        except OSError as e:
            os.write(w, json.dumps({"error": e.strerror or str(e), "errno": e.errno or 0,
                                    "filename": e.filename}).encode())
            os._exit(255)
        os.close(w)  # the caller's start() returns now, with the process group in place
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        for stream in (sys.stdout, sys.stderr):  # the log is read while the trial runs
            stream.reconfigure(line_buffering=True, write_through=True)
        env = msg["env"]
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = fresh_sys_path(env, os.getcwd(), base)
        importlib.invalidate_caches()
        _drop_stale(user)
        trial = sys.modules.get("boss.trial")
        sys.argv = [getattr(trial, "__file__", None) or "-m"]
        if env.get("PYTHONFAULTHANDLER"):
            import faulthandler

            faulthandler.enable()
        from boss.trial import main

        code = main()
    except SystemExit as e:
        code = _exit_code(e.code)
    except KeyboardInterrupt:
        import traceback

        traceback.print_exc()
        interrupted = True
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        _exit(code, interrupted)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _exit(code: int, interrupted: bool) -> None:
    """What an interpreter does at its end: wait for non-daemon threads, run atexit, flush; then
    exit without returning to the server's code."""
    try:
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(BaseException):
            import atexit

            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        if interrupted:  # an uncaught KeyboardInterrupt ends a fresh interpreter by SIGINT too
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        os._exit(code & 0xFF)


def _stop(children: dict[int, bool], grace: float = 5.0) -> None:
    """The caller is gone and nobody can record these trials any more: stop them."""
    running = [pid for pid, reported in children.items() if not reported]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while running and time.monotonic() < deadline:
            running = [pid for pid in running if _exited(pid) is None]
            time.sleep(0.05)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
