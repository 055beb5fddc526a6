"""Pair rules of the loop against hand values: max_min, max_random, RSO acceptance and ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpo_eval.metrics.loop_pairs import (
    PromptPairs,
    max_min_pairs,
    max_random_pairs,
    rank_pairs,
    rso_accept,
    rso_pairs,
)


def fixed(us):
    """uniform() returning the given u values in order (and failing if more are asked)."""
    values = iter(us)
    return lambda: next(values)


def test_max_min_best_against_worst_first_occurrence():
    assert max_min_pairs([0.2, 0.9, 0.1, 0.9, 0.1]) == PromptPairs(((1, 2),), 0)
    assert max_min_pairs([None, 3.0, float("nan"), 1.0]) == PromptPairs(((1, 3),), 0)


def test_max_min_all_equal_is_one_tie_and_too_few_scored_is_nothing():
    assert max_min_pairs([1.0, 1.0, 1.0]) == PromptPairs((), 1)
    assert max_min_pairs([None, 1.0]) == PromptPairs((), 0)
    assert max_min_pairs([]) == PromptPairs((), 0)


def test_max_random_draws_the_rejected_uniformly_among_the_others():
    scores = [0.0, 5.0, 1.0, 2.0]
    # the others of the best (index 1) are [0, 2, 3]; the draw is rng.integers(3)
    for seed in range(5):
        expected = [0, 2, 3][int(np.random.default_rng(seed).integers(3))]
        assert max_random_pairs(scores, np.random.default_rng(seed)) == PromptPairs(((1, expected),), 0)
    drawn = {max_random_pairs(scores, np.random.default_rng(s)).pairs[0][1] for s in range(40)}
    assert drawn == {0, 2, 3}


def test_max_random_a_draw_that_ties_the_best_is_a_tie():
    assert max_random_pairs([2.0, 2.0], np.random.default_rng(0)) == PromptPairs((), 1)
    assert max_random_pairs([2.0, None], np.random.default_rng(0)) == PromptPairs((), 0)


def test_rso_accept_on_a_fixed_u_sequence():
    rewards, beta = [1.0, 3.0, 2.0, 0.0], 1.0
    # pass 1, r_max = 3: thresholds exp(-2)=.135, 1, exp(-1)=.368, exp(-3)=.0498
    #   y0: u=.5 >= .135 reject; y1: u=.99 < 1 accept; y2: u=.3 < .368 accept -> 2 taken, stop
    assert rso_accept(rewards, beta, 2, fixed([0.5, 0.99, 0.3])) == [1, 2]
    # 3 wanted: y3: u=.9 rejects, then pass 2 over [0, 3] with r_max = 1: thresholds 1, exp(-1)
    #   y0: u=.2 < 1 accept -> done
    assert rso_accept(rewards, beta, 3, fixed([0.5, 0.99, 0.3, 0.9, 0.2])) == [1, 2, 0]


def test_rso_beta_extremes_best_of_k_and_plain_sampling():
    rewards = [0.5, 2.0, -1.0, 1.0]
    us = [0.999999] * 100
    # beta -> 0: only the best remaining passes each pass (threshold 1 for it, ~0 for the rest)
    assert rso_accept(rewards, 1e-9, 3, fixed(us)) == [1, 3, 0]
    # beta -> infinity: every threshold ~1, so candidates are taken in their order
    assert rso_accept(rewards, 1e12, 3, fixed([0.5] * 3)) == [0, 1, 2]
    with pytest.raises(ValueError, match="positive"):
        rso_accept(rewards, 0.0, 2, fixed(us))


def test_rso_accept_caps_at_the_number_of_candidates():
    assert sorted(rso_accept([1.0, 1.0], 1.0, 5, fixed([0.1, 0.1]))) == [0, 1]


def test_first_round_and_tournament_ranking_by_hand():
    scores = [4.0, 1.0, 3.0, 2.0, 0.0]
    order = [1, 0, 3, 2]
    # first round: (1 vs 0) -> 0 wins, (3 vs 2) -> 2 wins
    assert rank_pairs(order, scores, "first_round") == PromptPairs(((0, 1), (2, 3)), 0)
    # tournament: then 0 vs 2 -> 0 wins: n - 1 = 3 games
    assert rank_pairs(order, scores, "tournament") == PromptPairs(((0, 1), (2, 3), (0, 2)), 0)
    # odd count: 4 gets a bye in round 1, then plays the winner of (1, 0)
    assert rank_pairs([1, 0, 4], scores, "tournament") == PromptPairs(((0, 1), (0, 4)), 0)
    assert rank_pairs([1, 0, 4], scores, "first_round") == PromptPairs(((0, 1),), 0)


def test_ranking_ties_are_dropped_counted_and_the_first_advances():
    scores = [1.0, 1.0, 0.0, 0.0]
    assert rank_pairs([0, 1, 2, 3], scores, "tournament") == PromptPairs(((0, 2),), 2)
    assert rank_pairs([0, 1, 2, 3], [1.0] * 4, "tournament") == PromptPairs((), 3)


def test_rso_pairs_maps_back_to_sample_indices_skipping_unscored():
    scores = [None, 0.0, 5.0, None, 1.0]
    result = rso_pairs(scores, 1e-9, 3, "tournament", np.random.default_rng(0))
    # beta -> 0 accepts in reward order 2 (5.0), 4 (1.0), 1 (0.0); tournament: (2 vs 4), then 2 vs bye-1
    assert result == PromptPairs(((2, 4), (2, 1)), 0)
    assert rso_pairs([None, 1.0], 1.0, 2, "first_round", np.random.default_rng(0)) == PromptPairs((), 0)


def test_rso_threshold_formula_matches_the_paper_with_seeded_u():
    rewards, beta = [0.0, 1.0], 0.5
    rng_values = np.random.default_rng(3).random(10)
    expected, remaining, k = [], [0, 1], 0
    while len(expected) < 1:  # one accept, written out: pass over the remaining in order
        r_max = max(rewards[i] for i in remaining)
        for i in remaining:
            u = rng_values[k]
            k += 1
            if u < math.exp((rewards[i] - r_max) / beta):
                expected.append(i)
                break
    assert rso_accept(rewards, beta, 1, fixed(list(rng_values))) == expected
