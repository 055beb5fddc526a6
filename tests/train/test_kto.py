"""KTO in the trainer: unpaired data, KL companions packed with each example, learning."""

from __future__ import annotations

import json

import pytest
from conftest import save_tiny_model, word_tokenizer, write_synthetic_preferences

from dpo_eval.errors import UserError
from dpo_eval.tokenization import TokenizerSettings
from dpo_eval.train.config import load_config
from dpo_eval.train.kto import UnpairedExample, kto_pairs, load_unpaired
from dpo_eval.train.recipe import train


def test_unpaired_rows_and_pairs_split_in_two(tmp_path):
    path = tmp_path / "u.jsonl"
    rows = [{"prompt": "tell me ", "completion": "good yes", "label": True},
            {"prompt": "why ", "completion": "bad no", "label": False}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = word_tokenizer()
    examples = load_unpaired(str(path), tok, TokenizerSettings())
    assert [e.is_desirable for e in examples] == [True, False]
    assert examples[0].completion_ids == tuple(tok("tell me good yes")["input_ids"][2:]) + (tok.eos_token_id,)
    pairs = write_synthetic_preferences(tmp_path / "p.jsonl", n=3, seed=0)
    split = load_unpaired(pairs, tok, TokenizerSettings())
    assert [e.is_desirable for e in split] == [True, False] * 3


def test_bad_label_is_a_user_error(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"prompt": "a ", "completion": "b", "label": "yes"}) + "\n")
    with pytest.raises(UserError, match="row 1: field 'label' must be true or false"):
        load_unpaired(str(path), word_tokenizer(), TokenizerSettings())


def test_each_example_is_packed_with_the_next_items_completion():
    examples = [UnpairedExample(str(i), (i,), (10 + i, 20 + i), i % 2 == 0) for i in range(3)]
    pairs = kto_pairs(examples, [2, 0, 1])
    assert [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs] == [
        ((2,), (12, 22), (10, 20)), ((0,), (10, 20), (11, 21)), ((1,), (11, 21), (12, 22))]


def test_kto_learns_synthetic_preferences(tmp_path):
    model = save_tiny_model(tmp_path / "init", seed=7)
    config = load_config(None, (), policy=model, data=write_synthetic_preferences(tmp_path / "t.jsonl", 64, 1),
                         eval_data=write_synthetic_preferences(tmp_path / "e.jsonl", 32, 2), eval_every=24,
                         output_dir=str(tmp_path / "run"), loss="kto", learning_rate=1e-3, batch_size=8,
                         max_steps=24, lr_schedule="constant", show_progress=False, max_length=None,
                         cache_dir=str(tmp_path / "cache"))
    history = train(config)
    steps = [h for h in history if "loss" in h]
    assert "rewards/accuracies" not in steps[0] and "rewards/chosen" in steps[0]
    assert history[-1]["eval_rewards/accuracies"] >= 0.9
    assert steps[-1]["rewards/chosen"] > steps[-1]["rewards/rejected"]
