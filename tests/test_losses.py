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


def test_mse_rel_by_hand_and_scale_free():
    # rows centred: S -> (-1/6, 5/6, -2/3), (-2/3, -5/3, 7/3); T -> (1/2, 0, -1/2), (0, -3/2, 3/2)
    sc = [[-1 / 6, 5 / 6, -2 / 3], [-2 / 3, -5 / 3, 7 / 3]]
    tc = [[0.5, 0.0, -0.5], [0.0, -1.5, 1.5]]
    err = sum((a - b) ** 2 for r, q in zip(sc, tc, strict=True) for a, b in zip(r, q, strict=True)) / 6
    energy = sum(b * b for q in tc for b in q) / 6  # the teacher's (the student's tenth is smaller here)
    assert distillation_loss(S, T, "mse-rel").item() == pytest.approx(err / energy)
    # the point of it: the same value whatever the logits' scale and shift, where the raw mse grows
    # with the square of the scale
    for scale, shift in ((10.0, 0.0), (0.1, 3.0)):
        assert distillation_loss(S * scale + shift, T * scale - shift, "mse-rel").item() == pytest.approx(err / energy, rel=1e-5)
        assert distillation_loss(S * scale, T * scale, "mse").item() == pytest.approx(2.5 / 6 * scale**2)
    assert distillation_loss(T + 5.0, T, "mse-rel").item() == pytest.approx(0.0, abs=1e-7)  # a shift is no error
    # a teacher whose logits do not vary at all (a collapsed network): the divisor is a tenth of the
    # student's mean square, and the term stays finite (10: the student's whole signal is the error)
    assert distillation_loss(S, torch.full_like(T, 7.0), "mse-rel").item() == pytest.approx(10.0)
    # the divisor is a constant for the gradient: the student is pulled toward the teacher
    s = S.clone().requires_grad_(True)
    distillation_loss(s, T, "mse-rel").backward()
    sc_, tc_ = S - S.mean(-1, keepdim=True), T - T.mean(-1, keepdim=True)
    assert torch.allclose(s.grad, 2 * (sc_ - tc_) / 6 / energy, atol=1e-6)


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
    with pytest.raises(ValueError, match="mse-rel, mse or kl"):
        distillation_loss(S, T, "l1")
