"""Length-controlled win rate (Dubois et al. 2024): planted-parameter recovery and exact invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from scipy.special import expit

import dpo_eval.metrics.length_control as length_control
from dpo_eval.metrics.length_control import (
    bootstrap_lc_intervals,
    bootstrap_lc_win_rates,
    fit_length_control,
    lc_win_rate,
)

THETA = (-0.8, 0.0, 0.6)
PHI = (2.5, 2.5, -2.0)      # a strong length effect: the raw win rate is far from the zero-length one
SHIFT = (200.0, 120.0, -150.0)  # mean length difference per model (characters)


def simulate(n_prompts: int, seed: int, *, n_models: int = 3, soft: bool = False):
    """A judgments frame drawn from the LC model itself, and each model's true zero-length win rate.

    gamma_i ~ N(0, 1) (the prior the default gamma_l2 = 1 assumes); length differences are
    SHIFT_m + N(0, 300^2), so zero difference lies inside every model's data. The preference is the
    true probability (soft) or a Bernoulli draw of it. Truth: mean_i sigmoid(theta_m + gamma_i).
    """
    rng = np.random.default_rng(seed)
    gamma = rng.normal(0.0, 1.0, n_prompts)
    length_baseline = rng.gamma(4.0, 100.0, n_prompts)
    diffs = [SHIFT[m] + rng.normal(0.0, 300.0, n_prompts) for m in range(n_models)]
    scale = np.concatenate(diffs).std()
    frames, truth = [], {}
    for m, diff in enumerate(diffs):
        p = expit(THETA[m] + PHI[m] * np.tanh(diff / scale) + gamma)
        frames.append(pd.DataFrame({
            "model": f"m{m}", "prompt_id": [f"p{i}" for i in range(n_prompts)],
            "preference": p if soft else rng.binomial(1, p).astype(float),
            "length_model": length_baseline + diff, "length_baseline": length_baseline}))
        truth[f"m{m}"] = float(np.mean(expit(THETA[m] + gamma)))
    return pd.concat(frames, ignore_index=True), truth


def assert_recovers(frame: pd.DataFrame, truth: dict, tolerance: float):
    fit = fit_length_control(frame)
    assert fit.converged and fit.n == len(frame)
    for model, true_rate in truth.items():
        raw = frame.loc[frame["model"] == model, "preference"].mean()
        assert abs(raw - true_rate) > 0.05, f"{model}: the simulation should bias the raw win rate"
        assert abs(lc_win_rate(fit, model) - true_rate) < tolerance, model


def test_recovers_planted_zero_length_win_rate_soft_labels():
    # A judge reporting the true probability: the only error is the fit's (gamma shrunk by its
    # prior with 3 rows per prompt); over seeds its SD is ~0.005, so 0.02 is ~4 SD.
    frame, truth = simulate(400, seed=1, soft=True)
    assert_recovers(frame, truth, tolerance=0.02)


def test_recovers_planted_zero_length_win_rate_bernoulli_labels():
    # 0/1 verdicts. Separating theta from phi costs variance: over seeds the LC error has
    # SD ~ 0.6 / sqrt(n_prompts) (~0.03 at 400 prompts, more than the raw mean's ~0.023).
    # At 9,000 prompts the SD is ~0.0062 (30 seeds), so 0.02 is ~3.2 SD. (Kept under 10,000
    # parameters: above that OpenBLAS threads L-BFGS-B's vector ops, which crawls on a busy machine.)
    frame, truth = simulate(9_000, seed=2)
    assert_recovers(frame, truth, tolerance=0.02)


def test_one_model_reduces_gracefully():
    # One row per prompt: gamma is held by its prior alone. Over seeds, error SD ~0.013 at 2,000
    # prompts (0.05 is ~3.8 SD), while the raw win rate is ~0.17 off.
    frame, truth = simulate(2_000, seed=3, n_models=1)
    fit = fit_length_control(frame)
    lc, raw = lc_win_rate(fit, "m0"), frame["preference"].mean()
    assert fit.converged and set(fit.theta) == {"m0"}
    assert abs(lc - truth["m0"]) < 0.05 and abs(raw - truth["m0"]) > 0.1
    tiny = fit_length_control(frame.head(3))
    assert 0.0 < lc_win_rate(tiny, "m0") < 1.0 and tiny.converged


def test_no_length_difference_gives_the_raw_win_rate():
    # tanh(0) = 0 leaves phi without data, so its penalty puts it at 0; theta is unpenalised, so at the
    # optimum sum_rows (p - sigmoid(theta_m + gamma_i)) = 0 per model, and with one row per prompt the
    # LC rate mean_i sigmoid(theta_m + gamma_i) equals the raw mean preference.
    frame = pd.DataFrame({"model": ["a", "a", "a", "a", "b", "b", "b", "b"],
                          "prompt_id": ["p1", "p2", "p3", "p4"] * 2,
                          "preference": [1.0, 0.0, 0.5, 1.0, 0.0, 0.25, 1.0, 0.0],
                          "length_model": 100.0, "length_baseline": 100.0})
    fit = fit_length_control(frame)
    assert fit.length_scale == 1.0  # std of the difference is 0: guarded
    assert lc_win_rate(fit, "a") == pytest.approx((1 + 0 + 0.5 + 1) / 4, abs=1e-5)
    assert lc_win_rate(fit, "b") == pytest.approx((0 + 0.25 + 1 + 0) / 4, abs=1e-5)
    assert fit.phi["a"] == pytest.approx(0.0, abs=1e-6)


def test_constant_length_difference_carries_no_length_information():
    # Every difference 50: std 0, scale 1, tanh(50) = 1 for every row, confounded with theta; the phi
    # penalty (theta is free) resolves it at phi = 0, so LC = raw again. That direction's curvature is
    # only phi_l2 = 0.01, so the optimiser stops near, not at, 0: phi ~1e-4 moves the rate by ~2e-5.
    frame = pd.DataFrame({"model": "a", "prompt_id": ["p1", "p2", "p3"], "preference": [1.0, 1.0, 0.0],
                          "length_model": 150.0, "length_baseline": 100.0})
    fit = fit_length_control(frame)
    assert fit.length_scale == 1.0 and fit.phi["a"] == pytest.approx(0.0, abs=1e-3)
    assert lc_win_rate(fit, "a") == pytest.approx(2 / 3, abs=1e-4)


def test_unscored_rows_and_missing_lengths_are_left_out():
    frame, _ = simulate(50, seed=4, n_models=2)
    extra = pd.DataFrame({"model": ["m0", "m1"], "prompt_id": ["x", "p0"], "preference": [np.nan, 1.0],
                          "length_model": [10.0, np.nan], "length_baseline": [5.0, 5.0]})
    with_extra = pd.concat([frame, extra], ignore_index=True)
    before = with_extra.copy()
    fit, base = fit_length_control(with_extra), fit_length_control(frame)
    pd.testing.assert_frame_equal(with_extra, before)  # input untouched
    assert fit.n == base.n == len(frame) and "x" not in fit.gamma
    assert lc_win_rate(fit, "m0") == pytest.approx(lc_win_rate(base, "m0"), abs=1e-9)


def test_empty_input():
    empty = pd.DataFrame(columns=list(length_control.REQUIRED_COLUMNS))
    fit = fit_length_control(empty)
    assert fit.n == 0 and fit.theta == {} and fit.gamma == {}
    with pytest.raises(KeyError, match="no fitted rows"):
        lc_win_rate(fit, "a")
    unscored = pd.DataFrame({"model": ["a"], "prompt_id": ["p"], "preference": [np.nan],
                             "length_model": [1.0], "length_baseline": [2.0]})
    assert fit_length_control(unscored).n == 0
    assert bootstrap_lc_win_rates(unscored, n_resamples=5, rng=0) == {}


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="length_model"):
        fit_length_control(pd.DataFrame({"model": ["a"], "prompt_id": ["p"], "preference": [1.0]}))
    frame, _ = simulate(5, seed=5, n_models=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_length_control(frame.assign(preference=2.0))
    with pytest.raises(ValueError, match="gamma_l2"):
        fit_length_control(frame, gamma_l2=0.0)


def test_gradient_is_analytic_gradient_of_the_objective():
    frame, _ = simulate(30, seed=6, soft=True)
    rows = length_control._encode(frame)
    n_models, n_prompts = len(rows.models), len(rows.prompts)
    tanh_z = np.tanh(rows.diff / length_control._length_scale(rows.diff))
    args = (rows.model_idx, rows.prompt_idx, tanh_z, rows.target, n_models, n_prompts, 1.0, 0.01)
    x = np.random.default_rng(0).normal(0.0, 0.5, 2 * n_models + n_prompts)
    error = check_grad(lambda v: length_control._objective(v, *args)[0],
                       lambda v: length_control._objective(v, *args)[1], x)
    assert error < 1e-4


def test_prompt_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    frame, truth = simulate(150, seed=7, soft=True)
    fit = fit_length_control(frame)
    ci = bootstrap_lc_win_rates(frame, n_resamples=25, rng=11)
    assert ci == bootstrap_lc_win_rates(frame, n_resamples=25, rng=11)
    for model in truth:
        low, high = ci[model]
        assert low < lc_win_rate(fit, model) < high and high - low < 0.3


def straightforward_prompt_bootstrap(frame: pd.DataFrame, model: str, n_resamples: int, seed: int):
    """(raw, LC) per resample, written plainly: draw prompts (sorted ids) with replacement, give each drawn
    prompt's rows a fresh id, refit from scratch on the resampled frame, and take the mean preference."""
    rng = np.random.default_rng(seed)
    prompts = np.array(sorted(frame["prompt_id"].astype(str).unique()))
    rows_of = {p: frame[frame["prompt_id"].astype(str) == p] for p in prompts}
    raw, lc = [], []
    for _ in range(n_resamples):
        draw = rng.integers(0, len(prompts), size=len(prompts))
        resample = pd.concat([rows_of[prompts[k]].assign(prompt_id=f"r{j}") for j, k in enumerate(draw)])
        raw.append(resample["preference"].mean())
        lc.append(lc_win_rate(fit_length_control(resample), model))
    return np.array(raw), np.array(lc)


