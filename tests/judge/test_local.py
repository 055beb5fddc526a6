"""The in-process transformers judge on a tiny model: label probabilities and verdict parsing."""

from __future__ import annotations

import torch
from conftest import save_tiny_model, word_tokenizer

from dpo_eval.judge.local import LocalJudge
from dpo_eval.judge.templates import load_template


def test_probability_mode_is_the_normalised_next_token_probability(tmp_path):
    path = save_tiny_model(tmp_path / "judge", seed=4, extra_words=("A", "B"))
    template = load_template("pairwise")
    judge = LocalJudge(path, template, cache_dir=str(tmp_path / "cache"))
    verdict = judge.judge("why", "good yes", "bad no", "probability")
    tok = word_tokenizer(("A", "B"))
    text = tok.apply_chat_template([{"role": "user", "content": template.render("why", "good yes", "bad no")}],
                                   tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    probs = torch.softmax(judge.model(input_ids=ids).logits[0, -1].double(), dim=-1)
    a, b = probs[tok.convert_tokens_to_ids("A")], probs[tok.convert_tokens_to_ids("B")]
    assert abs(verdict.preference_a - float(a / (a + b))) < 1e-5
    assert judge.config["backend"] == "local" and len(judge.config["fingerprint"]) > 8


def test_verdict_mode_scores_or_says_why(tmp_path):
    path = save_tiny_model(tmp_path / "judge", seed=4, extra_words=("A", "B"))
    verdict = LocalJudge(path, load_template("pairwise"), cache_dir=str(tmp_path / "c")).judge("q", "x", "y", "verdict")
    assert verdict.raw is not None
    assert (verdict.preference_a is None) == (verdict.reason is not None)
