"""Preference losses: values worked out by hand here, gradients, validation, and TRL 1.16's loss
formulas on identical log-probs (TRL's loss methods called on a stub, not its trainers; see below).

Hand data (float64), three pairs:
    pair   pc     rc     pr     rr    nc  nr   pc-rc  pr-rr   h = (pc-rc)-(pr-rr)   rc-pc
    0    -10.0  -11.0  -12.0  -11.5   4   5     1.0   -0.5         1.5             -1.0
    1     -8.0   -8.5   -7.0   -8.0   2   4     0.5    1.0        -0.5             -0.5
    2     -9.0   -8.0  -10.0   -7.0   5   2    -1.0   -3.0         2.0              1.0
"""

from __future__ import annotations

import math
import types
from collections import defaultdict

import pytest
import torch

from dpo_eval.train.losses import (
    LOSSES,
    REFERENCE_FREE,
    LossOutput,
    PairLogps,
    compute_loss,
    cpo_loss,
    dpo_loss,
    dpop_loss,
    hinge_loss,
    ipo_loss,
    kto_kl_estimate,
    kto_loss,
    nll_term,
    orpo_loss,
    rdpo_loss,
    simpo_loss,
)

F64 = torch.float64


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(values: list[float], requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=requires_grad)


def hand_logps(requires_grad: bool = False, with_ref: bool = True) -> PairLogps:
    return PairLogps(
        policy_chosen=t([-10.0, -8.0, -9.0], requires_grad), policy_rejected=t([-12.0, -7.0, -10.0], requires_grad),
        ref_chosen=t([-11.0, -8.5, -8.0]) if with_ref else None,
        ref_rejected=t([-11.5, -8.0, -7.0]) if with_ref else None,
        chosen_tokens=t([4.0, 2.0, 5.0]), rejected_tokens=t([5.0, 4.0, 2.0]),
    )


def assert_values(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, t(expected), rtol=1e-12, atol=1e-12)


def assert_dpo_family_rewards(out: LossOutput, beta: float) -> None:
    assert_values(out.chosen_rewards, [beta * 1.0, beta * 0.5, beta * -1.0])  # beta * (pc - rc)
    assert_values(out.rejected_rewards, [beta * -0.5, beta * 1.0, beta * -3.0])  # beta * (pr - rr)


# ---------------------------------------------------------------------------------------- hand values


def test_dpo_hand_values():
    out = dpo_loss(hand_logps(), beta=0.1)
    assert_values(out.losses, [-math.log(sig(0.1 * 1.5)), -math.log(sig(0.1 * -0.5)), -math.log(sig(0.1 * 2.0))])
    assert_dpo_family_rewards(out, 0.1)


def test_cdpo_hand_values():
    out = dpo_loss(hand_logps(), beta=0.1, label_smoothing=0.1)
    assert_values(out.losses, [-0.9 * math.log(sig(0.1 * h)) - 0.1 * math.log(sig(-0.1 * h)) for h in (1.5, -0.5, 2.0)])


def test_ipo_hand_values_are_length_normalised():
    # h_avg = (pc-rc)/nc - (pr-rr)/nr: 1/4 + 0.5/5 = 0.35; 0.5/2 - 1/4 = 0; -1/5 + 3/2 = 1.3; 1/(2*0.1) = 5
    out = ipo_loss(hand_logps(), beta=0.1)
    assert_values(out.losses, [(0.35 - 5) ** 2, (0.0 - 5) ** 2, (1.3 - 5) ** 2])
    assert_dpo_family_rewards(out, 0.1)


def test_hinge_hand_values():
    assert_values(hinge_loss(hand_logps(), beta=0.1).losses, [1 - 0.15, 1 + 0.05, 1 - 0.2])
    assert_values(hinge_loss(hand_logps(), beta=1.0).losses, [0.0, 1.5, 0.0])  # relu clips margins above 1