def test_gap_ci_is_the_paired_prompt_bootstrap_of_raw_minus_lc():
    frame, _ = simulate(40, seed=8, n_models=1)
    frame = pd.concat([frame, frame.assign(preference=1.0 - frame["preference"], length_model=frame["length_baseline"])
                       .iloc[::3]], ignore_index=True)  # a second row on some prompts: clustered by prompt
    found = bootstrap_lc_intervals(frame, n_resamples=30, rng=13)["m0"]
    raw, lc = straightforward_prompt_bootstrap(frame, "m0", 30, seed=13)
    assert found.gap_ci == pytest.approx(tuple(np.quantile(raw - lc, [0.025, 0.975])), abs=1e-4)
    assert found.lc_win_rate_ci == pytest.approx(tuple(np.quantile(lc, [0.025, 0.975])), abs=1e-4)
    assert bootstrap_lc_win_rates(frame, n_resamples=30, rng=13)["m0"] == found.lc_win_rate_ci
    # paired: the gap's CI is narrower than raw's and LC's own spreads combined as if independent
    assert found.gap_ci[1] - found.gap_ci[0] < np.hypot(*(np.subtract(*np.quantile(x, [0.975, 0.025]))
                                                          for x in (raw, lc)))


def test_cites_the_paper():
    assert "2404.04475" in length_control.__doc__
