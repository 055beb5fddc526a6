"""f-DPO, LD-DPO, SPPO, Rainbow-PO and NPO: hand values, reductions to DPO, and TRL 1.16's loss code.

Hand data (float64), the three pairs of test_losses.py:
    pair   pc     rc     pr     rr    nc  nr   uc = pc-rc  ur = pr-rr
    0    -10.0  -11.0  -12.0  -11.5   4   5     1.0        -0.5
    1     -8.0   -8.5   -7.0   -8.0   2   4     0.5         1.0
    2     -9.0   -8.0  -10.0   -7.0   5   2    -1.0        -3.0
"""

from __future__ import annotations

import math
import types
from collections import defaultdict

import pytest
import torch
from test_losses import ACCELERATOR, token_batch, trl_module

from dpo_eval.train.losses import LOSSES, PairLogps, compute_loss, dpo_loss
from dpo_eval.train.losses_family import (
    DIVERGENCES,
    TAIL_KEYS,
    f_prime,
    fdpo_loss,
    ld_dpo_loss,
    npo_loss,
    rainbow_loss,
    required_extras,
    sppo_loss,
)

F64 = torch.float64
UC, UR = [1.0, 0.5, -1.0], [-0.5, 1.0, -3.0]


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(values: list[float], requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=requires_grad)


# LD-DPO tails: pair 0 (L = 4): rejected token 5; pair 1 (L = 2): rejected tokens 3-4; pair 2 (L = 2): chosen 3-5
TAILS = {"policy_chosen_tail": t([0.0, 0.0, -5.0]), "policy_rejected_tail": t([-2.0, -3.0, 0.0]),
         "ref_chosen_tail": t([0.0, 0.0, -4.5]), "ref_rejected_tail": t([-1.5, -4.0, 0.0])}
WIN = {"chosen_win_prob": t([0.8, 0.6, 1.0]), "rejected_win_prob": t([0.3, 0.5, 0.0])}
ENTROPY = {"ref_entropy": t([0.5, math.exp(-1), 0.25])}


def hand_logps(requires_grad: bool = False, extras: dict | None = None) -> PairLogps:
    return PairLogps(t([-10.0, -8.0, -9.0], requires_grad), t([-12.0, -7.0, -10.0], requires_grad),
                     t([-11.0, -8.5, -8.0]), t([-11.5, -8.0, -7.0]), t([4.0, 2.0, 5.0]), t([5.0, 4.0, 2.0]),
                     extras={**TAILS, **WIN, **ENTROPY} if extras is None else extras)


def assert_values(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, t(expected), rtol=1e-12, atol=1e-12)


def dpo_values(margins: list[float], beta: float) -> list[float]:
    return [-math.log(sig(beta * h)) for h in margins]


# --------------------------------------------------------------------------------------------- f-DPO


