"""Training logs parsed from hand-built histories; the decline rule held to a loop-by-loop reading of it."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest

from dpo_eval.metrics.training_curves import (
    find_chosen_logp_decline,
    find_decline,
    hf_log_history_frame,
    llamafactory_log_frame,
    merge_sources,
    noise_sd,
    torchtune_log_frame,
)

NAN = float("nan")

HF_HISTORY = [
    {"loss": 0.69, "grad_norm": 3.0, "learning_rate": 1e-6, "rewards/chosen": 0.0, "logps/chosen": -100.0,
     "epoch": 0.1, "step": 10},
    {"eval_loss": 0.68, "eval_rewards/accuracies": 0.55, "eval_logps/chosen": -98.0, "eval_runtime": 3.2,
     "eval_samples_per_second": 40.0, "eval_steps_per_second": 5.0, "epoch": 0.1, "step": 10},
    {"loss": NAN, "logps/chosen": -104.0, "note": "text", "flag": True, "epoch": 0.2, "step": 20},
    {"train_runtime": 100.0, "train_samples_per_second": 8.0, "train_steps_per_second": 1.0,
     "total_flos": 1e12, "train_loss": 0.6, "epoch": 0.2, "step": 20},
]


def test_hf_log_history_frame_by_hand():
    history = copy.deepcopy(HF_HISTORY)
    frame = hf_log_history_frame(history)
    assert repr(history) == repr(HF_HISTORY)  # input untouched (by repr: NaN != NaN)
    assert list(frame.columns) == ["step", "metric", "value", "split"]
    got = {(r.step, r.metric, r.split): r.value for r in frame.itertuples()}
    expected = {(10, "loss", "train"): 0.69, (10, "grad_norm", "train"): 3.0,
                (10, "learning_rate", "train"): 1e-6, (10, "rewards/chosen", "train"): 0.0,
                (10, "logps/chosen", "train"): -100.0, (10, "loss", "eval"): 0.68,
                (10, "rewards/accuracies", "eval"): 0.55, (10, "logps/chosen", "eval"): -98.0,
                (20, "loss", "train"): NAN, (20, "logps/chosen", "train"): -104.0}
    assert set(got) == set(expected)  # no timing, summary, string or boolean entries
    for key, value in expected.items():
        assert (math.isnan(got[key]) and math.isnan(value)) or got[key] == value
    assert frame["step"].dtype == np.int64 and frame["value"].dtype == np.float64
    # sorted by split, metric, step
    keys = list(zip(frame["split"], frame["metric"], frame["step"]))
    assert keys == sorted(keys)


def test_a_loops_round_tag_is_a_coordinate_not_a_curve():
    """dpo-eval loop's merged log_history tags each record with its round: no "round" curve is drawn."""
    frame = hf_log_history_frame([{"loss": 0.7, "step": 1, "round": 1}, {"loss": 0.6, "step": 3, "round": 2}])
    assert frame["metric"].tolist() == ["loss", "loss"] and frame["step"].tolist() == [1, 3]


def test_a_repeated_step_keeps_its_last_value_and_bad_records_are_named():
    frame = hf_log_history_frame([{"loss": 1.0, "step": 5}, {"loss": 0.5, "step": 5}])
    assert frame["value"].tolist() == [0.5]
    with pytest.raises(ValueError, match=r"log_history\[1\] has no integer 'step'"):
        hf_log_history_frame([{"loss": 1.0, "step": 5}, {"loss": 0.5}])
    with pytest.raises(ValueError, match="expected a JSON object"):
        hf_log_history_frame([[1, 2]])
    assert hf_log_history_frame([]).empty


