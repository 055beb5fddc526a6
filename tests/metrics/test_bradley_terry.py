"""Bradley–Terry ratings: closed forms, planted-rating recovery within asymptotic standard errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from scipy.special import expit

import dpo_eval.metrics.bradley_terry as bradley_terry
from dpo_eval.metrics.bradley_terry import BTRatings, fit_bradley_terry

PLANTED = {"m0": 0.0, "m1": 0.5, "m2": -0.7, "m3": 1.2, "m4": 0.3}


def comparisons(pairs: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["model_a", "model_b", "preference"])


def test_two_models_closed_form():
    # a beats b in 3 of 4 comparisons: the MLE solves sigmoid(r_a - r_b) = 3/4, so r_a - r_b = log 3.
    frame = comparisons([("a", "b", 1.0), ("a", "b", 1.0), ("b", "a", 0.0), ("a", "b", 0.0)])
    fit = fit_bradley_terry(frame, n_resamples=20)
    assert fit.anchor == "a" and fit.ratings["a"] == 0.0 and fit.ci["a"] == (0.0, 0.0)
    assert fit.ratings["b"] == pytest.approx(-math.log(3), abs=1e-4)  # the 1e-6 L2 moves it ~1e-5
    assert (fit.n, fit.n_unscored) == (4, 0)


def test_soft_labels_at_the_true_probability_recover_ratings_exactly():
    # preference = sigmoid(r_a - r_b) for every ordered pair: the planted ratings are the optimum
    frame = comparisons([(a, b, float(expit(PLANTED[a] - PLANTED[b])))
                         for a, b in itertools.permutations(PLANTED, 2)])
    fit = fit_bradley_terry(frame, n_resamples=10)
    for model, rating in PLANTED.items():
        assert fit.ratings[model] == pytest.approx(rating, abs=1e-4)


def planted_comparisons(per_pair: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for a, b in itertools.combinations(PLANTED, 2):
        wins = rng.binomial(1, expit(PLANTED[a] - PLANTED[b]), size=per_pair)
        rows += [(a, b, float(w)) for w in wins]
    return comparisons(rows)


def asymptotic_se(per_pair: int) -> dict[str, float]:
    """Standard errors of r_k - r_m0 from the Fisher information at the planted ratings.

    I = sum over comparisons p (1 - p) (e_a - e_b)(e_a - e_b)^T; fixing the anchor drops its row and
    column, and the SEs are sqrt(diag(I^-1)).
    """
    names = list(PLANTED)
    info = np.zeros((len(names), len(names)))
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        p = expit(PLANTED[a] - PLANTED[b])
        w = per_pair * p * (1 - p)
        info[i, i] += w
        info[j, j] += w
        info[i, j] -= w
        info[j, i] -= w
    cov = np.linalg.inv(info[1:, 1:])
    return dict(zip(names[1:], np.sqrt(np.diag(cov))))


def test_recovers_planted_ratings_from_bernoulli_comparisons():
    # 150 comparisons per pair, 1,500 in all; the SEs are ~0.11. Tolerance: 4 SE per model (a
    # miss has probability ~6e-5 each), and the bootstrap CI width should match 2 * 1.96 * SE.
    frame = planted_comparisons(150, seed=0)
    fit = fit_bradley_terry(frame, seed=1, n_resamples=200)
    se = asymptotic_se(150)
    assert fit.ratings["m0"] == 0.0 and fit.n == len(frame)
    for model, s in se.items():
        assert abs(fit.ratings[model] - PLANTED[model]) < 4 * s, model
        low, high = fit.ci[model]
        assert low < fit.ratings[model] < high
        assert 0.7 < (high - low) / (2 * 1.96 * s) < 1.4, model


def test_anchor_shifts_every_rating_and_keeps_differences():
    frame = planted_comparisons(30, seed=2)
    default, anchored = fit_bradley_terry(frame, n_resamples=10), fit_bradley_terry(frame, anchor="m3", n_resamples=10)
    assert anchored.anchor == "m3" and anchored.ratings["m3"] == 0.0 and anchored.ci["m3"] == (0.0, 0.0)
    for model in PLANTED:
        assert anchored.ratings[model] == pytest.approx(default.ratings[model] - default.ratings["m3"], abs=1e-5)


def test_orientation_of_a_comparison_does_not_matter():
    frame = planted_comparisons(20, seed=3)
    flipped = frame.assign(model_a=frame["model_b"], model_b=frame["model_a"], preference=1.0 - frame["preference"])
    one, two = fit_bradley_terry(frame, n_resamples=10), fit_bradley_terry(flipped, n_resamples=10)
    for model in PLANTED:
        assert one.ratings[model] == pytest.approx(two.ratings[model], abs=1e-5)


def test_a_model_that_wins_everything_stays_finite():
    frame = comparisons([("champ", "b", 1.0)] * 10 + [("b", "c", 0.5)] * 10)
    fit = fit_bradley_terry(frame, anchor="b", n_resamples=10)
    assert 5.0 < fit.ratings["champ"] < 30.0 and fit.ratings["c"] == pytest.approx(0.0, abs=1e-4)


def test_unscored_rows_are_left_out_and_counted():
    frame = planted_comparisons(10, seed=4)
    with_nan = pd.concat([frame, comparisons([("m0", "m1", np.nan), ("m2", "m3", np.nan)])], ignore_index=True)
    before = with_nan.copy()
    fit = fit_bradley_terry(with_nan, n_resamples=10)
    pd.testing.assert_frame_equal(with_nan, before)  # input untouched
    assert (fit.n, fit.n_unscored) == (len(frame), 2)
    assert fit.ratings == fit_bradley_terry(frame, n_resamples=10).ratings


def test_empty_frames():
    assert fit_bradley_terry(pd.DataFrame()) == BTRatings(ratings={}, ci={}, anchor=None, n=0, n_unscored=0)
    only_nan = fit_bradley_terry(comparisons([("a", "b", np.nan)]), anchor="a")
    assert only_nan.ratings == {} and only_nan.n == 0 and only_nan.n_unscored == 1


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="do not link"):
        fit_bradley_terry(comparisons([("a", "b", 1.0), ("c", "d", 0.0)]))
    with pytest.raises(ValueError, match="itself"):
        fit_bradley_terry(comparisons([("a", "a", 1.0)]))
    with pytest.raises(ValueError, match="anchor"):
        fit_bradley_terry(comparisons([("a", "b", 1.0)]), anchor="z")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_bradley_terry(comparisons([("a", "b", 1.5)]))


def test_gradient_is_analytic_gradient_of_the_objective():
    a, b = np.array([0, 1, 2, 0]), np.array([1, 2, 0, 2])
    args = (a, b, np.array([3.0, 1.0, 2.0, 5.0]), np.array([2.0, 0.5, 1.0, 4.5]), 3, 1e-6)
    x = np.array([0.3, -0.2, 0.9])
    assert check_grad(lambda r: bradley_terry._objective(r, *args)[0],
                      lambda r: bradley_terry._objective(r, *args)[1], x) < 1e-5