def test_rdpo_hand_values():
    # Park et al. 2024: L = -log sigmoid(beta log pi(y_w)/pi_ref(y_w) - beta log pi(y_l)/pi_ref(y_l)
    #                                     + alpha |y_w| - alpha |y_l|); beta = alpha = 0.1:
    # pair 0: 0.1*1.0 - 0.1*(-0.5) + 0.1*4 - 0.1*5 =  0.05
    # pair 1: 0.1*0.5 - 0.1*1.0    + 0.1*2 - 0.1*4 = -0.25
    # pair 2: 0.1*(-1) - 0.1*(-3)  + 0.1*5 - 0.1*2 =  0.5
    out = rdpo_loss(hand_logps(), beta=0.1, alpha=0.1)
    assert_values(out.losses, [-math.log(sig(0.05)), -math.log(sig(-0.25)), -math.log(sig(0.5))])
    assert_dpo_family_rewards(out, 0.1)
    assert_values(rdpo_loss(hand_logps(), beta=0.1, alpha=0.0).losses, dpo_loss(hand_logps()).losses.tolist())


def test_rdpo_gives_less_gradient_than_dpo_where_the_chosen_is_longer():
    """R-DPO's point: a pair whose chosen response is longer teaches less (its margin is partly length)."""
    def policy_grads(loss_fn, chosen_tokens, rejected_tokens, **kwargs) -> torch.Tensor:
        logps = PairLogps(t([-10.0, -8.0, -9.0], True), t([-12.0, -7.0, -10.0]), t([-11.0, -8.5, -8.0]),
                          t([-11.5, -8.0, -7.0]), t(chosen_tokens), t(rejected_tokens))
        loss_fn(logps, beta=0.1, **kwargs).losses.sum().backward()
        return logps.policy_chosen.grad.abs()  # |dL/dpc| = beta |dL/d(beta h)|: the gradient on h, times beta

    dpo = policy_grads(dpo_loss, [4.0, 2.0, 5.0], [5.0, 4.0, 2.0])
    chosen_longer = policy_grads(rdpo_loss, [9.0, 7.0, 8.0], [5.0, 4.0, 2.0], alpha=0.1)
    chosen_shorter = policy_grads(rdpo_loss, [1.0, 1.0, 1.0], [5.0, 4.0, 2.0], alpha=0.1)
    assert bool((chosen_longer < dpo).all()) and bool((chosen_shorter > dpo).all())


def test_dpop_hand_values():
    # relu(rc - pc) = [0, 0, 1]: only pair 2 (policy chosen below the reference) is penalised
    out = dpop_loss(hand_logps(), beta=0.1, lambda_=50.0)
    assert_values(out.losses, [-math.log(sig(0.1 * 1.5)), -math.log(sig(0.1 * -0.5)), -math.log(sig(0.1 * (2.0 - 50.0)))])
    assert_dpo_family_rewards(out, 0.1)


def test_nll_term_hand_values():
    assert_values(nll_term(hand_logps()), [10.0 / 4, 8.0 / 2, 9.0 / 5])


def test_simpo_hand_values():
    # pc/nc = [-2.5, -4, -1.8], pr/nr = [-2.4, -1.75, -5]; logits = 2*(avg_c - avg_r) - 0.5
    out = simpo_loss(hand_logps(with_ref=False), beta=2.0, gamma=0.5)
    assert_values(out.losses, [-math.log(sig(-0.7)), -math.log(sig(-5.0)), -math.log(sig(5.9))])
    assert_values(out.chosen_rewards, [2 * -2.5, 2 * -4.0, 2 * -1.8])
    assert_values(out.rejected_rewards, [2 * -2.4, 2 * -1.75, 2 * -5.0])
    smoothed = simpo_loss(hand_logps(), beta=2.0, gamma=0.5, label_smoothing=0.2)
    assert_values(smoothed.losses, [-0.8 * math.log(sig(x)) - 0.2 * math.log(sig(-x)) for x in (-0.7, -5.0, 5.9)])


def test_orpo_hand_values():
    def expected(ac: float, ar: float) -> float:
        log_odds = (ac - ar) - (math.log(1 - math.exp(ac)) - math.log(1 - math.exp(ar)))
        return -ac - 0.1 * math.log(sig(log_odds))

    out = orpo_loss(hand_logps(with_ref=False), beta=0.1)
    assert_values(out.losses, [expected(-2.5, -2.4), expected(-4.0, -1.75), expected(-1.8, -5.0)])
    assert_values(out.chosen_rewards, [0.1 * -2.5, 0.1 * -4.0, 0.1 * -1.8])
    assert_values(out.rejected_rewards, [0.1 * -2.4, 0.1 * -1.75, 0.1 * -5.0])


