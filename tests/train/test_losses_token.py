"""TDPO1 / TDPO2 pinned to values worked out by hand; reduction to DPO; TDPO2's stop-gradient.

Hand data: the three pairs of test_losses.py (h = 1.5, -0.5, 2.0; pc-rc = 1.0, 0.5, -1.0;
pr-rr = -0.5, 1.0, -3.0) with sequential KLs

    pair   kc    kr    kr-kc   TDPO1 logit h-(kr-kc)   TDPO2 (alpha 0.5) logit h-0.5(kr-kc)
    0     0.2   0.4    0.2            1.3                       1.4
    1     0.5   0.1   -0.4           -0.1                      -0.3
    2     0.1   0.3    0.2            1.8                       1.9

TRL 1.16 has no TDPO loss, so there is no TRL comparison.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_losses import hand_logps, sig, t

from dpo_eval.train.losses import dpo_loss
from dpo_eval.train.losses_token import tdpo1_loss, tdpo2_loss, tdpo_step_loss

KC, KR = [0.2, 0.5, 0.1], [0.4, 0.1, 0.3]


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, t(expected), rtol=1e-12, atol=1e-12)


def test_tdpo1_hand_values():
    out = tdpo1_loss(hand_logps(), t(KC), t(KR), beta=0.1)
    close(out.losses, [-math.log(sig(0.1 * z)) for z in (1.3, -0.1, 1.8)])
    close(out.chosen_rewards, [0.1 * (1.0 + 0.2), 0.1 * (0.5 + 0.5), 0.1 * (-1.0 + 0.1)])  # beta (pc - rc + kc)
    close(out.rejected_rewards, [0.1 * (-0.5 + 0.4), 0.1 * (1.0 + 0.1), 0.1 * (-3.0 + 0.3)])


def test_tdpo2_hand_values_and_alpha_one_is_tdpo1_value():
    out = tdpo2_loss(hand_logps(), t(KC), t(KR), beta=0.1, alpha=0.5)
    close(out.losses, [-math.log(sig(0.1 * z)) for z in (1.4, -0.3, 1.9)])
    close(tdpo2_loss(hand_logps(), t(KC), t(KR), beta=0.1, alpha=1.0).losses,
          [-math.log(sig(0.1 * z)) for z in (1.3, -0.1, 1.8)])


def test_zero_kl_is_dpo():
    zeros = t([0.0, 0.0, 0.0])
    dpo = dpo_loss(hand_logps(), beta=0.3)
    for out in (tdpo1_loss(hand_logps(), zeros, zeros, beta=0.3), tdpo2_loss(hand_logps(), zeros, zeros, beta=0.3)):
        close(out.losses, dpo.losses.tolist())
        close(out.chosen_rewards, dpo.chosen_rewards.tolist())


def test_gradients_tdpo1_both_kls_tdpo2_rejected_only():
    # d loss / d kr = beta * alpha * sigmoid(-beta * logit); d loss / d kc = -(that) in TDPO1, 0 in TDPO2
    kc, kr = t(KC, requires_grad=True), t(KR, requires_grad=True)
    tdpo1_loss(hand_logps(), kc, kr, beta=0.1).losses.sum().backward()
    close(kr.grad, [0.1 * sig(-0.1 * z) for z in (1.3, -0.1, 1.8)])
    close(kc.grad, [-0.1 * sig(-0.1 * z) for z in (1.3, -0.1, 1.8)])
    kc, kr = t(KC, requires_grad=True), t(KR, requires_grad=True)
    tdpo2_loss(hand_logps(), kc, kr, beta=0.1, alpha=0.5).losses.sum().backward()
    close(kr.grad, [0.1 * 0.5 * sig(-0.1 * z) for z in (1.4, -0.3, 1.9)])
    assert kc.grad is None or float(kc.grad.abs().max()) == 0.0


def test_step_loss_reads_columns_and_adds_nll():
    logps = hand_logps()
    out = tdpo_step_loss("tdpo2", logps, torch.stack([t(KC), t(KR)], dim=1), {"beta": 0.1, "alpha": 0.5},
                         nll_coef=0.5)
    nll = [10.0 / 4, 8.0 / 2, 9.0 / 5]  # -pc / nc
    close(out.losses, [-math.log(sig(0.1 * z)) + 0.5 * n for z, n in zip((1.4, -0.3, 1.9), nll)])


@pytest.mark.parametrize("kwargs, match", [({"beta": 0.0}, "beta"), ({"alpha": -1.0}, "alpha")])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tdpo2_loss(hand_logps(), t(KC), t(KR), **kwargs)


def test_kl_shape_mismatch_raises():
    with pytest.raises(ValueError, match="rejected_kl must be a"):
        tdpo1_loss(hand_logps(), t(KC), t([0.1, 0.2]))
