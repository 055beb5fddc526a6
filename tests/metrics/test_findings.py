"""Each finding fires on numbers built to show it, stays quiet on numbers built not to, and grades severity
by the rule in dpo_eval.metrics.findings' table."""

from __future__ import annotations

import math

import pytest

from dpo_eval.metrics.findings import (
    DropNoise,
    Finding,
    Thresholds,
    abs_ratio,
    check_degradation,
    check_dispersion,
    check_drastic_drop,
    check_entropy_change,
    check_kl_budget,
    check_lc_gap,
    check_length_inflation,
    check_likelihood_displacement,
    check_over_optimisation,
)

T = Thresholds()


def test_thresholds_from_dict_overrides_and_names_the_allowed_keys():
    t = Thresholds.from_dict({"lc_gap": 0.1, "kl_budget": 5})
    assert t.lc_gap == 0.1 and t.kl_budget == 5 and t.length_ratio == Thresholds().length_ratio
    assert Thresholds.from_dict(None) == Thresholds()
    with pytest.raises(ValueError, match=r"unknown threshold\(s\) \['lc_gapp'\]; allowed: \[.*'lc_gap'"):
        Thresholds.from_dict({"lc_gapp": 0.1})
    with pytest.raises(ValueError, match="displacement_share is a fraction"):
        Thresholds(displacement_share=1.5)
    with pytest.raises(ValueError, match="finite number"):
        Thresholds(kl_budget=float("nan"))
    with pytest.raises(ValueError, match=">= 0"):
        Thresholds(lc_gap=-0.1)
    with pytest.raises(ValueError, match="severity"):
        Finding("x", "fatal", "t", "m", "a")


def test_likelihood_displacement():
    # 70 of 100 chosen fell: share 0.7; Wilson low for 70/100 is ~0.604 > 0.5 -> fires, high
    f = check_likelihood_displacement(0.7, (0.604, 0.781), 100, -3.0, T, step=40)
    assert f is not None and f.code == "likelihood_displacement" and f.severity == "high" and f.step == 40
    assert f.numbers["share"] == 0.7 and f.threshold == 0.5 and "70%" in f.message and "NLL" in f.advice
    # share above but its CI reaching below the threshold: not shown, no finding (was a warning)
    assert check_likelihood_displacement(0.6, (0.31, 0.83), 10, -1.0, T) is None
    assert check_likelihood_displacement(0.6, (0.5, 0.7), 100, -1.0, T) is None  # CI low touches 0.5
    assert check_likelihood_displacement(0.6, (float("nan"), float("nan")), 100, -1.0, T) is None  # no CI
    assert check_likelihood_displacement(0.2, (0.1, 0.3), 100, 2.0, T) is None


Z = 1.959963984540054


def noise(chosen_se: float = 0.1, rejected_se: float = 0.1, cov: float = 0.0, per_token_se: float = 0.001):
    return DropNoise(chosen_se, rejected_se, cov, per_token_se)


def test_drastic_drop():
    # rejected -12 (per token -0.06), chosen -2: ratio 12 / 2 = 6 >= 3; contrasts with a = 3:
    # D+ = 12 - 3(-2) = 18, D- = 12 + 3(-2) = 6, SE sqrt(0.01 + 9 * 0.01) = 0.316: both bounds > 0
    f = check_drastic_drop(-2.0, -12.0, -0.06, T, noise=noise())
    assert f.code == "drastic_drop" and f.numbers["ratio"] == pytest.approx(6.0)
    se = math.sqrt(0.01 + 9 * 0.01)
    assert f.numbers["contrast_low_plus"] == pytest.approx(18 - Z * se)
    assert f.numbers["contrast_low_minus"] == pytest.approx(6 - Z * se)
    # chosen rising counts the same: |-12| / |+3| = 4
    assert check_drastic_drop(3.0, -12.0, -0.06, T, noise=noise()).numbers["ratio"] == pytest.approx(4.0)
    assert check_drastic_drop(-5.0, -12.0, -0.06, T, noise=noise()) is None  # ratio 2.4 < 3
    assert check_drastic_drop(-0.001, -0.5, -0.005, T, noise=noise()) is None  # only -0.005 nats per token
    assert check_drastic_drop(0.0, -1.0, -0.05, T, noise=noise()).numbers["ratio"] == math.inf
    assert check_drastic_drop(-1.0, 12.0, 0.06, T, noise=noise()) is None  # rejected rose
    assert check_drastic_drop(-2.0, -12.0, -0.06, T) is None  # no SEs: never on point estimates