def test_orpo_is_stable_near_zero_mean_logp():
    logps = PairLogps(t([-1e-9]), t([-3.0]), None, None, t([1.0]), t([1.0]))
    assert torch.isfinite(orpo_loss(logps).losses).all()


def test_cpo_hand_values():
    # logits = 0.1*(pc - pr) = [0.2, -0.1, 0.1]; NLL = -pc/nc = [2.5, 4, 1.8]
    out = cpo_loss(hand_logps(with_ref=False), beta=0.1, bc_coef=1.0)
    assert_values(out.losses, [-math.log(sig(0.2)) + 2.5, -math.log(sig(-0.1)) + 4.0, -math.log(sig(0.1)) + 1.8])
    assert_values(out.chosen_rewards, [0.1 * -10.0, 0.1 * -8.0, 0.1 * -9.0])
    assert_values(out.rejected_rewards, [0.1 * -12.0, 0.1 * -7.0, 0.1 * -10.0])
    smoothed = cpo_loss(hand_logps(), beta=0.1, label_smoothing=0.1, bc_coef=0.0)
    assert_values(smoothed.losses, [-0.9 * math.log(sig(x)) - 0.1 * math.log(sig(-x)) for x in (0.2, -0.1, 0.1)])


def kto_inputs(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # r = policy - ref = [0.5, -1.0, 0.2, -1.0]
    policy = t([-5.0, -6.0, -4.0, -7.0], requires_grad)
    return policy, t([-5.5, -5.0, -4.2, -6.0]), torch.tensor([True, False, True, False])


def test_kto_hand_values():
    policy, ref, desirable = kto_inputs()
    out = kto_loss(policy, ref, desirable, torch.tensor(0.3, dtype=F64), beta=0.1, undesirable_weight=1.5)
    assert_values(out.losses, [1 - sig(0.1 * (0.5 - 0.3)), 1.5 * (1 - sig(0.1 * (0.3 + 1.0))),
                               1 - sig(0.1 * (0.2 - 0.3)), 1.5 * (1 - sig(0.1 * (0.3 + 1.0)))])
    assert_values(out.chosen_rewards, [0.1 * 0.5, 0.1 * 0.2])
    assert_values(out.rejected_rewards, [0.1 * -1.0, 0.1 * -1.0])


def test_kto_clamps_negative_kl_and_allows_one_sided_batches():
    policy, ref, desirable = kto_inputs()
    out = kto_loss(policy, ref, desirable, torch.tensor(-0.4, dtype=F64), beta=0.1)
    assert_values(out.losses, [1 - sig(0.05), 1 - sig(0.1), 1 - sig(0.02), 1 - sig(0.1)])
    only_desirable = kto_loss(policy, ref, torch.ones(4, dtype=torch.bool), torch.tensor(0.0, dtype=F64))
    assert only_desirable.rejected_rewards.shape == (0,) and only_desirable.chosen_rewards.shape == (4,)


def test_kto_kl_estimate_hand_values():
    # mean([-3 + 3.5, -4 + 3.9]) = mean([0.5, -0.1]) = 0.2; a negative mean clamps to 0
    assert kto_kl_estimate(t([-3.0, -4.0]), t([-3.5, -3.9])).item() == pytest.approx(0.2, rel=1e-12)
    assert kto_kl_estimate(t([-3.0, -4.0]), t([-2.0, -3.9])).item() == 0.0


# -------------------------------------------------------------------------- gradients and validation


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"ld_dpo", "sppo"}))  # those need extras: test_losses_family
def test_gradients_flow_and_rewards_are_detached(name):
    logps = hand_logps(requires_grad=True)
    out = compute_loss(name, logps, {}, nll_coef=0.2)
    out.losses.sum().backward()
    grads = torch.stack([logps.policy_chosen.grad, logps.policy_rejected.grad])
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    assert out.losses.shape == out.chosen_rewards.shape == out.rejected_rewards.shape == (3,)


def test_kto_gradients_flow():
    policy, ref, desirable = kto_inputs(requires_grad=True)
    kto_loss(policy, ref, desirable, torch.tensor(0.3, dtype=F64)).losses.sum().backward()
    assert torch.isfinite(policy.grad).all() and (policy.grad != 0).all()


