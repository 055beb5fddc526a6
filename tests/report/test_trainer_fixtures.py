"""Runs the real trainers wrote (tests/fixtures/trainers/, made by tools/make_trainer_fixtures.sh: TRL 1.16.0,
LLaMA-Factory 0.9.5, torchtune 0.6.1 on a 2-layer random Llama), read as they are: checkpoints, trainer,
recorded loss and beta, and training curves held to a plain reading of the files written out here."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from dpo_eval.evaluation.discover import curves_frame, discover_run, read_training_logs
from dpo_eval.evaluation.trainers import identify_trainer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trainers"
SKIPPED = {"step", "epoch", "total_flos", "train_loss", "train_runtime", "train_samples_per_second",
           "train_steps_per_second"}


def history_points(state: Path) -> set[tuple[int, str, float]]:
    """(step, metric, value) of every number in a trainer_state.json's log_history, summary keys left out."""
    history = json.loads(state.read_text())["log_history"]
    return {(r["step"], k, float(v)) for r in history for k, v in r.items()
            if k not in SKIPPED and isinstance(v, int | float) and not isinstance(v, bool)}


def frame_points(frame) -> set[tuple[int, str, float]]:
    return {(int(s), m, float(v)) for s, m, v in zip(frame["step"], frame["metric"], frame["value"], strict=True)}


def assert_one_point_each(frame) -> None:
    keys = list(zip(frame["step"], frame["metric"], frame["split"], strict=True))
    assert len(keys) == len(set(keys))


def test_trl_run_as_written():
    run = discover_run(FIXTURES / "trl" / "run")
    assert [(c.label, c.step, c.kind) for c in run.checkpoints] == [("2", 2, "full"), ("4", 4, "full"),
                                                                       ("final", 4, "full")]
    info = identify_trainer(run).to_dict()
    args = "training_args.bin (pickle opcodes, not loaded)"  # save_model wrote it at the root too
    assert info == {"name": "TRL", "source": "README.md (tag trl)", "version": {"value": "1.16.0", "source": "README.md"},
                    "loss": {"value": "sigmoid", "source": args}, "beta": {"value": 0.25, "source": args}}
    frame = curves_frame(read_training_logs(run))
    assert_one_point_each(frame)
    assert frame_points(frame) == history_points(FIXTURES / "trl" / "run" / "trainer_state.json")
    assert set(frame["source"]) == {"trainer_state.json"}
    assert sorted(frame.loc[frame["metric"] == "loss", "step"]) == [1, 2, 3, 4]


def disk_log_points(log_dir: Path) -> set[tuple[int, str, float]]:
    """torchtune's DiskLogger lines ``Step N | name:value ...`` read plainly; log_probs/ named logps/, lr
    learning_rate (TRL's names)."""
    points = set()
    for path in sorted(log_dir.glob("log_*.txt")):
        for line in path.read_text().splitlines():
            step, _, rest = line.partition(" | ")
            for item in rest.split():
                name, value = item.rsplit(":", 1)
                name = {"lr": "learning_rate"}.get(name, name.replace("log_probs/", "logps/"))
                points.add((int(step.removeprefix("Step ")), name, float(value)))
    return points


def test_torchtune_lora_dpo_run_as_written():
    root = FIXTURES / "torchtune" / "run"
    run = discover_run(root)
    # each epoch_N/ holds the merged model beside an adapter whose config names no base: the merged model
    assert [(c.label, c.step, c.kind) for c in run.checkpoints] == [("epoch_0", None, "full"), ("epoch_1", None, "full")]
    assert not (root / "epoch_0" / "adapter_config.json").read_text().count("base_model_name_or_path")
    info = identify_trainer(run).to_dict()
    assert info["name"] == "torchtune" and info["version"] is None
    assert info["loss"] == {"value": "torchtune.rlhf.loss.DPOLoss", "source": "torchtune_config.yaml"}
    assert info["beta"] == {"value": 0.15, "source": "torchtune_config.yaml"}
    frame = curves_frame(read_training_logs(run))
    assert_one_point_each(frame)
    expected = disk_log_points(root / "logs")
    assert frame_points(frame) == expected and len(expected) == 4 * 11  # 4 steps x 11 figures
    assert set(frame["source"]) == {"logs/log_*.txt"} and set(frame["split"]) == {"train"}
    assert {"logps/chosen", "rewards/margins", "loss", "learning_rate"} <= set(frame["metric"])
    assert not any(math.isnan(v) for v in frame["value"])


@pytest.mark.parametrize("trainer", ["trl", "torchtune", "llamafactory"])
def test_fixture_files_are_small_and_hold_no_absolute_paths(trainer):
    folder = FIXTURES / trainer
    if not folder.is_dir():
        pytest.skip(f"no {trainer} fixture")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_500_000
    texts = [p.read_text(errors="replace") for p in files if p.suffix in {".json", ".jsonl", ".yaml", ".md", ".txt"}]
    assert not any(re.search(r"/tmp/|/work/|/root/", t) for t in texts)


