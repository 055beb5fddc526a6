"""Length figures pinned to formulas written out here; findings on runs built to show them, or not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dpo_eval.metrics.findings import Thresholds
from dpo_eval.metrics.length import (
    compare_lengths,
    lc_gap,
    length_findings,
    length_stats,
    pair_reward_length,
    sample_reward_length,
    spearman,
    win_rate_by_length,
)

NAN = float("nan")


def samples(prompt_ids, tokens, outputs=None, finish=None) -> pd.DataFrame:
    frame = pd.DataFrame({"prompt_id": prompt_ids, "n_tokens": tokens})
    if outputs is not None:
        frame["output"] = outputs
    if finish is not None:
        frame["finish_reason"] = finish
    return frame


def test_length_stats_by_hand():
    s = length_stats(samples(["a", "a", "b", "c"], [10, 20, 30, 100], ["x" * 5, "y" * 7, None, "z" * 11],
                             ["stop", "length", None, "length"]))
    assert (s.n, s.mean_tokens, s.median_tokens) == (4, 40.0, 25.0)
    assert (s.mean_chars, s.median_chars) == (pytest.approx(23 / 3), 7.0)  # chars 5, 7, 11 (None left out)
    assert s.truncated_share == pytest.approx(2 / 3) and s.n_finish_known == 3
    bare = length_stats(samples(["a"], [3]))
    assert math.isnan(bare.mean_chars) and math.isnan(bare.truncated_share) and bare.n_finish_known == 0


def pair_count_u(x, y) -> float:
    return sum((a > b) + 0.5 * (a == b) for a in x for b in y)


def test_compare_lengths_small_exact_tests():
    ck = samples(["p1", "p1", "p2", "p3"], [20, 30, 40, 50], finish=["stop", "length", "stop", "stop"])
    ref = samples(["p1", "p2", "p3", "p4", "p5"], [10, 12, 14, 16, 18], finish=["stop"] * 5)
    before = ck.copy()
    c = compare_lengths(ck, ref)
    pd.testing.assert_frame_equal(ck, before)
    # means 35 and 14; medians (30 + 40) / 2 = 35 and 14
    assert c.mean_tokens_ratio == pytest.approx(35 / 14) and c.median_tokens_ratio == pytest.approx(35 / 14)
    assert math.isnan(c.mean_chars_ratio)  # no output column
    # every checkpoint sample is longer: U = 4 * 5 = 20; exact two-sided p = 2 / C(9, 4)
    assert c.mannwhitney_u == pair_count_u(ck["n_tokens"], ref["n_tokens"]) == 20
    assert c.mannwhitney_p == pytest.approx(2 / math.comb(9, 4))
    # shared prompts p1, p2, p3: per-prompt means 25, 40, 50 vs 10, 12, 14 -> diffs 15, 28, 36
    assert c.n_paired_prompts == 3 and c.mean_paired_diff == pytest.approx((15 + 28 + 36) / 3)
    # all 3 differences positive: smaller rank sum 0, exact two-sided p = 2 / 2**3
    assert c.wilcoxon_statistic == 0.0 and c.wilcoxon_p == pytest.approx(2 / 8)
    assert c.checkpoint.truncated_share == 0.25 and c.reference.truncated_share == 0.0


def test_mann_whitney_normal_approximation_for_larger_samples():
    rng = np.random.default_rng(0)
    x, y = rng.permutation(np.arange(0, 40, 2)) + 1, rng.permutation(np.arange(0, 60, 2))  # no ties
    c = compare_lengths(samples([f"a{i}" for i in range(20)], x), samples([f"b{i}" for i in range(30)], y))
    n1, n2 = 20, 30
    u = pair_count_u(x, y)
    mu, sigma = n1 * n2 / 2, math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    z = (abs(u - mu) - 0.5) / sigma  # continuity correction
    assert c.mannwhitney_u == u and c.mannwhitney_p == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)
    assert c.n_paired_prompts == 0 and math.isnan(c.wilcoxon_p)  # no shared prompt


def test_wilcoxon_nan_when_every_paired_difference_is_zero():
    c = compare_lengths(samples(["a", "b"], [5, 7]), samples(["a", "b"], [5, 7]))
    assert c.n_paired_prompts == 2 and math.isnan(c.wilcoxon_statistic) and c.mean_paired_diff == 0.0


def spearman_by_hand(x, y):
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()  # average ranks for ties
    r = np.corrcoef(rx, ry)[0, 1]
    n = len(x)
    t = r * math.sqrt((n - 2) / (1 - r * r))
    return r, 2 * stats.t.sf(abs(t), n - 2)


def test_spearman_by_hand():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 1.0, 4.0, 3.0, 3.0, 9.0]
    r, p = spearman_by_hand(x, y)
    c = spearman(x, y)
    assert c.n == 6 and c.rho == pytest.approx(r) and c.p_value == pytest.approx(p)
    assert spearman([1.0, 2.0, NAN, 4.0], [1.0, 2.0, 3.0, 5.0]).n == 3  # the NaN pair is out
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).rho)  # constant
    assert math.isnan(spearman([1.0, 2.0], [1.0, 2.0]).rho)  # n < 3


def test_pair_and_sample_reward_length():
    pairs = pd.DataFrame({"reward_chosen": [0.5, 1.0, 0.2, 0.9], "reward_rejected": [0.1, -0.2, 0.3, 0.0],
                          "chosen_tokens": [50, 90, 20, 70], "rejected_tokens": [40, 30, 60, 10]})
    got = pair_reward_length(pairs)
    r, p = spearman_by_hand([0.5, 1.0, 0.2, 0.9, 0.1, -0.2, 0.3, 0.0], [50, 90, 20, 70, 40, 30, 60, 10])
    assert got.responses.n == 8
    assert got.responses.rho == pytest.approx(r) and got.responses.p_value == pytest.approx(p)
    # margins 0.4, 1.2, -0.1, 0.9 against token differences 10, 60, -40, 60
    r, p = spearman_by_hand([0.4, 1.2, -0.1, 0.9], [10, 60, -40, 60])
    assert got.margins.rho == pytest.approx(r) and got.margins.p_value == pytest.approx(p)
    s = pd.DataFrame({"policy_logp": [-10.0, -20.0, -5.0, -40.0], "ref_logp": [-12.0, -25.0, -5.0, -30.0],
                      "n_tokens": [10, 30, 5, 20]})
    r, _ = spearman_by_hand([2.0, 5.0, 0.0, -10.0], [10, 30, 5, 20])
    assert sample_reward_length(s).rho == pytest.approx(r)
    with pytest.raises(ValueError, match="ref_logp"):
        sample_reward_length(s.drop(columns="ref_logp"))


def judgments(diffs, prefs) -> pd.DataFrame:
    return pd.DataFrame({"model": "m", "preference": prefs, "length_baseline": 100.0,
                         "length_model": 100.0 + np.asarray(diffs, dtype=float)})


def test_win_rate_by_length_quantile_buckets_by_hand():
    diffs = [-30, -20, -10, 0, 10, 20, 30, 40, 5]
    prefs = [0.0, 0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, NAN]  # the unscored row is out
    buckets = win_rate_by_length(judgments(diffs, prefs), n_buckets=2)
    # scored diffs -30..40 (8 values): median at position 3.5 -> (0 + 10) / 2 = 5
    assert [(b.low, b.high, b.n) for b in buckets] == [(-30, 5, 4), (5, 40, 4)]
    assert buckets[0].win_rate == pytest.approx(1.5 / 4) and buckets[1].win_rate == 1.0
    assert buckets[0].mean_length_diff == pytest.approx(-15.0)
    assert buckets[0].se == pytest.approx(np.std([0, 0, 1, 0.5], ddof=1) / 2) and buckets[1].se == 0.0


def test_win_rate_by_length_se_clusters_judgments_of_one_prompt():
    # one bucket of 6 judgments on prompts a (1, 1, 1), b (0,), c (0, 1): w = 4/6 = 2/3
    # S_g - w n_g = 3 - 2, 0 - 2/3, 1 - 4/3 = 1, -2/3, -1/3; sum of squares = 1 + 4/9 + 1/9 = 14/9
    # se = sqrt(3/2 * 14/9) / 6 = sqrt(7/3) / 6
    frame = judgments([1, 2, 3, 4, 5, 6], [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]).assign(prompt_id=list("aaabcc"))
    [bucket] = win_rate_by_length(frame, n_buckets=1)
    assert bucket.win_rate == pytest.approx(2 / 3) and bucket.se == pytest.approx(math.sqrt(7 / 3) / 6)
    # a prompt per judgment: std (ddof 1) / sqrt(n), as without prompt ids
    [own] = win_rate_by_length(frame.assign(prompt_id=list("uvwxyz")), n_buckets=1)
    [bare] = win_rate_by_length(frame.drop(columns="prompt_id"), n_buckets=1)
    iid = np.std([1, 1, 1, 0, 0, 1], ddof=1) / math.sqrt(6)
    assert own.se == pytest.approx(iid) and bare.se == pytest.approx(iid)


def test_win_rate_by_length_fixed_bins_and_edge_cases():
    frame = judgments([-50, -5, 0, 5, 50, 500], [0.0, 0.2, 0.4, 0.6, 1.0, 1.0])
    buckets = win_rate_by_length(frame, bins=[-100, 0, 100])
    # (-100, 0] holds -50, -5, 0 (right-closed); (0, 100] holds 5, 50; 500 is outside
    assert [b.n for b in buckets] == [3, 2]
    assert buckets[0].win_rate == pytest.approx(0.2) and buckets[1].win_rate == pytest.approx(0.8)
    same = win_rate_by_length(judgments([7, 7, 7], [1.0, 0.0, 1.0]), n_buckets=4)
    assert len(same) == 1 and same[0].n == 3 and same[0].win_rate == pytest.approx(2 / 3)
    assert win_rate_by_length(judgments([], [])) == []
    with pytest.raises(ValueError, match="pass one model's rows"):
        win_rate_by_length(pd.concat([frame, frame.assign(model="other")]))
    with pytest.raises(ValueError, match="strictly increasing"):
        win_rate_by_length(frame, bins=[0, 0, 1])


def test_lc_gap_figure():
    g = lc_gap(0.70, (0.65, 0.75), 0.55, (0.50, 0.60), (0.08, 0.22), 1.8)
    assert g.gap == pytest.approx(0.15) and g.threshold == Thresholds().lc_gap
    assert g.exceeds_threshold and g.cis_disjoint and g.gap_ci_excludes_zero
    assert g.gap_ci == (0.08, 0.22) and g.direction == "helped by longer answers"
    quiet = lc_gap(0.70, (0.60, 0.80), 0.66, (0.58, 0.74), (-0.01, 0.09), 0.5, threshold=0.05)
    assert not quiet.exceeds_threshold and not quiet.cis_disjoint and not quiet.gap_ci_excludes_zero
    assert quiet.direction == "helped by shorter answers"


def test_length_findings_fire_on_an_inflated_run_and_not_on_a_steady_one():
    rng = np.random.default_rng(3)
    ids = [f"p{i}" for i in range(100)]
    ref = samples(ids, rng.integers(80, 120, 100), finish=["stop"] * 100)
    long_tokens = rng.integers(150, 256, 100)
    inflated = samples(ids, long_tokens, finish=np.where(long_tokens >= 230, "length", "stop"))
    gap = lc_gap(0.72, (0.66, 0.78), 0.52, (0.45, 0.59), (0.12, 0.28), 1.9)
    found = length_findings(compare_lengths(inflated, ref), gap, step=9)
    assert [f.code for f in found] == ["length_inflation", "lc_gap"]
    assert found[0].severity == "high" and found[0].step == 9  # ~25% truncated against 0%
    steady = samples(ids, rng.integers(80, 120, 100), finish=["stop"] * 100)
    assert length_findings(compare_lengths(steady, ref), lc_gap(0.52, (0.45, 0.59), 0.51, (0.44, 0.58),
                                                                             (-0.02, 0.04), 1.0)) == []


def _grouped(means: list[float], per_prompt: int = 4) -> pd.DataFrame:
    """per_prompt samples per prompt p0, p1, ...: prompt i's lengths means[i] - 3, -1, +1, +3 (mean means[i])."""
    offsets = [-3, -1, 1, 3][:per_prompt]
    ids = [f"p{i}" for i, _ in enumerate(means) for _ in offsets]
    return samples(ids, [m + o for m in means for o in offsets])