def f_of(divergence: str, u: float, alpha: float = 0.5) -> float:
    """The divergence's f(u) as the paper's Table 1 writes it (not the code's f')."""
    return {"reverse_kl": u * math.log(u), "forward_kl": -math.log(u),
            "js_divergence": u * math.log(u) - (u + 1) * math.log((u + 1) / 2),
            "alpha_divergence": (u ** (1 - alpha) - (1 - alpha) * u - alpha) / (alpha * (alpha - 1))}[divergence]


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_f_prime_is_the_derivative_of_f_shifted_to_zero_at_one(divergence):
    def numeric(u: float, h: float = 1e-6) -> float:
        return (f_of(divergence, u + h) - f_of(divergence, u - h)) / (2 * h)

    for log_u in (-1.5, -0.2, 0.0, 0.7, 2.0):
        expected = numeric(math.exp(log_u)) - numeric(1.0)
        assert f_prime(t([log_u]), divergence).item() == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_fdpo_hand_values():
    beta = 0.1
    forward = fdpo_loss(hand_logps(), beta=beta, divergence="forward_kl")  # f' = 1 - exp(-u)
    f_c, f_r = [1 - math.exp(-u) for u in UC], [1 - math.exp(-u) for u in UR]
    assert_values(forward.losses, dpo_values([c - r for c, r in zip(f_c, f_r)], beta))
    assert_values(forward.chosen_rewards, [beta * v for v in f_c])
    assert_values(forward.rejected_rewards, [beta * v for v in f_r])
    js = fdpo_loss(hand_logps(), beta=beta, divergence="js_divergence")  # f' = log 2 + log sigmoid(u)
    assert_values(js.losses, dpo_values([math.log(sig(c)) - math.log(sig(r)) for c, r in zip(UC, UR)], beta))
    alpha = fdpo_loss(hand_logps(), beta=beta, divergence="alpha_divergence", alpha=0.3)  # (1 - e^(-0.3 u)) / 0.3
    f_c, f_r = [(1 - math.exp(-0.3 * u)) / 0.3 for u in UC], [(1 - math.exp(-0.3 * u)) / 0.3 for u in UR]
    assert_values(alpha.losses, dpo_values([c - r for c, r in zip(f_c, f_r)], beta))


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_fdpo_reverse_kl_is_dpo(beta):
    ours, dpo = fdpo_loss(hand_logps(), beta=beta), dpo_loss(hand_logps(), beta=beta)
    for got, expected in zip((ours.losses, ours.chosen_rewards, ours.rejected_rewards),
                             (dpo.losses, dpo.chosen_rewards, dpo.rejected_rewards)):
        assert_values(got, expected.tolist())


def test_fdpo_alpha_limits_are_reverse_and_forward_kl():
    near_zero = fdpo_loss(hand_logps(), divergence="alpha_divergence", alpha=1e-7).losses
    near_one = fdpo_loss(hand_logps(), divergence="alpha_divergence", alpha=1 - 1e-7).losses
    torch.testing.assert_close(near_zero, fdpo_loss(hand_logps()).losses, rtol=1e-5, atol=0)
    torch.testing.assert_close(near_one, fdpo_loss(hand_logps(), divergence="forward_kl").losses, rtol=1e-5, atol=0)


@pytest.mark.parametrize("kwargs, match", [({"divergence": "kl"}, "unknown"),
                                           ({"divergence": "alpha_divergence", "alpha": 1.0}, r"\(0, 1\)")])