def test_llama_factory_full_dpo_run_as_written(tmp_path):
    """The issue's run: log_history and trainer_log.jsonl both hold each step, the root final model has
    checkpoint-4's weights, and the trainer is LLaMA-Factory, not "transformers Trainer"."""
    from dpo_eval.evaluation.discover import fold_final_model
    from dpo_eval.models import identify_model

    root = FIXTURES / "llamafactory" / "run"
    run = discover_run(root)
    assert [(c.label, c.step, c.kind) for c in run.checkpoints] == [("2", 2, "full"), ("4", 4, "full"),
                                                                       ("final", 4, "full")]
    fingerprints = {c.path: identify_model(str(c.path), cache_dir=tmp_path).fingerprint for c in run.checkpoints}
    folded = fold_final_model(run.checkpoints, fingerprints)
    assert [(c.label, c.path.name, c.final_path) for c in folded] == [("2", "checkpoint-2", None),
                                                                       ("4", "checkpoint-4", root)]
    info = identify_trainer(run).to_dict()
    assert info == {"name": "LLaMA-Factory", "source": "trainer_log.jsonl, training_loss.png, README.md (tag llama-factory)",
                    "version": None,  # 0.9.5 records its version nowhere in the run dir
                    "loss": {"value": "sigmoid", "source": "../dpo.yaml"}, "beta": {"value": 0.2, "source": "../dpo.yaml"}}
    logs = read_training_logs(run)
    frame = curves_frame(logs)
    assert_one_point_each(frame)
    assert frame_points(frame) == history_points(root / "trainer_state.json")  # the jsonl adds nothing new
    assert set(frame["source"]) == {"trainer_state.json"}
    assert len(logs.trainer_log) == 5 and sorted(frame.loc[frame["metric"] == "loss", "step"]) == [1, 2, 3, 4]
    # what the jsonl repeats is what log_history holds (LLaMA-Factory copies it): loss, accuracy, lr per step
    jsonl = {(r["current_steps"], k): r[k] for r in logs.trainer_log for k in ("loss", "accuracy", "lr") if k in r}
    points = {(s, m): v for s, m, v in frame_points(frame)}
    names = {"loss": "loss", "accuracy": "rewards/accuracies", "lr": "learning_rate"}
    assert all(math.isclose(points[(s, names[k])], v) for (s, k), v in jsonl.items())


@pytest.mark.parametrize(("trainer", "source"), [("llamafactory", "../dpo.yaml model_name_or_path"),
                                                  ("torchtune", "torchtune_config.yaml checkpointer.checkpoint_dir")])
def test_the_reference_is_the_model_the_trainer_config_names(trainer, source):
    from dpo_eval.evaluation.inputs import resolve_reference

    reference, warnings = resolve_reference(discover_run(FIXTURES / trainer / "run"), None)
    assert (Path(reference.path).resolve(), reference.source, warnings) == (
        (FIXTURES / trainer / "model").resolve(), source, [])


def test_a_trl_run_names_no_reference_so_ref_is_asked_for():
    from dpo_eval.errors import UserError
    from dpo_eval.evaluation.inputs import resolve_reference

    with pytest.raises(UserError, match="no reference model found.*--ref"):
        resolve_reference(discover_run(FIXTURES / "trl" / "run"), None)


def report_fixture(trainer: str, tmp_path: Path) -> dict:
    """`dpo-eval report` (score stage) on a copy of a trainer's fixture, no --ref: its results.json."""
    import shutil

    from click.testing import CliRunner
    from tiny_run import FAST

    from dpo_eval.cli import main

    shutil.copytree(FIXTURES / trainer, tmp_path / trainer)
    pairs = tmp_path / "pairs.jsonl"  # the fixtures' pairs; a space ends each prompt (plain-text tokenization)
    rows = json.loads((FIXTURES / "trl" / "pairs.json").read_text())
    pairs.write_text("".join(json.dumps({**r, "prompt": r["prompt"] + " "}) + "\n" for r in rows))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["report", str(tmp_path / trainer / "run"), "--data", str(pairs), "--stages",
                                       "score", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *FAST])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def test_a_llama_factory_run_is_reported_end_to_end_without_ref(tmp_path):
    results = report_fixture("llamafactory", tmp_path)
    run = (tmp_path / "llamafactory" / "run").resolve()
    assert [(c["label"], c["step"], c["final_path"]) for c in results["checkpoints"]] == [
        ("0", 0, None), ("2", 2, None), ("4", 4, str(run))]  # the root final model is checkpoint-4's row
    entry = results["runs"][0]
    assert (entry["trainer"], entry["loss"], entry["beta"]) == ("LLaMA-Factory", "sigmoid", 0.2)
    assert entry["reference"] == {"path": str((tmp_path / "llamafactory" / "model").resolve()),
                                  "source": "../dpo.yaml model_name_or_path"}
    points = [(p["step"], p["metric"], p["split"]) for p in results["training_curves"]["run"]]
    assert len(points) == len(set(points))  # each point once, not once per log file
    assert {p["source"] for p in results["training_curves"]["run"]} == {"trainer_state.json"}


def test_a_torchtune_lora_run_is_reported_end_to_end_without_ref(tmp_path):
    results = report_fixture("torchtune", tmp_path)
    assert [(c["label"], c["step"]) for c in results["checkpoints"]] == [("0", 0), ("epoch_0", 1), ("epoch_1", 2)]
    entry = results["runs"][0]
    assert (entry["trainer"], entry["beta"]) == ("torchtune", 0.15)
    assert entry["reference"]["source"] == "torchtune_config.yaml checkpointer.checkpoint_dir"
    assert len(results["training_curves"]["run"]) == 4 * 11


def test_a_trl_checkpoint_without_the_model_card_is_named_by_the_class_its_training_args_pickle(tmp_path):
    import shutil

    shutil.copytree(FIXTURES / "trl" / "run" / "checkpoint-2", tmp_path / "run" / "checkpoint-2")
    info = identify_trainer(discover_run(tmp_path / "run")).to_dict()
    args = "checkpoint-2/training_args.bin"
    assert info["name"] == "TRL" and info["source"] == f"{args} (pickles trl.trainer.dpo_config.DPOConfig)"
    assert info["version"] is None and info["beta"] == {"value": 0.25, "source": f"{args} (pickle opcodes, not loaded)"}
