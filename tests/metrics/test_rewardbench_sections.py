"""RewardBench v1 section weighting pinned to a worked example computed by hand here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpo_eval.metrics.rewardbench import (
    EXAMPLE_COUNTS,
    SECTIONS,
    section_scores,
    sequence_values,
    summarize_rewardbench,
)

# Accuracies per subset and what RewardBench's count weighting makes of them, by hand:
#   Chat      = (0.9*100 + 0.5*28) / (100 + 28)   = 104 / 128       = 0.8125
#   Chat Hard = (0.3*37 + 0.6*100) / (37 + 100)   = 71.1 / 137
#   Safety    = (0.8*154 + 0.2*250) / (154 + 250) = 173.2 / 404     (xstest refuse 154, respond 250)
#   Reasoning = (0.4*984 + 1.0*164) / (984 + 164) = 557.6 / 1148    (math-prm counted as 984)
ACCURACY = {"alpacaeval-easy": 0.9, "mt-bench-easy": 0.5, "mt-bench-hard": 0.3, "llmbar-natural": 0.6,
            "xstest-should-refuse": 0.8, "xstest-should-respond": 0.2, "math-prm": 0.4, "hep-python": 1.0}
EXPECTED = {"Chat": 0.8125, "Chat Hard": 71.1 / 137, "Safety": 173.2 / 404, "Reasoning": 557.6 / 1148}


def test_sections_match_the_hand_computed_example():
    got = section_scores(ACCURACY)
    for name, value in EXPECTED.items():
        assert got[name] == pytest.approx(value, abs=1e-12)


def test_safety_section_with_every_subset_by_hand():
    # RewardBench's current counts (allenai/reward-bench PR #175, Sept 2024; package 0.1.4):
    # refusals-dangerous 100, refusals-offensive 100, xstest-should-refuse 154, xstest-should-respond 250,
    # donotanswer 136; total 740.
    #   Safety = (0.9*100 + 0.7*100 + 0.95*154 + 0.6*250 + 0.5*136) / 740
    #          = (90 + 70 + 146.3 + 150 + 68) / 740 = 524.3 / 740
    # (the pre-#175 counts, refuse 250 / respond 154, would give (90+70+237.5+92.4+68)/740 = 557.9/740)
    accuracy = {"refusals-dangerous": 0.9, "refusals-offensive": 0.7, "xstest-should-refuse": 0.95,
                "xstest-should-respond": 0.6, "donotanswer": 0.5}
    assert section_scores(accuracy)["Safety"] == pytest.approx(524.3 / 740, abs=1e-12)
    assert (EXAMPLE_COUNTS["xstest-should-refuse"], EXAMPLE_COUNTS["xstest-should-respond"]) == (154, 250)


def test_constants_equal_the_rewardbench_package():
    constants = pytest.importorskip("rewardbench.constants")
    assert EXAMPLE_COUNTS == dict(constants.EXAMPLE_COUNTS)
    assert {k: sorted(v) for k, v in SECTIONS.items()} == {k: sorted(v) for k, v in constants.SUBSET_MAPPING.items()}


def test_constants_cover_every_section_subset_and_math_equals_code():
    assert sorted(EXAMPLE_COUNTS) == sorted(s for subsets in SECTIONS.values() for s in subsets)
    code = sum(EXAMPLE_COUNTS[s] for s in SECTIONS["Reasoning"] if s.startswith("hep-"))
    assert EXAMPLE_COUNTS["math-prm"] == code == 984


def margins_for(accuracy: dict[str, float], n: int = 10) -> tuple[list, list]:
    """n pairs per subset, round(acc * n) of them with margin +1, the rest -1."""
    subsets, margins = [], []
    for name, acc in accuracy.items():
        wins = round(acc * n)
        subsets += [name] * n
        margins += [1.0] * wins + [-1.0] * (n - wins)
    return subsets, margins


def test_summary_from_margins_with_prior_sets():
    prior = {"anthropic_helpful": 0.7, "shp": 0.5, "mtbench_human": 0.1}
    subsets, margins = margins_for({**ACCURACY, **prior})
    out = summarize_rewardbench(subsets, margins)
    assert out["sections"] == pytest.approx(EXPECTED)
    assert out["score"] == pytest.approx(sum(EXPECTED.values()) / 4)
    # prior sets: mean of the ones present (mtbench_human is not one); leaderboard weights 2,2,2,2,1
    assert out["prior_sets"]["score"] == pytest.approx(0.6)
    assert out["prior_sets"]["subsets"] == ["anthropic_helpful", "shp"]
    assert out["prior_sets"]["score_with_prior_sets"] == pytest.approx((2 * sum(EXPECTED.values()) + 0.6) / 9)
    assert out["other_subsets"] == ["mtbench_human"]
    assert out["subsets"]["math-prm"] == {"n": 10, "accuracy": 0.4, "accuracy_ties_half": 0.4, "n_ties": 0,
                                          "weight": 984}


def test_ties_are_wrong_and_half_credit_beside():
    out = summarize_rewardbench(["alpacaeval-easy"] * 4 + ["hep-go"] * 2, [1.0, 0.0, -1.0, 0.0, 0.0, 2.0])
    easy = out["subsets"]["alpacaeval-easy"]
    assert (easy["accuracy"], easy["accuracy_ties_half"], easy["n_ties"]) == (0.25, 0.5, 2)
    assert out["sections"]["Chat"] == 0.25 and out["sections_ties_half"]["Chat"] == 0.5
    assert out["sections_ties_half"]["Reasoning"] == 0.75
    assert out["score"] is None and out["sections"]["Safety"] is None  # missing sections are not 0
    assert out["prior_sets"] is None


def test_sequence_values():
    policy, squares, ref, tokens = np.array([-4.0, -9.0]), np.array([10.0, 81.0]), np.array([-5.0, -6.0]), [2, 3]
    assert sequence_values(policy, squares, ref, tokens, "sum").tolist() == [1.0, -3.0]
    assert sequence_values(policy, squares, ref, tokens, "avg").tolist() == [0.5, -1.0]
    assert sequence_values(policy, squares, None, tokens, "sum").tolist() == [-4.0, -9.0]
    assert sequence_values(policy, squares, None, tokens, "norm").tolist() == [-math.sqrt(10.0), -9.0]
    with pytest.raises(ValueError):
        sequence_values(policy, squares, ref, tokens, "norm")
