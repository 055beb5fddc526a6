"""Drift figures pinned to hand-worked tables; findings on synthetic runs built to show them or not."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from dpo_eval.metrics.drift import (
    CheckpointDrift,
    Dispersion,
    cluster_covariance,
    cluster_wilson_interval,
    drift_findings,
    drift_speed,
    entropy_change,
    pair_drift,
    pair_slopes,
    response_drift,
    summarize_deltas,
    wilson_interval,
)
from dpo_eval.metrics.findings import Thresholds

NAN = float("nan")
Z95 = 1.959963984540054


def test_summarize_deltas_by_hand():
    s = summarize_deltas([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (s.n, s.mean, s.median) == (5, 4.0, 3.0)
    # var ddof 1 = (9 + 4 + 1 + 0 + 36) / 4 = 12.5; se = sqrt(12.5) / sqrt(5)
    assert s.se == pytest.approx(math.sqrt(12.5 / 5))
    # linear quantiles at position q * (n - 1): 0.2 -> 1.2, 1 -> 2, 2 -> 3, 3 -> 4, 3.8 -> 4 + 0.8 * 6
    assert s.quantiles == pytest.approx({"q05": 1.2, "q25": 2.0, "q50": 3.0, "q75": 4.0, "q95": 8.8})
    empty = summarize_deltas([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.quantiles["q50"])
    assert math.isnan(summarize_deltas([1.0]).se)


def test_summarize_deltas_clustered_by_prompt_by_hand():
    # prompts a: (1, 2, 3), b: (4,), c: (10,): totals T = 6, 4, 10, sizes 3, 1, 1; n = 5, mean = 20 / 5 = 4
    # T - mean * size = 6 - 12, 4 - 4, 10 - 4 = -6, 0, 6; se = sqrt(3 / 2 * (36 + 0 + 36)) / 5 = sqrt(108) / 5
    s = summarize_deltas([1.0, 2.0, 3.0, 4.0, 10.0], ["a", "a", "a", "b", "c"])
    assert (s.n, s.n_prompts, s.mean, s.median) == (5, 3, 4.0, 3.0)
    assert s.se == pytest.approx(math.sqrt(108) / 5)
    assert s.se > summarize_deltas([1.0, 2.0, 3.0, 4.0, 10.0]).se  # sqrt(12.5 / 5): a's rows are not 3 draws
    # one value per prompt: exactly the unclustered std (ddof 1) / sqrt(n)
    own = summarize_deltas([1.0, 2.0, 3.0, 4.0, 10.0], ["v", "w", "x", "y", "z"])
    assert own.se == pytest.approx(math.sqrt(12.5 / 5)) and own.n_prompts == 5
    assert math.isnan(summarize_deltas([1.0, 2.0], ["a", "a"]).se)  # one prompt: no SE


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    center = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2))
    return center - half, center + half


def test_wilson_interval():
    assert wilson_interval(8, 10) == pytest.approx(wilson_by_hand(8, 10))
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # textbook value
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(wilson_by_hand(0, 10)[1])
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(3, 2)


def test_cluster_wilson_interval_by_hand():
    # 6 pairs on 3 prompts: a (1, 1), b (1, 0), c (0, 0); p = 3 / 6 = 1/2
    # k_g - p n_g = 2 - 1, 1 - 1, 0 - 1 = 1, 0, -1; se_c^2 = 3/2 * 2 / 36 = 1/12
    # se_1^2 = p(1-p)/(n-1) = 1/20; deff = (1/12) / (1/20) = 5/3; n_eff = 6 / (5/3) = 3.6
    is_success, prompts = [1, 1, 1, 0, 0, 0], ["a", "a", "b", "b", "c", "c"]
    p, n_eff = 0.5, 3.6
    center = (p + Z95**2 / (2 * n_eff)) / (1 + Z95**2 / n_eff)
    half = Z95 / (1 + Z95**2 / n_eff) * math.sqrt(p * (1 - p) / n_eff + Z95**2 / (4 * n_eff**2))
    assert cluster_wilson_interval(is_success, prompts) == pytest.approx((center - half, center + half))
    assert cluster_wilson_interval(is_success, prompts)[0] < wilson_interval(3, 6)[0]  # wider than iid
    # one pair per prompt: exactly Wilson's interval, also at 0 and 1
    for k, n in ((3, 6), (0, 5), (5, 5), (1, 1)):
        ones = [1] * k + [0] * (n - k)
        assert cluster_wilson_interval(ones, [f"p{i}" for i in range(n)]) == pytest.approx(wilson_interval(k, n))
        assert cluster_wilson_interval(ones) == pytest.approx(wilson_interval(k, n))
    # deff floored at 1: prompts a (1, 0), b (1, 0) have k_g = p n_g, se_c = 0 -> n_eff = n = 4
    assert cluster_wilson_interval([1, 0, 1, 0], ["a", "a", "b", "b"]) == pytest.approx(wilson_interval(2, 4))
    # p = 0 with clusters: deff unknown, each prompt counts once (n_eff = P = 2)
    assert cluster_wilson_interval([0, 0, 0, 0], ["a", "a", "b", "b"]) == pytest.approx(wilson_interval(0, 2))
    assert all(math.isnan(x) for x in cluster_wilson_interval([], []))


def hand_pairs() -> pd.DataFrame:
    return pd.DataFrame({
        "policy_chosen_logp": [-10.0, -20.0, -5.0, -8.0, NAN],
        "ref_chosen_logp": [-12.0, -18.0, -5.5, -8.0, -3.0],
        "policy_rejected_logp": [-15.0, -30.0, -9.0, -20.0, -3.0],
        "ref_rejected_logp": [-14.0, -25.0, -9.0, -16.0, -3.0],
        "chosen_tokens": [10, 20, 5, 4, 1],
        "rejected_tokens": [5, 10, 3, 8, 1],
    })


def test_pair_drift_by_hand():
    frame = hand_pairs()
    before = frame.copy()
    d = pair_drift(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert (d.n, d.n_missing) == (4, 1)  # the NaN row is out
    # Δ chosen = 2, -2, 0.5, 0; per token 0.2, -0.1, 0.1, 0
    assert d.chosen.total.mean == pytest.approx(0.125) and d.chosen.per_token.mean == pytest.approx(0.05)
    # Δ rejected = -1, -5, 0, -4; per token -0.2, -0.5, 0, -0.5
    assert d.rejected.total.mean == pytest.approx(-2.5) and d.rejected.per_token.mean == pytest.approx(-0.3)
    assert d.rejected.total.median == pytest.approx(-2.5)
    # margin = 3, 3, 0.5, 4
    assert d.margin.mean == pytest.approx(2.625)
    # chosen fell on 1 of 4 (a Δ of exactly 0 did not fall)
    assert d.displacement_share == 0.25 and d.displacement_ci == pytest.approx(wilson_by_hand(1, 4))
    assert d.drop_ratio == pytest.approx(2.5 / 0.125)


def test_pair_drift_clusters_pairs_sharing_a_prompt():
    frame = hand_pairs()
    prompts = ["a", "a", "b", "b", "z"]  # the NaN row (prompt z) is left out with its prompt
    d = pair_drift(frame, prompts)
    assert (d.n, d.n_prompts) == (4, 2)
    # Δ chosen = 2, -2 (a), 0.5, 0 (b): totals 0, 0.5, sizes 2, 2; mean 0.125;
    # T - mean n = -0.25, 0.25; se = sqrt(2 * 0.125) / 4
    assert d.chosen.total.mean == pytest.approx(0.125) and d.chosen.total.se == pytest.approx(math.sqrt(0.25) / 4)
    # margin 3, 3 (a), 0.5, 4 (b): totals 6, 4.5; mean 2.625; T - mean n = 0.75, -0.75; se = sqrt(2 * 1.125) / 4
    assert d.margin.se == pytest.approx(math.sqrt(2.25) / 4) and d.margin.n_prompts == 2
    # fell: a (0, 1), b (0, 0): p = 1/4; k_g - p n_g = 0.5, -0.5; se_c^2 = 2 * 0.5 / 16 = 1/16
    # se_1^2 = (1/4)(3/4) / 3 = 1/16: deff = 1, n_eff = 4, Wilson(1, 4)
    assert d.displacement_ci == pytest.approx(wilson_interval(1, 4))
    # every pair its own prompt: the unclustered figures
    own, plain = pair_drift(frame, ["a", "b", "c", "d", "e"]), pair_drift(frame)
    assert own.n_prompts == plain.n_prompts == 4
    assert own.chosen.total.se == pytest.approx(plain.chosen.total.se)
    assert own.rejected.per_token.se == pytest.approx(plain.rejected.per_token.se)
    assert own.displacement_ci == pytest.approx(plain.displacement_ci)
    with pytest.raises(ValueError, match="one prompt id per row"):
        pair_drift(frame, ["a", "b"])


def test_pair_drift_displacement_ci_widens_when_prompts_repeat_their_pairs():
    # 10 prompts, 5 identical pairs each: 3 prompts displaced (all their pairs), 7 not. p = 0.3.
    # per prompt k_g - p n_g = 5 - 1.5 = 3.5 (x3), -1.5 (x7); sum of squares 3 * 12.25 + 7 * 2.25 = 52.5
    # se_c^2 = 10/9 * 52.5 / 2500 = 7/300; se_1^2 = 0.21 / 49; deff = (7/300) * 49 / 0.21 = 49/9
    # n_eff = 50 / (49/9) = 450/49 (about 9.2: the 10 prompts, not the 50 pairs)
    displaced = [1.0] * 15 + [0.0] * 35
    frame = pd.DataFrame({"policy_chosen_logp": [-11.0 if x else -9.0 for x in displaced],
                          "ref_chosen_logp": [-10.0] * 50, "policy_rejected_logp": [-12.0] * 50,
                          "ref_rejected_logp": [-10.0] * 50, "chosen_tokens": [5] * 50, "rejected_tokens": [5] * 50})
    prompts = [f"p{i // 5}" for i in range(50)]
    d = pair_drift(frame, prompts)
    n_eff = 450 / 49
    center = (0.3 + Z95**2 / (2 * n_eff)) / (1 + Z95**2 / n_eff)
    half = Z95 / (1 + Z95**2 / n_eff) * math.sqrt(0.21 / n_eff + Z95**2 / (4 * n_eff**2))
    assert d.displacement_share == pytest.approx(0.3)
    assert d.displacement_ci == pytest.approx((center - half, center + half))
    assert d.displacement_ci[1] - d.displacement_ci[0] > 1.8 * np.subtract(*wilson_interval(15, 50)[::-1])


def test_pair_drift_bad_input():
    with pytest.raises(ValueError, match=r"lacks columns \['chosen_tokens'\]"):
        pair_drift(hand_pairs().drop(columns="chosen_tokens"))
    with pytest.raises(ValueError, match="token counts must be > 0"):
        response_drift([1.0], [0.0], [0])


def test_drift_speed_by_hand():
    # with the reference: points (0, 0), (100, -1), (200, -3); x̄ = 100, ȳ = -4/3
    # slope = [(-100)(4/3) + 0 + (100)(-5/3)] / (100² + 100²) = -300 / 20000
    speed = drift_speed([200, 100], [-3.0, -1.0], [-9.0, -2.0])
    assert speed.n_points == 3 and speed.chosen_slope == pytest.approx(-0.015)
    # rejected: ȳ = -11/3: [(-100)(11/3) + (100)(-16/3)] / 20000 = -2700 / 20000
    assert speed.rejected_slope == pytest.approx(-0.045)
    assert speed.margin_slope == pytest.approx(-0.015 + 0.045) and speed.ratio == pytest.approx(3.0)
    alone = drift_speed([100, 200], [-1.0, -3.0], [0.0, 0.0], include_reference=False)
    assert alone.chosen_slope == pytest.approx(-2 / 100) and alone.rejected_slope == 0.0
    assert math.isnan(drift_speed([100], [-1.0], [-2.0], include_reference=False).chosen_slope)


def test_entropy_change_paired_and_unpaired():
    e = entropy_change([1.0, 2.0, 3.0], [2.0, 2.0, 4.0])
    # differences -1, 0, -1: mean -2/3, sd ddof 1 = sqrt(((1/3)² + (2/3)² + (1/3)²) / 2) = sqrt(1/3)
    assert e.is_paired and e.change == pytest.approx(-2 / 3)
    assert e.se == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    assert e.relative_change == pytest.approx(2.0 / (8 / 3) - 1)
    # relative change r - 1 with r = 2 / (8/3) = 0.75: residuals p - r q = 1 - 1.5, 2 - 1.5, 3 - 3 = -0.5, 0.5, 0
    # (mean 0): sd sqrt(0.5 / 2) = 0.5 -> SE 0.5 / sqrt 3 / (8/3)
    assert e.relative_change_se == pytest.approx(0.5 / math.sqrt(3) / (8 / 3))
    u = entropy_change([1.0, 3.0], [2.0, 2.0, 5.0])
    # Welch: var(1, 3) = 2, var(2, 2, 5) = 3 -> sqrt(2 / 2 + 3 / 3)
    assert not u.is_paired and u.change == pytest.approx(2.0 - 3.0) and u.se == pytest.approx(math.sqrt(2.0))
    # r = 2 / 3: sqrt(2 / 2 + (2/3)^2 * 3 / 3) / 3
    assert u.relative_change_se == pytest.approx(math.sqrt(1.0 + 4 / 9) / 3)


def make_pairs(rng: np.random.Generator, n: int, chosen_shift: float, rejected_shift: float) -> pd.DataFrame:
    ref_c, ref_r = rng.normal(-150.0, 20.0, n), rng.normal(-160.0, 20.0, n)
    return pd.DataFrame({
        "policy_chosen_logp": ref_c + rng.normal(chosen_shift, 1.0, n), "ref_chosen_logp": ref_c,
        "policy_rejected_logp": ref_r + rng.normal(rejected_shift, 1.0, n), "ref_rejected_logp": ref_r,
        "chosen_tokens": np.full(n, 100), "rejected_tokens": np.full(n, 100),
        "id": [f"pair{i}" for i in range(n)], "prompt_key": [f"p{i // 2}" for i in range(n)]})


def make_run(shifts, unseen_shift_per_token: float, policy_entropy: float,
             seed: int = 0) -> tuple[list[CheckpointDrift], list[pd.DataFrame]]:
    """The run's CheckpointDrifts and, in the same order, their pair frames (200 pairs, 2 per prompt)."""
    rng = np.random.default_rng(seed)
    run, frames = [], []
    for step, (chosen, rejected) in shifts:
        ref = rng.normal(-80.0, 10.0, 150)
        policy = ref + rng.normal(unseen_shift_per_token * 50, 0.5, 150)  # 50 tokens each
        samples = response_drift(policy, ref, np.full(150, 50))
        ent = entropy_change(rng.normal(policy_entropy, 0.05, 64), rng.normal(2.0, 0.05, 64))
        frames.append(make_pairs(rng, 200, chosen, rejected))
        run.append(CheckpointDrift(step, pair_drift(frames[-1], frames[-1]["prompt_key"]),
                                   Dispersion(reference_samples=samples, other_prompts=None, entropy=ent)))
    return run, frames


