"""`dpo-eval rewardbench` and `dpo-eval rerank` under torchrun: 2 gloo processes on CPU write what 1 process
writes, bit for bit, and each rank computed only its share of the sequences (its cache shards' rows)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import WORDS, save_tiny_model, tiny_llama, write_text_pairs

from dpo_eval.engine.distributed import DistContext
from dpo_eval.engine.multi import ResponseGroup, compute_groups, compute_groups_sharded, planned_batches
from dpo_eval.engine.prefix import supports_prefix_cache

BUDGET = "40"  # small: several batches per model pass, so rank 1 has some to compute
NO_PREFIX_CACHE = {"sliding_window": 4096}  # a config the prompt cache declines: the 4D-mask path


def random_groups(n: int, seed: int) -> list[ResponseGroup]:
    rng = random.Random(seed)
    tokens = lambda k: tuple(rng.randrange(1, 97) for _ in range(k))  # noqa: E731
    return [ResponseGroup(tokens(rng.randint(1, 9)), tuple(tokens(rng.randint(1, 6)) for _ in range(rng.randint(1, 4))))
            for _ in range(n)]


@pytest.mark.parametrize("overrides", [{}, NO_PREFIX_CACHE], ids=["prompt-cache", "4d-mask"])
def test_two_ranks_shares_are_one_call_bit_for_bit(overrides):
    """Each rank's batches, one compute_groups call each, give exactly the rows of one call over all groups."""
    model = tiny_llama(seed=3, **overrides)
    assert supports_prefix_cache(model) == (not overrides)
    groups = random_groups(14, seed=len(overrides))
    whole = compute_groups(model, groups, pad_id=0, token_budget=24, show_progress=False)
    assert len(planned_batches(groups, 24, supports_prefix_cache(model))) >= 4
    parts = [compute_groups_sharded(model, groups, pad_id=0, token_budget=24, ctx=DistContext(rank, 2),
                                    show_progress=False) for rank in (0, 1)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    merged = {**parts[0], **parts[1]}
    assert [merged[i] for i in range(len(groups))] == whole


def launch(args: list[str], cache: Path, processes: int) -> None:
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*launcher, "-m", "dpo_eval.cli", *args, "--cache-dir", str(cache), "--token-budget",
                           BUDGET, "--device", "cpu", "--no-progress"], env=env, timeout=300, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def rows_by_writer(cache: Path) -> list[dict[str, int]]:
    """Per model directory of the sequence cache: {writer tag: rows in its shards}."""
    out = []
    for folder in sorted((cache / "logps").glob("*-seqstats-*")):
        counts: dict[str, int] = {}
        for shard in folder.glob("part-*.npz"):
            tag = shard.stem.split("-")[3]
            counts[tag] = counts.get(tag, 0) + int(np.load(shard)["key_offsets"].size - 1)
        out.append(counts)
    return out


def assert_each_rank_did_a_part(cache: Path, n_sequences: int, n_models: int) -> None:
    shares = rows_by_writer(cache)
    assert len(shares) == n_models
    for share in shares:
        assert set(share) == {"0", "1"} and sum(share.values()) == n_sequences, share
        assert all(0 < rows < n_sequences for rows in share.values())


def test_rewardbench_two_gloo_processes_write_what_one_writes(tmp_path):
    """The 4D-mask path (a config the prompt cache declines), policy and reference."""
    policy = save_tiny_model(tmp_path / "policy", seed=1, **NO_PREFIX_CACHE)
    ref = save_tiny_model(tmp_path / "ref", seed=2, **NO_PREFIX_CACHE)
    data = write_text_pairs(tmp_path / "rb.jsonl", n=10, seed=5)
    for processes in (1, 2):
        launch(["rewardbench", "--policy", policy, "--ref", ref, "--data", data, "--out", str(tmp_path / f"o{processes}")],
               tmp_path / f"c{processes}", processes)
    one, two = (pd.read_parquet(tmp_path / f"o{k}" / "pairs.parquet") for k in (1, 2))
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert len(one) == 10
    assert (json.loads((tmp_path / "o1" / "rewardbench.json").read_text())
            == json.loads((tmp_path / "o2" / "rewardbench.json").read_text()))
    n_sequences = len({(r["prompt"], r[side]) for r in map(json.loads, open(data)) for side in ("chosen", "rejected")})
    assert_each_rank_did_a_part(tmp_path / "c2", n_sequences, n_models=2)


def write_candidates(path: Path, prompts: int = 5, n: int = 4, seed: int = 0) -> str:
    rng = random.Random(seed)
    sentence = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with open(path, "w") as f:
        for p in range(prompts):
            prompt = sentence(rng.randint(2, 6))
            for i in range(n):
                f.write(json.dumps({"prompt_id": f"p{p}", "sample_index": i, "prompt": prompt,
                                    "output": f"{sentence(rng.randint(1, 5))} {WORDS[i]}"}) + "\n")
    return str(path)


def test_rerank_two_gloo_processes_write_what_one_writes(tmp_path):
    """The prompt-cache path, policy and reference; every candidate kept (--top-k 0)."""
    policy, ref = save_tiny_model(tmp_path / "policy", seed=1), save_tiny_model(tmp_path / "ref", seed=2)
    candidates = write_candidates(tmp_path / "candidates.jsonl")
    for processes in (1, 2):
        launch(["rerank", "--policy", policy, "--ref", ref, "--candidates", candidates, "--top-k", "0",
                "--out", str(tmp_path / f"o{processes}")], tmp_path / f"c{processes}", processes)
    one, two = ((tmp_path / f"o{k}" / "reranked.jsonl").read_text() for k in (1, 2))
    assert one == two and len(one.splitlines()) == 20
    summaries = [json.loads((tmp_path / f"o{k}" / "summary.json").read_text()) for k in (1, 2)]
    assert summaries[0] == summaries[1]
    assert summaries[1]["sequences_computed"] == {"policy": 20, "reference": 20}
    assert_each_rank_did_a_part(tmp_path / "c2", 20, n_models=2)
