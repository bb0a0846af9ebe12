"""The self-distillation loss of BOSS: L = L_gt + w * L_dt."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _centred(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(dim=-1, keepdim=True)


def mse_rel_sums(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> list[float]:
    """What mse-rel's divisor is made of, as sums (teacher's squares, student's squares, count):
    summed over the processes of a DDP trial, they give the whole batch's divisor, as in one."""
    s, t = _centred(student_logits.detach().float()), _centred(teacher_logits.detach().float())
    return [t.pow(2).sum().item(), s.pow(2).sum().item(), float(t.numel())]


def mse_rel_divisor(teacher_sq: float, student_sq: float, count: float) -> float:
    return max(teacher_sq / count, 0.1 * student_sq / count, 1e-12)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "mse-rel", temperature: float = 4.0,
    divisor: float | None = None,
) -> torch.Tensor:
    """mse-rel: the MSE of logits made scale-free (the shipped default); mse: the MSE of logits (the
    paper's); kl: Hinton's KL at temperature T, scaled by T^2.

    mse-rel centres each row of both (softmax ignores a shift) and divides the squared error by the
    centred teacher logits' mean square, so it is a share of the teacher's own signal: the raw MSE is
    not scale-free (measured on the three benchmark tasks it is about 0.05x the task loss on digits
    and about 1x on shapes, so one weight meant a twenty times different pull). The divisor never
    falls below a tenth of the student's mean square (a constant for the gradient): a teacher whose
    logits barely vary (a collapsed network) would make the term explode. `divisor`: the whole
    batch's, when this process holds a part of it (DDP: mse_rel_sums over the processes)."""
    teacher_logits = teacher_logits.detach()
    if kind == "mse-rel":
        s, t = _centred(student_logits), _centred(teacher_logits)
        if divisor is not None:
            return F.mse_loss(s, t) / divisor
        scale = torch.maximum(t.pow(2).mean(), 0.1 * s.detach().pow(2).mean())
        return F.mse_loss(s, t) / scale.clamp_min(1e-12)
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
    raise ValueError(f"unknown distillation loss {kind!r} (mse-rel, mse or kl)")


def boss_loss(
    task_loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    weight: float,
    kind: str = "mse-rel",
    temperature: float = 4.0,
    divisor: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, distillation term); without a teacher the total is the task loss alone."""
    if teacher_logits is None or weight == 0:
        return task_loss, torch.zeros((), device=task_loss.device)
    dt = distillation_loss(student_logits.float(), teacher_logits.float(), kind, temperature, divisor)
    return task_loss + weight * dt, dt
