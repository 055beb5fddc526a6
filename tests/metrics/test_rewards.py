"""Reward metrics pinned to values worked out by hand."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dpo_eval.metrics.rewards import implicit_rewards, reward_accuracy, summarize_rewards


def test_implicit_reward_is_beta_times_log_ratio():
    # beta * (logpi - logpi_ref): 0.1 * (-10 - -12) = 0.2 ; 0.1 * (-5 - -4) = -0.1
    got = implicit_rewards(np.array([-10.0, -5.0]), np.array([-12.0, -4.0]), np.array([4, 2]), beta=0.1)
    np.testing.assert_allclose(got, [0.2, -0.1])


def test_avg_norm_divides_by_tokens_and_reference_free():
    # SimPO: beta / |y| * logpi = 2.0 * -10 / 4 = -5.0 ; 2.0 * -6 / 3 = -4.0
    got = implicit_rewards(np.array([-10.0, -6.0]), None, np.array([4, 3]), beta=2.0, norm="avg")
    np.testing.assert_allclose(got, [-5.0, -4.0])


def test_accuracy_with_ties_reported_apart():
    chosen = np.array([1.0, 0.5, 0.2, 0.0])
    rejected = np.array([0.0, 0.5, 0.4, -1.0])
    # margins 1.0, 0.0 (tie), -0.2, 1.0 -> wins 2, ties 1, n 4
    acc = reward_accuracy(chosen, rejected)
    assert acc.n == 4 and acc.n_ties == 1
    assert acc.accuracy == pytest.approx(2 / 4)
    assert acc.accuracy_ties_half == pytest.approx((2 + 0.5) / 4)
    assert acc.mean_margin == pytest.approx((1.0 + 0.0 - 0.2 + 1.0) / 4)
    assert acc.mean_reward_chosen == pytest.approx(1.7 / 4)
    assert acc.mean_reward_rejected == pytest.approx(-0.1 / 4)


def test_accuracy_ci_is_wilson_and_margin_se_the_pair_sd_when_each_pair_has_its_own_prompt():
    # margins 1, -1, 2, 3: 3 wins of 4; Wilson at z = 1.959964: p = .75, n = 4
    acc = reward_accuracy(np.array([1.0, -1.0, 2.0, 3.0]), np.zeros(4))
    z, p, n = 1.959963984540054, 0.75, 4
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (acc.accuracy_ci_low, acc.accuracy_ci_high) == pytest.approx((center - half, center + half))
    margins = np.array([1.0, -1.0, 2.0, 3.0])
    assert acc.margin_se == pytest.approx(margins.std(ddof=1) / 2) and acc.n_prompts == 4


def test_pairs_sharing_a_prompt_are_one_cluster():
    # prompts a, a, b, b, c, c; margins 1, 3 | -1, -3 | 2, 2 -> mean 4/6; cluster totals T = 4, -4, 4, sizes 2
    margins = np.array([1.0, 3.0, -1.0, -3.0, 2.0, 2.0])
    acc = reward_accuracy(margins, np.zeros(6), prompt_id=["a", "a", "b", "b", "c", "c"])
    m, totals = 4 / 6, np.array([4.0, -4.0, 4.0])
    se = math.sqrt(3 / 2 * np.sum((totals - m * 2) ** 2)) / 6
    assert acc.n_prompts == 3 and acc.margin_se == pytest.approx(se)
    alone = reward_accuracy(margins, np.zeros(6))
    # wins agree within each prompt: the clustered interval is wider than the one-pair-per-prompt one
    assert acc.accuracy == alone.accuracy == pytest.approx(4 / 6)
    assert acc.accuracy_ci_high - acc.accuracy_ci_low > alone.accuracy_ci_high - alone.accuracy_ci_low


def test_summary_clusters_by_prompt_key_when_the_frame_has_one():
    frame = pd.DataFrame({"subset": ["x"] * 4, "reward_chosen": [1.0, 2.0, -1.0, -2.0],
                          "reward_rejected": [0.0] * 4, "prompt_key": ["a", "a", "b", "b"]})
    summary = summarize_rewards(frame)
    assert summary["n_prompts"] == 2 and summary["per_subset"]["x"]["n_prompts"] == 2
    assert summarize_rewards(frame.drop(columns="prompt_key"))["n_prompts"] == 4


def test_tie_tolerance_widens_ties():
    acc = reward_accuracy(np.array([0.001, 1.0]), np.array([0.0, 0.0]), tie_tolerance=0.01)
    assert acc.n_ties == 1 and acc.accuracy == pytest.approx(0.5) and acc.accuracy_ties_half == pytest.approx(0.75)


def test_empty_input_gives_nan_not_an_error():
    acc = reward_accuracy(np.array([]), np.array([]))
    assert acc.n == 0 and math.isnan(acc.accuracy)


def test_summary_per_subset():
    frame = pd.DataFrame({"subset": ["x", "x", "y"], "reward_chosen": [1.0, -1.0, 2.0],
                          "reward_rejected": [0.0, 0.0, 1.0]})
    summary = summarize_rewards(frame)
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["per_subset"]["x"]["accuracy"] == pytest.approx(0.5)
    assert summary["per_subset"]["y"]["n"] == 1 and summary["per_subset"]["y"]["accuracy"] == 1.0


def test_bad_norm_rejected():
    with pytest.raises(ValueError, match="norm"):
        implicit_rewards(np.array([1.0]), None, np.array([1]), beta=1.0, norm="mean")


def test_metrics_package_does_not_import_torch():
    code = ("import sys, pkgutil, importlib, dpo_eval.metrics as m\n"
            "for info in pkgutil.iter_modules(m.__path__): importlib.import_module('dpo_eval.metrics.' + info.name)\n"
            "bad = [name for name in ('torch', 'transformers') if name in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"dpo_eval.metrics imported {out.stdout.strip()}"