def test_llamafactory_rows_by_hand():
    rows = [
        {"current_steps": 10, "total_steps": 100, "loss": 0.69, "accuracy": 0.5, "lr": 5e-7, "epoch": 0.1,
         "percentage": 10.0, "elapsed_time": "0:00:10", "remaining_time": "0:01:30"},
        {"current_steps": 10, "total_steps": 100, "eval_loss": 0.66, "epoch": 0.1, "percentage": 10.0,
         "elapsed_time": "0:00:12", "remaining_time": "0:01:28"},
        {"current_steps": 20, "total_steps": 100, "loss": 0.6, "reward": 1.5, "lr": 1e-6,
         "throughput": 900.0},
        {"current_steps": 5, "total_steps": 50, "percentage": 10.0},  # a predict-progress row: no figures
    ]
    frame = llamafactory_log_frame(rows)
    got = sorted(zip(frame["step"], frame["metric"], frame["value"], frame["split"]))
    assert got == sorted([(10, "loss", 0.69, "train"), (10, "rewards/accuracies", 0.5, "train"),
                          (10, "learning_rate", 5e-7, "train"), (10, "loss", 0.66, "eval"),
                          (20, "loss", 0.6, "train"), (20, "reward", 1.5, "train"),
                          (20, "learning_rate", 1e-6, "train")])
    with pytest.raises(ValueError, match="row 2 has no integer 'current_steps'"):
        llamafactory_log_frame([rows[0], {"loss": 0.5}])
    with pytest.raises(ValueError, match="trainer_state.json instead"):
        find_chosen_logp_decline(frame)


def test_decline_by_hand_without_smoothing():
    # window 1, threshold 1: running max 0,1,3,3,3,4,4,4,4 ; gap 0,0,0,.5,1.5,0,2,3,3.5
    # gap > 1 from index 6 on (the dip at index 4 recovers) -> confirmed step 7; peak: the 4 at step 6
    values = [0, 1, 3, 2.5, 1.5, 4, 2, 1, 0.5]
    d = find_decline(range(1, 10), values, window=1, threshold=1.0)
    assert (d.peak_step, d.peak_value, d.confirmed_step, d.confirmed_value) == (6, 4.0, 7, 2.0)
    assert find_decline(range(1, 10), values, window=1, threshold=1.0, min_points=4) is None  # 3 points after
    assert find_decline(range(1, 10), values, window=1, threshold=3.6) is None
    assert find_decline([1, 2, 3], [1.0, 2.0, 3.0], window=1, threshold=0.0) is None  # never falls


def test_decline_ignores_an_outlier_and_unsorted_input():
    values = [0, 1, 2, 3, 4, 5, -30, 7, 8, 9]  # one spike; smoothed (window 5) it vanishes
    assert find_decline(range(10), values, threshold=1.0) is None
    order = [3, 0, 2, 1, 4]
    d = find_decline(np.array([10, 20, 30, 40, 50])[order], np.array([5.0, 4.0, 3.0, 2.0, 1.0])[order],
                     window=1, threshold=0.5, min_points=1)
    assert (d.peak_step, d.confirmed_step) == (10, 20)


def straightforward_decline(steps, values, window, threshold, min_points):
    """The documented rule, loop by loop."""
    n, half = len(values), window // 2
    smooth = []
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i - half + window)  # pandas' centred window for odd and even sizes
        smooth.append(float(np.median(values[lo:hi])))
    for t in range(1, n - min_points + 1):
        peak_value = max(smooth[: t + 1])
        if all(max(smooth[: u + 1]) - smooth[u] > threshold for u in range(t, n)):
            peak = max(i for i in range(t) if smooth[i] == peak_value)
            return steps[peak], steps[t]
    return None


@pytest.mark.parametrize("seed", range(6))
def test_decline_matches_the_rule_read_loop_by_loop(seed):
    rng = np.random.default_rng(seed)
    n = 40
    peak_at = rng.integers(5, 35)
    steps = [10 * (i + 1) for i in range(n)]
    i = np.arange(n)
    curve = np.where(i < peak_at, 0.3 * i, 0.3 * peak_at - 0.8 * (i - peak_at))
    values = curve + rng.normal(0, 1.0, n)
    for window, threshold in ((5, 2.0), (3, 1.0), (4, 1.5)):
        got = find_decline(steps, values, window=window, threshold=threshold)
        want = straightforward_decline(steps, list(values), window, threshold, 3)
        assert (None if got is None else (got.peak_step, got.confirmed_step)) == want


