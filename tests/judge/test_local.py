"""The in-process transformers judge on a tiny model: label probabilities, verdicts, loading flags."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from conftest import save_tiny_model, tiny_llama, word_tokenizer

from dpo_eval.cli import main
from dpo_eval.errors import UserError
from dpo_eval.judge.judging import Comparison, Judging
from dpo_eval.judge.local import LocalJudge
from dpo_eval.judge.store import JudgmentStore
from dpo_eval.judge.templates import load_template


@pytest.fixture
def judge_path(tmp_path):
    return save_tiny_model(tmp_path / "judge", seed=4, extra_words=("A", "B"))


def independent_label_probability(judge: LocalJudge, template, instruction: str, a: str, b: str) -> float:
    """P(A) / (P(A) + P(B)) from a float64 softmax over the next token after the chat prompt."""
    tok = word_tokenizer(("A", "B"))
    text = tok.apply_chat_template([{"role": "user", "content": template.render(instruction, a, b)}],
                                   tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    probs = torch.softmax(judge.model(input_ids=ids).logits[0, -1].double(), dim=-1)
    p_a, p_b = probs[tok.convert_tokens_to_ids("A")], probs[tok.convert_tokens_to_ids("B")]
    return float(p_a / (p_a + p_b))


def fixed_output_head(judge: LocalJudge, label_logits: dict[str, float]) -> None:
    """Replace the LM head by one whose logits ignore the input: 0 everywhere but the given labels."""
    vocab = judge.model.config.vocab_size
    head = torch.nn.Linear(judge.model.config.hidden_size, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for label, logit in label_logits.items():
            head.bias[judge.tokenizer.convert_tokens_to_ids(label)] = logit
    judge.model.lm_head = head


def test_probability_mode_scores_every_comparison_with_the_next_token_probability(judge_path, tmp_path):
    template = load_template("pairwise")
    judge = LocalJudge(judge_path, template, cache_dir=str(tmp_path / "cache"))
    comparisons = [Comparison("m", str(i), f"why {i}", "good yes " * i, "bad no") for i in range(6)]
    store = JudgmentStore(tmp_path / "j.sqlite")
    records = Judging(judge, template, store, "probability", seed=1).run(comparisons, concurrency=2,
                                                                         show_progress=False)
    store.close()
    for c, r in zip(comparisons, records):
        assert r["preference"] is not None, r["unscored_reason"]
        first = r["model_position"] == ["A"]
        a, b = (c.model_output, c.baseline_output) if first else (c.baseline_output, c.model_output)
        p_a = independent_label_probability(judge, template, c.instruction, a, b)
        assert abs(r["preference"] - (p_a if first else 1 - p_a)) < 1e-5
    assert judge.config["backend"] == "local" and len(judge.config["fingerprint"]) > 8


def test_probability_mode_survives_labels_far_in_the_tail(judge_path, tmp_path):
    # log P(A) ~ -1e4, log P(B) ~ -1e4 - 3: exp() of either underflows to 0; the stable form gives sigmoid(3)
    judge = LocalJudge(judge_path, load_template("pairwise"), cache_dir=str(tmp_path / "cache"))
    fixed_output_head(judge, {"A": -1e4, "B": -1e4 - 3})
    verdict = judge.judge("q", "x", "y", "probability")
    assert verdict.preference_a == pytest.approx(1 / (1 + math.exp(-3)), rel=1e-4)


def test_verdict_mode_parses_the_greedy_answer(judge_path, tmp_path):
    judge = LocalJudge(judge_path, load_template("pairwise"), cache_dir=str(tmp_path / "c"))
    fixed_output_head(judge, {"B": 5.0})  # greedy decoding then says "B B B ..."
    verdict = judge.judge("q", "x", "y", "verdict")
    assert verdict.preference_a == 0.0 and verdict.raw.startswith("B") and verdict.reason is None


def save_pickled(folder):
    """A judge folder with only pytorch_model.bin weights (transformers 5 no longer writes .bin)."""
    tok = word_tokenizer(("A", "B"))
    model = tiny_llama(vocab_size=len(tok), seed=2)
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    tok.save_pretrained(folder)
    return folder


def test_pickled_judge_weights_need_allow_pickle(tmp_path):
    folder = save_pickled(tmp_path / "pickled")
    template = load_template("pairwise")
    with pytest.raises(UserError, match="--allow-pickle"):
        LocalJudge(str(folder), template, cache_dir=str(tmp_path / "c"))
    judge = LocalJudge(str(folder), template, cache_dir=str(tmp_path / "c"), allow_pickle=True)
    assert judge.judge("q", "x", "y", "probability").is_scored


def test_judge_command_passes_allow_pickle_to_the_local_judge(tmp_path):
    folder = save_pickled(tmp_path / "pickled")
    for name, output in (("c.jsonl", "good yes"), ("b.jsonl", "bad no")):
        (tmp_path / name).write_text(json.dumps({"prompt_id": "1", "prompt": "why", "output": output}) + "\n")
    args = ["judge", "--candidates", str(tmp_path / "c.jsonl"), "--baseline", str(tmp_path / "b.jsonl"),
            "--judge", f"local:{folder}", "--mode", "probability", "--out", str(tmp_path / "j"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "--allow-pickle" in refused.output
    result = CliRunner().invoke(main, [*args, "--allow-pickle"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0]) == {"n": 1, "n_unscored": 0}


def test_judge_command_passes_trust_remote_code_and_allow_pickle_to_model_loading(tmp_path, monkeypatch):
    calls = []

    def recording_load_model(path, **kwargs):
        calls.append((path, kwargs))
        raise UserError("stop after loading")

    monkeypatch.setattr("dpo_eval.judge.local.load_model", recording_load_model)
    for name in ("c.jsonl", "b.jsonl"):
        (tmp_path / name).write_text(json.dumps({"prompt_id": "1", "prompt": "why", "output": name}) + "\n")
    base = ["judge", "--candidates", str(tmp_path / "c.jsonl"), "--baseline", str(tmp_path / "b.jsonl"),
            "--judge", "local:some/model", "--out", str(tmp_path / "j"), "--cache-dir", str(tmp_path / "cache")]
    for extra, expected in (([], (False, False)), (["--trust-remote-code", "--allow-pickle"], (True, True))):
        assert CliRunner().invoke(main, [*base, *extra]).exit_code == 2
        path, kwargs = calls.pop()
        assert path == "some/model" and (kwargs["trust_remote_code"], kwargs["allow_pickle"]) == expected
