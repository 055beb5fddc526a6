"""Win rates pinned to hand-worked tables; bootstrap CI coverage on simulated data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from dpo_eval.metrics.findings import Thresholds, check_lc_gap
from dpo_eval.metrics.length_control import fit_length_control, lc_win_rate
from dpo_eval.metrics.winrate import (
    ModelWinRate,
    bootstrap_ci,
    discrete_win_rate,
    mean_preference,
    position_bias_rate,
    summarize_win_rates,
)

NAN = float("nan")


def hand_table() -> pd.DataFrame:
    # model a: 5 scored rows (one tie, 0.5) and 1 unscored; model b: only unscored rows.
    return pd.DataFrame({
        "model": ["a"] * 6 + ["b"] * 2,
        "prompt_id": ["p1", "p2", "p3", "p4", "p5", "p6", "p1", "p2"],
        "preference": [1.0, 0.5, 0.0, 0.8, NAN, 0.3, NAN, NAN],
        "position_consistent": [True, False, NAN, False, False, NAN, NAN, NAN],
    })


def test_win_rate_and_discrete_win_rate_by_hand():
    pref = hand_table()["preference"].to_numpy()[:6]
    # scored: 1.0, 0.5, 0.0, 0.8, 0.3 -> mean (1 + 0.5 + 0 + 0.8 + 0.3) / 5 = 2.6 / 5
    assert mean_preference(pref) == pytest.approx(2.6 / 5)
    # 1[p > 0.5] + 0.5 * 1[p == 0.5]: 1 + 0.5 + 0 + 1 + 0 = 2.5 over 5
    assert discrete_win_rate(pref) == pytest.approx(2.5 / 5)
    # the NaN is neither a tie ((2.6 + 0.5) / 6) nor a loss (2.6 / 6)
    assert mean_preference(pref) not in (pytest.approx(3.1 / 6), pytest.approx(2.6 / 6))


def test_summary_counts_unscored_and_position_bias_by_hand():
    frame = hand_table()
    before = frame.copy()
    summary = summarize_win_rates(frame, n_resamples=200)
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    assert list(summary) == ["a", "b"]
    a, b = summary["a"], summary["b"]
    assert isinstance(a, ModelWinRate)
    assert (a.n, a.n_unscored) == (5, 1)
    assert a.win_rate == pytest.approx(2.6 / 5) and a.discrete_win_rate == pytest.approx(2.5 / 5)
    assert a.win_rate_ci[0] <= a.win_rate <= a.win_rate_ci[1]
    # scored rows with position_consistent set: True, False, False (the False on the unscored p5 is out)
    assert a.position_bias_rate == pytest.approx(2 / 3)
    assert a.lc_win_rate is None and a.lc_win_rate_ci is None  # no length columns
    assert (b.n, b.n_unscored) == (0, 2) and math.isnan(b.win_rate) and math.isnan(b.discrete_win_rate)
    assert all(math.isnan(x) for x in b.win_rate_ci) and b.position_bias_rate is None


def test_position_bias_rate_by_hand():
    assert position_bias_rate([True, False, NAN, None, True, False]) == pytest.approx(2 / 4)
    assert position_bias_rate(pd.Series([1.0, 0.0, NAN])) == pytest.approx(1 / 2)
    assert position_bias_rate([NAN, None]) is None and position_bias_rate([]) is None
    with pytest.raises(ValueError, match="position_consistent"):
        position_bias_rate(["no"])


def test_bootstrap_ci_covers_the_truth_at_about_the_nominal_rate():
    # 200 samples of 100 Bernoulli(0.3) draws; a 95% percentile CI (300 resamples) should cover 0.3
    # in ~95% of them (binomial SD over 200 repetitions ~1.5 points).
    rng = np.random.default_rng(123)
    covered = 0
    for _ in range(200):
        sample = rng.binomial(1, 0.3, size=100).astype(float)
        low, high = bootstrap_ci(sample, np.mean, n_resamples=300, rng=rng)
        covered += low <= 0.3 <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_bootstrap_ci_seeded_rows_and_empty():
    values = np.array([0.0, 1.0, 1.0, 0.5, 0.25])
    ci = bootstrap_ci(values, np.mean, n_resamples=100, rng=7)
    assert ci == bootstrap_ci(values, np.mean, n_resamples=100, rng=7)
    assert 0.0 <= ci[0] <= np.mean(values) <= ci[1] <= 1.0
    # rows of a 2-D array are resampled together
    rows = np.column_stack([values, values])
    low, high = bootstrap_ci(rows, lambda r: float(np.mean(r[:, 0] - r[:, 1])), n_resamples=50, rng=0)
    assert low == high == 0.0
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([]), np.mean, rng=0))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(values, np.mean, level=95, rng=0)


def test_empty_and_unscored_inputs():
    assert math.isnan(mean_preference([])) and math.isnan(discrete_win_rate([NAN, NAN]))
    assert summarize_win_rates(pd.DataFrame()) == {}
    assert summarize_win_rates(pd.DataFrame(columns=["model", "prompt_id", "preference"])) == {}


def test_bad_input_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mean_preference([0.5, 2.0])
    with pytest.raises(ValueError, match="lacks columns"):
        summarize_win_rates(pd.DataFrame({"model": ["a"], "preference": [1.0]}))


def lengths_frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for model, shift in (("long", 150.0), ("short", -50.0)):
        for i in range(60):
            diff = shift + rng.normal(0.0, 100.0)
            rows.append({"model": model, "prompt_id": f"p{i}", "length_baseline": 300.0,
                         "length_model": 300.0 + diff, "preference": float(rng.random() < 0.5 + 0.4 * np.tanh(diff / 150))})
    rows.append({"model": "ghost", "prompt_id": "p0", "preference": NAN, "length_model": 1.0, "length_baseline": 1.0})
    return pd.DataFrame(rows)


def test_lc_in_summary_is_each_models_own_fit():
    frame = lengths_frame()
    summary = summarize_win_rates(frame, n_resamples=50, lc_resamples=20)
    for model in ("long", "short"):
        result = summary[model]
        own = fit_length_control(frame[frame["model"] == model])  # this model's rows only
        assert result.lc_win_rate == pytest.approx(lc_win_rate(own, model), abs=1e-12)
        low, high = result.lc_win_rate_ci
        assert 0.0 <= low <= high <= 1.0
        gap_low, gap_high = result.lc_gap_ci
        assert -1.0 <= gap_low <= gap_high <= 1.0
    joint = fit_length_control(frame)  # not the joint fit: the other model's rows would move it
    assert abs(summary["long"].lc_win_rate - lc_win_rate(joint, "long")) > 1e-4
    ghost = summary["ghost"]  # length columns present, no scored row: NaN, not None
    assert ghost.n == 0 and math.isnan(ghost.lc_win_rate) and all(math.isnan(x) for x in ghost.lc_win_rate_ci)
    assert all(math.isnan(x) for x in ghost.lc_gap_ci)


def test_a_models_whole_summary_is_unchanged_when_other_models_are_added():
    # Issue 16 item 5: every figure of a checkpoint, LC and its CIs included, is a function of its own rows.
    frame = lengths_frame()
    extra = frame[frame["model"] == "short"].assign(model="extra", preference=lambda f: 1.0 - f["preference"])
    alone = summarize_win_rates(frame[frame["model"] == "long"], seed=3, n_resamples=100, lc_resamples=20)
    together = summarize_win_rates(frame, seed=3, n_resamples=100, lc_resamples=20)
    more = summarize_win_rates(pd.concat([extra, frame], ignore_index=True), seed=3, n_resamples=100,
                               lc_resamples=20)
    assert alone["long"] == together["long"] == more["long"]
    assert together["short"] == more["short"]
    other_seed = summarize_win_rates(frame, seed=4, n_resamples=100, lc_resamples=20)["long"]
    assert other_seed.lc_win_rate_ci != together["long"].lc_win_rate_ci  # the seed still matters


def test_a_models_ci_does_not_depend_on_the_other_models():
    frame = hand_table().assign(model=lambda f: f["model"].replace({"b": "a2"}))
    frame.loc[frame["model"] == "a2", "preference"] = [0.2, 0.9]
    alone = summarize_win_rates(frame[frame["model"] == "a"], seed=3, n_resamples=100)
    together = summarize_win_rates(frame, seed=3, n_resamples=100)
    assert alone["a"] == together["a"]
    assert summarize_win_rates(frame, seed=4, n_resamples=100)["a"].win_rate_ci != together["a"].win_rate_ci


def length_biased_frame(n_prompts: int, seed: int) -> pd.DataFrame:
    """One checkpoint ~150 characters longer than the baseline, judged by a judge that favours length:
    p = sigmoid(-0.3 + 2 tanh(diff / 150) + N(0, 1)), 0/1 verdicts."""
    rng = np.random.default_rng(seed)
    diff = 150.0 + rng.normal(0.0, 150.0, n_prompts)
    p = expit(-0.3 + 2.0 * np.tanh(diff / 150.0) + rng.normal(0.0, 1.0, n_prompts))
    return pd.DataFrame({"model": "ck", "prompt_id": [f"p{i}" for i in range(n_prompts)],
                         "preference": rng.binomial(1, p).astype(float), "length_baseline": 300.0,
                         "length_model": 300.0 + diff})


def test_the_summarys_gap_ci_decides_the_lc_gap_finding():
    # 16 prompts: the point gap is far past the 0.05 threshold, but its paired CI spans 0: no finding.
    few = summarize_win_rates(length_biased_frame(16, seed=1), n_resamples=200, lc_resamples=100)["ck"]
    gap = few.win_rate - few.lc_win_rate
    assert gap > 0.2 and few.lc_gap_ci[0] < 0 < few.lc_gap_ci[1]
    assert check_lc_gap(few.win_rate, few.win_rate_ci, few.lc_win_rate, few.lc_win_rate_ci, few.lc_gap_ci, 1.5,
                        Thresholds()) is None
    # 300 prompts: the same judge, a CI clear of 0: the finding fires and says longer answers helped.
    many = summarize_win_rates(length_biased_frame(300, seed=0), n_resamples=200, lc_resamples=100)["ck"]
    assert 0 < many.lc_gap_ci[0] <= many.win_rate - many.lc_win_rate <= many.lc_gap_ci[1]
    found = check_lc_gap(many.win_rate, many.win_rate_ci, many.lc_win_rate, many.lc_win_rate_ci, many.lc_gap_ci,
                         1.5, Thresholds())
    assert found.title == "Win rate helped by longer answers"


def test_win_rate_ci_resamples_prompts_not_rows():
    from dpo_eval.metrics.winrate import bootstrap_ci, prompt_bootstrap_ci

    rng = np.random.default_rng(3)
    prompts = np.repeat([f"p{i}" for i in range(12)], 4)  # 4 judgments per prompt (2 samples x 2 orders)
    per_prompt = rng.uniform(0, 1, 12) > 0.5  # a prompt's judgments agree: one cluster
    pref = np.repeat(per_prompt.astype(float), 4)
    pref[5] = np.nan  # unscored: left out
    got = prompt_bootstrap_ci(pref, prompts, n_resamples=500, level=0.9, rng=7)
    # straightforward: draw 12 prompts with replacement, pool their scored rows, take the mean
    gen, draws = np.random.default_rng(7), []
    for _ in range(500):
        picked = gen.integers(0, 12, size=12)
        pooled = [p for g in picked for p in pref[prompts == f"p{g}"] if not np.isnan(p)]
        draws.append(sum(pooled) / len(pooled))
    assert got == pytest.approx((np.percentile(draws, 5), np.percentile(draws, 95)))
    rows = bootstrap_ci(pref[~np.isnan(pref)], np.mean, n_resamples=500, level=0.9, rng=7)
    assert got[1] - got[0] > 1.5 * (rows[1] - rows[0])  # 47 rows as if independent: too narrow
    one_each = rng.uniform(0, 1, 30)  # one row per prompt: the row bootstrap, draw for draw
    assert prompt_bootstrap_ci(one_each, np.arange(30), n_resamples=300, rng=1) == pytest.approx(
        bootstrap_ci(one_each, np.mean, n_resamples=300, rng=1))
