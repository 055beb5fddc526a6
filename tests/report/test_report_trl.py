"""`dpo-eval report` on runs it did not train: TRL's DPOTrainer (with --ref and --data), and the training
curves of both TRL's and dpo-eval's own runs read from their trainer_state.json into results.json and the page.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_run import FAST, trained_once

from dpo_eval.cli import main
from dpo_eval.reports.schema import schema_errors


def run_trl(tmp_path: Path) -> dict:
    """Four steps of TRL's DPOTrainer, a checkpoint every 2 steps, logging every step, then save_model +
    save_state at the root (as tests/report/test_discover.py, where the layout is pinned)."""
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("trl")
    from conftest import save_tiny_model, write_text_pairs
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    policy = save_tiny_model(tmp_path / "policy", seed=0)
    pairs = write_text_pairs(tmp_path / "pairs.jsonl", n=8, seed=3)
    rows = [json.loads(line) for line in open(pairs)]
    dataset = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    out = tmp_path / "trl_out"
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=2, max_steps=4, save_steps=2, logging_steps=1,
                     max_length=None, bf16=False, gradient_checkpointing=False, report_to=[], use_cpu=True, seed=0,
                     save_only_model=True, learning_rate=1e-2)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy),
                         ref_model=AutoModelForCausalLM.from_pretrained(policy), args=args,
                         train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(policy))
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    return {"run": out, "ref": policy, "pairs": pairs}


def logged(history: list[dict]) -> set[tuple[int, str, float]]:
    """(step, metric, value) of every numeric per-step figure of a log_history, written out: HF's end-of-run
    summary (train_*), step/epoch/total_flos left out, eval_ prefixes dropped."""
    skipped = {"step", "epoch", "total_flos"}
    return {(r["step"], k.removeprefix("eval_"), float(v)) for r in history for k, v in r.items()
            if k not in skipped and not k.startswith("train_") and not k.endswith("_runtime")
            and not k.endswith("_per_second") and isinstance(v, int | float) and math.isfinite(v)}


def curve_points(results: dict, run: str) -> set[tuple[int, str, float]]:
    return {(p["step"], p["metric"], p["value"]) for p in results["training_curves"][run]}


def test_a_trl_dpo_run_is_reported_with_ref_steps_in_order_and_its_training_curves(tmp_path):
    trl = run_trl(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(trl["run"]), "--ref", trl["ref"], "--data", trl["pairs"],
                                       "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *FAST])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert schema_errors(results) == []
    assert [(c["label"], c["step"]) for c in results["checkpoints"]] == [("0", 0), ("2", 2), ("4", 4), ("final", 4)]
    assert results["runs"][0]["trainer"] == "transformers Trainer" and results["runs"][0]["steps"] == [0, 2, 4, 4]
    assert results["provenance"]["reference"]["source"] == "--ref"
    history = json.loads((trl["run"] / "trainer_state.json").read_text())["log_history"]
    assert curve_points(results, "trl_out") == logged(history)
    losses = sorted((s, v) for s, m, v in curve_points(results, "trl_out") if m == "loss")
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    assert {m for _, m, _ in curve_points(results, "trl_out")} >= {"rewards/chosen", "rewards/margins", "logps/chosen"}
    page = (out / "report.html").read_text()
    assert 'id="plot-training"' in page and "Training curves" in page
    # the final model is checkpoint-4's weights: same fingerprint, same scores
    rows = {c["label"]: c for c in results["checkpoints"]}
    assert rows["final"]["fingerprint"] == rows["4"]["fingerprint"] and rows["final"]["rewards"] == rows["4"]["rewards"]


def test_dpo_eval_train_runs_fill_the_training_curves(tmp_path_factory, tmp_path):
    tiny = trained_once(tmp_path_factory)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["report", str(tiny["run"]), "--out", str(out), "--cache-dir",
                                       str(tiny["cache"]), *FAST])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    history = json.loads((Path(tiny["run"]) / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    assert history and curve_points(results, "run") == logged(history)
    assert {s for s, m, _ in curve_points(results, "run") if m == "loss"} == {1, 2, 3, 4}
    assert 'id="plot-training"' in (out / "report.html").read_text()
