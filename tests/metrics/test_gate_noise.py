"""metrics.gate_noise against hand values: where each figure's 95% interval is read, and the regression
rule (Newcombe's / MOVER's CI of the change) fails when the change's CI lies wholly past the tolerance."""

from __future__ import annotations

import math

import pytest

from dpo_eval.metrics.gate_noise import decide_regression, describe, figure_interval

Z = 1.959963984540054


@pytest.mark.parametrize(("section", "name", "value", "expected"), [
    ({"mean": 2.0, "se": 0.3}, "mean", 2.0, (2.0 - Z * 0.3, 2.0 + Z * 0.3)),
    ({"value": 0.1, "se": 0.05}, "value", 0.1, (0.1 - Z * 0.05, 0.1 + Z * 0.05)),
    ({"per_token_mean": 0.1, "per_token_se": 0.01, "se": 9.0}, "per_token_mean", 0.1, (0.1 - Z * 0.01, 0.1 + Z * 0.01)),
    ({"mean_margin": 1.0, "margin_se": 0.2}, "mean_margin", 1.0, (1.0 - Z * 0.2, 1.0 + Z * 0.2)),
    ({"accuracy": 0.9, "accuracy_ci_low": 0.7, "accuracy_ci_high": 0.95}, "accuracy", 0.9, (0.7, 0.95)),  # asymmetric
    ({"displacement_share": 0.4, "displacement_ci": [0.3, 0.6]}, "displacement_share", 0.4, (0.3, 0.6)),
    ({"win_rate": 0.5, "win_rate_ci": [0.4, 0.7]}, "win_rate", 0.5, (0.4, 0.7)),
    ({"gap": 0.1, "gap_ci": [0.02, 0.2]}, "gap", 0.1, (0.02, 0.2)),
    ({"drop": 0.2, "drop_se": 0.05}, "drop", 0.2, (0.2 - Z * 0.05, 0.2 + Z * 0.05)),
    ({"quality": 0.1, "quality_se": 0.02}, "quality", 0.1, (0.1 - Z * 0.02, 0.1 + Z * 0.02)),
    ({"lc_win_rate": 0.5, "lc_win_rate_ci": None}, "lc_win_rate", 0.5, None),
    ({"lc_win_rate": 0.5, "lc_win_rate_ci": [0.52, 0.6]}, "lc_win_rate", 0.5, None),  # a CI that excludes its value
    ({"accuracy": 0.9, "accuracy_ci_low": 0.7, "accuracy_ci_high": 0.95, "accuracy_se": 0.1}, "accuracy", 0.99,
     None),  # outside its own CI: no interval, and no fallback to an SE field
    ({"mean_tokens_ratio": 1.2}, "mean_tokens_ratio", 1.2, None),  # no SE saved
    ({"mean": 2.0, "se": 0.0}, "mean", 2.0, None),  # a zero SE is no noise estimate, never exact
    ({"mean": 2.0, "se": None}, "mean", 2.0, None),
    ({"win_rate_ci": [0.4, 0.7]}, 0, 0.4, None),  # a CI end addressed by index
    (None, "mean", 1.0, None),
])
def test_figure_interval_reads_the_figures_own_section(section, name, value, expected):
    got = figure_interval(section, name, value)
    assert got == (None if expected is None else pytest.approx(expected))


def test_a_drop_fails_only_when_its_ci_is_wholly_past_the_tolerance():
    # symmetric intervals (SE 0.006 and 0.008): change 0.05, CI 0.05 -+ Z * 0.01 = [0.0304, 0.0696]
    new, base = (0.70 - Z * 0.006, 0.70 + Z * 0.006), (0.75 - Z * 0.008, 0.75 + Z * 0.008)
    beyond = decide_regression("drop", 0.70, 0.75, 0.02, new, base)
    assert beyond.change == pytest.approx(0.05)
    assert beyond.change_ci == pytest.approx((0.05 - Z * 0.01, 0.05 + Z * 0.01))
    assert beyond.bound == pytest.approx(0.75 - 0.02 - Z * 0.01) and not beyond.passed
    assert decide_regression("drop", 0.70, 0.75, 0.035, new, base).passed  # 0.0304 < 0.035: inconclusive
    assert decide_regression("drop", 0.80, 0.75, 0.0, (0.79, 0.81), base).passed  # it rose


def test_the_ci_uses_each_intervals_side_that_matters():
    """Newcombe's hybrid: for a drop, the baseline's lower half-width and the value's upper one."""
    # value 0.90 [0.85, 0.99] (upper half 0.09), baseline 0.98 [0.93, 0.995] (lower half 0.05)
    got = decide_regression("drop", 0.90, 0.98, 0.0, (0.85, 0.99), (0.93, 0.995))
    low = 0.08 - math.sqrt(0.05 ** 2 + 0.09 ** 2)
    high = 0.08 + math.sqrt(0.015 ** 2 + 0.05 ** 2)  # baseline's upper half 0.015, value's lower half 0.05
    assert got.change_ci == pytest.approx((low, high)) and got.passed  # low < 0
    assert got.bound == pytest.approx(0.98 - math.sqrt(0.05 ** 2 + 0.09 ** 2))


def test_a_rise_is_the_mirror_image():
    # change 2; the value's lower half 1.0 and the baseline's upper half 0.5: low = 2 - sqrt(1.25) = 0.882
    worse = decide_regression("rise", 5.0, 3.0, 0.5, (4.0, 5.5), (2.0, 3.5))
    assert worse.change == pytest.approx(2.0) and worse.change_ci[0] == pytest.approx(2.0 - math.sqrt(1.25))
    assert worse.change_ci[1] == pytest.approx(2.0 + math.sqrt(0.5 ** 2 + 1.0 ** 2))
    assert worse.bound == pytest.approx(3.0 + 0.5 + math.sqrt(1.25)) and not worse.passed
    assert decide_regression("rise", 5.0, 3.0, 0.9, (4.0, 5.5), (2.0, 3.5)).passed


def test_without_an_interval_on_either_side_the_point_estimates_decide():
    for new, base in ((None, (0.7, 0.8)), ((0.6, 0.8), None), (None, None)):
        got = decide_regression("drop", 0.70, 0.75, 0.02, new, base)
        assert got.change_ci is None and not got.is_inconclusive
        assert got.bound == pytest.approx(0.73) and not got.passed
    assert decide_regression("drop", 0.74, 0.75, 0.02, None, None).passed


def test_the_note_says_which_rule_decided():
    sym = ((0.70 - Z * 0.006, 0.70 + Z * 0.006), (0.75 - Z * 0.008, 0.75 + Z * 0.008))
    assert "point estimates" in describe(decide_regression("drop", 0.7, 0.75, 0.02, None, sym[1]), "drop", "0.02")
    assert describe(decide_regression("drop", 0.70, 0.75, 0.02, *sym), "drop", "0.02").endswith("beyond the tolerance")
    unsure = decide_regression("drop", 0.70, 0.75, 0.035, *sym)
    assert unsure.is_inconclusive and "inconclusive" in describe(unsure, "drop", "0.035")
    same = decide_regression("drop", 0.75, 0.75, 0.05, (0.75 - Z * 0.006, 0.75 + Z * 0.006), sym[1])
    assert not same.is_inconclusive and describe(same, "drop", "0.05").endswith("within the tolerance")


def test_a_bad_direction_is_refused():
    with pytest.raises(ValueError, match="drop or rise"):
        decide_regression("grow", 1.0, 1.0, 0.0, None, None)
