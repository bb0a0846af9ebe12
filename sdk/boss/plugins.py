"""Finding a Trainer class from its `module:Class` name, the same way in a trial and in the CLI.

A trial runs `python -m boss.trial` in the folder where `boss run` was started (on a cluster:
the image's working directory), so its import path is that folder, then $PYTHONPATH, then the
installed packages. `trial_sys_path` gives the CLI the very same path, so `boss validate`
catches what a trial would hit.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping

from .trainer import Trainer


class PluginError(ValueError):
    """A trainer plugin that cannot be loaded; the message is one line."""


def absolute_pythonpath(env: Mapping[str, str], cwd: str) -> str | None:
    """$PYTHONPATH with relative entries made absolute from `cwd`: a trial that runs elsewhere
    (the local backend's trial processes, a forked worker) still finds `PYTHONPATH=.`."""
    raw = env.get("PYTHONPATH")
    if raw is None:
        return None
    return os.pathsep.join(os.path.abspath(os.path.join(cwd, p or ".")) for p in raw.split(os.pathsep))


def trial_sys_path(cwd: str | None = None) -> list[str]:
    """sys.path as `python -m boss.trial` started in `cwd` with this environment would have it."""
    cwd = os.path.abspath(cwd or os.getcwd())
    extra = (absolute_pythonpath(os.environ, cwd) or "").split(os.pathsep)
    head = [cwd] + [p for p in extra if p]
    return head + [p for p in sys.path if p and os.path.abspath(p) not in head]


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def load_trainer_class(path: str) -> type[Trainer]:
    module_name, _, cls_name = path.partition(":")
    if not module_name or not cls_name:
        raise PluginError(f"trainer plugin must look like package.module:ClassName, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as e:
        where = f"{os.path.basename(e.filename or '?')}, line {e.lineno}"
        raise PluginError(f"trainer plugin {path}: {module_name} has a syntax error: {e.msg} ({where})") from None
    except ImportError as e:
        hint = ""
        if e.name and module_name.startswith(e.name):
            hint = (f"; it is looked up in the current folder ({os.getcwd()}), in $PYTHONPATH and in the "
                    "installed packages")
        raise PluginError(f"trainer plugin {path}: cannot import {module_name} ({_one_line(e)}){hint}") from None
    except (Exception, SystemExit) as e:  # the module's own code raised while being imported
        at = ""
        tb = e.__traceback__
        while tb is not None:  # the innermost frame of the plugin's own files
            if "importlib" not in tb.tb_frame.f_code.co_filename:
                at = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
            tb = tb.tb_next
        raise PluginError(f"trainer plugin {path}: importing {module_name} raised "
                          f"{type(e).__name__}{at}: {_one_line(e) or '(no message)'}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise PluginError(f"trainer plugin {path}: {module_name} has no {cls_name}")
    if not (isinstance(cls, type) and issubclass(cls, Trainer)):
        raise PluginError(f"trainer plugin {path}: {cls_name} is not a boss.Trainer subclass")
    return cls


def check_plugin(path: str, cwd: str | None = None) -> type[Trainer]:
    """Import the plugin with the import path a trial started in `cwd` would have."""
    saved = list(sys.path)
    sys.path[:] = trial_sys_path(cwd)
    try:
        return load_trainer_class(path)
    finally:
        sys.path[:] = saved


def check_script(script: str, cwd: str | None = None) -> str:
    """A study's `trainer.script` as a trial started in `cwd` would find it: a .py file that
    exists and compiles, or a module on the trial's import path. PluginError (one line) if not."""
    import importlib.util

    cwd = os.path.abspath(cwd or os.getcwd())
    if script.endswith(".py"):
        path = os.path.join(cwd, script)
        if not os.path.isfile(path):
            raise PluginError(f"trainer script {script}: no such file in {cwd} (a trial runs it from the folder "
                              "`boss run` starts in; on a cluster from the image's working directory)")
        try:
            with open(path, "rb") as f:
                compile(f.read(), path, "exec")
        except SyntaxError as e:
            raise PluginError(f"trainer script {script} has a syntax error: {e.msg} (line {e.lineno})") from None
        except (OSError, ValueError) as e:
            raise PluginError(f"trainer script {script} cannot be read: {_one_line(e)}") from None
        return path
    saved = list(sys.path)
    sys.path[:] = trial_sys_path(cwd)
    try:
        found = importlib.util.find_spec(script)
    except (ImportError, ValueError) as e:
        raise PluginError(f"trainer script {script}: cannot find the module ({_one_line(e)})") from None
    finally:
        sys.path[:] = saved
    if found is None or found.origin is None:
        raise PluginError(f"trainer script {script}: no such module; it is looked up in the current folder "
                          f"({cwd}), in $PYTHONPATH and in the installed packages")
    return found.origin
