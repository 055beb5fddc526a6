"""Data parallelism: torchrun with 2 gloo processes on CPU gives the same table as 1 process."""

from __future__ import annotations

import json
import os
import sys

import pandas as pd
from conftest import save_tiny_model, write_text_pairs
from subprocesses import run_together


def score_cmd(launcher, policy, ref, data, out, cache):
    return [*launcher, "-m", "dpo_eval.cli", "score", "--policy", policy, "--ref", ref, "--data", data,
            "--out", str(out), "--cache-dir", str(cache), "--token-budget", "40", "--no-progress"]


def test_two_gloo_processes_match_one(tmp_path):
    policy, ref = save_tiny_model(tmp_path / "policy", seed=1), save_tiny_model(tmp_path / "ref", seed=2)
    data = write_text_pairs(tmp_path / "pairs.jsonl", n=16, seed=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    single = score_cmd([sys.executable], policy, ref, data, tmp_path / "one", tmp_path / "c1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = score_cmd(torchrun, policy, ref, data, tmp_path / "two", tmp_path / "c2")
    # started together (each its own out and cache, one thread per process): one Python start's wait for both
    one_done, done = run_together(single, double, env=env)
    assert one_done.returncode == 0, one_done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    one = pd.read_parquet(tmp_path / "one" / "pairs.parquet")
    two = pd.read_parquet(tmp_path / "two" / "pairs.parquet")
    pd.testing.assert_frame_equal(one, two, check_exact=False, atol=1e-5, rtol=0)
    # both ranks did work: each wrote its own cache shards
    shards = {p.name.split("-")[-1] for p in (tmp_path / "c2" / "logps").rglob("part-*.npz")}
    assert shards == {"0.npz", "1.npz"}
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["data"]["n_pairs"] == 16
