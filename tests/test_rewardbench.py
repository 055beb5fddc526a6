"""`dpo-eval rewardbench`: scores held to one-sequence-at-a-time log-probs; each RewardBench convention
of `--compat rewardbench` checked on the word tokenizer; user errors exit 2 with one line."""

from __future__ import annotations

import json
import math
import random
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import WORDS, save_tiny_model, word_tokenizer

from dpo_eval.cli import main
from dpo_eval.data.pairs import PreferencePair
from dpo_eval.metrics.rewardbench import summarize_rewardbench
from dpo_eval.model_settings import ModelSettings
from dpo_eval.rewardbench.compat import split_answer, tokenize_rewardbench
from dpo_eval.rewardbench.run import RewardBenchConfig, rewardbench

TOL = 1e-4
SUBSETS = ("alpacaeval-easy", "llmbar-natural", "donotanswer", "hep-python", "anthropic_helpful")


def write_rewardbench(path, n: int = 10, seed: int = 0) -> str:
    rng = random.Random(seed)
    sentence = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "subset": SUBSETS[i % len(SUBSETS)], "prompt": sentence(rng.randint(2, 6)),
                                "chosen": sentence(rng.randint(1, 5)), "rejected": sentence(rng.randint(1, 5))}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("rb")
    return save_tiny_model(root / "policy", seed=0), save_tiny_model(root / "ref", seed=1), root


@torch.no_grad()
def per_token(model, prompt, response) -> np.ndarray:
    """Per-token log-probs of response after prompt: one sequence, full logits, float64 log_softmax."""
    ids = torch.tensor([list(prompt) + list(response)])
    logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    return logps.gather(1, ids[0, 1:, None]).squeeze(1)[len(prompt) - 1:].numpy()


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def run(tmp_path, models, **kw):
    policy, ref, _ = models
    data = write_rewardbench(tmp_path / "rb.jsonl")
    loading = ModelSettings(ref=kw.pop("ref", ref), device="cpu", cache_dir=str(tmp_path / "cache"))
    config = RewardBenchConfig(policy=policy, models=loading, data=data, out=str(tmp_path / "out"),
                               show_progress=False, **kw)
    return rewardbench(config), data


