"""The distillation loss against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from boss.losses import boss_loss, distillation_loss

S = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
T = torch.tensor([[1.5, 1.0, 0.5], [0.5, -1.0, 2.0]])


def test_mse_by_hand():
    # squared differences: (.25, 1, 0), (.25, 0, 1) -> mean over 6 elements
    assert distillation_loss(S, T, "mse").item() == pytest.approx(2.5 / 6)


def softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [x / sum(e) for x in e]


def test_kl_by_hand():
    temp = 2.0
    total = 0.0
    for s_row, t_row in zip(S.tolist(), T.tolist(), strict=True):
        p, q = softmax(t_row, temp), softmax(s_row, temp)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = total / 2 * temp**2  # batchmean, scaled by T^2 (Hinton)
    assert distillation_loss(S, T, "kl", temp).item() == pytest.approx(expected, rel=1e-6)


def test_boss_loss_adds_weighted_term_and_no_teacher_gradient():
    s = S.clone().requires_grad_(True)
    t = T.clone().requires_grad_(True)
    ce = torch.nn.functional.cross_entropy(s, torch.tensor([1, 2]))
    total, dt = boss_loss(ce, s, t, weight=0.5, kind="mse")
    assert total.item() == pytest.approx(ce.item() + 0.5 * 2.5 / 6)
    assert dt.item() == pytest.approx(2.5 / 6)
    total.backward()
    assert t.grad is None and s.grad is not None
    plain, zero = boss_loss(ce, s, None, weight=0.5)
    assert plain is ce and zero.item() == 0


def test_unknown_kind():
    with pytest.raises(ValueError, match="mse or kl"):
        distillation_loss(S, T, "l1")
