"""A round's prompt slice and pair phase on hand-made samples and labels (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpo_eval.errors import UserError
from dpo_eval.generate import Prompt
from dpo_eval.loop.config import LoopConfig, RsoSettings
from dpo_eval.loop.round import derived_seed, pair_round, round_prompts

PROMPTS = [Prompt(f"q{i}", f"prompt {i}") for i in range(5)]


def config(**overrides) -> LoopConfig:
    return LoopConfig(policy="p", prompts="x", labeller="rule:m:f", output_dir="o", **overrides)


def test_round_prompts_take_successive_slices_wrapping():
    ids = [[p.id for p in round_prompts(PROMPTS, r, 2)] for r in (1, 2, 3, 4)]
    assert ids == [["q0", "q1"], ["q2", "q3"], ["q4", "q0"], ["q1", "q2"]]
    assert round_prompts(PROMPTS, 3, None) == PROMPTS
    with pytest.raises(UserError, match="prompts_per_round is 6 but the prompt file has 5 prompts"):
        round_prompts(PROMPTS, 1, 6)


def rows_of(scores: dict[str, list]) -> tuple[list[dict], list[dict]]:
    samples, labels = [], []
    for prompt_id, values in scores.items():
        for i, v in enumerate(values):
            samples.append({"prompt_id": prompt_id, "sample_index": i, "prompt": f"P {prompt_id}",
                            "output": f"{prompt_id}-out{i}"})
            labels.append({"prompt_id": prompt_id, "sample_index": i, "score": v, "source": "rule:m:f"})
    return samples, labels


SCORES = {"a": [1.0, 3.0, None, 0.0], "b": [2.0, 2.0, 2.0, 2.0], "c": [None, None, 5.0, None],
          "d": [0.5, 0.0, 4.0, 1.0]}


def test_max_min_pairs_and_counts_by_hand(tmp_path):
    samples, labels = rows_of(SCORES)
    counts = pair_round(config(), samples, labels, tmp_path, 1)
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [(p["prompt_id"], p["chosen"], p["rejected"]) for p in pairs] == [("a", "a-out1", "a-out3"),
                                                                             ("d", "d-out2", "d-out1")]
    assert [(p["chosen_score"], p["rejected_score"]) for p in pairs] == [(3.0, 0.0), (4.0, 0.0)]
    assert pairs[0]["id"] == "r1-a-0" and pairs[0]["prompt"] == "P a"
    # b: all equal -> one tie, skipped; c: one scored sample -> skipped, no tie
    assert counts == {"prompts": 4, "samples": 16, "unscored": 4, "ties": 1, "unparseable_judgments": 0,
                      "skipped_prompts": 2, "pairs": 2, "mean_chosen_label": 3.5, "mean_rejected_label": 0.0}
    assert json.loads((tmp_path / "counts.json").read_text()) == counts


def test_rso_tournament_pairs_with_the_prompts_own_seed(tmp_path):
    samples, labels = rows_of({"d": SCORES["d"]})
    cfg = config(pairs="rso", rso=RsoSettings(beta=1e-9, accept=4, ranking="tournament"))
    pair_round(cfg, samples, labels, tmp_path, 2)
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    # beta -> 0: accepted in reward order 2 (4.0), 3 (1.0), 0 (0.5), 1 (0.0); games (2 v 3), (0 v 1), then 2 v 0
    assert [(p["chosen_index"], p["rejected_index"]) for p in pairs] == [(2, 3), (0, 1), (2, 0)]


def test_max_random_draws_with_the_seed_of_round_and_prompt(tmp_path):
    samples, labels = rows_of({"d": SCORES["d"]})
    cfg = config(pairs="max_random")
    pair_round(cfg, samples, labels, tmp_path, 3)
    pair = json.loads((tmp_path / "pairs.jsonl").read_text())
    draw = int(np.random.default_rng(derived_seed(cfg.sampling.seed, 3, "d")).integers(3))
    assert (pair["chosen_index"], pair["rejected_index"]) == (2, [0, 1, 3][draw])


def test_a_round_without_pairs_is_a_user_error_and_writes_nothing(tmp_path):
    samples, labels = rows_of({"b": SCORES["b"], "c": SCORES["c"]})
    with pytest.raises(UserError, match=r"round 1: no pair formed \(1 tie\(s\), 2 prompt\(s\) without a usable pair\)"):
        pair_round(config(), samples, labels, tmp_path, 1)
    assert not list(tmp_path.iterdir())


def test_chat_prompts_give_a_chat_pairs_file_train_reads(tmp_path):
    from dpo_eval.data.pairs import load_pairs

    samples, labels = rows_of({"d": SCORES["d"]})
    chat = [{"role": "user", "content": "hi"}]
    samples = [{**s, "prompt": chat} for s in samples]
    pair_round(config(), samples, labels, tmp_path, 1)
    [pair] = load_pairs(tmp_path / "pairs.jsonl").pairs
    assert (pair.prompt, pair.chosen, pair.rejected) == (chat, [{"role": "assistant", "content": "d-out2"}],
                                                         [{"role": "assistant", "content": "d-out1"}])