@pytest.mark.parametrize("field, value, match", [
    ("policy_rejected", t([-1.0, -2.0]), "same"),
    ("ref_chosen", t([[-1.0, -2.0, -3.0]]), "1-D"),
    ("ref_rejected", None, "both"),
    ("rejected_tokens", t([5.0, 0.0, 2.0]), "at least one token"),
])
def test_pair_logps_rejects_bad_shapes(field, value, match):
    fields = vars(hand_logps()).copy()
    fields[field] = value
    with pytest.raises(ValueError, match=match):
        PairLogps(**fields)


def test_kto_rejects_bad_inputs():
    policy, ref, desirable = kto_inputs()
    kl = torch.tensor(0.1)
    with pytest.raises(ValueError, match="must all be"):
        kto_loss(policy, ref[:3], desirable, kl)
    with pytest.raises(ValueError, match="bool"):
        kto_loss(policy, ref, desirable.long(), kl)
    with pytest.raises(ValueError, match="scalar"):
        kto_loss(policy, ref, desirable, torch.zeros(2))
    with pytest.raises(ValueError, match="must both be"):
        kto_kl_estimate(policy, ref[:2])


@pytest.mark.parametrize("name", sorted(set(LOSSES) - REFERENCE_FREE))
def test_reference_based_loss_without_reference_raises(name):
    with pytest.raises(ValueError, match="needs reference log-probs"):
        compute_loss(name, hand_logps(with_ref=False), {})


@pytest.mark.parametrize("name", sorted(REFERENCE_FREE))
def test_reference_free_losses_ignore_reference(name):
    with_ref = compute_loss(name, hand_logps(), {}).losses
    assert_values(compute_loss(name, hand_logps(with_ref=False), {}).losses, with_ref.tolist())


def test_registry_contents():
    assert set(LOSSES) == {"dpo", "ipo", "hinge", "rdpo", "simpo", "orpo", "cpo", "dpop",
                           "fdpo", "ld_dpo", "sppo", "rainbow"}  # the last four: losses_family.py
    assert REFERENCE_FREE == {"simpo", "orpo", "cpo"}


def test_compute_loss_adds_nll_and_passes_params():
    out = compute_loss("dpo", hand_logps(), {"beta": 0.5, "label_smoothing": 0.1}, nll_coef=0.2)
    expected = [-0.9 * math.log(sig(0.5 * h)) - 0.1 * math.log(sig(-0.5 * h)) + 0.2 * nll
                for h, nll in ((1.5, 2.5), (-0.5, 4.0), (2.0, 1.8))]
    assert_values(out.losses, expected)


def test_compute_loss_errors_list_valid_choices():
    with pytest.raises(ValueError, match=r"unknown loss 'dp0'.*'cpo', 'dpo'"):
        compute_loss("dp0", hand_logps(), {})
    with pytest.raises(ValueError, match="kto_loss"):
        compute_loss("kto", hand_logps(), {})
    with pytest.raises(ValueError, match=r"\['gamma'\]: valid parameters are \['beta', 'label_smoothing'\]"):
        compute_loss("dpo", hand_logps(), {"gamma": 1.0})
    with pytest.raises(ValueError, match="nll_coef"):
        compute_loss("dpo", hand_logps(), {}, nll_coef=-1.0)


@pytest.mark.parametrize("kwargs, match", [({"beta": 0.0}, "beta"), ({"label_smoothing": 0.5}, "label_smoothing")])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dpo_loss(hand_logps(), **kwargs)


# ------------------------------------------------------------- TRL 1.16's loss code on identical log-probs
# What is compared, exactly: TRL 1.16's loss *methods* -- DPOTrainer._compute_loss and
# KTOTrainer._compute_loss (private), CPOTrainer.cpo_loss and ORPOTrainer.odds_ratio_loss -- called
# unbound with `self` a SimpleNamespace stub (the attributes they read) and, for the two
# _compute_loss, a token-table module standing in for the LM forward. So the loss formulas,
# rewards and the KTO z0 agree (relative difference <= 1e-5) on the same log-probs; TRL's trainers
# (data collation, truncation, batching, reduction, accelerate's cross-process gathering: the stub's
# gather is the identity) are not run. Only DPO (sigmoid) is compared end to end, through a real
# DPOTrainer's loss and gradients: test_trl_parity.py. These calls depend on TRL 1.16's private
# names and attributes, so they are skipped on another TRL version.
# R-DPO and DPOP have no TRL 1.16 implementation, so they rest on the hand values above.