def test_default_conventions_match_per_sequence_scoring(tmp_path, models):
    result, data = run(tmp_path, models)
    tok, policy, ref = word_tokenizer(), load(models[0]), load(models[1])
    rows = [json.loads(line) for line in open(data)]
    for row, (_, got) in zip(rows, result.pairs.iterrows()):
        user = [{"role": "user", "content": row["prompt"]}]
        prompt = tok(tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        for side in ("chosen", "rejected"):
            full = tok.apply_chat_template(user + [{"role": "assistant", "content": row[side]}], tokenize=False)
            response = tok(full, add_special_tokens=False)["input_ids"][len(prompt):]
            expected = 0.1 * (per_token(policy, prompt, response).sum() - per_token(ref, prompt, response).sum())
            assert abs(got[f"reward_{side}"] - expected) <= TOL
    summary = json.loads((tmp_path / "out" / "rewardbench.json").read_text())
    again = summarize_rewardbench(result.pairs["subset"].tolist(), result.pairs["margin"].to_numpy())
    assert summary["sections"] == pytest.approx(again["sections"])  # one subset of each section
    assert summary["score"] == pytest.approx(np.mean(list(again["sections"].values())))
    assert summary["prior_sets"]["subsets"] == ["anthropic_helpful"]
    assert summary["reference"]["path"] == models[1] and len(summary["reference"]["fingerprint"]) > 8
    assert (summary["beta"], summary["norm"], summary["compat"]) == (0.1, "sum", "none")
    assert pd.read_parquet(tmp_path / "out" / "pairs.parquet")["is_correct"].tolist() == \
        (result.pairs["margin"] > 0).tolist()


# ----------------------------------------------------------------- --compat rewardbench, convention by convention

def compat_pair(prompt="tell me about the cat", chosen="the cat sat", rejected="no"):
    return PreferencePair("0", "alpacaeval-easy", prompt, chosen, rejected)


def test_compat_prompt_without_generation_prompt_so_the_assistant_header_is_scored():
    tok = word_tokenizer()
    t = tokenize_rewardbench(compat_pair(), tok)
    assistant = tok.convert_tokens_to_ids("<|assistant|>")
    assert assistant not in t.prompt_chosen and t.chosen[0] == assistant and t.rejected[0] == assistant


def test_compat_bos_by_hand_and_eos_after_the_templates_end_of_turn():
    tok = word_tokenizer()
    t = tokenize_rewardbench(compat_pair(), tok)
    assert t.prompt_chosen[0] == tok.bos_token_id and t.prompt_chosen[1] == tok.convert_tokens_to_ids("<|user|>")
    # the template closes the turn with <eos>; RewardBench appends EOS after it: two in a row
    assert t.chosen[-2:] == (tok.eos_token_id, tok.eos_token_id)
    words = [tok.convert_ids_to_tokens(i) for i in t.chosen]
    assert words == ["<|assistant|>", "the", "cat", "sat", "<eos>", "<eos>"]


def test_compat_boundary_moves_left_when_a_token_merges():
    tok = word_tokenizer()
    prompt, answer = split_answer(tok, "the ca", "t sat")  # "ca" alone is <unk>; "cat" merges across
    assert tok.convert_ids_to_tokens(prompt) == ["the"] and tok.convert_ids_to_tokens(answer) == ["cat", "sat"]


@pytest.mark.parametrize("prompt_words,response_words,expect_prompt,expect_response", [
    (10, 20, "all", "all"),          # under 2048: untouched
    (300, 1900, 128, "all"),         # prompt cut to its last 128 tokens (the BOS goes), response kept
    (300, 2000, 128, 1920),          # still too long: responses cut to 1920
])
def test_compat_truncation(prompt_words, response_words, expect_prompt, expect_response):
    tok = word_tokenizer()
    t = tokenize_rewardbench(compat_pair(" ".join(["cat"] * prompt_words), " ".join(["dog"] * response_words), "no"),
                             tok)
    full_prompt = 1 + 1 + prompt_words + 1  # BOS, <|user|>, words, <eos>
    full_response = 1 + response_words + 2  # <|assistant|>, words, <eos>, appended EOS
    assert len(t.prompt_chosen) == (full_prompt if expect_prompt == "all" else expect_prompt)
    assert len(t.chosen) == (full_response if expect_response == "all" else expect_response)
    assert t.prompt_chosen == t.prompt_rejected  # both judged against the same longer response
    assert len(t.rejected) == 4  # <|assistant|> no <eos> <eos>: the short one is never cut
    assert t.is_truncated == (expect_prompt != "all")
    if expect_prompt != "all":
        assert t.prompt_chosen[0] != tok.bos_token_id and t.prompt_chosen[-1] == tok.eos_token_id


def test_compat_scores_are_summed_log_ratios_without_beta(tmp_path, models):
    result, data = run(tmp_path, models, compat="rewardbench", beta=0.5)
    tok, policy, ref = word_tokenizer(), load(models[0]), load(models[1])
    rows = [json.loads(line) for line in open(data)]
    for row, (_, got) in zip(rows, result.pairs.iterrows()):
        user = [{"role": "user", "content": row["prompt"]}]
        prompt_text = tok.apply_chat_template(user, tokenize=False)
        for side in ("chosen", "rejected"):
            full = tok.apply_chat_template(user + [{"role": "assistant", "content": row[side]}], tokenize=False)
            prompt = [tok.bos_token_id] + tok(prompt_text, add_special_tokens=False)["input_ids"]
            response = tok(full[len(prompt_text):], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            expected = per_token(policy, prompt, response).sum() - per_token(ref, prompt, response).sum()
            assert abs(got[f"reward_{side}"] - expected) <= TOL  # beta 0.5 not applied
    summary = result.summary
    assert summary["beta"] is None and summary["compat"] == "rewardbench" and "without" not in summary["reward"]


def test_reference_free_norm_is_minus_l2_of_per_token_logps(tmp_path, models):
    result, data = run(tmp_path, models, ref="none", norm="norm", compat="rewardbench")
    tok, policy = word_tokenizer(), load(models[0])
    row = json.loads(open(data).readline())
    user = [{"role": "user", "content": row["prompt"]}]
    prompt_text = tok.apply_chat_template(user, tokenize=False)
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": row["chosen"]}], tokenize=False)
    prompt = [tok.bos_token_id] + tok(prompt_text, add_special_tokens=False)["input_ids"]
    response = tok(full[len(prompt_text):], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    expected = -math.sqrt((per_token(policy, prompt, response) ** 2).sum())
    assert abs(result.pairs["reward_chosen"].iloc[0] - expected) <= TOL
    assert result.summary["reference"] is None and result.summary["norm"] == "norm"


# ----------------------------------------------------------------- user errors

@pytest.mark.parametrize("extra,needle", [
    (["--norm", "norm"], "reference-free"),
    (["--compat", "rewardbench", "--norm", "avg"], "summed log-ratio"),
    (["--beta", "0"], "--beta"),
    (["--limit", "0"], "--limit"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, models, extra, needle):
    data = write_rewardbench(tmp_path / "rb.jsonl")
    result = CliRunner().invoke(main, ["rewardbench", "--policy", models[0], "--ref", models[1], "--data", data,
                                       "--out", str(tmp_path / "o"), *extra])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_cli_subprocess_writes_outputs_and_missing_file_exits_2(tmp_path, models):
    data = write_rewardbench(tmp_path / "rb.jsonl", n=5)
    base = [sys.executable, "-m", "dpo_eval.cli", "rewardbench", "--policy", models[0], "--ref", models[1],
            "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "--no-progress", "--out", str(tmp_path / "o")]
    from subprocesses import run_together  # both at once: each is a Python start importing torch

    ok, bad = run_together(base + ["--data", data], base + ["--data", str(tmp_path / "missing.jsonl")])
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n_pairs"] == 5 and (tmp_path / "o" / "rewardbench.json").exists()
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.strip().count("\n") == 0
