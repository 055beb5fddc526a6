"""The report clusters pair figures by prompt: pairs sharing a prompt are one cluster in every SE and CI."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from dpo_eval.data.pairs import PreferencePair
from dpo_eval.evaluation import assemble, frames
from dpo_eval.evaluation.plan import Row
from dpo_eval.metrics import drift
from dpo_eval.metrics.findings import Thresholds

# 6 pairs on 3 prompts (two pairs per prompt; q1 and q3 are one chat prompt written in two key orders)
PROMPTS = ["p", "p", [{"role": "user", "content": "q"}], [{"content": "q", "role": "user"}], "r", "r"]
POLICY_CHOSEN = [-9.0, -11.0, -9.0, -9.0, -12.0, -13.0]  # ref -10: Δ chosen 1, -1, 1, 1, -2, -3
POLICY_REJECTED = [-12.0, -13.0, -11.0, -10.0, -14.0, -10.0]  # ref -10: Δ rejected -2, -3, -1, 0, -4, 0


def score_dir(tmp_path) -> tuple:
    n = len(PROMPTS)
    frame = pd.DataFrame({
        "id": [f"x{i}" for i in range(n)], "subset": ["default"] * n,
        "policy_chosen_logp": POLICY_CHOSEN, "policy_rejected_logp": POLICY_REJECTED,
        "ref_chosen_logp": [-10.0] * n, "ref_rejected_logp": [-10.0] * n,
        "chosen_tokens": [2] * n, "rejected_tokens": [4] * n,
        "reward_chosen": [0.1 * (c + 10) for c in POLICY_CHOSEN],
        "reward_rejected": [0.1 * (r + 10) for r in POLICY_REJECTED],
        "prompt_tokens": [3] * n, "is_truncated": [False] * n})
    frame["margin"] = frame["reward_chosen"] - frame["reward_rejected"]
    frame.to_parquet(tmp_path / "pairs.parquet")
    pairs = tuple(PreferencePair(f"x{i}", "default", p, "good", "bad") for i, p in enumerate(PROMPTS))
    return frames.pairs_frame(tmp_path, pairs), pairs


def test_pairs_frame_keys_pairs_by_prompt(tmp_path):
    frame, _ = score_dir(tmp_path)
    keys = frame["prompt_key"].tolist()
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[4] == keys[5]
    assert len(set(keys)) == 3
    assert keys[0] == frames.prompt_key("p")


def test_report_offpolicy_and_pair_drift_are_clustered_by_prompt(tmp_path):
    frame, _ = score_dir(tmp_path)
    row = Row(run="r", label="step 5", step=5, path="m", identity=SimpleNamespace(fingerprint="f"),
              is_reference=False)
    data = {"pairs": frame, "samples": None, "unseen": None, "entropy": None, "ref_samples": None,
            "ref_entropy": None, "has_analytic": False, "thresholds": Thresholds(), "kl_samples": None}
    result, state = assemble.checkpoint_result(row, data, None, None)
    # off-policy chosen log-ratios 1, -1 | 1, 1 | -2, -3: prompt means 0, 1, -2.5; mean -0.5
    # se = SD(0, 1, -2.5) / sqrt(3): deviations 0.5, 1.5, -2: var = (0.25 + 2.25 + 4) / 2 = 3.25
    off = result["offpolicy"]
    assert off["n"] == 6 and off["n_prompts"] == 3
    assert off["chosen"]["mean"] == pytest.approx(-0.5)
    assert off["chosen"]["se"] == pytest.approx(math.sqrt(3.25 / 3))
    # pair drift: Δ chosen totals per prompt 0, 2, -5 (2 pairs each), mean -0.5;
    # T - mean n = 1, 3, -4; se = sqrt(3/2 * 26) / 6
    pairs = state.pairs
    assert pairs.n_prompts == 3 and result["drift"]["pairs"]["n_prompts"] == 3
    assert pairs.chosen.total.se == pytest.approx(math.sqrt(1.5 * 26) / 6)
    # displaced (Δ chosen < 0): 0, 1 | 0, 0 | 1, 1 -> p = 1/2, the clustered Wilson interval
    assert pairs.displacement_ci == pytest.approx(drift.cluster_wilson_interval(
        [0, 1, 0, 0, 1, 1], ["a", "a", "b", "b", "c", "c"]))
    assert pairs.displacement_ci != pytest.approx(drift.wilson_interval(3, 6))