TRL_VERSION = "1.16."


def trl_module(name: str):
    """Import a TRL module for the stub comparisons; skip unless TRL is 1.16.x (private API)."""
    trl = pytest.importorskip("trl")
    if not trl.__version__.startswith(TRL_VERSION):
        pytest.skip(f"the stub comparisons call TRL {TRL_VERSION}x private loss methods; TRL is {trl.__version__}")
    return pytest.importorskip(name)

VOCAB_LOGPS = -torch.rand(16, generator=torch.Generator().manual_seed(0), dtype=F64) * 3 - 0.01


class TokenTableLM(torch.nn.Module):
    """Stand-in for TRL's fused-LM-head forward: token id v has log-prob VOCAB_LOGPS[v].

    Returns `.log_probs` (rows, T-1): the next-token log-prob where labels != -100, else 0 (as the
    fused head does), plus zero `entropy`/`mean_logits` and false `is_top1`, read only for metrics.
    """

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, **_: object) -> types.SimpleNamespace:
        targets = labels[:, 1:]
        log_probs = torch.where(targets != -100, VOCAB_LOGPS[input_ids[:, 1:]], 0.0)
        zeros = torch.zeros_like(log_probs)
        return types.SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def token_batch(rows: int, seed: int, width: int = 9) -> dict[str, torch.Tensor]:
    """Random rows of [prompt (1-3 tokens) | completion (1-5 tokens) | padding], with masks."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(rows, width, dtype=torch.long)
    attention_mask, completion_mask = torch.zeros_like(input_ids), torch.zeros_like(input_ids)
    for row in range(rows):
        prompt, completion = (int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in ((1, 4), (1, 6)))
        input_ids[row, : prompt + completion] = torch.randint(1, len(VOCAB_LOGPS), (prompt + completion,), generator=gen)
        attention_mask[row, : prompt + completion] = 1
        completion_mask[row, prompt: prompt + completion] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def summed_logps(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed completion log-prob and completion token count, straight from VOCAB_LOGPS."""
    mask = batch["completion_mask"][:, 1:].to(F64)
    return (VOCAB_LOGPS[batch["input_ids"][:, 1:]] * mask).sum(1), mask.sum(1)


ACCELERATOR = types.SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)


def trainer_stub(**attributes: object) -> types.SimpleNamespace:
    """The attributes TRL's loss methods read from `self`, outside a real Trainer (no model, no accelerate)."""
    return types.SimpleNamespace(model=types.SimpleNamespace(training=True), accelerator=ACCELERATOR,
                                 aux_loss_enabled=False, precompute_ref_logps=True, _total_train_tokens=0,
                                 _tp_size=1, _metrics=defaultdict(lambda: defaultdict(list)), **attributes)


def assert_rel(actual: float | torch.Tensor, expected: float | torch.Tensor) -> None:
    torch.testing.assert_close(torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64),
                               rtol=1e-5, atol=0.0)


PAIRS = 4


@pytest.fixture(scope="module")
def pair_batch() -> tuple[dict[str, torch.Tensor], PairLogps]:
    batch = token_batch(2 * PAIRS, seed=1)  # rows [chosen_0..chosen_3, rejected_0..rejected_3]
    gen = torch.Generator().manual_seed(2)
    batch["ref_chosen_logps"], batch["ref_rejected_logps"] = (-torch.rand(2, PAIRS, generator=gen, dtype=F64) * 8)
    logps, tokens = summed_logps(batch)
    pair_logps = PairLogps(logps[:PAIRS], logps[PAIRS:], batch["ref_chosen_logps"], batch["ref_rejected_logps"],
                           tokens[:PAIRS], tokens[PAIRS:])
    return batch, pair_logps