def test_a_healthy_run_raises_no_finding():
    # chosen up 2 nats, rejected down 3 (ratio 1.5 < 3); unseen samples move like chosen (+0.02/token)
    run, frames = make_run([(100, (1.0, -1.5)), (200, (2.0, -3.0))], unseen_shift_per_token=0.02,
                           policy_entropy=2.0)
    assert drift_findings(run, pairs=frames) == []


def test_a_suppressing_run_raises_its_findings():
    shifts = [(300, (-10.0, -60.0)), (100, (-2.0, -10.0)), (200, (-5.0, -25.0))]  # order does not matter
    run, frames = make_run(shifts, unseen_shift_per_token=0.0, policy_entropy=1.0)
    every = drift_findings(run, pairs=frames)
    found = {f.code: f for f in every}  # the last of each code: step 300's
    assert set(found) == {"likelihood_displacement", "drastic_drop", "degradation", "dispersion",
                          "dispersion_entropy"}
    # each checkpoint its own: displacement at every step, in step order
    assert [f.step for f in every if f.code == "likelihood_displacement"] == [100, 200, 300]
    ld = found["likelihood_displacement"]
    # every chosen fell (shift -10, sd 1): share 1, Wilson low of 200/200 above 0.5 -> high
    assert ld.severity == "high" and ld.step == 300 and ld.numbers["share"] == 1.0
    # |−60| / |−10| ≈ 6 at step 300
    assert found["drastic_drop"].numbers["ratio"] == pytest.approx(6.0, rel=0.05)
    deg = found["degradation"]
    assert deg.severity == "high" and deg.step == 300
    assert deg.numbers["chosen_slope"] < 0 and deg.numbers["rejected_slope"] < 0 < deg.numbers["margin_slope"]
    # unseen ≈ 0 per token, chosen ≈ -0.1 per token: gap ≈ +0.1 > 0.05
    assert found["dispersion"].numbers["gap"] == pytest.approx(0.1, abs=0.01)
    assert found["dispersion_entropy"].numbers["relative_change"] == pytest.approx(-0.5, abs=0.02)
    # loosened thresholds silence them
    loose = Thresholds(displacement_share=1.0, drastic_drop_ratio=10.0, min_drop_per_token=0.5,
                       dispersion_gap_per_token=0.5, entropy_relative_change=0.9)
    assert drift_findings(run, loose, frames) == []
    # no pair frames, no slopes' SEs: degradation is not tested
    assert "degradation" not in {f.code for f in drift_findings(run)}