def test_length_inflation_uses_the_prompt_paired_test_not_mann_whitney():
    # 5 prompts, 4 samples each; every checkpoint sample longer than every reference sample (150 vs 100).
    ref = _grouped([100, 101, 102, 103, 104])
    ck = _grouped([150, 152, 154, 156, 158])
    c = compare_lengths(ck, ref)
    assert c.mannwhitney_p < 1e-6  # 20 vs 20 samples as if independent: "significant"
    # paired by prompt: d = 50, 51, 52, 53, 54, all > 0 with distinct |d|: signed-rank statistic
    # min(W+, W-) = W- = 0, exact two-sided p = 2 * P(W- = 0) = 2 / 2^5 = 1/16 > 0.05
    assert c.n_paired_prompts == 5 and c.mean_paired_diff == pytest.approx(52.0)
    assert c.wilcoxon_statistic == 0.0 and c.wilcoxon_p == pytest.approx(1 / 16)
    assert c.mean_tokens_ratio == pytest.approx(154 / 102)  # > 1.2
    assert length_findings(c) == []
    # a sixth prompt: p = 2 / 2^6 = 1/32 < 0.05 -> fires, with the paired p and the prompts in the finding
    six = compare_lengths(_grouped([150, 152, 154, 156, 158, 160]), _grouped([100, 101, 102, 103, 104, 105]))
    assert six.wilcoxon_p == pytest.approx(1 / 32)
    [found] = length_findings(six)
    assert found.numbers["p_value"] == pytest.approx(1 / 32) and found.numbers["n_paired_prompts"] == 6.0
    assert "paired by prompt" in found.message


