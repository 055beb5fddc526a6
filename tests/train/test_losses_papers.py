"""Outside checks for the losses TRL 1.16 does not have: R-DPO, DPOP, TDPO1/2, NPO(+RT) and listwise.

Each test writes the paper's equation out in plain Python (`math`, one pair or group at a time, the
paper's own variables: log-ratios of the winner y_w and loser y_l, lengths |y|, ...) and compares it with
the library function on random float64 log-probs, so a sign, scale or argument slip fails. The random
inputs are wide enough (log-ratios of several nats, lengths 1-60) that every term matters.
"""

from __future__ import annotations

import math

import pytest
import torch

from dpo_eval.train.listwise import RankedLogps, plackett_luce_loss
from dpo_eval.train.losses import PairLogps, dpop_loss, rdpo_loss
from dpo_eval.train.losses_family import npo_loss
from dpo_eval.train.losses_token import tdpo1_loss, tdpo2_loss

F64 = torch.float64
N = 64


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def random_pairs(seed: int) -> PairLogps:
    """Summed log-probs of N pairs (policy within a few nats of the reference) and lengths 1-60."""
    generator = torch.Generator().manual_seed(seed)
    ref = -torch.rand(2, N, generator=generator, dtype=F64) * 60 - 1
    policy = ref + torch.randn(2, N, generator=generator, dtype=F64) * 3
    lengths = torch.randint(1, 61, (2, N), generator=generator).to(F64)
    return PairLogps(policy[0], policy[1], ref[0], ref[1], lengths[0], lengths[1])


def rows(logps: PairLogps) -> list[tuple[float, ...]]:
    """(log pi(y_w), log pi(y_l), log pi_ref(y_w), log pi_ref(y_l), |y_w|, |y_l|) per pair."""
    tensors = (logps.policy_chosen, logps.policy_rejected, logps.ref_chosen, logps.ref_rejected,
               logps.chosen_tokens, logps.rejected_tokens)
    return list(zip(*(t.tolist() for t in tensors)))