def test_noise_sd_and_the_default_threshold():
    # differences 2, -2, 2, -2: median 0, MAD 2 -> 1.4826 * 2 / sqrt 2
    assert noise_sd([0.0, 2.0, 0.0, 2.0, 0.0]) == pytest.approx(1.4826 * 2 / math.sqrt(2))
    # a steady trend is not noise: differences all 3
    assert noise_sd([0.0, 3.0, 6.0, 9.0]) == 0.0
    rng = np.random.default_rng(11)
    steps = np.arange(1, 201)
    flat = -100 + rng.normal(0, 2.0, 200)
    assert find_decline(steps, flat) is None  # noise alone does not fire
    # rises 0.2 per step to step 80, then falls 0.3 per step; noise SD 2 (~1.1 after a 5-point median)
    bent = -100 + np.where(steps < 80, 0.2 * steps, 16 - 0.3 * (steps - 80)) + rng.normal(0, 2.0, 200)
    d = find_decline(steps, bent)
    assert d.threshold == pytest.approx(3.0 * noise_sd(bent))
    # the peak lies where the true curve is within ~2 smoothed SDs (2.2) of its top: steps 69 to 87;
    # a drop of the threshold (~6) takes ~20 steps at 0.3 per step
    assert 69 <= d.peak_step <= 87 and 90 <= d.confirmed_step <= 115


def test_find_chosen_logp_decline_on_a_tidy_frame():
    history = [{"logps/chosen": v, "eval_logps/chosen": -v, "step": s}
               for s, v in zip(range(10, 100, 10), [0, 1, 3, 2.5, 1.5, 4, 2, 1, 0.5])]
    frame = hf_log_history_frame(history)
    d = find_chosen_logp_decline(frame, window=1, threshold=1.0)
    assert (d.peak_step, d.confirmed_step) == (60, 70)
    assert find_chosen_logp_decline(frame, split="eval", window=1, threshold=1.0) is None  # -values rise
    assert isinstance(frame, pd.DataFrame)


def test_torchtune_disk_log_lines_by_hand():
    lines = ["Step 1 | loss:0.6931 lr:0.001 rewards/chosen:0.0 log_probs/chosen:-30.5 logits/chosen:-0.1 ",
             "some other line", "Step 2 | loss:0.5 lr:0.001 tokens_per_second_per_gpu:nan note:abc ",
             "Step 2 | loss:0.4"]
    frame = torchtune_log_frame(lines)
    got = sorted(zip(frame["step"], frame["metric"], frame["value"], frame["split"]))
    nan_rows = [g for g in got if math.isnan(g[2])]
    assert nan_rows == [(2, "tokens_per_second_per_gpu", nan_rows[0][2], "train")]
    assert [g for g in got if not math.isnan(g[2])] == sorted([
        (1, "loss", 0.6931, "train"), (1, "learning_rate", 0.001, "train"), (1, "rewards/chosen", 0.0, "train"),
        (1, "logps/chosen", -30.5, "train"), (1, "logits/chosen", -0.1, "train"),
        (2, "loss", 0.4, "train"), (2, "learning_rate", 0.001, "train")])  # a repeated step keeps its last
    assert torchtune_log_frame([]).empty


def test_merge_sources_keeps_the_first_source_of_each_point_and_names_it():
    history = hf_log_history_frame([{"loss": 0.69, "rewards/accuracies": 0.5, "step": 1},
                                    {"loss": 0.6, "step": 2}])
    jsonl = llamafactory_log_frame([{"current_steps": 1, "loss": 0.69, "accuracy": 0.5, "lr": 1e-3},
                                    {"current_steps": 2, "loss": 0.6}, {"current_steps": 3, "loss": 0.5}])
    merged = merge_sources([("trainer_state.json", history), ("trainer_log.jsonl", jsonl)])
    got = sorted(zip(merged["step"], merged["metric"], merged["value"], merged["source"]))
    assert got == sorted([(1, "loss", 0.69, "trainer_state.json"), (1, "rewards/accuracies", 0.5, "trainer_state.json"),
                          (2, "loss", 0.6, "trainer_state.json"), (1, "learning_rate", 1e-3, "trainer_log.jsonl"),
                          (3, "loss", 0.5, "trainer_log.jsonl")])
    assert len(merged) == len(merged.drop_duplicates(["step", "metric", "split"]))
    swapped = merge_sources([("trainer_log.jsonl", jsonl), ("trainer_state.json", history)])
    assert set(swapped.loc[swapped["step"] < 3, "source"]) == {"trainer_log.jsonl"}
    empty = merge_sources([("a", hf_log_history_frame([]))])
    assert empty.empty and list(empty.columns) == ["step", "metric", "value", "split", "source"]
