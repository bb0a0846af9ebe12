"""The self-distillation loss of BOSS: L = L_gt + w * L_dt."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "mse", temperature: float = 4.0
) -> torch.Tensor:
    """MSE between logits (the paper's choice), or Hinton's KL at temperature T scaled by T^2."""
    teacher_logits = teacher_logits.detach()
    if kind == "mse":
        return F.mse_loss(student_logits, teacher_logits)
    if kind == "kl":
        t = temperature
        return F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
    raise ValueError(f"unknown distillation loss {kind!r} (mse or kl)")


def boss_loss(
    task_loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    weight: float,
    kind: str = "mse",
    temperature: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, distillation term); without a teacher the total is the task loss alone."""
    if teacher_logits is None or weight == 0:
        return task_loss, torch.zeros((), device=task_loss.device)
    dt = distillation_loss(student_logits.float(), teacher_logits.float(), kind, temperature)
    return task_loss + weight * dt, dt
