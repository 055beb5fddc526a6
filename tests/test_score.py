"""`dpo-eval score` end to end on tiny saved models, checked against independent computations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import save_tiny_model, word_tokenizer, write_text_pairs

from dpo_eval.cli import main

sys.path.insert(0, str(Path(__file__).parent / "engine"))
from oracle import sequence_logp  # noqa: E402

# The documented layout, written out here (docs/score.md "Outputs"; the shared design's list, then two extras).
COLUMNS = ["id", "subset", "policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp",
           "chosen_tokens", "rejected_tokens", "reward_chosen", "reward_rejected", "margin",
           "prompt_tokens", "is_truncated"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    return {"policy": save_tiny_model(root / "policy", seed=1), "ref": save_tiny_model(root / "ref", seed=2),
            "data": write_text_pairs(root / "pairs.jsonl", n=12), "root": root}


def run_score(setup, tmp_path, *extra):
    args = ["score", "--policy", setup["policy"], "--ref", setup["ref"], "--data", setup["data"],
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    return frame, summary


def oracle_logps(model_dir, data_path):
    """Independent path: tok(prompt + response) past len(tok(prompt)), EOS appended, full-logit forward."""
    from transformers import AutoModelForCausalLM

    tok = word_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    rows = [json.loads(line) for line in open(data_path)]
    out = []
    for row in rows:
        prompt = tok(row["prompt"])["input_ids"]
        logps = []
        for side in ("chosen", "rejected"):
            response = tok(row["prompt"] + row[side])["input_ids"][len(prompt):] + [tok.eos_token_id]
            logps.append(sequence_logp(model, prompt, response))
        out.append(logps)
    return np.array(out)


def test_score_matches_oracle_and_reward_formula(setup, tmp_path):
    beta = 0.25
    frame, summary = run_score(setup, tmp_path, "--beta", str(beta))
    assert list(frame.columns) == COLUMNS
    policy, ref = oracle_logps(setup["policy"], setup["data"]), oracle_logps(setup["ref"], setup["data"])
    np.testing.assert_allclose(frame[["policy_chosen_logp", "policy_rejected_logp"]], policy, atol=1e-4)
    np.testing.assert_allclose(frame[["ref_chosen_logp", "ref_rejected_logp"]], ref, atol=1e-4)
    expected_chosen = beta * (policy[:, 0] - ref[:, 0])
    expected_rejected = beta * (policy[:, 1] - ref[:, 1])
    np.testing.assert_allclose(frame["reward_chosen"], expected_chosen, atol=1e-4)
    np.testing.assert_allclose(frame["margin"], expected_chosen - expected_rejected, atol=1e-4)
    margin = expected_chosen - expected_rejected
    assert summary["rewards"]["accuracy"] == pytest.approx(np.mean(margin > 0))
    assert summary["rewards"]["mean_margin"] == pytest.approx(margin.mean(), abs=1e-4)
    # pairs sharing a prompt are one cluster of the margin's SE: sqrt(P/(P-1) sum_g (T_g - m n_g)^2) / n
    prompts = pd.Series([json.loads(line)["prompt"] for line in Path(setup["data"]).read_text().splitlines()])
    totals, sizes = pd.Series(margin).groupby(prompts).sum(), prompts.value_counts()
    sizes = sizes.reindex(totals.index)
    n_prompts = len(totals)
    se = np.sqrt(n_prompts / (n_prompts - 1) * np.sum((totals - margin.mean() * sizes) ** 2)) / len(margin)
    assert summary["rewards"]["n_prompts"] == n_prompts and summary["rewards"]["margin_se"] == pytest.approx(se, rel=1e-3)
    for subset in ("a", "b"):
        in_subset = frame["subset"] == subset
        assert summary["rewards"]["per_subset"][subset]["accuracy"] == pytest.approx(np.mean(margin[in_subset] > 0))
    assert summary["beta"] == beta and summary["schema_version"] == 1
    assert summary["policy"]["fingerprint"] != summary["reference"]["fingerprint"]


def test_reference_is_computed_once_across_checkpoints(setup, tmp_path):
    _, first = run_score(setup, tmp_path)
    assert first["pairs_computed"] == {"policy": 12, "reference": 12}
    other = save_tiny_model(tmp_path / "ckpt2", seed=3)
    args = ["score", "--policy", other, "--ref", setup["ref"], "--data", setup["data"], "--no-progress",
            "--out", str(tmp_path / "out2"), "--cache-dir", str(tmp_path / "cache")]
    assert CliRunner().invoke(main, args).exit_code == 0
    second = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert second["pairs_computed"] == {"policy": 12, "reference": 0}
    _, rerun = run_score(setup, tmp_path)
    assert rerun["pairs_computed"] == {"policy": 0, "reference": 0}
    assert rerun["rewards"] == first["rewards"]


def test_reference_free_avg_norm(setup, tmp_path):
    beta = 2.0
    args = ["score", "--policy", setup["policy"], "--ref", "none", "--norm", "avg", "--beta", str(beta),
            "--data", setup["data"], "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
            "--no-progress"]
    assert CliRunner().invoke(main, args).exit_code == 0
    frame = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    policy = oracle_logps(setup["policy"], setup["data"])
    np.testing.assert_allclose(frame["reward_chosen"], beta * policy[:, 0] / frame["chosen_tokens"], atol=1e-4)
    assert frame["ref_chosen_logp"].isna().all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["reference_free"] is True and summary["reference"] is None


def test_same_model_gives_ties(setup, tmp_path):
    args = ["score", "--policy", setup["ref"], "--ref", setup["ref"], "--data", setup["data"],
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert CliRunner().invoke(main, args).exit_code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["rewards"]
    assert summary["n_ties"] == 12 and summary["accuracy"] == 0.0 and summary["accuracy_ties_half"] == 0.5


def test_max_length_truncation_counted(setup, tmp_path):
    frame, summary = run_score(setup, tmp_path, "--max-length", "6")
    assert (frame["prompt_tokens"] + frame[["chosen_tokens", "rejected_tokens"]].max(axis=1) <= 6).all()
    assert summary["tokenization"]["n_truncated"] == int(frame["is_truncated"].sum()) > 0


def test_bad_input_is_one_line_and_exit_2(setup, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "the cat", "chosen": "", "rejected": "dog"}) + "\n")
    result = CliRunner().invoke(main, ["score", "--policy", setup["policy"], "--ref", "none", "--data", str(bad),
                                       "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert "row 1" in result.output and "chosen" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_untokenizable_pair_names_file_and_row_and_skip_invalid_covers_it(setup, tmp_path):
    data = tmp_path / "empty_prompt.jsonl"
    rows = [{"id": "a", "prompt": "tell me ", "chosen": "yes", "rejected": "no"},
            {"id": "b", "prompt": "", "chosen": "yes", "rejected": "no"}]  # no prompt tokens: no context
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["score", "--policy", setup["policy"], "--ref", "none", "--data", str(data), "--no-progress",
            "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    refused = CliRunner().invoke(main, base)
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1
    assert f"{data}: row 2:" in refused.output and "--skip-invalid" in refused.output
    skipped = CliRunner().invoke(main, [*base, "--skip-invalid"])
    assert skipped.exit_code == 0, skipped.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["data"]["n_pairs"] == 1 and summary["data"]["n_skipped_invalid"] == 1
    assert summary["data"]["skip_reasons"][0].startswith(f"{data}: row 2: the prompt has no tokens")


def test_vocabulary_mismatch_is_refused(setup, tmp_path):
    from transformers import PreTrainedTokenizerFast

    other = save_tiny_model(tmp_path / "other", seed=4)
    tok = PreTrainedTokenizerFast.from_pretrained(other)
    tok.add_tokens(["zebra"])
    tok.save_pretrained(other)
    result = CliRunner().invoke(main, ["score", "--policy", other, "--ref", setup["ref"], "--data", setup["data"],
                                       "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2 and "vocab" in result.output.lower()
