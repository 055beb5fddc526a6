"""`dpo-eval generate` resumes only what the same settings made, and a sample depends only on
(seed, prompt, sample index): not on the batch size, nor on a kill and resume."""

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

WORDS = ["cat", "dog", "mat", "log", "yes"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": f"tell me about the {w}"}) + "\n"
                               for i, w in enumerate(WORDS)))
    return {"policy": save_tiny_model(root / "pol", seed=1), "other": save_tiny_model(root / "other", seed=3),
            "ref": save_tiny_model(root / "ref", seed=2), "ref2": save_tiny_model(root / "ref2", seed=4),
            "prompts": str(prompts), "root": root}


def invoke(setup, out, *extra, model=None, prompts=None):
    args = ["generate", "--model", model or setup["policy"], "--prompts", prompts or setup["prompts"],
            "--out", str(out), "--no-progress", "--cache-dir", str(setup["root"] / "cache"), *extra]
    return CliRunner().invoke(main, args)


def samples(setup, out, *extra, **kwargs) -> dict[tuple[str, int], dict]:
    result = invoke(setup, out, *extra, **kwargs)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {(r["prompt_id"], r["sample_index"]): r for r in rows}


BASE = ("--n", "2", "--max-new-tokens", "6", "--temperature", "0.7", "--seed", "1")


@pytest.mark.parametrize(("change", "flag", "stored", "asked"), [
    (("--temperature", "1.0"), "--temperature", "0.7", "1.0"),
    (("--seed", "2"), "--seed", "1", "2"),
    (("--max-new-tokens", "4"), "--max-new-tokens", "6", "4"),
    (("--n", "3"), "--n", "2", "3"),
    (("--top-p", "0.9"), "--top-p", "1.0", "0.9"),
    (("--stop", "dog"), "--stop", "[]", '["dog"]'),
    (("--template", "plain"), "--template", "auto", "plain"),
    (("--dtype", "bf16"), "--device/--dtype", "cpu-float32", "cpu-bfloat16"),  # refused before any sampling
])
def test_a_rerun_with_other_sampling_settings_is_refused(setup, tmp_path, change, flag, stored, asked):
    samples(setup, tmp_path / "g", *BASE)
    partial = tmp_path / "g" / "samples.partial.jsonl"
    before = partial.read_text()
    result = invoke(setup, tmp_path / "g", *BASE, *change)  # click keeps the last value of a repeated option
    assert result.exit_code == 2
    message = result.output.strip()
    assert "\n" not in message and "Traceback" not in message
    assert f"{flag}: {stored} stored in " in message and f", {asked} asked" in message
    assert "samples.settings.json" in message and "another --out" in message
    assert partial.read_text() == before  # nothing resampled, nothing mixed in


def test_a_rerun_with_another_model_is_refused(setup, tmp_path):
    samples(setup, tmp_path / "g", *BASE)
    result = invoke(setup, tmp_path / "g", *BASE, model=setup["other"])
    assert result.exit_code == 2
    assert result.output.count("--model: ") == 1 and "--seed" not in result.output


def test_batch_size_limit_and_reference_keep_the_samples(setup, tmp_path, monkeypatch):
    first = samples(setup, tmp_path / "g", *BASE, "--ref", setup["ref"], "--batch-size", "2")
    calls = []
    monkeypatch.setattr(gen, "sample_batch", lambda *a: calls.append(a) or [])
    again = samples(setup, tmp_path / "g", *BASE, "--ref", setup["ref2"], "--batch-size", "1", "--limit", "3")
    assert calls == [] and sorted(again) == sorted(k for k in first if k[0] in ("p0", "p1", "p2"))
    from transformers import AutoModelForCausalLM

    ref2 = AutoModelForCausalLM.from_pretrained(setup["ref2"]).eval()
    tok = word_tokenizer()
    for key, row in again.items():
        assert row["token_ids"] == first[key]["token_ids"] and row["policy_logp"] == first[key]["policy_logp"]
        text = tok.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                       add_generation_prompt=True)
        prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
        assert row["ref_logp"] == pytest.approx(sequence_logp(ref2, prompt_ids, row["token_ids"]), abs=1e-4)
    summaries = [json.loads((tmp_path / "g" / "generate_summary.json").read_text())]
    assert len(summaries[0]["settings_fingerprint"]) == 64


def test_samples_do_not_depend_on_batch_size_or_a_resume(setup, tmp_path):
    reference = samples(setup, tmp_path / "a", *BASE, "--batch-size", "3")
    assert samples(setup, tmp_path / "b", *BASE, "--batch-size", "1") == reference
    samples(setup, tmp_path / "c", *BASE, "--batch-size", "1", "--limit", "2")  # killed after 2 prompts ...
    assert samples(setup, tmp_path / "c", *BASE, "--batch-size", "2") == reference  # ... and resumed
    other_index = [reference[(p, 0)]["token_ids"] != reference[(p, 1)]["token_ids"] for p in ("p0", "p1", "p2")]
    assert sum(other_index) >= 2
    other_seed = samples(setup, tmp_path / "d", *BASE, "--seed", "5")
    assert sum(other_seed[k]["token_ids"] != reference[k]["token_ids"] for k in reference) >= 8


def test_a_prompt_whose_text_changed_is_sampled_again(setup, tmp_path):
    samples(setup, tmp_path / "g", *BASE)
    edited = tmp_path / "edited.jsonl"
    rows = [json.loads(line) for line in Path(setup["prompts"]).read_text().splitlines()]
    rows[0]["prompt"] = "why is the sky good"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    resumed = samples(setup, tmp_path / "g", *BASE, prompts=str(edited))
    assert resumed == samples(setup, tmp_path / "fresh", *BASE, prompts=str(edited))
    assert resumed[("p0", 0)]["prompt"] == "why is the sky good"


def test_samples_without_a_settings_record_are_refused(setup, tmp_path):
    samples(setup, tmp_path / "g", *BASE)
    (tmp_path / "g" / "samples.settings.json").unlink()
    result = invoke(setup, tmp_path / "g", *BASE)
    assert result.exit_code == 2 and "samples.partial.jsonl" in result.output and "another --out" in result.output
