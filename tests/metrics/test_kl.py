"""KL estimators: hand-worked values, exact KL of small categorical distributions, clustered SEs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import dpo_eval.metrics.kl as kl
from dpo_eval.metrics.kl import KLSummary, OffPolicyLogRatios, kl_from_samples, offpolicy_logratios

# Two categorical distributions on 5 outcomes, far enough apart that k2's bias is large.
P = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
Q = np.array([0.05, 0.1, 0.15, 0.3, 0.4])
EXACT_KL = float(np.sum(P * np.log(P / Q)))           # KL(p || q) = sum p log(p / q)
EXACT_K2 = float(np.sum(P * 0.5 * np.log(P / Q) ** 2))  # E_p[(log p/q)^2 / 2], what k2 converges to


def categorical_draws(n: int, seed: int) -> dict:
    """n samples y ~ P, each from its own prompt: logp = log P[y], ref = log Q[y], one token each."""
    y = np.random.default_rng(seed).choice(len(P), size=n, p=P)
    return {"prompt_id": np.arange(n), "policy_logp": np.log(P[y]), "ref_logp": np.log(Q[y]),
            "n_tokens": np.ones(n)}


def test_hand_worked_example_every_formula():
    # prompts a, a, b; logratio = policy - ref = (-3 - -4, -5 - -5, -2 - -3.5) = (1, 0, 1.5); tokens 2, 4, 5
    summary = kl_from_samples(["a", "a", "b"], [-3.0, -5.0, -2.0], [-4.0, -5.0, -3.5], [2, 4, 5],
                              analytic_kl=[0.8, 0.2, 1.0])
    k1, k2, k3, analytic = summary.k1, summary.k2, summary.k3, summary.analytic
    assert (k1.n_samples, k1.n_prompts) == (3, 2)
    # k1 = logratio: prompt means a (1 + 0) / 2 = 0.5, b 1.5 -> mean 1.0;
    # se = sqrt(((0.5 - 1)^2 + (1.5 - 1)^2) / (2 * 1)) = 0.5
    assert k1.mean == pytest.approx(1.0) and k1.se == pytest.approx(0.5)
    # iid: SD (ddof 1) of (1, 0, 1.5) / sqrt(3); mean 5/6, squared deviations sum 7/6, var 7/12
    assert k1.iid_se == pytest.approx(math.sqrt(7 / 12) / math.sqrt(3))
    # per token: (1/2, 0/4, 1.5/5) = (0.5, 0, 0.3): prompt means 0.25, 0.3 -> 0.275, se |0.3 - 0.25| / 2
    assert k1.per_token_mean == pytest.approx(0.275) and k1.per_token_se == pytest.approx(0.025)
    # ratio: T = (1, 1.5), N = (6, 5), R = 2.5 / 11; residuals T - R N = (-4/11, 4/11);
    # se = sqrt(2 / 1 * 2 * 16/121) / 11 = (8/11) / 11
    assert k1.per_token_ratio == pytest.approx(2.5 / 11) and k1.per_token_ratio_se == pytest.approx(8 / 121)
    # k2 = logratio^2 / 2 = (0.5, 0, 1.125): prompt means 0.25, 1.125 -> 0.6875
    assert k2.mean == pytest.approx((0.25 + 1.125) / 2)
    # k3 = e^r - 1 - r, r = -logratio = (-1, 0, -1.5): (e^-1, 0, e^-1.5 + 0.5)
    assert k3.mean == pytest.approx(((math.exp(-1) + 0) / 2 + math.exp(-1.5) + 0.5) / 2)
    assert k3.per_token_ratio == pytest.approx((math.exp(-1) + math.exp(-1.5) + 0.5) / 11)
    # analytic: prompt means (0.8 + 0.2) / 2 = 0.5, 1.0 -> 0.75, se 0.25
    assert analytic.name == "analytic" and analytic.mean == pytest.approx(0.75) and analytic.se == pytest.approx(0.25)


def test_k1_k3_unbiased_and_k2_biased_on_categorical():
    summary = kl_from_samples(**categorical_draws(40_000, seed=0))
    assert isinstance(summary, KLSummary) and summary.analytic is None
    for estimate in (summary.k1, summary.k3):
        assert abs(estimate.mean - EXACT_KL) < 4 * estimate.se, estimate.name
    k2 = summary.k2
    # E[k2] = 1.54 vs KL 1.08: the gap is ~75 SE at this n, and k2 converges to E[k2], not the KL
    assert abs(k2.mean - EXACT_KL) > 10 * k2.se
    assert abs(k2.mean - EXACT_K2) < 4 * k2.se
    # one sample per prompt: the cluster SE is the iid SE
    assert summary.k1.se == pytest.approx(summary.k1.iid_se)


def test_analytic_kl_without_variance_is_exact():
    draws = categorical_draws(500, seed=1)
    # one-token samples: the analytic per-sample KL is the full-distribution KL, whatever y was drawn
    summary = kl_from_samples(**draws, analytic_kl=np.full(500, EXACT_KL))
    assert summary.analytic.mean == pytest.approx(EXACT_KL, rel=1e-12)
    assert summary.analytic.se == pytest.approx(0.0, abs=1e-12)
    assert summary.analytic.se < summary.k1.se


def clustered_logratios(rng: np.random.Generator, n_prompts: int, per_prompt: int):
    """logratio = u_g + e_gi with u_g ~ N(0.5, 1), e ~ N(0, 1): samples of one prompt share u_g."""
    u = rng.normal(0.5, 1.0, n_prompts)
    prompt = np.repeat(np.arange(n_prompts), per_prompt)
    logratio = u[prompt] + rng.normal(0.0, 1.0, prompt.size)
    tokens = rng.integers(5, 60, prompt.size).astype(float)
    return prompt, logratio, tokens


def test_cluster_se_matches_the_spread_over_repetitions():
    # Var of the mean = (1 + 1/8) / 50 -> SD 0.150; naive iid SE ~ sqrt(2 / 400) = 0.071.
    rng = np.random.default_rng(2)
    means, ses, iid_ses, ratios, ratio_ses = [], [], [], [], []
    for _ in range(400):
        prompt, logratio, tokens = clustered_logratios(rng, n_prompts=50, per_prompt=8)
        k1 = kl_from_samples(prompt, logratio, np.zeros_like(logratio), tokens).k1
        means.append(k1.mean), ses.append(k1.se), iid_ses.append(k1.iid_se)
        ratios.append(k1.per_token_ratio), ratio_ses.append(k1.per_token_ratio_se)
    empirical = np.std(means, ddof=1)
    assert empirical == pytest.approx(math.sqrt(1.125 / 50), rel=0.1)
    assert np.mean(ses) == pytest.approx(empirical, rel=0.2)
    assert np.mean(iid_ses) < 0.6 * empirical  # the naive SE understates it by about half
    assert np.mean(ratio_ses) == pytest.approx(np.std(ratios, ddof=1), rel=0.2)


def test_offpolicy_logratios_by_hand_and_not_named_kl():
    # chosen log-ratios (-10 - -12, -8 - -8) = (2, 0), tokens (4, 2); rejected (-20 - -15, -9 - -10) = (-5, 1), tokens (5, 2)
    result = offpolicy_logratios([-10.0, -8.0], [-12.0, -8.0], [-20.0, -9.0], [-15.0, -10.0], [4, 2], [5, 2])
    assert isinstance(result, OffPolicyLogRatios) and (result.n, result.n_prompts) == (2, 2)
    assert result.chosen.mean == pytest.approx(1.0) and result.chosen.se == pytest.approx(1.0)  # |2 - 0| / 2
    assert result.chosen.per_token_mean == pytest.approx(0.25)  # (2/4 + 0/2) / 2
    assert result.rejected.mean == pytest.approx(-2.0) and result.rejected.se == pytest.approx(3.0)
    assert result.rejected.per_token_mean == pytest.approx((-1.0 + 0.5) / 2)
    # pairs sharing a prompt are one cluster
    shared = offpolicy_logratios([-10.0, -8.0], [-12.0, -8.0], [-20.0, -9.0], [-15.0, -10.0], [4, 2], [5, 2],
                                 prompt_id=["p", "p"])
    assert shared.n_prompts == 1 and shared.chosen.mean == pytest.approx(1.0) and math.isnan(shared.chosen.se)
    names = [f.name for cls in (OffPolicyLogRatios, kl.LogRatioStats) for f in dataclasses.fields(cls)]
    assert not any("kl" in name.lower() for name in names)
    assert "NOT a KL" in OffPolicyLogRatios.__doc__


def test_inputs_unmodified_and_lists_accepted():
    draws = categorical_draws(50, seed=3)
    copies = {name: value.copy() for name, value in draws.items()}
    from_arrays = kl_from_samples(**draws)
    for name, value in draws.items():
        np.testing.assert_array_equal(value, copies[name])
    from_lists = kl_from_samples(**{name: value.tolist() for name, value in draws.items()})
    assert from_lists == from_arrays


def test_k3_is_non_negative_and_k1_can_be_negative():
    per_sample = kl.schulman_estimates(np.array([-2.0, -0.1, 0.0, 0.3, 5.0]))
    assert np.all(per_sample["k3"] >= 0.0) and np.all(per_sample["k2"] >= 0.0)
    assert per_sample["k1"][0] < 0.0
    assert per_sample["k3"][0] == pytest.approx(math.exp(2.0) - 1.0 - 2.0)


def test_empty_and_single_prompt():
    empty = kl_from_samples([], [], [], [])
    assert empty.k1.n_samples == 0 and math.isnan(empty.k1.mean) and math.isnan(empty.k3.per_token_ratio)
    single = kl_from_samples(["p", "p"], [-1.0, -2.0], [-1.5, -2.0], [1, 1])
    assert single.k1.mean == pytest.approx(0.25) and math.isnan(single.k1.se)
    assert math.isnan(single.k1.per_token_ratio_se) and single.k1.per_token_ratio == pytest.approx(0.25)


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="ref_logp has shape"):
        kl_from_samples(["a", "b"], [-1.0, -2.0], [-1.0], [1, 1])
    with pytest.raises(ValueError, match="policy_logp is not finite at sample 1"):
        kl_from_samples(["a", "b"], [-1.0, np.nan], [-1.0, -1.0], [1, 1])
    with pytest.raises(ValueError, match="n_tokens must be > 0"):
        kl_from_samples(["a", "b"], [-1.0, -2.0], [-1.0, -1.0], [1, 0])
    with pytest.raises(ValueError, match="prompt_id is missing at sample 0"):
        kl_from_samples([None, "b"], [-1.0, -2.0], [-1.0, -1.0], [1, 1])
    with pytest.raises(ValueError, match="rejected_tokens must be > 0"):
        offpolicy_logratios([-1.0], [-1.0], [-1.0], [-1.0], [1], [0])
