"""Finding a Trainer class from its `module:Class` name."""

from __future__ import annotations

import importlib

from .trainer import Trainer


class PluginError(ValueError):
    """A trainer plugin that cannot be loaded; the message is one line."""


def load_trainer_class(path: str) -> type[Trainer]:
    module_name, _, cls_name = path.partition(":")
    if not module_name or not cls_name:
        raise PluginError(f"trainer plugin must look like package.module:ClassName, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PluginError(f"trainer plugin {path}: cannot import {module_name} ({e})") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise PluginError(f"trainer plugin {path}: {module_name} has no {cls_name}")
    if not (isinstance(cls, type) and issubclass(cls, Trainer)):
        raise PluginError(f"trainer plugin {path}: {cls_name} is not a boss.Trainer subclass")
    return cls
