"""metrics.gate_noise against hand values: where each figure's SE is read, and the regression rule
fails when change - 1.96 * sqrt(se_new^2 + se_base^2) > tolerance."""

from __future__ import annotations

import math

import pytest

from dpo_eval.metrics.gate_noise import decide_regression, describe, figure_se

Z = 1.959963984540054


@pytest.mark.parametrize(("section", "name", "expected"), [
    ({"mean": 2.0, "se": 0.3}, "mean", 0.3),
    ({"value": 0.1, "se": 0.05}, "value", 0.05),
    ({"per_token_mean": 0.1, "per_token_se": 0.01, "se": 9.0}, "per_token_mean", 0.01),
    ({"mean_margin": 1.0, "margin_se": 0.2}, "mean_margin", 0.2),
    ({"accuracy": 0.7, "accuracy_ci_low": 0.6, "accuracy_ci_high": 0.8}, "accuracy", 0.2 / (2 * Z)),
    ({"win_rate": 0.5, "win_rate_ci": [0.4, 0.7]}, "win_rate", 0.3 / (2 * Z)),
    ({"lc_win_rate": 0.5, "lc_win_rate_ci": None}, "lc_win_rate", None),
    ({"mean_tokens_ratio": 1.2}, "mean_tokens_ratio", None),  # no SE saved
    ({"mean": 2.0, "se": 0.0}, "mean", None),  # a zero SE is no noise estimate, never exact
    ({"mean": 2.0, "se": None}, "mean", None),
    ({"win_rate_ci": [0.4, 0.7]}, 0, None),  # a CI end addressed by index
    (None, "mean", None),
])
def test_figure_se_reads_the_figures_own_section(section, name, expected):
    got = figure_se(section, name)
    assert got == (None if expected is None else pytest.approx(expected))


def test_a_drop_fails_only_when_its_ci_is_wholly_past_the_tolerance():
    # change 0.05, SE hypot(0.006, 0.008) = 0.01: CI [0.0304, 0.0696]
    beyond = decide_regression("drop", 0.70, 0.75, 0.02, 0.006, 0.008)
    assert beyond.change == pytest.approx(0.05) and beyond.change_se == pytest.approx(0.01)
    assert beyond.bound == pytest.approx(0.75 - 0.02 - Z * 0.01) and not beyond.passed
    assert beyond.change_ci == pytest.approx((0.05 - Z * 0.01, 0.05 + Z * 0.01))
    assert decide_regression("drop", 0.70, 0.75, 0.035, 0.006, 0.008).passed  # 0.0304 < 0.035: inconclusive
    assert decide_regression("drop", 0.80, 0.75, 0.0, 0.006, 0.008).passed  # it rose


def test_a_rise_is_the_mirror_image():
    worse = decide_regression("rise", 5.0, 3.0, 1.0, 0.3, 0.4)  # change 2, SE 0.5: CI [1.02, 2.98]
    assert worse.change == pytest.approx(2.0) and worse.bound == pytest.approx(3.0 + 1.0 + Z * 0.5)
    assert not worse.passed
    assert decide_regression("rise", 5.0, 3.0, 1.1, 0.3, 0.4).passed


def test_without_an_se_on_either_side_the_point_estimates_decide():
    for se_new, se_base in ((None, 0.1), (0.1, None), (None, None)):
        got = decide_regression("drop", 0.70, 0.75, 0.02, se_new, se_base)
        assert got.change_se is None and got.change_ci is None
        assert got.bound == pytest.approx(0.73) and not got.passed
    assert decide_regression("drop", 0.74, 0.75, 0.02, None, None).passed


def test_the_note_says_which_rule_decided():
    assert "point estimates" in describe(decide_regression("drop", 0.7, 0.75, 0.02, None, 0.1), "drop", "0.02")
    assert describe(decide_regression("drop", 0.70, 0.75, 0.02, 0.006, 0.008), "drop", "0.02").endswith(
        "beyond the tolerance")
    assert "inconclusive" in describe(decide_regression("drop", 0.70, 0.75, 0.035, 0.006, 0.008), "drop", "0.035")
    assert describe(decide_regression("drop", 0.75, 0.75, 0.05, 0.006, 0.008), "drop", "0.05").endswith(
        "within the tolerance")


def test_a_bad_direction_is_refused():
    with pytest.raises(ValueError, match="drop or rise"):
        decide_regression("grow", 1.0, 1.0, 0.0, None, None)
    assert math.isclose(decide_regression("drop", 1.0, 1.0, 0.0, None, None).bound, 1.0)