def test_drastic_drop_needs_both_paired_contrasts_past_zero():
    # ratio 6 on the points, but D- = 12 - 3 * 2 = 6 with SE sqrt(4 + 9 * 1 - 2 * 3 * 0.5) = sqrt(10): 6 - 6.2 < 0
    assert check_drastic_drop(-2.0, -12.0, -0.06, T, noise=noise(1.0, 2.0, 0.5)) is None
    # a positive covariance shrinks D-'s SE (sqrt(4 + 9 - 2 * 3 * 1.9) = sqrt(1.6)) and D+ = 18 - Z sqrt(24.4) > 0
    assert check_drastic_drop(-2.0, -12.0, -0.06, T, noise=noise(1.0, 2.0, 1.9)) is not None
    # the per-token fall's CI must lie below -0.01: -0.06 + Z * 0.03 > -0.01
    assert check_drastic_drop(-2.0, -12.0, -0.06, T, noise=noise(per_token_se=0.03)) is None
    # inconsistent inputs (a covariance past what the SEs allow): a negative variance is no SE, not a crash
    assert check_drastic_drop(-2.0, -12.0, -0.06, T, noise=noise(0.1, 0.1, 1.0)) is None


def test_abs_ratio():
    assert abs_ratio(-6.0, 2.0) == 3.0 and abs_ratio(1.0, 0.0) == math.inf and math.isnan(abs_ratio(0.0, 0.0))


def test_degradation():
    # SEs: slopes (chosen, rejected, margin), last per-token Δs (chosen, rejected)
    ses, per_token = (0.002, 0.01, 0.01), (0.002, 0.01)
    f = check_degradation(-0.01, -0.05, 0.04, -0.02, -0.1, T, step=300, slope_se=ses, per_token_se=per_token)
    assert f.code == "degradation" and f.severity == "high" and f.step == 300
    assert f.numbers["chosen_slope_se"] == 0.002 and f.numbers["margin_slope_se"] == 0.01
    assert check_degradation(0.01, -0.05, 0.06, 0.02, -0.1, T, slope_se=ses,
                             per_token_se=per_token) is None  # chosen rising: preference learning
    assert check_degradation(-0.01, -0.005, -0.005, -0.02, -0.03, T, slope_se=ses,
                             per_token_se=per_token) is None  # margin shrinking
    assert check_degradation(-0.01, -0.05, 0.04, -0.001, -0.1, T, slope_se=ses,
                             per_token_se=per_token) is None  # chosen barely moved
    # -0.01 + Z * 0.006 > 0: the chosen slope's CI reaches 0
    assert check_degradation(-0.01, -0.05, 0.04, -0.02, -0.1, T, slope_se=(0.006, 0.01, 0.01),
                             per_token_se=per_token) is None
    # 0.04 - Z * 0.03 < 0: the margin's growth is not shown
    assert check_degradation(-0.01, -0.05, 0.04, -0.02, -0.1, T, slope_se=(0.002, 0.01, 0.03),
                             per_token_se=per_token) is None
    # -0.02 + Z * 0.006 > -0.01: the chosen per-token fall is not shown past the minimum
    assert check_degradation(-0.01, -0.05, 0.04, -0.02, -0.1, T, slope_se=ses, per_token_se=(0.006, 0.01)) is None
    assert check_degradation(-0.01, -0.05, 0.04, -0.02, -0.1, T) is None  # no SEs: never on point estimates

def test_dispersion_both_directions():
    # unseen -0.02/token vs chosen -0.2/token: gap +0.18; with SE 0.01 its CI (0.16, 0.20) is past 0.05
    f = check_dispersion(-0.02, -0.2, "reference samples", T, gap_se=0.01)
    assert f.code == "dispersion" and f.numbers["gap"] == pytest.approx(0.18) and "rose" in f.message
    assert f.numbers["gap_se"] == 0.01
    assert "fell" in check_dispersion(-0.5, -0.2, "other prompts' responses", T, gap_se=0.01).message
    assert check_dispersion(-0.22, -0.2, "reference samples", T, gap_se=0.01) is None
    # 0.18 - Z * 0.07 = 0.043 < 0.05: not shown
    assert check_dispersion(-0.02, -0.2, "reference samples", T, gap_se=0.07) is None
    assert check_dispersion(-0.02, -0.2, "reference samples", T) is None  # no SE: never on a point estimate


