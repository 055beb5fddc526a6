"""KL-vs-quality fits (Gao et al. 2022) on planted curves, past-peak detection, checkpoint choice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit

import dpo_eval.metrics.overoptimization as overopt
from dpo_eval.metrics.overoptimization import (
    detect_past_peak,
    fit_form,
    fit_kl_quality,
    paired_drop,
    quality_curve,
    recommend_checkpoint,
)

BON = {"alpha": 1.0, "beta": 0.25}  # d* = 1 / 0.5 = 2 -> peak KL 4, height 1 / 1 = 1
RL = {"alpha": 1.0, "beta": 0.5}    # d* = exp(1 / 0.5 - 1) = e -> peak KL e^2, height 0.5 e


def bon_curve(d):
    return d * (BON["alpha"] - BON["beta"] * d)


def rl_curve(d):
    return d * (RL["alpha"] - RL["beta"] * np.log(d))


def planted_frame(curve, max_d: float, seed: int, noise: float = 0.01, n: int = 16) -> pd.DataFrame:
    d = np.linspace(0.25, max_d, n)
    quality = curve(d) + np.random.default_rng(seed).normal(0.0, noise, n)
    return pd.DataFrame({"run": "r", "step": 100 * np.arange(1, n + 1), "kl": d ** 2, "quality": quality,
                         "quality_se": noise})


def test_bon_points_recover_alpha_beta_peak_and_form():
    frame = planted_frame(bon_curve, max_d=4.0, seed=0)
    before = frame.copy()
    fit = fit_kl_quality(frame)
    pd.testing.assert_frame_equal(frame, before)
    bon = fit.bon
    assert fit.best == "bon" and fit.best_fit is bon and fit.is_weighted and bon.n == 16
    assert bon.alpha == pytest.approx(1.0, rel=0.05) and bon.beta == pytest.approx(0.25, rel=0.05)
    assert bon.shape == "peak" and bon.is_peak_extrapolated is False and fit.n_excluded == 0
    assert bon.kl_range == (pytest.approx(0.0625), pytest.approx(16.0))
    assert math.sqrt(bon.peak_kl) == pytest.approx(2.0, rel=0.05) and bon.peak_quality == pytest.approx(1.0, rel=0.05)
    assert fit.rl.rmse > 2 * bon.rmse
    assert bon.rmse == pytest.approx(0.01, rel=0.5)  # the noise level


def test_rl_points_recover_alpha_beta_peak_and_form():
    fit = fit_kl_quality(planted_frame(rl_curve, max_d=6.0, seed=1).drop(columns="quality_se"))
    rl = fit.rl
    assert fit.best == "rl" and not fit.is_weighted
    assert rl.alpha == pytest.approx(1.0, rel=0.05) and rl.beta == pytest.approx(0.5, rel=0.05)
    assert math.sqrt(rl.peak_kl) == pytest.approx(math.e, rel=0.05)
    assert rl.peak_quality == pytest.approx(0.5 * math.e, rel=0.05)
    assert fit.bon.rmse > 2 * rl.rmse and fit.max_kl == pytest.approx(36.0)


def test_exact_points_by_hand():
    # bon with alpha 1, beta 0.25 at d = 1, 2, 3: R = 1 - 0.25, 2 - 1, 3 - 2.25 = 0.75, 1.0, 0.75
    fit = fit_form([1.0, 4.0, 9.0], [0.75, 1.0, 0.75], form="bon")
    assert (fit.alpha, fit.beta) == (pytest.approx(1.0), pytest.approx(0.25))
    assert fit.rmse == pytest.approx(0.0, abs=1e-12) and fit.alpha_se == pytest.approx(0.0, abs=1e-6)
    assert fit.peak_kl == pytest.approx(4.0) and fit.peak_quality == pytest.approx(1.0)
    # rl with alpha 1, beta 0.5 at d = 1, e, e^2: R = 1, e (1 - 0.5), e^2 (1 - 1) = 1, e/2, 0
    e = math.e
    fit = fit_form([1.0, e ** 2, e ** 4], [1.0, e / 2, 0.0], form="rl")
    assert (fit.alpha, fit.beta) == (pytest.approx(1.0), pytest.approx(0.5))
    assert fit.peak_kl == pytest.approx(e ** 2) and fit.peak_quality == pytest.approx(e / 2)
    # d = 0 (KL 0, or a negative KL estimate) contributes R = 0 in both forms
    np.testing.assert_allclose(quality_curve("rl", 1.0, 0.5, [0.0, -0.01]), [0.0, 0.0])


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_peak_is_a_stationary_point_of_the_curve(form):
    alpha, beta = 0.7, 0.3
    fit = fit_form([0.5, 1.0, 2.0, 3.0, 5.0], quality_curve(form, alpha, beta, [0.5, 1.0, 2.0, 3.0, 5.0]), form=form)
    d_star = math.sqrt(fit.peak_kl)
    h = 1e-5
    slope = (quality_curve(form, alpha, beta, [(d_star + h) ** 2]) - quality_curve(form, alpha, beta, [(d_star - h) ** 2])) / (2 * h)
    assert abs(slope[0]) < 1e-8
    assert quality_curve(form, alpha, beta, [fit.peak_kl])[0] == pytest.approx(fit.peak_quality)
    assert quality_curve(form, alpha, beta, [(d_star * 1.1) ** 2])[0] < fit.peak_quality


@pytest.mark.parametrize("weighted", [True, False])
def test_parameters_and_ses_match_scipy_curve_fit(weighted):
    frame = planted_frame(bon_curve, max_d=3.0, seed=2, noise=0.05, n=10)
    se = np.linspace(0.02, 0.08, 10)
    d = np.sqrt(frame["kl"].to_numpy())
    for form, curve in (("bon", lambda x, a, b: x * (a - b * x)), ("rl", lambda x, a, b: x * (a - b * np.log(x)))):
        ours = fit_form(frame["kl"], frame["quality"], se if weighted else None, form=form)
        params, cov = curve_fit(curve, d, frame["quality"].to_numpy(), p0=[1.0, 0.1],
                                sigma=se if weighted else None, absolute_sigma=weighted)
        np.testing.assert_allclose([ours.alpha, ours.beta], params, rtol=1e-6)
        np.testing.assert_allclose([ours.alpha_se, ours.beta_se], np.sqrt(np.diag(cov)), rtol=1e-5)
        assert ours.alpha_beta_cov == pytest.approx(cov[0, 1], rel=1e-5)


@pytest.mark.parametrize("form,curve,max_d", [("bon", bon_curve, 4.0), ("rl", rl_curve, 5.0)])
def test_delta_method_peak_se_matches_the_spread_of_refits(form, curve, max_d):
    rng = np.random.default_rng(3)
    d = np.linspace(0.25, max_d, 12)
    peaks, peak_ses, heights, height_ses = [], [], [], []
    for _ in range(400):
        fit = fit_form(d ** 2, curve(d) + rng.normal(0.0, 0.03, d.size), np.full(d.size, 0.03), form=form)
        peaks.append(fit.peak_kl), peak_ses.append(fit.peak_kl_se)
        heights.append(fit.peak_quality), height_ses.append(fit.peak_quality_se)
    assert np.mean(peak_ses) == pytest.approx(np.std(peaks, ddof=1), rel=0.2)
    assert np.mean(height_ses) == pytest.approx(np.std(heights, ddof=1), rel=0.2)


def test_beta_not_positive_means_still_rising_and_no_peak():
    d = np.linspace(0.25, 4.0, 12)
    frame = pd.DataFrame({"run": "r", "step": np.arange(12), "kl": d ** 2, "quality": 0.5 * d + 0.05 * d ** 2})
    fit = fit_kl_quality(frame)
    for form_fit in (fit.bon, fit.rl):
        assert form_fit.beta < 0 and form_fit.shape == "still rising"
        assert form_fit.peak_kl is None and form_fit.peak_quality is None and form_fit.is_peak_extrapolated is None
    assert fit.bon.beta == pytest.approx(-0.05)
    falling = fit_form(d ** 2, -0.2 * d - 0.1 * d ** 2, form="bon")
    assert falling.shape == "no gain" and falling.peak_kl is None


def test_peak_beyond_the_data_is_flagged():
    d = np.linspace(0.25, 1.5, 8)  # the planted peak is at d = 2
    fit = fit_form(d ** 2, bon_curve(d), form="bon")
    assert fit.shape == "peak" and fit.peak_kl == pytest.approx(4.0) and fit.is_peak_extrapolated is True
    assert fit.kl_range == (pytest.approx(0.0625), pytest.approx(2.25))


def test_peak_below_the_smallest_fitted_kl_is_extrapolated_too():
    # the demo's case: a peak at sqrt(KL) 1.26 with no checkpoint below sqrt(KL) 2.2
    d = np.linspace(2.2, 4.0, 6)
    fit = fit_form(d ** 2, bon_curve(d), form="bon")  # planted peak at d = 2 < 2.2
    assert fit.peak_kl == pytest.approx(4.0) and fit.kl_range[0] == pytest.approx(2.2 ** 2)
    assert fit.is_peak_extrapolated is True
    inside = fit_form(np.linspace(1.5, 4.0, 6) ** 2, bon_curve(np.linspace(1.5, 4.0, 6)), form="bon")
    assert inside.is_peak_extrapolated is False


def test_recommendation_never_rests_on_an_extrapolated_peak():
    # points on the bon curve (peak KL 4) only at KL 6.25 .. 16: the fitted peak lies below them
    d = np.linspace(2.5, 4.0, 6)
    frame = pd.DataFrame({"run": "r", "step": np.arange(1, 7), "kl": d ** 2, "quality": bon_curve(d),
                          "quality_se": 2.0})  # a wide SE: every checkpoint is "within 1 SE" of the best
    fit = fit_kl_quality(frame)
    assert fit.best_fit.shape == "peak" and fit.best_fit.is_peak_extrapolated and fit.min_kl == pytest.approx(6.25)
    pick = recommend_checkpoint(frame, fit=fit)
    assert pick.step == 1 and pick.kl == pytest.approx(6.25)  # the best observed quality (0.9375 at d = 2.5)
    assert "extrapolated" in pick.reason and "not used" in pick.reason and "6.25 to 16" in pick.reason
    # the same points with the peak inside their range: the fit is used
    inside = frame.assign(kl=np.linspace(1.0, 4.0, 6) ** 2, quality=bon_curve(np.linspace(1.0, 4.0, 6)))
    fit_inside = fit_kl_quality(inside)
    assert not fit_inside.best_fit.is_peak_extrapolated
    assert "nearest the fitted" in recommend_checkpoint(inside, fit=fit_inside).reason


def sweep_frame() -> pd.DataFrame:
    steps = 100 * np.arange(1, 9)
    over = pd.DataFrame({"run": "over", "step": steps, "kl": steps / 100.0,
                         "quality": [0.05, 0.10, 0.15, 0.18, 0.16, 0.12, 0.08, 0.05],
                         "quality_se": 0.01, "implicit_reward": np.arange(1.0, 9.0)})
    mono = over.assign(run="mono", quality=np.linspace(0.02, 0.2, 8))
    noisy = over.assign(run="noisy", quality=[0.05, 0.10, 0.15, 0.18, 0.17, 0.17, 0.16, 0.165])
    collapse = over.assign(run="collapse", implicit_reward=[1.0, 2, 3, 4, 3, 2, 1, 0])
    return pd.concat([over, mono, noisy, collapse], ignore_index=True)


def test_past_peak_fires_on_a_rise_then_fall_with_rising_implicit_reward():
    frame = sweep_frame()
    before = frame.copy()
    result = detect_past_peak(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert list(result) == ["collapse", "mono", "noisy", "over"]
    over = result["over"]
    # peak 0.18 at step 400; last 0.05 at 800; drop 0.13 > 2 * sqrt(0.01^2 + 0.01^2) = 0.0283
    assert over.is_past_peak and over.is_quality_falling and over.is_implicit_reward_rising
    assert (over.peak_step, over.last_step) == (400, 800)
    assert over.drop == pytest.approx(0.13) and over.threshold == pytest.approx(2 * math.sqrt(2) * 0.01)
    assert (over.peak_implicit_reward, over.last_implicit_reward) == (4.0, 8.0)
    assert "past its peak" in over.reason and "step 400" in over.reason and "0.13" in over.reason
    # monotone: the last step is the peak
    assert not result["mono"].is_past_peak and result["mono"].peak_step == 800 and result["mono"].drop == 0.0
    # a drop of 0.015 is within 2 SE of the difference (0.0283)
    assert not result["noisy"].is_quality_falling and not result["noisy"].is_past_peak
    # quality falls but the implicit reward falls too: not the over-optimisation signature
    collapse = result["collapse"]
    assert collapse.is_quality_falling and collapse.is_implicit_reward_rising is False and not collapse.is_past_peak


def test_past_peak_without_any_se_is_not_tested_whatever_the_tolerance():
    """Before: no quality_se meant SE 0, and with tolerance 0 any drop fired (the drop treated as exact)."""
    frame = sweep_frame().drop(columns=["quality_se", "implicit_reward"])
    for tolerance in (0.0, 0.02):
        over = detect_past_peak(frame, tolerance=tolerance)["over"]
        assert over.is_quality_falling is None and not over.is_past_peak and over.se_method == "none"
        assert over.threshold is None and over.drop_se is None and over.drop == pytest.approx(0.13)
        assert "not tested" in over.reason and "has no quality SE" in over.reason
    assert not detect_past_peak(frame)["noisy"].is_past_peak  # a 0.015 drop with no SE: no verdict


def test_one_row_without_an_se_leaves_the_noise_guard_of_the_others_alone():
    """Before: one zero SE dropped quality_se for the whole frame and every drop fired (threshold 0)."""
    frame = sweep_frame()
    frame.loc[(frame["run"] == "mono") & (frame["step"] == 300), "quality_se"] = 0.0  # exact ties: SE 0
    frame.loc[(frame["run"] == "over") & (frame["step"] == 100), "quality_se"] = np.nan
    result = detect_past_peak(frame)
    noisy = result["noisy"]  # drop 0.015 within 2 * sqrt(2) * 0.01 = 0.0283: still not falling
    assert noisy.threshold == pytest.approx(2 * math.sqrt(2) * 0.01) and noisy.is_quality_falling is False
    assert not noisy.is_past_peak and noisy.se_method == "unpaired"
    assert result["over"].is_past_peak and "steps [100] left out (no SE)" in result["over"].reason
    fit = fit_kl_quality(frame)  # the rows without an SE are left out of the weighted fit, not weighted as exact
    assert fit.is_weighted and fit.n_excluded == 2 and fit.bon.n == len(frame) - 2
    kept = frame[frame["quality_se"] > 0]
    assert fit.bon.alpha == pytest.approx(fit_kl_quality(kept).bon.alpha)


def test_a_row_without_an_se_is_no_peak_candidate_and_a_last_row_without_one_is_not_tested():
    frame = sweep_frame()
    over = frame[frame["run"] == "over"].copy()
    over.loc[over["step"] == 400, "quality_se"] = np.nan  # the observed best (0.18) has no SE
    got = detect_past_peak(over)["over"]
    assert got.peak_step == 500 and got.peak_quality == pytest.approx(0.16)  # the best with an SE
    over.loc[over["step"] == 800, "quality_se"] = np.nan
    got = detect_past_peak(over)["over"]
    assert got.is_quality_falling is None and not got.is_past_peak
    assert "last checkpoint (step 800) has no quality SE" in got.reason


def prompt_rows(run: str, step: int, values) -> pd.DataFrame:
    return pd.DataFrame({"run": run, "step": step, "prompt_id": [f"p{i}" for i in range(len(values))],
                         "quality": values})


def test_paired_drop_se_is_the_se_of_the_per_prompt_differences():
    peak = np.array([0.5, 0.25, 0.75, 0.5, 1.0, 0.25])
    last = np.array([0.25, 0.25, 0.5, 0.0, 0.75, 0.5])
    steps = {1: peak - 0.3, 2: peak, 3: last}  # step 2 is the best
    frame = pd.DataFrame({"run": "r", "step": [1, 2, 3], "kl": [1.0, 2.0, 3.0],
                          "quality": [v.mean() for v in steps.values()], "quality_se": 0.5,
                          "implicit_reward": [1.0, 2.0, 3.0]})
    prompts = pd.concat([prompt_rows("r", step, values) for step, values in steps.items()])
    got = detect_past_peak(frame, prompts)["r"]
    d = peak - last  # 0.25, 0, 0.25, 0.5, 0.25, -0.25
    se = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / (len(d) - 1)) / math.sqrt(len(d))
    assert (got.peak_step, got.last_step, got.se_method, got.n_prompts) == (2, 3, "paired", 6)
    assert got.drop == pytest.approx(d.mean()) and got.drop_se == pytest.approx(se)
    assert got.threshold == pytest.approx(2 * se) and got.is_quality_falling == (d.mean() > 2 * se)
    assert "paired SE over 6 prompts" in got.reason and "picked as the maximum" in got.reason
    # prompts only one of the two has are left out of d
    extra = pd.concat([prompts, prompt_rows("r", 3, [0.0] * 8).iloc[6:]])
    assert detect_past_peak(frame, extra)["r"].drop_se == pytest.approx(se)
    # without the last step's per-prompt qualities the run is not tested; with SE 0 (d constant) neither
    missing_last = detect_past_peak(frame, prompts[prompts["step"] != 3])["r"]
    assert missing_last.is_quality_falling is None and "per-prompt qualities" in missing_last.reason
    constant = pd.concat([prompt_rows("r", 1, peak - 0.3), prompt_rows("r", 2, peak), prompt_rows("r", 3, peak - 0.25)])
    flat = detect_past_peak(frame.assign(quality=[peak.mean() - 0.3, peak.mean(), peak.mean() - 0.25]), constant)["r"]
    assert flat.is_quality_falling is None and not flat.is_past_peak and "undefined or 0" in flat.reason


def test_paired_se_matches_the_true_spread_of_the_drop_where_the_unpaired_overstates_it():
    """Quality = checkpoint - reference on the same prompts: the reference's noise and the prompts are
    shared by the peak and the last checkpoint and cancel in their difference (the issue's simulation)."""
    rng = np.random.default_rng(7)
    n_prompts, noise, truth = 60, 0.5, {1: 0.6, 2: 0.2}  # 4 SDs apart: step 1 is always the observed peak
    drops, paired_ses, unpaired_ses = [], [], []
    for draw in range(1000):
        difficulty = rng.normal(0.0, 1.0, n_prompts)
        reference = difficulty + rng.normal(0.0, noise, n_prompts)
        per_prompt = {step: pd.Series(difficulty + mean + rng.normal(0.0, noise, n_prompts) - reference,
                                      index=[f"p{i}" for i in range(n_prompts)]) for step, mean in truth.items()}
        drop, se, n = paired_drop(per_prompt[1], per_prompt[2])
        ses = [per_prompt[s].std(ddof=1) / math.sqrt(n_prompts) for s in (1, 2)]
        drops.append(drop), paired_ses.append(se), unpaired_ses.append(math.hypot(*ses))
        if draw == 0:  # detect_past_peak uses exactly these: paired with per-prompt qualities, else unpaired
            frame = pd.DataFrame({"run": "r", "step": [1, 2], "kl": [1.0, 2.0], "quality_se": ses,
                                  "quality": [per_prompt[1].mean(), per_prompt[2].mean()]})
            prompts = pd.concat([prompt_rows("r", step, values) for step, values in per_prompt.items()])
            assert detect_past_peak(frame, prompts)["r"].drop_se == pytest.approx(se) and n == n_prompts
            assert detect_past_peak(frame)["r"].drop_se == pytest.approx(unpaired_ses[0])
    true_sd = math.sqrt(2 * noise ** 2 / n_prompts)  # Var(d_p) = 2 noise^2: the reference cancels
    assert np.std(drops, ddof=1) == pytest.approx(true_sd, rel=0.1)
    assert np.mean(paired_ses) == pytest.approx(true_sd, rel=0.05)
    # unpaired: each quality's variance is 2 noise^2 (its own and the reference's), added: sqrt(2) too big
    assert np.mean(unpaired_ses) == pytest.approx(math.sqrt(2 * 2 * noise ** 2 / n_prompts), rel=0.05)
    assert np.mean(unpaired_ses) > 1.3 * np.std(drops, ddof=1)


def test_recommendation_under_a_kl_budget():
    frame = sweep_frame()
    pick = recommend_checkpoint(frame, kl_budget=3.5)
    # KL <= 3.5 keeps steps 100-300 of every run; best quality 0.15 at step 300 (over, noisy, collapse
    # tie at KL 3; ties go to lower KL, then earlier step, then run name)
    assert (pick.run, pick.step, pick.kl, pick.quality) == ("collapse", 300, 3.0, 0.15)
    assert "KL <= 3.5" in pick.reason and "0.15" in pick.reason and "step 300" in pick.reason
    assert recommend_checkpoint(frame).quality == pytest.approx(0.2)  # mono's last step
    with pytest.raises(ValueError, match="raise kl_budget"):
        recommend_checkpoint(frame, kl_budget=0.5)


def test_recommendation_with_a_fit_prefers_the_near_best_checkpoint_nearest_the_peak():
    # Observed values near the bon curve d (1 - 0.25 d) with peak at KL 4; the best observed
    # (1.02 at KL 5) is within 1 SE (0.05) of KL 3 (0.99) and KL 4 (0.97), and KL 4 is nearest the peak.
    frame = pd.DataFrame({"run": "r", "step": [1, 2, 3, 4, 5, 6], "kl": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                          "quality": [0.75, 0.93, 0.99, 0.97, 1.02, 0.94], "quality_se": 0.05})
    fit = fit_kl_quality(frame)
    assert fit.best_fit.shape == "peak" and 3.5 < fit.best_fit.peak_kl < 4.5
    pick = recommend_checkpoint(frame, fit=fit)
    assert (pick.step, pick.kl) == (4, 4.0)
    assert "nearest the fitted" in pick.reason and "3 checkpoints" in pick.reason and "1.02" in pick.reason
    assert recommend_checkpoint(frame).step == 5  # without the fit: the best observed
    assert recommend_checkpoint(frame, kl_budget=3.0, fit=fit).step == 3  # the budget excludes KL 4 and 5


def test_unevaluated_rows_are_left_out():
    frame = sweep_frame()
    extra = pd.DataFrame({"run": ["over"], "step": [900], "kl": [9.0], "quality": [np.nan],
                          "quality_se": [np.nan], "implicit_reward": [9.0]})
    with_extra = pd.concat([frame, extra], ignore_index=True)
    assert detect_past_peak(with_extra) == detect_past_peak(frame)


def test_bad_input_rejected():
    frame = sweep_frame()
    with pytest.raises(ValueError, match="lacks columns"):
        fit_kl_quality(frame.drop(columns="kl"))
    with pytest.raises(ValueError, match="step 100 twice"):
        detect_past_peak(pd.concat([frame, frame.head(1)]))
    with pytest.raises(ValueError, match="step 100 twice"):
        recommend_checkpoint(pd.concat([frame, frame.head(1)]))
    assert fit_kl_quality(pd.concat([frame, frame.head(1)])).bon.n == len(frame) + 1  # points need no unique step
    with pytest.raises(ValueError, match="quality_se must not be negative"):
        fit_kl_quality(frame.assign(quality_se=-0.1))
    assert not fit_kl_quality(frame.assign(quality_se=0.0)).is_weighted  # no row has an SE: unweighted
    with pytest.raises(ValueError, match="prompt p0 twice"):
        detect_past_peak(frame, pd.concat([prompt_rows("over", 100, [0.1, 0.2])] * 2))
    with pytest.raises(ValueError, match="lacks columns"):
        detect_past_peak(frame, pd.DataFrame({"run": ["over"], "step": [100]}))
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_form([1.0, 1.0, 0.0], [0.1, 0.1, 0.0])
    with pytest.raises(ValueError, match="form must be"):
        fit_form([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], form="linear")
    with pytest.raises(ValueError, match="no row with both"):
        fit_kl_quality(frame.assign(quality=np.nan))
    with pytest.raises(ValueError, match="step must be an integer"):
        detect_past_peak(frame.assign(step=1.5))


def test_cites_the_papers():
    assert "2210.10760" in overopt.__doc__ and "2406.02900" in overopt.__doc__


def test_the_recommendation_records_the_rule_that_picked_it():
    """The page words its "why" from this field: an extrapolated peak named in the reason is not the rule."""
    frame = pd.DataFrame({"run": "r", "step": [1, 2, 3, 4], "kl": [1.0, 2.0, 3.0, 4.0],
                          "quality": [0.10, 0.12, 0.11, 0.05], "quality_se": 0.01})
    assert recommend_checkpoint(frame).rule == "best_quality"
    fit = fit_kl_quality(frame)
    assert fit.best_fit.shape == "peak" and not fit.best_fit.is_peak_extrapolated  # bon peak at KL 1.42
    picked = recommend_checkpoint(frame, fit=fit)  # steps 2 and 3 tie within 1 SE; step 2's KL is nearest
    assert (picked.step, picked.rule) == (2, "fitted_peak")
    shifted = frame.assign(kl=frame["kl"] + 10.0)  # the same curve far from KL 0: its peak is extrapolated
    fit = fit_kl_quality(shifted)
    if fit.best_fit.shape == "peak":
        assert fit.best_fit.is_peak_extrapolated
    assert recommend_checkpoint(shifted, fit=fit).rule == "best_quality"
