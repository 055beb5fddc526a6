"""`dpo-eval generate` with tiny models: samples, their log-probs under policy and reference, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import save_tiny_model, word_tokenizer

import dpo_eval.generate as gen
from dpo_eval.cli import main

sys.path.insert(0, str(Path(__file__).parent / "engine"))
from oracle import sequence_logp  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": f"tell me about the {w}"}) + "\n"
                               for i, w in enumerate(["cat", "dog", "mat", "log", "yes"])))
    return {"policy": save_tiny_model(root / "pol", seed=1), "ref": save_tiny_model(root / "ref", seed=2),
            "prompts": str(prompts), "root": root}


def run(setup, out, *extra):
    args = ["generate", "--model", setup["policy"], "--ref", setup["ref"], "--prompts", setup["prompts"],
            "--out", str(out), "--n", "2", "--max-new-tokens", "6", "--batch-size", "2", "--no-progress",
            "--cache-dir", str(setup["root"] / "cache"), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_samples_carry_token_counts_and_exact_logps(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    samples = run(setup, tmp_path / "g")
    assert len(samples) == 10 and sorted({s["sample_index"] for s in samples}) == [0, 1]
    tok = word_tokenizer()
    models = {k: AutoModelForCausalLM.from_pretrained(setup[k]).eval() for k in ("policy", "ref")}
    for s in samples:
        assert s["n_tokens"] == len(s["token_ids"]) <= 6
        assert s["finish_reason"] in ("eos", "length")
        text = tok.apply_chat_template([{"role": "user", "content": s["prompt"]}], tokenize=False,
                                       add_generation_prompt=True)
        prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
        assert s["policy_logp"] == pytest.approx(sequence_logp(models["policy"], prompt_ids, s["token_ids"]), abs=1e-4)
        assert s["ref_logp"] == pytest.approx(sequence_logp(models["ref"], prompt_ids, s["token_ids"]), abs=1e-4)
    summary = json.loads((tmp_path / "g" / "generate_summary.json").read_text())
    assert summary["n_samples"] == 10 and summary["sampling"]["seed"] == 0


def test_greedy_is_hf_greedy_and_seeds_vary_sampling(setup, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    greedy = run(setup, tmp_path / "a", "--temperature", "0")
    assert [s["output"] for s in greedy] == [s["output"] for s in run(setup, tmp_path / "b", "--temperature", "0")]
    model, tok = AutoModelForCausalLM.from_pretrained(setup["policy"]).eval(), word_tokenizer()
    for s in greedy:
        text = tok.apply_chat_template([{"role": "user", "content": s["prompt"]}], tokenize=False,
                                       add_generation_prompt=True)
        prompt = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        hf = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=6,
                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, prompt.shape[1]:].tolist()
        assert s["token_ids"] == (hf[: hf.index(tok.eos_token_id) + 1] if tok.eos_token_id in hf else hf)
    one = [s["token_ids"] for s in run(setup, tmp_path / "c", "--seed", "1")]
    assert one == [s["token_ids"] for s in run(setup, tmp_path / "d", "--seed", "1")]
    assert one != [s["token_ids"] for s in run(setup, tmp_path / "e", "--seed", "2")]


def test_a_killed_run_resumes_without_resampling_finished_prompts(setup, tmp_path, monkeypatch):
    run(setup, tmp_path / "g")
    partial = tmp_path / "g" / "samples.partial.jsonl"
    lines = partial.read_text().splitlines()
    partial.write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])  # 2 prompts whole, 1 half, a torn line
    calls = []
    original = gen.sample_batch
    monkeypatch.setattr(gen, "sample_batch", lambda m, t, batch, c: calls.append(len(batch)) or original(m, t, batch, c))
    samples = run(setup, tmp_path / "g")
    assert sum(calls) == 3 and len(samples) == 10  # only the 3 unfinished prompts were sampled


@pytest.mark.parametrize(("extra", "needle"), [
    (("--limit", "0"), "--limit must be at least 1"),
    (("--concurrency", "0"), "--concurrency must be at least 1"),
])
def test_bad_counts_are_refused_naming_the_flag(setup, tmp_path, extra, needle):
    args = ["generate", "--model", setup["policy"], "--prompts", setup["prompts"], "--out", str(tmp_path / "g"), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and needle in result.output


def test_repeated_prompt_ids_are_refused_with_both_rows(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt_id": i, "prompt": "hi"}) + "\n" for i in ("a", "b", "a")))
    with pytest.raises(gen.UserError, match=r"row 3: prompt_id 'a' repeats row 1"):
        gen.read_prompts(str(path))


def test_chat_messages_without_a_chat_template_name_the_real_cause():
    tok = word_tokenizer()
    tok.chat_template = None
    prompt = gen.Prompt("x", [{"role": "user", "content": "hi"}])
    with pytest.raises(gen.UserError, match="tokenizer of --model has no chat template"):
        gen.prompt_ids(tok, prompt, "auto")
    with pytest.raises(gen.UserError, match="--template plain was asked"):
        gen.prompt_ids(tok, prompt, "plain")
    with pytest.raises(gen.UserError, match="--template chat: the tokenizer of --model has no chat template"):
        gen.prompt_ids(tok, prompt, "chat")
