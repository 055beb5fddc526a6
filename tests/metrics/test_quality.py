"""Quality relative to the reference: formulas written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpo_eval.metrics.quality import quality_difference, quality_from_winrate


def test_winrate_quality_is_w_minus_half_with_se_from_the_ci():
    q = quality_from_winrate(0.62, (0.52, 0.72))
    assert q.value == pytest.approx(0.12)
    assert q.se == pytest.approx(0.20 / (2 * 1.959963984540054))
    assert (q.checkpoint_mean, q.reference_mean, q.source) == (0.62, 0.5, "winrate")
    assert math.isnan(quality_from_winrate(0.6, (float("nan"), float("nan"))).se)
    with pytest.raises(ValueError, match="source"):
        quality_from_winrate(0.6, (0.5, 0.7), source="gold")


def test_gold_quality_is_the_paired_per_prompt_difference():
    # checkpoint: prompt a 2/2 correct, prompt b 0/2, prompt c 1/2 -> shares 1, 0, .5
    ckpt = [1, 1, 0, 0, 1, 0]
    ckpt_prompts = ["a", "a", "b", "b", "c", "c"]
    # reference: a 1/2, b 0/2, c 0/2 -> shares .5, 0, 0
    ref = [1, 0, 0, 0, 0, 0]
    q = quality_difference(ckpt, ckpt_prompts, ref, ckpt_prompts, source="gold")
    # paired by prompt: d = (1 - .5, 0 - 0, .5 - 0) = (.5, 0, .5), mean 1/3,
    # sum of squared deviations (1/6)^2 + (1/3)^2 + (1/6)^2 = 1/6, var = 1/12, se = sqrt(1/12) / sqrt(3) = 1/6
    assert q.checkpoint_mean == pytest.approx(0.5) and q.reference_mean == pytest.approx(1 / 6)
    assert q.value == pytest.approx(1 / 3)
    assert q.se == pytest.approx(1 / 6)
    # not the unpaired sqrt(se_ckpt^2 + se_ref^2) = sqrt(1/12 + 1/36) = 1/3
    assert q.se != pytest.approx(1 / 3)


def test_gold_quality_pairs_only_shared_prompts_in_any_order():
    # reference rows shuffled and holding an extra prompt d; checkpoint holds an extra prompt e
    ckpt = [1, 0, 1, 1, 0]
    ckpt_prompts = ["a", "a", "b", "c", "e"]
    ref = [0, 1, 1, 0, 1]
    ref_prompts = ["d", "c", "b", "a", "a"]
    q = quality_difference(ckpt, ckpt_prompts, ref, ref_prompts, source="gold")
    # shared a, b, c: checkpoint .5, 1, 1; reference .5, 1, 1 -> d = 0, 0, 0
    assert (q.value, q.se, q.checkpoint_mean, q.reference_mean) == (0.0, 0.0, pytest.approx(5 / 6),
                                                                    pytest.approx(5 / 6))
    with pytest.raises(ValueError, match="share no prompt"):
        quality_difference([1.0], ["a"], [1.0], ["b"], source="gold")
    assert math.isnan(quality_difference([1.0], ["a"], [0.0], ["a"], source="gold").se)


def test_external_scores_and_bad_input():
    q = quality_difference([2.0, 4.0], ["p", "q"], [1.0, 1.0], ["p", "q"], source="external")
    assert q.value == pytest.approx(2.0) and q.source == "external"
    with pytest.raises(ValueError, match="finite"):
        quality_difference([np.nan], ["p"], [1.0], ["p"], source="external")
    with pytest.raises(ValueError, match="one length"):
        quality_difference([1.0, 2.0], ["p"], [1.0], ["p"], source="gold")
    with pytest.raises(ValueError, match="no samples"):
        quality_difference([], [], [1.0], ["p"], source="gold")


def test_quality_from_preferences_clusters_its_se_by_prompt():
    from dpo_eval.metrics.quality import quality_from_preferences

    preference = np.array([1.0, 1.0, 1.0, 0.0, 0.0, np.nan, 0.5])
    prompts = np.array(["a", "a", "a", "b", "b", "b", "c"])
    got = quality_from_preferences(preference, prompts)
    n, w = 6, 3.5 / 6  # the NaN is unscored: left out
    totals, counts = np.array([3.0, 0.0, 0.5]), np.array([3, 2, 1])
    se = np.sqrt(3 / 2 * np.sum((totals - w * counts) ** 2)) / n
    assert got.value == pytest.approx(w - 0.5) and got.se == pytest.approx(se)
    assert got.checkpoint_mean == pytest.approx(w) and got.reference_mean == 0.5
    # prompts agreeing within themselves: the clustered SE exceeds the iid one
    assert got.se > np.std(preference[:-2].tolist() + [0.5], ddof=1) / np.sqrt(n)
    one_each = quality_from_preferences(np.array([1.0, 0.0, 0.5]), np.array(["x", "y", "z"]))
    assert one_each.se == pytest.approx(np.std([1.0, 0.0, 0.5], ddof=1) / np.sqrt(3))
