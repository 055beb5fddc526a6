"""A judge's agreement with a loop's pair labels: counts and the prompt-clustered SE written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpo_eval.metrics.label_agreement import label_agreement

NAN = float("nan")
Z = 1.959963984540054


def wilson(p: float, n: float) -> tuple[float, float]:
    """Wilson's 95% score interval of a share p out of n, written out."""
    center = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return center - half, center + half


def test_agreement_counts_ties_and_unscored_apart_with_the_se_clustered_by_prompt():
    preference = [1.0, 1.0, 0.0, 0.5, NAN, 1.0, 0.0, 0.8, 0.5]
    prompts = ["a", "a", "a", "b", "b", "b", "c", "c", "d"]
    found = label_agreement(preference, prompts)
    # decisive pairs: a 2 of 3 agree, b 1 of 1, c 1 of 2 (0.8 > 1/2 agrees); d has only a tie (no cluster)
    assert (found.n_pairs, found.n_agree, found.n_disagree, found.n_ties, found.n_unscored, found.n_prompts) == (
        9, 4, 2, 2, 1, 3)
    assert found.agreement == pytest.approx(4 / 6)
    # A_p - r D_p = 2 - 2/3*3 = 0, 1 - 2/3 = 1/3, 1 - 2/3*2 = -1/3; P/(P-1) * sum of squares = 3/2 * 2/9 = 1/3
    se = math.sqrt(1 / 3) / 6
    assert found.se == pytest.approx(se)
    # Wilson at the design-effect size: deff = se^2 / (p (1 - p) / (D - 1)), n_eff = D / max(1, deff)
    deff = max(1.0, se ** 2 / ((4 / 6) * (2 / 6) / 5))
    assert found.ci == pytest.approx(wilson(4 / 6, 6 / deff))


def test_ties_and_unscored_pairs_never_lower_the_agreement():
    base = label_agreement([1.0, 0.0, 1.0], ["a", "b", "c"])
    more = label_agreement([1.0, 0.0, 1.0, 0.5, NAN, 0.5], ["a", "b", "c", "a", "b", "e"])
    assert more.agreement == base.agreement == pytest.approx(2 / 3)
    assert more.se == pytest.approx(base.se)
    assert (more.n_ties, more.n_unscored, more.n_disagree) == (2, 1, 1)


def test_one_pair_per_prompt_gives_the_plain_binomial_se():
    agree = np.array([1, 1, 0, 1, 0, 1, 1, 1], dtype=float)
    found = label_agreement(agree, [f"p{i}" for i in range(agree.size)])
    assert found.se == pytest.approx(np.std(agree, ddof=1) / math.sqrt(agree.size))


def test_the_ci_stays_in_zero_one_and_counts_each_prompt_once_when_every_pair_agrees():
    high = label_agreement([1.0] * 9 + [0.0], [f"p{i}" for i in range(10)])
    se = math.sqrt(10 / 9 * (9 * 0.1**2 + 0.9**2)) / 10
    assert high.se == pytest.approx(se) and high.ci == pytest.approx(wilson(0.9, 10))  # one pair per prompt
    assert 0.0 <= high.ci[0] < high.ci[1] <= 1.0
    everyone = label_agreement([1.0, 1.0, 0.9, 1.0], ["a", "b", "c", "c"])  # not a zero-width [100%, 100%]
    assert everyone.agreement == 1.0 and everyone.se == 0.0 and everyone.ci == pytest.approx(wilson(1.0, 3))
    one = label_agreement([1.0, 0.0], ["a", "a"])
    assert one.agreement == 0.5 and math.isnan(one.se) and one.ci == pytest.approx(wilson(0.5, 1))
    none = label_agreement([0.5, NAN], ["a", "b"])
    assert math.isnan(none.agreement) and none.n_prompts == 0 and all(math.isnan(v) for v in none.ci)


def test_bad_input_is_refused_and_inputs_are_left_unchanged():
    preference, prompts = np.array([1.0, 0.0, NAN]), np.array(["a", "b", "c"], dtype=object)
    label_agreement(preference, prompts)
    assert np.array_equal(preference, [1.0, 0.0, NAN], equal_nan=True) and list(prompts) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="one length"):
        label_agreement([1.0], ["a", "b"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_agreement([1.5], ["a"])
