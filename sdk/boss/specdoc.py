"""The study spec reference (docs/spec-reference.md), generated from the spec model.

    python -m boss.specdoc > docs/spec-reference.md
"""

from __future__ import annotations

import sys
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .spec import (
    API_VERSION,
    KIND,
    BossSettings,
    Budget,
    Distillation,
    EarlyStopping,
    Metrics,
    Objective,
    Param,
    Range,
    Storage,
    StudySpec,
    TemplateMetadata,
    TemplatePodSpec,
    TrainerSpec,
    TrialContainer,
)

SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("spec", StudySpec, "The study."),
    ("spec.objective", Objective, "What the search maximises or minimises: a metric the trainer reports."),
    ("spec.searchSpace.<name>", Param, "One hyperparameter. Rules: low < high; log needs low > 0; int bounds are "
                                       "whole numbers; categorical choices are distinct (1, 1.0 and true are the same); "
                                       "`when` names other parameters and values they can take, without cycles."),
    ("spec.budget", Budget, "How many trials, how many at once. Failed trials count against `trials`."),
    ("spec.boss", BossSettings, "The BOSS phase: teacher and student come from the top-K checkpoints."),
    ("spec.boss.distillation", Distillation, "L = CE + weight · L_dt (MSE of logits, scale-free by default, or KL at a temperature)."),
    ("spec.boss.distillation.weight (searched)", Range, "Give a range instead of a number to search the weight "
                                                        "(as `distill_weight`, in the BOSS phase only)."),
    ("spec.trainer", TrainerSpec, "Which Trainer runs each trial, and with what."),
    ("spec.trainer.podTemplate.metadata", TemplateMetadata, "Labels and annotations for every trial pod "
     "(cluster only; see docs/gpu-cluster.md)."),
    ("spec.trainer.podTemplate.spec", TemplatePodSpec, "What a trial pod takes from a Kubernetes PodSpec (cluster "
     "only). Anything else is refused with the field's name: restartPolicy, securityContext, a second container."),
    ("spec.trainer.podTemplate.spec.containers[0]", TrialContainer, "The trial container (named `trial`): only "
     "mounts and environment; the operator owns its image, command, resources and the BOSS_* variables."),
    ("spec.storage", Storage, "Where checkpoints and results go. Required (object storage) on a cluster."),
    ("spec.metrics", Metrics, "Where trials publish metrics. Required on a cluster."),
    ("spec.earlyStopping", EarlyStopping, "Stopped trials keep their best epoch's checkpoint and score (what SMAC "
                                         "is told); they never become a teacher or a student."),
]


def _type(a: Any) -> str:
    origin, args = get_origin(a), get_args(a)
    if origin is Literal:
        return "one of " + ", ".join(f"`{x}`" for x in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type(x) for x in args)
    if origin in (list, dict):
        return f"{origin.__name__} of {_type(args[-1])}" if args else origin.__name__
    if a is type(None):
        return "null"
    if a is Any:
        return "any"
    return getattr(a, "__name__", str(a))


def _constraints(info) -> str:
    out = []
    for m in info.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "min length")):
            if getattr(m, attr, None) is not None:
                out.append(f"{sym} {getattr(m, attr)}")
    return ", ".join(out)


def _default(info) -> str:
    if info.is_required():
        return "**required**"
    value = info.default if info.default is not PydanticUndefined else info.default_factory()
    if isinstance(value, BaseModel):
        return "(see below)"
    return f"`{value!r}`" if value is not None else ""


def render() -> str:
    lines = ["# Study spec reference", "",
             "Generated from `sdk/boss/spec.py` by `python -m boss.specdoc`; a test keeps it current.", "",
             f"A study is a `{KIND}` document, `apiVersion: {API_VERSION}`, with `metadata.name` (lowercase "
             "letters, digits and `-`, at most 50 characters) and the `spec` below. The same file runs with "
             "`boss run` and with `kubectl apply`.", ""]
    for path, model, text in SECTIONS:
        lines += [f"## `{path}`", "", text, "", "| field | type | default | constraints | meaning |", "|---|---|---|---|---|"]
        for name, info in model.model_fields.items():
            alias = info.alias or name
            lines.append(f"| `{alias}` | {_type(info.annotation)} | {_default(info)} | {_constraints(info)} | "
                         f"{(info.description or '').replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