def test_fdpo_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fdpo_loss(hand_logps(), **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_fdpo_loss_and_gradients_stay_finite_up_to_abs_u_1e3(divergence, dtype):
    """Unclamped, forward_kl gave NaN gradients from u ~ -90 and alpha (0.5) from u ~ -180, in float32."""
    grid = [-1e3, -200.0, -180.0, -100.0, -90.0, -80.0, -1.0, 0.0, 1.0, 90.0, 200.0, 1e3]
    uc, ur = zip(*[(a, b) for a in grid for b in grid])
    policy_chosen = torch.tensor(uc, dtype=dtype, requires_grad=True)
    policy_rejected = torch.tensor(ur, dtype=dtype, requires_grad=True)
    zeros, ones = torch.zeros(len(uc), dtype=dtype), torch.ones(len(uc), dtype=dtype)
    out = fdpo_loss(PairLogps(policy_chosen, policy_rejected, zeros, zeros, ones, ones), beta=0.1,
                    divergence=divergence, alpha=0.5)
    out.losses.sum().backward()
    for tensor in (out.losses, out.chosen_rewards, out.rejected_rewards, policy_chosen.grad, policy_rejected.grad):
        assert bool(torch.isfinite(tensor).all())


@pytest.mark.parametrize("divergence, alpha, clamp_at", [("forward_kl", 0.5, -80.0), ("alpha_divergence", 0.5, -160.0)])
def test_f_prime_is_constant_below_the_exponent_clamp(divergence, alpha, clamp_at):
    # f'(u) = 1 - e^{-log u} (forward) or (1 - e^{-a log u}) / a: the exponent stops at 80
    expected = -math.expm1(80.0) / (alpha if divergence == "alpha_divergence" else 1.0)
    values = f_prime(t([clamp_at, clamp_at - 1.0, -1e3]), divergence, alpha)
    torch.testing.assert_close(values, t([expected] * 3), rtol=1e-12, atol=0)
    assert f_prime(t([clamp_at + 1.0]), divergence, alpha).item() > expected  # above the clamp: untouched


# -------------------------------------------------------------------------------------------- LD-DPO


def test_ld_dpo_hand_values():
    # alpha = 0.5: p^ = p - 0.5 * tail
    #   pair 0: pr^ = -12 + 1 = -11, rr^ = -11.5 + 0.75 = -10.75: uc = 1, ur = -0.25, h = 1.25
    #   pair 1: pr^ = -7 + 1.5 = -5.5, rr^ = -8 + 2 = -6: uc = 0.5, ur = 0.5, h = 0
    #   pair 2: pc^ = -9 + 2.5 = -6.5, rc^ = -8 + 2.25 = -5.75: uc = -0.75, ur = -3, h = 2.25
    out = ld_dpo_loss(hand_logps(), beta=0.1, alpha=0.5)
    assert_values(out.losses, dpo_values([1.25, 0.0, 2.25], 0.1))
    assert_values(out.chosen_rewards, [0.1, 0.05, -0.075])
    assert_values(out.rejected_rewards, [-0.025, 0.05, -0.3])


def test_ld_dpo_alpha_one_is_dpo():
    assert_values(ld_dpo_loss(hand_logps(), beta=0.2, alpha=1.0).losses, dpo_loss(hand_logps(), beta=0.2).losses.tolist())


def test_ld_dpo_needs_tails_and_alpha_in_range():
    with pytest.raises(ValueError, match="policy_chosen_tail"):
        ld_dpo_loss(hand_logps(extras={}))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ld_dpo_loss(hand_logps(), alpha=1.5)


# ---------------------------------------------------------------------------------------------- SPPO


def test_sppo_hand_values():
    # beta = 0.5 so eta = 2: targets 2 * (P - 1/2) = chosen [0.6, 0.2, 1.0], rejected [-0.4, 0.0, -1.0]
    out = sppo_loss(hand_logps(), beta=0.5)
    assert_values(out.losses, [(1.0 - 0.6) ** 2 + (-0.5 + 0.4) ** 2, (0.5 - 0.2) ** 2 + (1.0 - 0.0) ** 2,
                               (-1.0 - 1.0) ** 2 + (-3.0 + 1.0) ** 2])
    assert_values(out.chosen_rewards, [0.5 * u for u in UC])


def test_sppo_refuses_probabilities_outside_0_1_and_missing_columns():
    with pytest.raises(ValueError, match="chosen_win_prob must lie in"):
        sppo_loss(hand_logps(extras={**WIN, "chosen_win_prob": t([0.5, 1.2, 0.5])}))
    with pytest.raises(ValueError, match="columns in the data"):
        sppo_loss(hand_logps(extras={}))


# ---------------------------------------------------------------------------------------- Rainbow-PO


def test_rainbow_every_switch_off_is_dpo():
    for margin in (0.0, 3.0):  # the margin only enters through mixing
        out = rainbow_loss(hand_logps(), beta=0.3, mixing_margin=margin)
        assert_values(out.losses, dpo_loss(hand_logps(), beta=0.3).losses.tolist())
        assert_values(out.chosen_rewards, [0.3 * u for u in UC])


def test_rainbow_each_switch_hand_values():
    # length normalisation: uc/nc - ur/nr = [0.25 + 0.1, 0.25 - 0.25, -0.2 + 1.5]
    normalised = rainbow_loss(hand_logps(), beta=0.1, length_normalization=True)
    assert_values(normalised.losses, dpo_values([0.35, 0.0, 1.3], 0.1))
    assert_values(normalised.chosen_rewards, [0.1 * 0.25, 0.1 * 0.25, 0.1 * -0.2])
    assert_values(normalised.rejected_rewards, [0.1 * -0.1, 0.1 * 0.25, 0.1 * -1.5])
    # mixing a = 0.5, g = 1: (pc - pr) - 0.5 (rc - rr) - 0.5 = [2 - .25 - .5, -1 + .25 - .5, 1 + .5 - .5]
    mixed = rainbow_loss(hand_logps(), beta=0.1, mixing_alpha=0.5, mixing_margin=1.0)
    assert_values(mixed.losses, dpo_values([1.25, -1.25, 1.0], 0.1))
    # contextual scaling d = 2: s = -2 log H = [2 log 2, 2, 2 log 4]
    scaled = rainbow_loss(hand_logps(), beta=0.1, contextual_scale=2.0)
    assert_values(scaled.losses, dpo_values([1.5 * 2 * math.log(2), -0.5 * 2, 2.0 * 2 * math.log(4)], 0.1))


def test_rainbow_best_combination_hand_values():
    # LN: pc/nc = [-2.5, -4, -1.8], pr/nr = [-2.4, -1.75, -5], rc/nc = [-2.75, -4.25, -1.6], rr/nr = [-2.3, -2, -3.5]
    # policy margin [-0.1, -2.25, 3.2], reference margin [-0.45, -2.25, 1.9]
    # h = pm - 0.75 rm - 0.25 * 0.4 = [0.1375, -0.6625, 1.675]; s = -2 log H = [2 log 2, 2, 2 log 4]
    out = rainbow_loss(hand_logps(), beta=0.1, length_normalization=True, mixing_alpha=0.75, mixing_margin=0.4,
                       contextual_scale=2.0)
    assert_values(out.losses, dpo_values([0.1375 * 2 * math.log(2), -0.6625 * 2, 1.675 * 2 * math.log(4)], 0.1))


def test_rainbow_contextual_scaling_needs_the_reference_entropy():
    assert required_extras("rainbow", {"contextual_scale": 1.0}) == ("ref_entropy",)
    assert required_extras("rainbow", {}) == ()
    with pytest.raises(ValueError, match="ref_entropy"):
        rainbow_loss(hand_logps(extras={}), contextual_scale=1.0)
    rounded = rainbow_loss(hand_logps(extras={"ref_entropy": t([1 + 1e-6, 0.5, 0.5])}), contextual_scale=1.0)
    assert rounded.losses[0].item() == pytest.approx(math.log(2), rel=1e-12)  # H / log V past 1 by rounding: s = 0
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        rainbow_loss(hand_logps(extras={"ref_entropy": t([1.5, 0.5, 0.5])}), contextual_scale=1.0)


# ----------------------------------------------------------------------------------------------- NPO


def npo_inputs(requires_grad: bool = False):
    # r = policy - ref = [0.5, -1.0, 0.2, -1.0]
    return (t([-5.0, -6.0, -4.0, -7.0], requires_grad), t([-5.5, -5.0, -4.2, -6.0]),
            torch.tensor([True, True, False, True]), t([2.0, 3.0, 4.0, 5.0]))


def test_npo_hand_values():
    policy, ref, forget, counts = npo_inputs()
    out = npo_loss(policy, ref, forget, counts, beta=0.5, retain_coef=0.7)
    # n = 4 items, 3 forget, 1 retain; each item's share of the objective:
    # forget: (4/3) * -(2/0.5) ls(-0.5 r); retain (item 2): (4/1) * 0.7 * 4 / 4
    f = 4 / 3
    assert_values(out.losses, [-f * 4 * math.log(sig(-0.25)), -f * 4 * math.log(sig(0.5)), 4 * 0.7,
                               -f * 4 * math.log(sig(0.5))])
    assert_values(out.chosen_rewards, [0.5 * 0.2])
    assert_values(out.rejected_rewards, [0.25, -0.5, -0.5])
    without_retain = npo_loss(policy, ref, forget, counts, beta=0.5)
    assert without_retain.losses[2].item() == 0.0


@pytest.mark.parametrize("n_forget, n_retain", [(5, 2), (2, 7), (1, 1), (6, 0)])
def test_npo_objective_is_the_sum_of_the_forget_and_retain_means(n_forget, n_retain):
    """NPO+RT (Zhang et al. 2024): E_forget[-(2/beta) ls(-beta r)] + c E_retain[NLL/token], whatever the counts."""
    generator = torch.Generator().manual_seed(n_forget * 10 + n_retain)
    n, beta, coef = n_forget + n_retain, 0.3, 0.8
    policy = -torch.rand(n, generator=generator, dtype=F64) * 20
    ref = policy + torch.randn(n, generator=generator, dtype=F64)
    counts = torch.randint(1, 30, (n,), generator=generator).to(F64)
    is_forget = torch.tensor([True] * n_forget + [False] * n_retain)
    forget_terms = [-(2 / beta) * math.log(sig(-beta * (p - r))) for p, r in zip(policy[:n_forget].tolist(),
                                                                             ref[:n_forget].tolist())]
    retain_terms = [-p / c for p, c in zip(policy[n_forget:].tolist(), counts[n_forget:].tolist())]
    expected = sum(forget_terms) / n_forget + (coef * sum(retain_terms) / n_retain if n_retain else 0.0)
    out = npo_loss(policy, ref, is_forget, counts, beta=beta, retain_coef=coef)
    assert out.losses.mean().item() == pytest.approx(expected, rel=1e-12)


def test_npo_is_dpo_without_the_chosen_term_scaled_by_2_over_beta():
    policy, ref, _, counts = npo_inputs()
    zeros = torch.zeros(4, dtype=F64)
    dpo = dpo_loss(PairLogps(zeros, policy, zeros, ref, counts, counts), beta=0.3).losses
    npo = npo_loss(policy, ref, torch.ones(4, dtype=torch.bool), counts, beta=0.3).losses
    assert_values(npo, (dpo * 2 / 0.3).tolist())


def test_npo_rejects_bad_inputs():
    policy, ref, forget, counts = npo_inputs()
    with pytest.raises(ValueError, match="bool"):
        npo_loss(policy, ref, forget.long(), counts)
    with pytest.raises(ValueError, match=r"\(n,\)"):
        npo_loss(policy, ref[:3], forget, counts)
    with pytest.raises(ValueError, match="retain_coef"):
        npo_loss(policy, ref, forget, counts, retain_coef=-1.0)


def test_npo_gradients_flow_only_where_weighted():
    policy, ref, forget, counts = npo_inputs(requires_grad=True)
    npo_loss(policy, ref, forget, counts, retain_coef=0.0).losses.sum().backward()
    assert policy.grad[2].item() == 0.0 and (policy.grad[forget] > 0).all()  # pushes negatives down


# ----------------------------------------------------------------------------- registry and gradients

FAMILY = ("fdpo", "ld_dpo", "sppo", "rainbow")


def test_family_is_registered_and_needs_the_reference():
    assert set(FAMILY) <= set(LOSSES)
    for name in FAMILY:
        with pytest.raises(ValueError, match="needs reference log-probs"):
            compute_loss(name, PairLogps(t([-1.0]), t([-2.0]), None, None, t([1.0]), t([1.0])), {})


@pytest.mark.parametrize("name, params", [("fdpo", {"divergence": "js_divergence"}), ("ld_dpo", {}), ("sppo", {}),
                                          ("rainbow", {"length_normalization": True, "contextual_scale": 1.0})])
def test_family_gradients_flow_and_rewards_are_detached(name, params):
    logps = hand_logps(requires_grad=True)
    out = compute_loss(name, logps, params, nll_coef=0.2)
    out.losses.sum().backward()
    assert torch.isfinite(logps.policy_chosen.grad).all() and logps.policy_rejected.grad.abs().sum() > 0
    assert not out.chosen_rewards.requires_grad and out.losses.shape == (3,)
    assert required_extras(name, params) == {"ld_dpo": TAIL_KEYS, "sppo": ("chosen_win_prob", "rejected_win_prob"),
                                             "rainbow": ("ref_entropy",)}.get(name, ())


def test_extras_are_shape_checked():
    with pytest.raises(ValueError, match="same"):
        hand_logps(extras={"chosen_win_prob": t([0.5])})


# ------------------------------------------------------------ TRL 1.16's DPOTrainer._compute_loss (stub)
# What is compared, exactly: TRL 1.16's private DPOTrainer._compute_loss, called unbound on a stub `self`
# (as in test_losses.py), with a float32 token-table LM for the policy and, for LD-DPO, a second table LM
# as the live reference model (precompute_ref_logps=False), so TRL itself splits both models' log-probs
# at the shared length. One pair per call; loss (and rewards where TRL logs the same ones) at relative
# difference <= 1e-5. f-DPO: loss only (TRL logs beta * log-ratio rewards for every divergence).
# Rainbow-PO: only its length-normalisation switch exists in TRL ("sigmoid_norm"). NPO: no TRL counterpart.

POLICY_TABLE = -torch.rand(16, generator=torch.Generator().manual_seed(10)) * 3 - 0.01
REF_TABLE = -torch.rand(16, generator=torch.Generator().manual_seed(11)) * 3 - 0.01
PAIRS = 4


class TableLM(torch.nn.Module):
    """Token id v has log-prob table[v] (float32), shaped like TRL's fused-LM-head output."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, **_: object) -> types.SimpleNamespace:
        log_probs = torch.where(labels[:, 1:] != -100, self.table[input_ids[:, 1:]], 0.0)
        zeros = torch.zeros_like(log_probs)
        return types.SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


@pytest.fixture(scope="module")
def batch():
    return token_batch(2 * PAIRS, seed=24)  # rows [chosen_0..3, rejected_0..3], completions of 1-5 tokens


def table_sums(batch: dict, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: summed completion log-prob, token count, and the log-prob beyond the pair's shared length."""
    mask = batch["completion_mask"][:, 1:].double()
    per_token = table.double()[batch["input_ids"][:, 1:]] * mask
    counts = mask.sum(1)
    shared = torch.minimum(counts[:PAIRS], counts[PAIRS:]).repeat(2)
    position = mask.cumsum(1)  # 1-based position of each completion token
    tail = (per_token * (position > shared[:, None])).sum(1)
    return per_token.sum(1), counts, tail


def our_logps(batch: dict) -> PairLogps:
    policy, counts, policy_tail = table_sums(batch, POLICY_TABLE)
    ref, _, ref_tail = table_sums(batch, REF_TABLE)
    c, r = slice(0, PAIRS), slice(PAIRS, 2 * PAIRS)
    extras = dict(zip(TAIL_KEYS, (policy_tail[c], policy_tail[r], ref_tail[c], ref_tail[r])))
    return PairLogps(policy[c], policy[r], ref[c], ref[r], counts[c], counts[r], extras=extras)


def trl_pair(batch: dict, pair: int, loss_type: str, beta: float, **options: object) -> tuple[float, float, float]:
    """TRL's loss and logged (chosen, rejected) rewards on pair `pair`, the reference a live table LM."""
    trl_dpo = trl_module("trl.trainer.dpo_trainer")
    rows = [pair, PAIRS + pair]
    inputs = {key: batch[key][rows] for key in ("input_ids", "attention_mask", "completion_mask")}
    settings = {"f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 0.5, "ld_alpha": None, **options}
    model = TableLM(POLICY_TABLE)  # a real module: TRL asks accelerate whether it is a PEFT model
    model.is_gradient_checkpointing = False
    stub = types.SimpleNamespace(
        model=model, ref_model=TableLM(REF_TABLE),
        args=types.SimpleNamespace(gradient_checkpointing_kwargs=None), accelerator=ACCELERATOR,
        aux_loss_enabled=False, precompute_ref_logps=False, _total_train_tokens=0, _tp_size=1,
        _metrics=defaultdict(lambda: defaultdict(list)), loss_types=[loss_type], loss_weights=[1.0], beta=beta,
        label_smoothing=0.0, use_weighting=False, **settings)
    loss = trl_dpo.DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)
    metrics = stub._metrics["train"]
    return loss.item(), metrics["rewards/chosen"][0], metrics["rewards/rejected"][0]


def assert_rel(actual, expected) -> None:
    torch.testing.assert_close(torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64),
                               rtol=1e-5, atol=0.0)


