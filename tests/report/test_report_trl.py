"""`dpo-eval report` on runs it did not train: TRL's DPOTrainer (with --ref and --data, judged, and gated),
and the training curves of both TRL's and dpo-eval's own runs read from their trainer_state.json into
results.json and the page.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE, trained_once

from dpo_eval.cli import main
from dpo_eval.reports.markdown import render_markdown
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


@pytest.fixture(scope="module")
def trl_report(tmp_path_factory) -> dict:
    """The TRL run, reported once with the rule judge (paths: run, ref, pairs, out, cache)."""
    root = tmp_path_factory.mktemp("trl")
    trl = {**run_trl(root), "out": root / "report", "cache": root / "cache"}
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(JUDGE_DIR))
        result = CliRunner().invoke(main, ["report", str(trl["run"]), "--ref", trl["ref"], "--data", trl["pairs"],
                                           "--judge", RULE_JUDGE, "--out", str(trl["out"]),
                                           "--cache-dir", str(trl["cache"]), *FAST])
    assert result.exit_code == 0, result.output
    return trl


def test_a_trl_dpo_run_is_reported_with_ref_steps_in_order_and_its_training_curves(trl_report):
    trl, out = trl_report, trl_report["out"]
    results = json.loads((out / "results.json").read_text())
    assert schema_errors(results) == []
    # save_model() at the root wrote checkpoint-4's weights again: one row at step 4 with both folders
    run = trl["run"].resolve()
    assert [(c["label"], c["step"], c["path"], c["final_path"]) for c in results["checkpoints"]] == [
        ("0", 0, trl["ref"], None), ("2", 2, str(run / "checkpoint-2"), None),
        ("4", 4, str(run / "checkpoint-4"), str(run))]
    entry = results["runs"][0]
    assert entry["trainer"] == "TRL" and entry["steps"] == [0, 2, 4]  # named by its model card, not trainer_state
    args_bin = "checkpoint-4/training_args.bin (pickle opcodes, not loaded)"  # save_model wrote none at the root
    assert entry["trained_with"]["beta"] in ({"value": 0.1, "source": "training_args.bin (pickle opcodes, not loaded)"},
                                             {"value": 0.1, "source": args_bin})  # DPOConfig's default beta
    assert entry["beta"] == 0.1 and entry["reference"] == {"path": trl["ref"], "source": "--ref"}
    header = render_markdown(results).splitlines()[2]
    assert header.startswith("- trl_out: trainer TRL (README.md (tag trl)) · version ")
    assert header.endswith(f"· β 0.1 (training_args.bin (pickle opcodes, not loaded)) · reference {trl['ref']} (--ref)")
    assert results["provenance"]["reference"]["source"] == "--ref"
    history = json.loads((trl["run"] / "trainer_state.json").read_text())["log_history"]
    assert curve_points(results, "trl_out") == logged(history)
    losses = sorted((s, v) for s, m, v in curve_points(results, "trl_out") if m == "loss")
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    assert {m for _, m, _ in curve_points(results, "trl_out")} >= {"rewards/chosen", "rewards/margins", "logps/chosen"}
    page = (out / "report.html").read_text()
    assert 'id="plot-training"' in page and "Training curves" in page
    assert "trl_out: trainer TRL (README.md (tag trl)) · version 1.16" in page


def test_a_judged_trl_run_with_its_final_model_at_the_root_gets_its_fits(trl_report):
    results = json.loads((trl_report["out"] / "results.json").read_text())
    trained = [c for c in results["checkpoints"] if not c["is_reference"]]
    assert all(c["winrate"] is not None and c["quality"] is not None for c in trained)
    assert results["provenance"]["judge"]["spec"] == RULE_JUDGE
    assert set(results["past_peak"]) == {"trl_out"}
    assert "twice" not in json.dumps(results["fits"]) + json.dumps(results["missing"])


def test_gate_on_the_trl_run_dir_with_every_checkpoint_judged_passes(trl_report, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    config = tmp_path / "gate.yaml"
    config.write_text("checks:\n  - checkpoints[all].winrate.n >= 1\nreport:\n  n_samples: 2\n"
                      "  max_new_tokens: 8\n  bootstrap_resamples: 200\n  lc_resamples: 5\n  render: false\n")
    result = CliRunner(env={"GITHUB_STEP_SUMMARY": None}).invoke(main, [
        "gate", str(trl_report["run"]), "--config", str(config), "--ref", trl_report["ref"],
        "--data", trl_report["pairs"], "--judge", RULE_JUDGE, "--out", str(tmp_path / "gate"),
        "--cache-dir", str(trl_report["cache"]), "--no-progress"])
    assert result.exit_code == 0, result.output
    gated = json.loads((tmp_path / "gate" / "results.json").read_text())
    assert [(c["label"], c["final_path"]) for c in gated["checkpoints"]] == [
        ("0", None), ("2", None), ("4", str(trl_report["run"].resolve()))]


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
