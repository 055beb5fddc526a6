"""`dpo-eval report` under torchrun: 2 gloo processes on CPU write the results.json of 1 process.

The model passes (score, kl, entropy, unseen) are shared across ranks batch by batch; sampling and judging
run on rank 0; only rank 0 writes the store and the results (dpo_eval.evaluation.parallel).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import random_pairs, tiny_llama
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE, threads_as_subprocesses, trained_once

from dpo_eval.engine.distributed import DistContext
from dpo_eval.engine.kl import analytic_kl
from dpo_eval.evaluation.parallel import batch_groups, compute_sharded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


def test_batch_groups_split_the_one_process_batches_round_robin():
    lengths = [5, 17, 3, 9, 9, 30, 2, 11, 8, 21, 4, 13]
    from dpo_eval.engine.batching import plan_batches

    batches = [sorted(i for row in b for i in row) for b in plan_batches(lengths, 32)]
    assert len(batches) >= 4
    assert batch_groups(lengths, 32, DistContext()) == batches
    ranks = [batch_groups(lengths, 32, DistContext(rank, 2)) for rank in (0, 1)]
    assert ranks == [batches[0::2], batches[1::2]]


def test_batch_by_batch_kl_equals_one_call_exactly():
    """A rank computes its batches one engine call each: the numbers of one call over everything, bit for bit."""
    policy, ref = tiny_llama(seed=1), tiny_llama(seed=2)
    sequences = [(p.prompt_ids, p.chosen_ids) for p in random_pairs(24, 97, seed=5)]
    whole = analytic_kl(policy, ref, sequences, token_budget=48, pad_id=0)
    lengths = [len(c) + len(t) for c, t in sequences]
    assert len(batch_groups(lengths, 48, DistContext())) > 3
    parts = compute_sharded(sequences, lengths, 48, DistContext(),
                            lambda part: analytic_kl(policy, ref, part, token_budget=48, pad_id=0))
    assert parts == whole


def fresh_cache(tiny, target: Path) -> Path:
    """The tiny run's cache without its log-probs (model identities only), so every pass computes."""
    shutil.copytree(tiny["cache"], target, ignore=shutil.ignore_patterns("logps"))
    return target


def strip(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("generated_at", "timings")}


def test_two_gloo_processes_write_the_results_of_one(tiny, tmp_path):
    out = tmp_path / "out"
    # a small token budget: several batches per pass, so rank 1 has some to compute
    args = ["report", str(tiny["run"]), "--judge", RULE_JUDGE, "--out", str(out), "--token-budget", "40", *FAST]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(JUDGE_DIR), str(ROOT)]), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    from click.testing import CliRunner

    from dpo_eval.cli import main

    with pytest.MonkeyPatch.context() as patch, threads_as_subprocesses():
        patch.syspath_prepend(str(JUDGE_DIR))
        one = CliRunner().invoke(main, [*args, "--cache-dir", str(fresh_cache(tiny, tmp_path / "c1"))],
                                 catch_exceptions=False)
    assert one.exit_code == 0, one.output
    single = json.loads((out / "results.json").read_text())
    out.rename(tmp_path / "one")  # the same --out for both, so every path in results.json is the same

    cache = fresh_cache(tiny, tmp_path / "c2")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "dpo_eval.cli", *args, "--cache-dir", str(cache)], env=env,
                          timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count('"n_checkpoints"') == 1  # only rank 0 reports
    double = json.loads((out / "results.json").read_text())
    assert strip(double) == strip(single)
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    # both ranks scored: each wrote its own log-prob cache shards (score and unseen passes)
    shards = {p.name.split("-")[-1] for p in (cache / "logps").rglob("part-*.npz")}
    assert shards == {"0.npz", "1.npz"}
    ledger = json.loads((out / "store" / "last_run.json").read_text())  # rank 0's, complete
    assert set(ledger["computed"]) == {"prompts", "score", "samples", "kl", "entropy", "unseen", "judge"}
    assert not list((out / "store").glob("*/*.partial"))
