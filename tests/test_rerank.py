"""`dpo-eval rerank`: on a perturbed copy of a tiny model (a stand-in for a trained policy) the ranking
equals the one computed straightforwardly, one sequence at a time; outputs, cache, library call, errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import WORDS, save_tiny_model, word_tokenizer

from dpo_eval.cli import main
from dpo_eval.judge.outputs import read_outputs
from dpo_eval.model_settings import ModelSettings
from dpo_eval.rerank import RerankConfig, candidate_sets, rerank, run_rerank

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A reference and a policy that is its perturbed copy (saved with the word tokenizer)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("rr")
    ref = save_tiny_model(root / "ref", seed=0)
    policy = AutoModelForCausalLM.from_pretrained(ref)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * p.std() * torch.randn_like(p))
    policy.save_pretrained(root / "policy")
    word_tokenizer().save_pretrained(root / "policy")
    return str(root / "policy"), ref


def write_candidates(path, prompts: int = 4, n: int = 6, seed: int = 0) -> str:
    """Rows as `dpo-eval generate` writes them (extra fields included)."""
    rng = random.Random(seed)
    sentence = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with open(path, "w") as f:
        for p in range(prompts):
            prompt = sentence(rng.randint(2, 6))
            for i in range(n):
                f.write(json.dumps({"model": "m", "prompt_id": f"p{p}", "sample_index": i, "prompt": prompt,
                                    "output": sentence(rng.randint(1, 7)), "n_tokens": 0, "finish_reason": "eos"}) + "\n")
    return str(path)


@torch.no_grad()
def seq_logp(model, prompt, response) -> float:
    ids = torch.tensor([list(prompt) + list(response)])
    logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    return float(logps.gather(1, ids[0, 1:, None]).squeeze(1)[len(prompt) - 1:].sum())


def straightforward_ranking(policy_path, ref_path, path, beta=0.1) -> dict[str, list[tuple[int, float]]]:
    """Per prompt: (sample_index, reward), best first, each candidate scored alone with full logits."""
    from transformers import AutoModelForCausalLM

    tok = word_tokenizer()
    policy, ref = (AutoModelForCausalLM.from_pretrained(p).eval() for p in (policy_path, ref_path))
    out: dict[str, list] = {}
    for row in map(json.loads, open(path)):
        user = [{"role": "user", "content": row["prompt"]}]
        prompt = tok(tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        full = tok.apply_chat_template(user + [{"role": "assistant", "content": row["output"]}], tokenize=False)
        response = tok(full, add_special_tokens=False)["input_ids"][len(prompt):]
        reward = beta * (seq_logp(policy, prompt, response) - seq_logp(ref, prompt, response))
        out.setdefault(row["prompt_id"], []).append((row["sample_index"], reward))
    return {k: sorted(v, key=lambda x: -x[1]) for k, v in out.items()}


def config(tmp_path, models, candidates, **kw) -> RerankConfig:
    loading = ModelSettings(ref=kw.pop("ref", models[1]), device="cpu", cache_dir=str(tmp_path / "cache"),
                            token_budget=kw.pop("token_budget", None))
    return RerankConfig(policy=models[0], models=loading, candidates=candidates, out=str(tmp_path / "out"),
                        show_progress=False, **kw)


def test_ranking_equals_straightforward_per_sequence_ranking(tmp_path, models):
    data = write_candidates(tmp_path / "c.jsonl")
    result = run_rerank(config(tmp_path, models, data, top_k=0, token_budget=64))
    expected = straightforward_ranking(*models, data)
    assert [r.prompt_id for r in result.ranked] == list(expected)
    for item in result.ranked:
        want = expected[item.prompt_id]
        assert [c.sample_index for c in item.ranked] == [i for i, _ in want]
        assert np.allclose([c.reward for c in item.ranked], [r for _, r in want], atol=TOL)
        assert [c.rank for c in item.ranked] == list(range(1, len(want) + 1))
    assert any([i for i, _ in want] != sorted(i for i, _ in want) for want in expected.values())  # not input order
    rows = [json.loads(line) for line in open(tmp_path / "out" / "reranked.jsonl")]
    assert len(rows) == 24 and rows[0]["rank"] == 1 and rows[0]["n_candidates"] == 6
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_prompts"] == 4 and summary["sequences_computed"] == {"policy": 24, "reference": 24}
    assert summary["best_of_n_gain"] >= 0 and summary["reference"]["path"] == models[1]


def test_top_1_is_a_best_of_n_file_judge_reads_and_a_rerun_is_cached(tmp_path, models):
    data = write_candidates(tmp_path / "c.jsonl", prompts=3, n=4, seed=2)
    first = run_rerank(config(tmp_path, models, data))
    _, outputs = read_outputs(str(tmp_path / "out" / "reranked.jsonl"))
    assert {pid: o.text for pid, o in outputs.items()} == {r.prompt_id: r.best.output for r in first.ranked}
    again = run_rerank(config(tmp_path, models, data, top_k=2))
    assert again.summary["sequences_computed"] == {"policy": 0, "reference": 0}
    rows = [json.loads(line) for line in open(tmp_path / "out" / "reranked.jsonl")]
    assert [r["rank"] for r in rows] == [1, 2] * 3


def test_library_call_matches_the_command(tmp_path, models):
    from transformers import AutoModelForCausalLM

    data = write_candidates(tmp_path / "c.jsonl", prompts=2, n=5, seed=3)
    command = run_rerank(config(tmp_path, models, data, top_k=0))
    rows = [json.loads(line) for line in open(data)]
    items = [(rows[0]["prompt"], [r["output"] for r in rows[:5]]), (rows[5]["prompt"], [r["output"] for r in rows[5:]])]
    policy, ref = (AutoModelForCausalLM.from_pretrained(p).eval() for p in models)
    ranked = rerank(policy, ref, word_tokenizer(), candidate_sets(items), token_budget=50)
    for got, want in zip(ranked, command.ranked):
        assert [c.sample_index for c in got.ranked] == [c.sample_index for c in want.ranked]
        assert np.allclose([c.reward for c in got.ranked], [c.reward for c in want.ranked], atol=TOL)
    free = rerank(policy, None, word_tokenizer(), items[:1], norm="avg")[0]
    assert all(c.reward == pytest.approx(0.1 * c.policy_logp / c.n_tokens) for c in free.ranked)


@pytest.mark.parametrize("extra,rows,needle", [
    (["--norm", "norm"], None, "reference-free"),
    (["--top-k", "-1"], None, "--top-k"),
    ([], [{"prompt_id": "a", "prompt": "the cat"}], "needs prompt_id, prompt"),
    ([], [{"prompt_id": "a", "prompt": "the cat", "output": "yes"}, {"prompt_id": "a", "prompt": "a dog", "output": "no"}],
     "different prompt"),
    ([], [{"prompt_id": "a", "prompt": "the cat", "output": "yes", "sample_index": "x"}], "sample_index"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, models, extra, rows, needle):
    data = write_candidates(tmp_path / "c.jsonl", prompts=1, n=2)
    if rows is not None:
        Path(data).write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["rerank", "--policy", models[0], "--ref", models[1], "--candidates", data,
                                       "--out", str(tmp_path / "o"), "--device", "cpu", *extra])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_cli_subprocess(tmp_path, models):
    data = write_candidates(tmp_path / "c.jsonl", prompts=2, n=3)
    base = [sys.executable, "-m", "dpo_eval.cli", "rerank", "--policy", models[0], "--ref", models[1], "--device", "cpu",
            "--cache-dir", str(tmp_path / "c"), "--no-progress", "--out", str(tmp_path / "o")]
    from subprocesses import run_together  # both at once: each is a Python start importing torch

    ok, bad = run_together(base + ["--candidates", data], base + ["--candidates", str(tmp_path / "none.jsonl")])
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n_candidates"] == 6
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_benchmark_runs_tiny():
    """A smoke run of benchmarks/rerank_bench.py (no timing asserted): both layouts agree."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rerank_bench.py"), "--model", "tiny",
                          "--prompts", "2", "--n", "3", "--prompt-len", "6", "--response-len", "5", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    assert report["max_abs_logp_diff"] <= TOL and report["ratio"] > 0 and "ratio" in run.stderr