def test_a_checkpoints_findings_do_not_depend_on_the_other_checkpoints():
    """Before: a finding was kept once per run, at the latest checkpoint where it fired, with that one's
    severity: a high at step 100 and a warning at step 200 read as one warning at 200."""
    run, frames = make_run([(100, (-10.0, -60.0)), (200, (-5.0, -25.0)), (300, (1.0, -1.5))],
                           unseen_shift_per_token=0.0, policy_entropy=1.0)
    together = drift_findings(run, pairs=frames)
    for ckpt in run:
        alone = [f for f in drift_findings([ckpt]) if f.code != "degradation"]
        assert [f for f in together if f.step == ckpt.step and f.code != "degradation"] == alone


def test_dispersion_and_entropy_need_their_ci_past_the_threshold():
    """A gap of 0.1 per token past a 0.05 threshold fires with a tight SE, not with a wide one."""
    run, _ = make_run([(100, (-10.0, -60.0))], unseen_shift_per_token=0.0, policy_entropy=1.0)  # chosen -0.1/token
    (ckpt,) = run
    tight = {f.code for f in drift_findings(run)}
    assert {"dispersion", "dispersion_entropy"} <= tight
    samples = ckpt.dispersion.reference_samples
    wide_per_token = dataclasses.replace(samples.per_token, se=0.05)  # gap CI ±0.1: reaches 0.05
    wide_entropy = dataclasses.replace(ckpt.dispersion.entropy, relative_change_se=0.3)  # ±0.59: reaches 0.2
    noisy = dataclasses.replace(ckpt, dispersion=Dispersion(
        reference_samples=dataclasses.replace(samples, per_token=wide_per_token), other_prompts=None,
        entropy=wide_entropy))
    assert not {"dispersion", "dispersion_entropy"} & {f.code for f in drift_findings([noisy])}