def test_trl_batch_has_pairs_of_unequal_length(batch):
    logps = our_logps(batch)  # guards LD-DPO and length normalisation: the tails must not all be 0
    assert bool((logps.chosen_tokens != logps.rejected_tokens).all())
    assert bool((logps.chosen_tokens > logps.rejected_tokens).any() and (logps.chosen_tokens < logps.rejected_tokens).any())


@pytest.mark.parametrize("divergence, alpha", [("forward_kl", 0.5), ("js_divergence", 0.5),
                                               ("alpha_divergence", 0.3), ("alpha_divergence", 0.8),
                                               ("reverse_kl", 0.5)])
def test_fdpo_matches_trl_f_divergence_type(batch, divergence, alpha):
    ours = fdpo_loss(our_logps(batch), beta=0.2, divergence=divergence, alpha=alpha)
    for pair in range(PAIRS):  # TRL's coefficient c is 1 - alpha (the paper's alpha)
        loss, _, _ = trl_pair(batch, pair, "sigmoid", 0.2, f_divergence_type=divergence, f_alpha_divergence_coef=1 - alpha)
        assert_rel(ours.losses[pair], loss)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_ld_dpo_matches_trl_ld_alpha(batch, alpha):
    ours = ld_dpo_loss(our_logps(batch), beta=0.1, alpha=alpha)
    for pair in range(PAIRS):
        loss, chosen, rejected = trl_pair(batch, pair, "sigmoid", 0.1, ld_alpha=alpha)
        assert_rel(ours.losses[pair], loss)
        assert_rel(ours.chosen_rewards[pair], chosen)
        assert_rel(ours.rejected_rewards[pair], rejected)


def test_sppo_with_hard_probabilities_matches_trl_sppo_hard(batch):
    logps = our_logps(batch)
    hard = PairLogps(*(getattr(logps, k) for k in ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected",
                                                    "chosen_tokens", "rejected_tokens")),
                     extras={"chosen_win_prob": torch.ones(PAIRS, dtype=F64),
                             "rejected_win_prob": torch.zeros(PAIRS, dtype=F64)})
    ours = sppo_loss(hard, beta=0.5)
    for pair in range(PAIRS):
        loss, chosen, rejected = trl_pair(batch, pair, "sppo_hard", 0.5)
        assert_rel(ours.losses[pair], loss)
        assert_rel(ours.chosen_rewards[pair], chosen)
        assert_rel(ours.rejected_rewards[pair], rejected)


def test_rainbow_length_normalisation_matches_trl_sigmoid_norm(batch):
    ours = rainbow_loss(our_logps(batch), beta=2.0, length_normalization=True)
    for pair in range(PAIRS):
        loss, _, _ = trl_pair(batch, pair, "sigmoid_norm", 2.0)  # TRL logs un-normalised rewards here
        assert_rel(ours.losses[pair], loss)
