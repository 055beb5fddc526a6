"""Step-DPO pairs (data/step_dpo): a prompt ending mid-answer, single-step responses; ordinary pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import WORDS, save_tiny_model

from dpo_eval.cli import main
from dpo_eval.data.pairs import load_pairs
from dpo_eval.train.config import load_config
from dpo_eval.train.recipe import train

DATA = Path(__file__).parents[2] / "data" / "step_dpo" / "pairs.jsonl"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    words = sorted({w for line in DATA.open() for v in json.loads(line).values() for w in v.split()} - set(WORDS))
    return save_tiny_model(tmp_path_factory.mktemp("step") / "init", seed=3, extra_words=tuple(words))


def test_pairs_end_mid_answer_and_responses_are_single_steps():
    loaded = load_pairs(DATA)
    assert len(loaded.pairs) == 8 and loaded.n_skipped == 0
    for pair in loaded.pairs:
        previous = pair.prompt.split("\n")
        assert previous[0].startswith("Question: ") and previous[-1].startswith("Step ") and previous[-1].endswith(": ")
        assert len(previous) >= 4  # question, "Answer: ...", at least one earlier step, the open step
        for response in (pair.chosen, pair.rejected):
            assert "\n" not in response and "Step" not in response


def test_scored_like_any_pairs(model, tmp_path):
    result = CliRunner().invoke(main, ["score", "--policy", model, "--ref", model, "--data", str(DATA),
                                       "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rewards"]["n"] == 8 and summary["rewards"]["n_ties"] == 8  # policy = reference
    assert summary["data"]["n_skipped_invalid"] == 0


def test_trained_like_any_pairs(model, tmp_path):
    config = load_config(None, (), policy=model, data=str(DATA), eval_data=str(DATA), output_dir=str(tmp_path / "run"),
                         learning_rate=3e-3, lr_schedule="constant", batch_size=4, max_steps=8, eval_every=8,
                         show_progress=False, cache_dir=str(tmp_path / "c"), max_length=None)
    history = train(config)
    assert history[-1]["eval_rewards/accuracies"] >= 0.75  # 0.5 at step 0: every pair a tie