def test_cluster_covariance_by_hand():
    # prompts a: rows 0, 1; b: row 2. x = (1, 2, 6), y = (0, 2, 1); means 3, 1; sizes 2, 1
    # residual totals: x: 3 - 6 = -3, 6 - 3 = 3; y: 2 - 2 = 0, 1 - 1 = 0 -> cov 0
    codes = np.array([0, 0, 1])
    assert cluster_covariance(np.array([1.0, 2.0, 6.0]), np.array([0.0, 2.0, 1.0]), codes, 2) == pytest.approx(0.0)
    # y = (0, 2, 4): mean 2; residual totals 2 - 4 = -2, 4 - 2 = 2 -> 2/1 * ((-3)(-2) + 3*2) / 9 = 24/9
    assert cluster_covariance(np.array([1.0, 2.0, 6.0]), np.array([0.0, 2.0, 4.0]), codes, 2) == pytest.approx(24 / 9)
    x = np.array([1.0, 2.0, 6.0, 3.0])
    se = summarize_deltas(x, ["a", "a", "b", "c"]).se
    assert cluster_covariance(x, x, np.array([0, 0, 1, 2]), 3) == pytest.approx(se ** 2)


def test_pair_slopes_are_the_slope_of_the_mean_with_a_clustered_se_by_hand():
    # 4 pairs, 2 prompts, steps 10 and 20 (+ the reference at 0): x = 0, 10, 20, dx = -10, 0, 10, sxx = 200
    def frame(chosen, rejected):
        return pd.DataFrame({"id": ["a", "b", "c", "d"], "prompt_key": ["p", "p", "q", "q"],
                             "policy_chosen_logp": chosen, "ref_chosen_logp": [0.0] * 4,
                             "policy_rejected_logp": rejected, "ref_rejected_logp": [0.0] * 4,
                             "chosen_tokens": [5] * 4, "rejected_tokens": [5] * 4})

    first = frame([-1.0, -2.0, 0.0, -1.0], [-2.0, -4.0, -1.0, -3.0])
    second = frame([-2.0, -4.0, -2.0, -2.0], [-6.0, -8.0, -5.0, -7.0])
    got = pair_slopes([10, 20], [first, second])
    # per pair, slope = (10 * Δ_20) / 200 = Δ_20 / 20 (Δ at step 10 has dx 0)
    chosen = np.array([-2.0, -4.0, -2.0, -2.0]) / 20
    rejected = np.array([-6.0, -8.0, -5.0, -7.0]) / 20
    assert got.chosen_slope == pytest.approx(chosen.mean()) and got.rejected_slope == pytest.approx(rejected.mean())
    speed = drift_speed([10, 20], [-1.0, -2.5], [-2.5, -6.5])  # the checkpoints' mean Δs
    assert got.chosen_slope == pytest.approx(speed.chosen_slope)
    # clustered SE: prompt totals of (slope - mean): p: (-0.1 + 0.125) + (-0.2 + 0.125) = -0.05, q: +0.05
    se = math.sqrt(2 / 1 * (0.05 ** 2 + 0.05 ** 2)) / 4
    assert got.chosen_se == pytest.approx(se) and got.n_pairs == 4 and got.n_prompts == 2
    margin = chosen - rejected
    assert got.margin_slope == pytest.approx(margin.mean())
    # a pair missing at one checkpoint is left out of every slope
    gap = second.assign(policy_chosen_logp=[np.nan, -4.0, -2.0, -2.0])
    assert pair_slopes([10, 20], [first, gap]).n_pairs == 3


def test_degradation_needs_its_slopes_cis():
    shifts = [(100, (-2.0, -10.0)), (200, (-5.0, -25.0)), (300, (-10.0, -60.0))]
    run, frames = make_run(shifts, unseen_shift_per_token=0.0, policy_entropy=2.0)
    assert "degradation" in {f.code for f in drift_findings(run, pairs=frames)}
    # per-pair noise of sd 150: each pair's slope sd 150 / sqrt(50000) = 0.67, the mean's SE ~0.05 > the slope
    # -0.033 / 1.96: the chosen slope's CI reaches 0, no finding
    rng = np.random.default_rng(5)
    noisy = [f.assign(policy_chosen_logp=f["policy_chosen_logp"] + rng.normal(0, 150, len(f))) for f in frames]
    assert "degradation" not in {f.code for f in drift_findings(run, pairs=noisy)}