def assert_matches(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual.detach(), torch.tensor(expected, dtype=F64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta, alpha", [(0.1, 0.01), (0.5, 0.05), (0.05, 0.2)])
def test_rdpo_is_park_et_al_2024(beta, alpha):
    """Park et al. 2024, "Disentangling Length from Quality in DPO" (arXiv:2403.19159), the R-DPO loss (Sec. 4):

        L_R-DPO = -E[ log sigma( beta log pi(y_w|x)/pi_ref(y_w|x) - beta log pi(y_l|x)/pi_ref(y_l|x)
                                 + (alpha |y_w| - alpha |y_l|) ) ]
    """
    logps = random_pairs(1)
    expected = [-log_sigmoid(beta * (pw - rw) - beta * (pl - rl) + (alpha * nw - alpha * nl))
                for pw, pl, rw, rl, nw, nl in rows(logps)]
    assert_matches(rdpo_loss(logps, beta=beta, alpha=alpha).losses, expected)


@pytest.mark.parametrize("beta, lambda_", [(0.1, 50.0), (0.3, 5.0), (1.0, 0.0)])
def test_dpop_is_pal_et_al_2024_eq_3(beta, lambda_):
    """Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive"
    (arXiv:2402.13228), eq. 3:

        L_DPOP = -E[ log sigma( beta ( log pi(y_w|x)/pi_ref(y_w|x) - log pi(y_l|x)/pi_ref(y_l|x)
                                       - lambda * max(0, log pi_ref(y_w|x)/pi(y_w|x)) ) ) ]
    """
    logps = random_pairs(2)
    expected = [-log_sigmoid(beta * ((pw - rw) - (pl - rl) - lambda_ * max(0.0, rw - pw)))
                for pw, pl, rw, rl, _, _ in rows(logps)]
    assert any(rw > pw for pw, _, rw, _, _, _ in rows(logps)) and any(rw < pw for pw, _, rw, _, _, _ in rows(logps))
    assert_matches(dpop_loss(logps, beta=beta, lambda_=lambda_).losses, expected)


def random_seq_kl(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(2, N, generator=generator, dtype=F64) * 4)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_tdpo1_is_zeng_et_al_2024_eq_19(beta):
    """Zeng et al. 2024, "Token-level Direct Preference Optimization" (arXiv:2404.11999), eqs. 17-19:

        u(x, y_w, y_l)     = beta log pi(y_w|x)/pi_ref(y_w|x) - beta log pi(y_l|x)/pi_ref(y_l|x)
        delta(x, y_w, y_l) = beta D_SeqKL(x, y_l; pi_ref || pi) - beta D_SeqKL(x, y_w; pi_ref || pi)
        L_TDPO1            = -E[ log sigma( u - delta ) ]
    """
    logps, (kl_w, kl_l) = random_pairs(3), random_seq_kl(3)
    expected = [-log_sigmoid((beta * (pw - rw) - beta * (pl - rl)) - (beta * kl - beta * kw))
                for (pw, pl, rw, rl, _, _), kw, kl in zip(rows(logps), kl_w.tolist(), kl_l.tolist())]
    assert_matches(tdpo1_loss(logps, kl_w, kl_l, beta=beta).losses, expected)


@pytest.mark.parametrize("beta, alpha", [(0.1, 0.5), (0.5, 2.0)])
def test_tdpo2_is_zeng_et_al_2024_eqs_20_21(beta, alpha):
    """Zeng et al. 2024, eqs. 20-21 (sg: stop-gradient; the value is that of sg's argument):

        delta_2(x, y_w, y_l) = beta D_SeqKL(x, y_l; pi_ref || pi) - sg(beta D_SeqKL(x, y_w; pi_ref || pi))
        L_TDPO2              = -E[ log sigma( u - alpha * delta_2 ) ]
    """
    logps, (kl_w, kl_l) = random_pairs(4), random_seq_kl(4)
    expected = [-log_sigmoid((beta * (pw - rw) - beta * (pl - rl)) - alpha * (beta * kl - beta * kw))
                for (pw, pl, rw, rl, _, _), kw, kl in zip(rows(logps), kl_w.tolist(), kl_l.tolist())]
    assert_matches(tdpo2_loss(logps, kl_w, kl_l, beta=beta, alpha=alpha).losses, expected)


@pytest.mark.parametrize("beta, retain_coef, n_forget", [(0.1, 0.0, N), (0.5, 1.0, 40), (0.2, 2.5, 9)])
def test_npo_is_zhang_et_al_2024_eq_3_plus_retain(beta, retain_coef, n_forget):
    """Zhang et al. 2024, "Negative Preference Optimization" (arXiv:2404.05868), eq. 3, and NPO+RT:

        L_NPO    = -(2 / beta) E_{y ~ D_forget}[ log sigma( -beta log pi(y|x)/pi_ref(y|x) ) ]
        L_NPO+RT = L_NPO + c * E_{y ~ D_retain}[ -log pi(y|x) / |y| ]
    """
    logps = random_pairs(5)
    policy, ref, lengths = logps.policy_chosen, logps.ref_chosen, logps.chosen_tokens
    is_forget = torch.arange(N) < n_forget
    forget = [-(2 / beta) * log_sigmoid(-beta * (p - r)) for p, r in zip(policy[:n_forget].tolist(),
                                                                    ref[:n_forget].tolist())]
    retain = [-p / n for p, n in zip(policy[n_forget:].tolist(), lengths[n_forget:].tolist())]
    objective = sum(forget) / len(forget) + (retain_coef * sum(retain) / len(retain) if retain else 0.0)
    out = npo_loss(policy, ref, is_forget, lengths, beta=beta, retain_coef=retain_coef)
    assert out.losses.mean().item() == pytest.approx(objective, rel=1e-10)
    if n_forget == N:  # forget rows alone: each item's loss is the eq. 3 term itself
        assert_matches(out.losses, forget)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_listwise_is_the_plackett_luce_loss_of_dpo_appendix_a3(beta):
    """Rafailov et al. 2023, DPO (arXiv:2305.18290), Appendix A.3: with tau the ranking, best first,

        p*(tau | y_1..y_K, x) = prod_{k=1}^{K} exp(r(x, y_tau(k))) / sum_{j=k}^{K} exp(r(x, y_tau(j))),
        r(x, y) = beta log pi(y|x)/pi_ref(y|x),
        L_DPO-PL = -E[ log prod_{k=1}^{m} ... ]  (m = K - 1 for a full ranking: the k = K factor is 1;
                                                  m = 1 when only the best of the K is known)
    Groups of K = 2..6 responses padded to 6, both m.
    """
    generator = torch.Generator().manual_seed(6)
    sizes = [2, 3, 6, 4, 5, 6, 3, 2]
    n_ranked = [1 if i % 2 else k - 1 for i, k in enumerate(sizes)]
    ref = -torch.rand(len(sizes), 6, generator=generator, dtype=F64) * 40 - 1
    policy = ref + torch.randn(len(sizes), 6, generator=generator, dtype=F64) * 3
    valid = torch.arange(6)[None, :] < torch.tensor(sizes)[:, None]
    expected = []
    for g, (k_total, m) in enumerate(zip(sizes, n_ranked)):
        r = [beta * (p - q) for p, q in zip(policy[g, :k_total].tolist(), ref[g, :k_total].tolist())]
        log_p = sum(r[k] - math.log(sum(math.exp(r[j]) for j in range(k, k_total))) for k in range(m))
        expected.append(-log_p)
    out = plackett_luce_loss(RankedLogps(policy, ref, valid, torch.tensor(n_ranked)), beta=beta)
    assert_matches(out.losses, expected)