def trl_dpo_pair(batch: dict[str, torch.Tensor], pair: int, loss_type: str, beta: float,
                 label_smoothing: float = 0.0) -> tuple[float, float, float]:
    """TRL DPOTrainer._compute_loss, unbound on a stub, on the one-pair batch `pair`:
    (loss, chosen reward, rejected reward)."""
    trl_dpo = trl_module("trl.trainer.dpo_trainer")
    rows = [pair, PAIRS + pair]
    inputs = {key: batch[key][rows] for key in ("input_ids", "attention_mask", "completion_mask")}
    inputs["ref_chosen_logps"] = batch["ref_chosen_logps"][pair: pair + 1]
    inputs["ref_rejected_logps"] = batch["ref_rejected_logps"][pair: pair + 1]
    stub = trainer_stub(loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=label_smoothing,
                        f_divergence_type="reverse_kl", ld_alpha=None, use_weighting=False)
    loss = trl_dpo.DPOTrainer._compute_loss(stub, TokenTableLM(), inputs, return_outputs=False)
    metrics = stub._metrics["train"]
    return loss.item(), metrics["rewards/chosen"][0], metrics["rewards/rejected"][0]


# (our loss, our kwargs, TRL loss_type, TRL beta, TRL label_smoothing)
DPO_TRAINER_CASES = [
    (dpo_loss, {"beta": 0.1}, "sigmoid", 0.1, 0.0),
    (dpo_loss, {"beta": 0.5}, "sigmoid", 0.5, 0.0),
    # TRL 1.16's "sigmoid" ignores label_smoothing (dpo_trainer.py ~l.1388): it is plain DPO ...
    (dpo_loss, {"beta": 0.1}, "sigmoid", 0.1, 0.2),
    # ... but its "aot" loss sorts the batch's margins and then applies cDPO; on a one-pair batch the
    # sort is the identity, so it is exactly cDPO: -(1-eps) ls(beta h) - eps ls(-beta h).
    (dpo_loss, {"beta": 0.1, "label_smoothing": 0.2}, "aot", 0.1, 0.2),
    (hinge_loss, {"beta": 0.1}, "hinge", 0.1, 0.0),
    (hinge_loss, {"beta": 2.0}, "hinge", 2.0, 0.0),
    (ipo_loss, {"beta": 0.1}, "ipo", 0.1, 0.0),
    (ipo_loss, {"beta": 1.0}, "ipo", 1.0, 0.0),
]


@pytest.mark.parametrize("loss_fn, kwargs, loss_type, beta, label_smoothing", DPO_TRAINER_CASES)
def test_matches_trl_dpo_compute_loss_on_a_stub(pair_batch, loss_fn, kwargs, loss_type, beta, label_smoothing):
    batch, logps = pair_batch
    ours = loss_fn(logps, **kwargs)
    for pair in range(PAIRS):
        loss, chosen_reward, rejected_reward = trl_dpo_pair(batch, pair, loss_type, beta, label_smoothing)
        assert_rel(ours.losses[pair], loss)
        assert_rel(ours.chosen_rewards[pair], chosen_reward)
        assert_rel(ours.rejected_rewards[pair], rejected_reward)


def test_stub_comparison_batch_has_varied_lengths(pair_batch):
    _, logps = pair_batch  # guards the IPO comparison: normalisation must matter
    assert len(set(logps.chosen_tokens.tolist()) | set(logps.rejected_tokens.tolist())) > 1


def cpo_stub(loss_type: str, beta: float, label_smoothing: float = 0.0, simpo_gamma: float = 0.5):
    return types.SimpleNamespace(loss_type=loss_type, beta=beta, label_smoothing=label_smoothing,
                                 simpo_gamma=simpo_gamma, alpha=0.0, accelerator=ACCELERATOR)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cpo_preference_term_matches_trl_cpo_loss_method(pair_batch, label_smoothing):
    # TRL adds its NLL from logits inside concatenated_forward (no tensor entry point): compare with
    # bc_coef=0 against cpo_loss, and check our NLL addend separately.
    cpo = trl_module("trl.experimental.cpo.cpo_trainer")
    _, logps = pair_batch
    trl_losses, trl_chosen, trl_rejected = cpo.CPOTrainer.cpo_loss(
        cpo_stub("sigmoid", 0.2, label_smoothing), logps.policy_chosen, logps.policy_rejected)
    ours = cpo_loss(logps, beta=0.2, label_smoothing=label_smoothing, bc_coef=0.0)
    assert_rel(ours.losses, trl_losses)
    assert_rel(ours.chosen_rewards, trl_chosen)
    assert_rel(ours.rejected_rewards, trl_rejected)
    with_nll = cpo_loss(logps, beta=0.2, label_smoothing=label_smoothing, bc_coef=0.7)
    assert_rel(with_nll.losses, trl_losses + 0.7 * (-logps.policy_chosen / logps.chosen_tokens))


