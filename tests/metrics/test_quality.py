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


def test_gold_quality_is_difference_of_prompt_clustered_accuracies():
    # checkpoint: prompt a 2/2 correct, prompt b 0/2, prompt c 1/2 -> shares 1, 0, .5
    ckpt = [1, 1, 0, 0, 1, 0]
    ckpt_prompts = ["a", "a", "b", "b", "c", "c"]
    # reference: a 1/2, b 0/2, c 0/2 -> shares .5, 0, 0
    ref = [1, 0, 0, 0, 0, 0]
    q = quality_difference(ckpt, ckpt_prompts, ref, ckpt_prompts, source="gold")
    shares_ckpt, shares_ref = np.array([1, 0, 0.5]), np.array([0.5, 0, 0])
    se_ckpt = shares_ckpt.std(ddof=1) / math.sqrt(3)
    se_ref = shares_ref.std(ddof=1) / math.sqrt(3)
    assert q.checkpoint_mean == pytest.approx(0.5) and q.reference_mean == pytest.approx(1 / 6)
    assert q.value == pytest.approx(0.5 - 1 / 6)
    assert q.se == pytest.approx(math.sqrt(se_ckpt ** 2 + se_ref ** 2))


def test_external_scores_and_bad_input():
    q = quality_difference([2.0, 4.0], ["p", "q"], [1.0, 1.0], ["p", "q"], source="external")
    assert q.value == pytest.approx(2.0) and q.source == "external"
    with pytest.raises(ValueError, match="finite"):
        quality_difference([np.nan], ["p"], [1.0], ["p"], source="external")
    with pytest.raises(ValueError, match="one length"):
        quality_difference([1.0, 2.0], ["p"], [1.0], ["p"], source="gold")
    with pytest.raises(ValueError, match="no samples"):
        quality_difference([], [], [1.0], ["p"], source="gold")