def test_entropy_change():
    # 1.5 / 2.0 - 1 = -0.25, beyond 0.2 by its CI (relative SE 0.01)
    f = check_entropy_change(1.5, 2.0, T, relative_se=0.01)
    assert f.code == "dispersion_entropy" and f.numbers["relative_change"] == pytest.approx(-0.25)
    assert f.numbers["relative_change_se"] == pytest.approx(0.01) and "collapsed" in f.message
    assert check_entropy_change(2.6, 2.0, T, relative_se=0.01).numbers["relative_change"] == pytest.approx(0.3)
    assert check_entropy_change(1.8, 2.0, T, relative_se=0.01) is None  # -0.1
    # 0.25 - Z * 0.05 = 0.152 < 0.2: not shown
    assert check_entropy_change(1.5, 2.0, T, relative_se=0.05) is None
    assert check_entropy_change(1.5, 2.0, T) is None  # no SE


def test_length_inflation():
    # ratio 1.5, CI (1.3, 1.7) wholly above 1.2, p 0.001; truncation rose 0.25 +- 0.05: 0.25 - Z 0.05 > 0.1 -> high
    f = check_length_inflation(1.5, 0.001, 0.30, 0.05, T, ratio_ci=(1.3, 1.7), truncation_rise=(0.25, 0.05))
    assert f.code == "length_inflation" and f.severity == "high" and f.numbers["ratio_ci_low"] == 1.3
    # the rise's CI reaches 0.1 (0.25 - Z 0.1 < 0.1): warning
    assert check_length_inflation(1.5, 0.001, 0.30, 0.05, T, ratio_ci=(1.3, 1.7),
                                  truncation_rise=(0.25, 0.1)).severity == "warning"
    assert check_length_inflation(1.5, 0.001, 0.06, 0.05, T, ratio_ci=(1.3, 1.7),
                                  truncation_rise=(0.01, 0.01)).severity == "warning"
    assert check_length_inflation(1.5, 0.001, 0.3, 0.05, T, ratio_ci=(1.3, 1.7)).severity == "warning"  # no SE
    assert check_length_inflation(1.5, 0.2, 0.3, 0.05, T, ratio_ci=(1.3, 1.7)) is None  # not significant
    assert check_length_inflation(1.5, 1e-9, 0.3, 0.05, T, ratio_ci=(1.1, 1.9)) is None  # CI reaches below 1.2
    assert check_length_inflation(1.5, 1e-9, 0.3, 0.05, T) is None  # no CI: never on a point estimate


def test_lc_gap():
    # gap 0.15, its paired CI (0.08, 0.22) wholly above the 0.05 threshold: high
    f = check_lc_gap(0.70, (0.65, 0.75), 0.55, (0.50, 0.60), (0.08, 0.22), 1.8, T)
    assert f.code == "lc_gap" and f.severity == "high" and f.numbers["gap"] == pytest.approx(0.15)
    assert f.numbers["gap_ci_low"] == 0.08 and f.numbers["gap_ci_high"] == 0.22 and f.numbers["length_ratio"] == 1.8
    # CI excludes 0 but reaches below the threshold: not shown (was a warning)
    assert check_lc_gap(0.70, (0.55, 0.85), 0.60, (0.45, 0.75), (0.01, 0.19), 1.8, T) is None
    assert check_lc_gap(0.70, (0.65, 0.75), 0.68, (0.63, 0.73), (0.01, 0.03), 1.8, T) is None  # gap 0.02 < 0.05
    assert check_lc_gap(0.45, (0.40, 0.50), 0.60, (0.55, 0.65), (-0.22, -0.04), 1.8, T) is None  # reaches -0.05