@pytest.mark.parametrize("beta, gamma, label_smoothing", [(2.0, 0.5, 0.0), (2.5, 1.375, 0.0), (2.0, 0.5, 0.1)])
def test_simpo_matches_trl_cpo_loss_method_simpo(pair_batch, beta, gamma, label_smoothing):
    # TRL's CPOTrainer (loss_type="simpo") receives per-token-averaged log-probs; simpo_gamma is our gamma.
    cpo = trl_module("trl.experimental.cpo.cpo_trainer")
    _, logps = pair_batch
    trl_losses, trl_chosen, trl_rejected = cpo.CPOTrainer.cpo_loss(
        cpo_stub("simpo", beta, label_smoothing, simpo_gamma=gamma),
        logps.policy_chosen / logps.chosen_tokens, logps.policy_rejected / logps.rejected_tokens)
    ours = simpo_loss(logps, beta=beta, gamma=gamma, label_smoothing=label_smoothing)
    assert_rel(ours.losses, trl_losses)
    assert_rel(ours.chosen_rewards, trl_chosen)
    assert_rel(ours.rejected_rewards, trl_rejected)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_orpo_odds_ratio_term_matches_trl_odds_ratio_loss_method(pair_batch, beta):
    # TRL's odds_ratio_loss returns +beta*ls(log_odds) (its total is nll - mean of that), on averaged
    # log-probs, in float32. Its NLL comes from logits over prompt+response, so only the odds-ratio
    # term and the rewards are compared; our NLL addend is -pc/nc (pinned by the hand test).
    orpo = trl_module("trl.experimental.orpo.orpo_trainer")
    _, logps = pair_batch
    chosen_avg = logps.policy_chosen / logps.chosen_tokens
    trl_terms, trl_chosen, trl_rejected, _, _ = orpo.ORPOTrainer.odds_ratio_loss(
        types.SimpleNamespace(beta=beta, accelerator=ACCELERATOR), chosen_avg,
        logps.policy_rejected / logps.rejected_tokens)
    ours = orpo_loss(logps, beta=beta)
    assert_rel(ours.losses + chosen_avg, -trl_terms)
    assert_rel(ours.chosen_rewards, trl_chosen)
    assert_rel(ours.rejected_rewards, trl_rejected)


@pytest.mark.parametrize("kl_shift", [1.5, -1.5])  # positive KL estimate, and one TRL clamps to 0
def test_kto_matches_trl_kto_compute_loss_on_a_stub(kl_shift):
    kto = trl_module("trl.trainer.kto_trainer")
    n = 6
    batch = token_batch(n, seed=3)
    kl_batch = token_batch(n, seed=4)  # the mismatched (prompt, other completion) sequences
    gen = torch.Generator().manual_seed(5)
    policy_logps, _ = summed_logps(batch)
    policy_kl_logps, _ = summed_logps(kl_batch)
    inputs = {**batch, **{f"KL_{key}": value for key, value in kl_batch.items()},
              "label": torch.tensor([True, False, True, True, False, False]),
              "ref_logps": policy_logps + torch.randn(n, generator=gen, dtype=F64),
              "ref_KL_logps": policy_kl_logps - kl_shift + 0.1 * torch.randn(n, generator=gen, dtype=F64)}
    stub = trainer_stub(calculate_KL=True, loss_type="kto", beta=0.3, desirable_weight=1.0, undesirable_weight=1.33)
    stub._compute_kl_logps = types.MethodType(kto.KTOTrainer._compute_kl_logps, stub)
    trl_loss = kto.KTOTrainer._compute_loss(stub, TokenTableLM(), inputs, return_outputs=False)

    z0 = kto_kl_estimate(policy_kl_logps, inputs["ref_KL_logps"])
    ours = kto_loss(policy_logps, inputs["ref_logps"], inputs["label"], z0, beta=0.3, undesirable_weight=1.33)
    metrics = stub._metrics["train"]
    assert (z0.item() > 0) == (kl_shift > 0)
    assert_rel(z0, metrics["kl"][0])
    assert_rel(ours.losses.mean(), trl_loss)  # TRL only returns the mean (desirable items first)
    assert_rel(ours.chosen_rewards.mean(), metrics["rewards/chosen"][0])
    assert_rel(ours.rejected_rewards.mean(), metrics["rewards/rejected"][0])
