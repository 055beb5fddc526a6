"""A tiny trained run for the `dpo-eval report` tests: dpo-eval train's own run dir, in seconds on a CPU.

The initial model (the reference) is a 2-layer Llama with the word tokenizer of tests/conftest.py, trained
4 steps with DPO on the learnable synthetic task, checkpoints at steps 2 and 4; the manifest names the
held-out pairs (eval_data), so `dpo-eval report RUN_DIR` needs no --ref or --data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import torch
from conftest import save_tiny_model, write_synthetic_preferences
from safetensors.torch import load_file, save_file

from dpo_eval.train.config import load_config
from dpo_eval.train.recipe import train

JUDGE_DIR = Path(__file__).resolve().parent.parent / "judge"
"""Holds rules.py: `rule:rules:longer_wins` imports once this folder is on sys.path / PYTHONPATH."""
RULE_JUDGE = "rule:rules:longer_wins"
FAST = ("--n-samples", "2", "--max-new-tokens", "8", "--bootstrap-resamples", "200", "--lc-resamples", "5",
        "--no-progress")
"""Small sampling and bootstrap settings that keep a report of the tiny run to seconds."""


def make_run(root: Path) -> dict:
    """Train the tiny run under root; returns paths: init, train, eval, run, cache."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {"init": save_tiny_model(root / "init", seed=7),
             "train": write_synthetic_preferences(root / "train.jsonl", n=32, seed=1),
             "eval": write_synthetic_preferences(root / "eval.jsonl", n=12, seed=2),
             "run": root / "run", "cache": root / "cache"}
    config = load_config(None, (), policy=paths["init"], data=paths["train"], eval_data=paths["eval"],
                         output_dir=str(paths["run"]), learning_rate=1e-2, lr_schedule="constant", batch_size=8,
                         max_steps=4, save_every=2, show_progress=False, cache_dir=str(paths["cache"]),
                         max_length=None)
    train(config)
    return paths


def trained_once(tmp_path_factory) -> dict:
    """The tiny run, trained once per session: a later module finds the run an earlier one built."""
    root = tmp_path_factory.getbasetemp() / "tiny_report_run"
    done = root / "trained"
    if done.exists():
        return {**{k: str(root / v) for k, v in (("init", "init"), ("train", "train.jsonl"), ("eval", "eval.jsonl"))},
                "run": root / "run", "cache": root / "cache"}
    shutil.rmtree(root, ignore_errors=True)
    paths = make_run(root)
    done.write_text("ok\n")
    return paths


def copy_run(paths: dict, target: Path) -> Path:
    """A copy of the run dir (checkpoints and manifest), without any report output."""
    shutil.copytree(paths["run"], target, ignore=shutil.ignore_patterns(".dpo_eval"))
    return target


def add_checkpoint(run_dir: Path, step: int, source_step: int = 4, scale: float = 1e-2) -> Path:
    """checkpoint-{step}: checkpoint-{source_step} with every weight moved by scale * N(0, 1) (seed = step)."""
    source, target = run_dir / f"checkpoint-{source_step}", run_dir / f"checkpoint-{step}"
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    generator = torch.Generator().manual_seed(step)
    moved = {name: (w + scale * torch.randn(w.shape, generator=generator)).contiguous() for name, w in weights.items()}
    save_file(moved, target / "model.safetensors", metadata={"format": "pt"})
    return target


@contextlib.contextmanager
def threads_as_subprocesses():
    """This process computes with the one CPU thread the test subprocesses get (OMP_NUM_THREADS=1), fixed for
    the engine (DPO_EVAL_THREADS=fixed): float32 sums differ in their last bits with the thread count, and
    the engine picks its count from the idle cores, so an in-process run compared bit for bit with a
    subprocess's must use the same count."""
    before, env = torch.get_num_threads(), os.environ.get("DPO_EVAL_THREADS")
    torch.set_num_threads(1)
    os.environ["DPO_EVAL_THREADS"] = "fixed"
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("DPO_EVAL_THREADS", None)
        else:
            os.environ["DPO_EVAL_THREADS"] = env