def test_length_inflation_fires_on_a_paired_rise_mann_whitney_misses():
    # 10 prompts of very different lengths (50 .. 950); the checkpoint answers each 1.3x as long
    ref_means = [50 + 100 * i for i in range(10)]
    ref, ck = _grouped(ref_means), _grouped([1.3 * m for m in ref_means])
    c = compare_lengths(ck, ref)
    assert c.mannwhitney_p > 0.05  # pooled over prompts the spread hides the rise
    # every per-prompt difference 0.3 * m > 0 and distinct: W- = 0, exact p = 2 / 2^10
    assert c.wilcoxon_statistic == 0.0 and c.wilcoxon_p == pytest.approx(2 / 2 ** 10)
    [found] = length_findings(c)
    assert found.code == "length_inflation" and found.numbers["mean_ratio"] == pytest.approx(1.3)


def test_paired_ratio_and_truncation_rise_by_hand():
    """Over the prompts both have: R = mean(y_p) / mean(x_p), SE = sqrt(sum (y_p - R x_p)^2 / (P (P - 1))) /
    mean(x_p); the truncation rise is the mean of per-prompt share differences, SE std(ddof 1) / sqrt P."""
    ck = samples(["a", "a", "b", "c", "z"], [10, 30, 40, 60, 999], finish=["stop", "length", "length", "stop", "stop"])
    ref = samples(["a", "b", "c"], [10, 20, 30], finish=["stop", "stop", "length"])
    c = compare_lengths(ck, ref)
    y, x = np.array([20.0, 40.0, 60.0]), np.array([10.0, 20.0, 30.0])  # "z" is not shared
    ratio = y.mean() / x.mean()
    assert c.paired_ratio == pytest.approx(2.0) and ratio == pytest.approx(2.0)
    se = math.sqrt(np.sum((y - ratio * x) ** 2) / (3 * 2)) / x.mean()
    assert se == 0.0 and c.paired_ratio_ci == pytest.approx((2.0, 2.0))
    d = np.array([0.5 - 0.0, 1.0 - 0.0, 0.0 - 1.0])  # a: 1 of 2 truncated vs 0; b: 1 vs 0; c: 0 vs 1
    assert c.truncation_rise == pytest.approx(d.mean())
    assert c.truncation_rise_se == pytest.approx(np.std(d, ddof=1) / math.sqrt(3))
    noisy = compare_lengths(samples(["a", "b", "c"], [25, 40, 50]), ref)
    y = np.array([25.0, 40.0, 50.0])
    r = y.mean() / x.mean()
    half = 1.959963984540054 * math.sqrt(np.sum((y - r * x) ** 2) / 6) / x.mean()
    assert noisy.paired_ratio_ci == pytest.approx((r - half, r + half))
    assert math.isnan(noisy.truncation_rise) and math.isnan(noisy.truncation_rise_se)  # no finish reasons