def test_lc_gap_past_the_threshold_whose_ci_includes_zero_does_not_fire():
    # The demo's case: a 5.7-point gap with an LC CI of 21-57%; the paired gap CI spans 0.
    assert check_lc_gap(0.447, (0.35, 0.55), 0.39, (0.21, 0.57), (-0.04, 0.16), 0.28, T) is None
    assert check_lc_gap(0.447, (0.35, 0.55), 0.39, (0.21, 0.57), (0.0, 0.16), 0.28, T) is None  # touches 0
    nan = float("nan")
    assert check_lc_gap(0.70, (0.65, 0.75), 0.55, (0.50, 0.60), (nan, nan), 1.8, T) is None  # no CI, no finding


def test_lc_gap_states_the_direction_of_the_length_effect():
    longer = check_lc_gap(0.70, (0.65, 0.75), 0.55, (0.50, 0.60), (0.08, 0.22), 1.8, T)
    assert longer.title == "Win rate helped by longer answers"
    assert "longer answers add 15.0 points" in longer.message and "1.80x the reference's mean length" in longer.message
    assert "length penalty" in longer.advice
    shorter = check_lc_gap(0.70, (0.65, 0.75), 0.55, (0.50, 0.60), (0.08, 0.22), 1 / 3.6, T)
    assert shorter.title == "Win rate helped by shorter answers" and "inflated" not in shorter.title
    assert "shorter answers add 15.0 points" in shorter.message and "0.28x the reference's" in shorter.message
    assert "truncation" in shorter.advice and "length penalty" not in shorter.advice
    held_back = check_lc_gap(0.45, (0.40, 0.50), 0.60, (0.55, 0.65), (-0.22, -0.08), 1.8, T)
    assert held_back.title == "Win rate held back by longer answers" and held_back.severity == "info"
    assert "longer answers cost 15.0 points" in held_back.message and "understates" in held_back.advice
    assert check_lc_gap(0.45, (0.40, 0.50), 0.60, (0.55, 0.65), (-0.22, -0.08), 0.5, T).title == \
        "Win rate held back by shorter answers"
    unknown = check_lc_gap(0.70, (0.65, 0.75), 0.55, (0.50, 0.60), (0.08, 0.22), float("nan"), T)
    assert unknown.title == "Win rate helped by length" and "mean length" not in unknown.message
    assert "length adds 15.0 points (raw - LC: CI 8.0 to 22.0 points, paired bootstrap over prompts)." in unknown.message


def test_over_optimisation():
    f = check_over_optimisation(True, 200, 0.62, 0.50, "gold win rate", T, step=600)
    assert f.severity == "high" and f.numbers["drop"] == pytest.approx(0.12) and "step-200" in f.advice
    assert check_over_optimisation(True, 200, 0.62, 0.60, "gold win rate", T).severity == "warning"
    assert check_over_optimisation(False, 200, 0.62, 0.40, "gold win rate", T) is None
    # with the drop's SE: high when drop - k SE (k = 2) reaches 0.05: 0.12 - 2 * 0.02 = 0.08; 0.12 - 0.08 = 0.04
    kw = {"drop": 0.12, "drop_threshold": 0.04}
    assert check_over_optimisation(True, 200, 0.62, 0.50, "q", T, drop_se=0.02, **kw).severity == "high"
    assert check_over_optimisation(True, 200, 0.62, 0.50, "q", T, drop_se=0.04, **kw).severity == "warning"


def test_kl_budget_grades():
    # budget 10, info above 8; high only when the CI's low end is above the budget
    assert check_kl_budget(7.9, None, T) is None
    assert check_kl_budget(9.0, (8.0, 10.0), T).severity == "info"
    reached = check_kl_budget(11.0, (9.0, 13.0), T)  # over on the point, the CI reaches the budget: info
    assert reached.severity == "info" and "its CI includes the budget" in reached.title
    high = check_kl_budget(14.0, (12.0, 16.0), T)
    assert high.severity == "high" and high.numbers == {"kl": 14.0, "budget": 10.0, "kl_ci_low": 12.0,
                                                       "kl_ci_high": 16.0}
    assert check_kl_budget(14.0, None, T).severity == "info"  # no CI: cannot say more
    assert check_kl_budget(6.0, None, Thresholds(kl_budget=5.0)).title == "KL budget reached (no CI)"
