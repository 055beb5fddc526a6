"""Checkpoint discovery for `dpo-eval report`: every framework's naming, order, skips, --steps, logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import save_tiny_model

from dpo_eval.errors import UserError
from dpo_eval.evaluation.discover import (
    available_steps,
    curves_frame,
    discover_run,
    discover_runs,
    fold_final_model,
    parse_steps,
    read_training_logs,
    run_names,
    select_steps,
)


def fake_model(folder: Path, weights: str = "model.safetensors") -> Path:
    """A folder that looks like save_pretrained output (discovery never opens the files)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / weights).write_bytes(b"not read")
    return folder


def fake_adapter(folder: Path, base: str = "base", weights: str = "adapter_model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    (folder / weights).write_bytes(b"not read")
    return folder


def write_state(folder: Path, global_step: int, log_history: list | None = None) -> None:
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": global_step,
                                                           "log_history": log_history or []}))


def steps_and_labels(run) -> list[tuple]:
    return [(c.step, c.label) for c in run.checkpoints]


# ---------------------------------------------------------------------------------------------- naming, order


def test_checkpoints_are_ordered_numerically_not_lexically(tmp_path):
    for step in (100, 9, 10, 2):
        fake_model(tmp_path / f"checkpoint-{step}")
    run = discover_run(tmp_path)
    assert steps_and_labels(run) == [(2, "2"), (9, "9"), (10, "10"), (100, "100")]
    assert [c.path for c in run.checkpoints] == [(tmp_path / f"checkpoint-{s}").resolve() for s in (2, 9, 10, 100)]
    assert {c.kind for c in run.checkpoints} == {"full"}
    assert {c.run for c in run.checkpoints} == {tmp_path.name}


@pytest.mark.parametrize("names", [
    ["step_50", "step_100", "step_5"],                       # open-instruct, torchtune
    ["global_step50_hf", "global_step100_hf", "global_step5_hf"],  # OpenRLHF HF exports
    ["global_step_50", "global_step_100", "global_step_5"],
])
def test_other_frameworks_numbered_folders(tmp_path, names):
    for name in names:
        fake_model(tmp_path / name, weights="model-00001-of-00001.safetensors")
    assert steps_and_labels(discover_run(tmp_path)) == [(5, "5"), (50, "50"), (100, "100")]


def test_epoch_folders_come_after_steps_and_in_epoch_order(tmp_path):
    for name in ("epoch_10", "epoch_2", "step_7"):
        fake_model(tmp_path / name)
    assert steps_and_labels(discover_run(tmp_path)) == [(7, "7"), (None, "epoch_2"), (None, "epoch_10")]


def test_pickled_bin_weights_count_as_weights(tmp_path):
    fake_model(tmp_path / "checkpoint-3", weights="pytorch_model.bin")
    assert steps_and_labels(discover_run(tmp_path)) == [(3, "3")]


def test_final_model_at_root_takes_trainer_state_global_step(tmp_path):
    fake_model(tmp_path / "checkpoint-4")
    fake_model(tmp_path / "checkpoint-8")
    fake_model(tmp_path)  # save_model(output_dir)
    write_state(tmp_path, global_step=8)
    run = discover_run(tmp_path)
    assert steps_and_labels(run) == [(4, "4"), (8, "8"), (8, "final")]
    assert run.checkpoints[-1].path == tmp_path.resolve()
    assert run.trainer_state_path == tmp_path / "trainer_state.json"


def test_final_model_without_trainer_state_comes_after_every_checkpoint(tmp_path):
    fake_model(tmp_path / "epoch_0")
    fake_model(tmp_path / "checkpoint-12")
    fake_model(tmp_path)
    assert steps_and_labels(discover_run(tmp_path)) == [(12, "12"), (None, "epoch_0"), (None, "final")]


def final_and_checkpoints(tmp_path: Path, global_step: int = 4):
    """checkpoint-2, checkpoint-4 and a final model at the root at trainer_state's global_step."""
    for step in (2, 4):
        fake_model(tmp_path / f"checkpoint-{step}")
    fake_model(tmp_path)
    write_state(tmp_path, global_step=global_step)
    return discover_run(tmp_path)


def fingerprints_of(run, **by_label: str) -> dict[Path, str]:
    return {c.path: by_label[c.label] for c in run.checkpoints}


def test_a_final_model_with_a_checkpoints_weights_is_that_checkpoint_with_both_paths(tmp_path):
    run = final_and_checkpoints(tmp_path)
    folded = fold_final_model(run.checkpoints, fingerprints_of(run, **{"2": "a", "4": "b", "final": "b"}))
    assert [(c.step, c.label, c.path, c.final_path) for c in folded] == [
        (2, "2", (tmp_path / "checkpoint-2").resolve(), None),
        (4, "4", (tmp_path / "checkpoint-4").resolve(), tmp_path.resolve())]


def test_a_final_model_with_other_weights_at_the_same_step_is_its_own_row_after_it(tmp_path):
    run = final_and_checkpoints(tmp_path)
    folded = fold_final_model(run.checkpoints, fingerprints_of(run, **{"2": "a", "4": "b", "final": "c"}))
    assert folded == run.checkpoints
    assert [(c.step, c.label, c.final_path) for c in folded] == [(2, "2", None), (4, "4", None), (4, "final", None)]


def test_a_final_model_is_the_checkpoint_it_equals_at_another_step_or_at_its_own(tmp_path):
    run = final_and_checkpoints(tmp_path)  # load_best_model_at_end: the root holds checkpoint-2's weights
    folded = fold_final_model(run.checkpoints, fingerprints_of(run, **{"2": "a", "4": "b", "final": "a"}))
    assert [(c.label, c.final_path) for c in folded] == [("2", tmp_path.resolve()), ("4", None)]
    # every checkpoint has the same weights (nothing was learned): the one at the final model's step
    folded = fold_final_model(run.checkpoints, fingerprints_of(run, **{"2": "a", "4": "a", "final": "a"}))
    assert [(c.label, c.final_path) for c in folded] == [("2", None), ("4", tmp_path.resolve())]
    unnumbered = discover_run(fake_model(tmp_path / "other"))  # a lone final model has nothing to equal
    assert fold_final_model(unnumbered.checkpoints, {unnumbered.checkpoints[0].path: "a"}) == unnumbered.checkpoints


def report_rows(tmp_path: Path, root_seed: int) -> list[tuple]:
    """(label, step, path, final_path) of the planned rows of a run whose checkpoint-4 is the policy (seed 0)
    and whose root holds a model of root_seed, with real fingerprints (identify_model)."""
    from conftest import write_text_pairs

    from dpo_eval.evaluation.config import ReportConfig
    from dpo_eval.evaluation.plan import build_plan
    from dpo_eval.evaluation.store import RunStore
    from dpo_eval.model_settings import ModelLoading

    ref = save_tiny_model(tmp_path / "ref", seed=9)
    run = tmp_path / "run"
    save_tiny_model(run / "checkpoint-4", seed=0)
    save_tiny_model(run, seed=root_seed)
    write_state(run, global_step=4)
    config = ReportConfig(run_dirs=(str(run),), ref=ref, data=write_text_pairs(tmp_path / "pairs.jsonl", n=4),
                          models=ModelLoading(cache_dir=str(tmp_path / "cache")), out=str(tmp_path / "out"))
    plan = build_plan(config, RunStore(tmp_path / "out" / "store"))
    return [(r.label, r.step, r.path, r.final_path, r.identity.fingerprint) for r in plan.runs[0].rows]


def test_report_rows_fold_a_final_model_by_its_real_fingerprint(tmp_path):
    rows = report_rows(tmp_path / "same", root_seed=0)
    run = (tmp_path / "same" / "run").resolve()
    assert [r[:4] for r in rows] == [("0", 0, rows[0][2], None), ("4", 4, str(run / "checkpoint-4"), str(run))]
    rows = report_rows(tmp_path / "other", root_seed=1)
    run = (tmp_path / "other" / "run").resolve()
    assert [r[:4] for r in rows] == [("0", 0, rows[0][2], None), ("4", 4, str(run / "checkpoint-4"), None),
                                     ("final", 4, str(run), None)]
    assert rows[1][4] != rows[2][4]


def test_peft_adapters_are_checkpoints_of_kind_peft(tmp_path):
    fake_adapter(tmp_path / "checkpoint-5")
    fake_adapter(tmp_path / "checkpoint-10", weights="adapter_model.bin")
    fake_adapter(tmp_path)
    run = discover_run(tmp_path)
    assert steps_and_labels(run) == [(5, "5"), (10, "10"), (None, "final")]
    assert [c.kind for c in run.checkpoints] == ["peft", "peft", "peft"]


def test_folders_without_loadable_weights_are_skipped_with_a_reason(tmp_path):
    fake_model(tmp_path / "checkpoint-10")
    mid_write = tmp_path / "checkpoint-20"
    mid_write.mkdir()
    (mid_write / "config.json").write_text("{}")
    (mid_write / "trainer_state.json").write_text("{}")
    (tmp_path / "runs" / "Jan01").mkdir(parents=True)  # tensorboard
    (tmp_path / "checkpoint-30").mkdir()
    (tmp_path / "checkpoint-30" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "checkpoint-40").mkdir()
    (tmp_path / "checkpoint-40" / "adapter_config.json").write_text("{}")
    fake_model(tmp_path / ".checkpoint-50.tmp123")
    run = discover_run(tmp_path)
    assert steps_and_labels(run) == [(10, "10")]
    reasons = {s.path.name: s.reason for s in run.skipped}
    assert set(reasons) == {"checkpoint-20", "runs", "checkpoint-30", "checkpoint-40", ".checkpoint-50.tmp123"}
    assert "no weights" in reasons["checkpoint-20"]
    assert "not checkpoint-N" in reasons["runs"]
    assert "no config.json" in reasons["checkpoint-30"]
    assert "no adapter_model" in reasons["checkpoint-40"]
    assert "being written" in reasons[".checkpoint-50.tmp123"]


def test_a_single_model_dir_is_a_one_checkpoint_run(tmp_path):
    folder = Path(save_tiny_model(tmp_path / "sft"))
    run = discover_run(folder)
    assert [(c.step, c.label, c.path, c.kind) for c in run.checkpoints] == [(None, "final", folder.resolve(), "full")]
    assert run.name == "sft" and run.manifest is None and run.skipped == ()


def test_a_lone_checkpoint_dir_keeps_its_step_and_reads_the_parent_manifest(tmp_path):
    fake_model(tmp_path / "out" / "checkpoint-7")
    (tmp_path / "out" / "dpo_eval.json").write_text(json.dumps({"schema_version": 1}))
    (tmp_path / "out" / "trainer_log.jsonl").write_text('{"current_steps": 1}\n')
    run = discover_runs([tmp_path / "out" / "checkpoint-7"])[0]
    assert steps_and_labels(run) == [(7, "7")]
    assert run.name == "out/checkpoint-7"
    assert run.manifest == {"schema_version": 1}
    assert run.trainer_log_path == tmp_path / "out" / "trainer_log.jsonl"


# ---------------------------------------------------------------------------------------------- errors


def test_input_problems_are_one_line_user_errors(tmp_path):
    cases = []
    with pytest.raises(UserError, match="does not exist") as missing:
        discover_run(tmp_path / "nope")
    cases.append(missing)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="is a file") as file:
        discover_run(tmp_path / "file.txt")
    cases.append(file)
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no checkpoints found in run dir .*looked for checkpoint-N/, step_N/") as none:
        discover_run(tmp_path / "empty")
    cases.append(none)
    fake_model(tmp_path / "bad" / "checkpoint-1")
    (tmp_path / "bad" / "dpo_eval.json").write_text("{not json")
    with pytest.raises(UserError, match=r"cannot read run manifest .*dpo_eval.json") as manifest:
        discover_run(tmp_path / "bad")
    cases.append(manifest)
    fake_model(tmp_path / "dup" / "checkpoint-100")
    fake_model(tmp_path / "dup" / "step_100")
    with pytest.raises(UserError, match=r"two checkpoints for 100 \(checkpoint-100, step_100\)") as dup:
        discover_run(tmp_path / "dup")
    cases.append(dup)
    with pytest.raises(UserError, match="no run dir given"):
        discover_runs([])
    with pytest.raises(UserError, match="given twice") as twice:
        discover_runs([tmp_path / "dup", tmp_path / "dup" / ".." / "dup"])
    cases.append(twice)
    assert all("\n" not in str(case.value) for case in cases)


# ---------------------------------------------------------------------------------------------- several runs


def test_runs_with_the_same_dir_name_are_told_apart_by_their_parents(tmp_path):
    for parent in ("a", "b"):
        fake_model(tmp_path / parent / "out" / "checkpoint-1")
    fake_model(tmp_path / "c" / "other" / "checkpoint-1")
    runs = discover_runs([tmp_path / "a" / "out", tmp_path / "b" / "out", tmp_path / "c" / "other"])
    assert [r.name for r in runs] == ["a/out", "b/out", "other"]
    assert [r.checkpoints[0].run for r in runs] == ["a/out", "b/out", "other"]


def test_run_names_go_up_as_far_as_needed():
    paths = [Path("/x/a/run/out"), Path("/y/a/run/out"), Path("/z/solo")]
    assert run_names(paths) == ["x/a/run/out", "y/a/run/out", "solo"]


# ---------------------------------------------------------------------------------------------- --steps


def test_parse_steps_reads_numbers_epochs_and_final():
    assert parse_steps(None) is None and parse_steps(" ") is None
    assert parse_steps("100, 200,final,epoch_2,0100") == ("100", "200", "final", "epoch_2")


@pytest.mark.parametrize("text", ["100,,200", "abc", "-1", "1.5", "100;200", "last"])
def test_bad_steps_syntax_is_one_line(text):
    with pytest.raises(UserError, match=r"--steps .* is not a step; give comma-separated step numbers") as error:
        parse_steps(text)
    assert "\n" not in str(error.value)


def two_runs(tmp_path):
    for step in (10, 20, 30):
        fake_model(tmp_path / "a" / f"checkpoint-{step}")
    for step in (10, 20):
        fake_model(tmp_path / "b" / f"checkpoint-{step}")
    fake_model(tmp_path / "b")
    return discover_runs([tmp_path / "a", tmp_path / "b"])


def test_select_steps_keeps_the_named_checkpoints_and_final_means_the_last(tmp_path):
    runs = two_runs(tmp_path)
    picked, warnings = select_steps(runs, parse_steps("10,final"))
    assert [steps_and_labels(r) for r in picked] == [[(10, "10"), (30, "30")], [(10, "10"), (None, "final")]]
    assert warnings == []
    assert select_steps(runs, None) == (runs, [])


def test_a_step_only_some_runs_have_is_a_warning(tmp_path):
    picked, warnings = select_steps(two_runs(tmp_path), ("20", "30"))
    assert [steps_and_labels(r) for r in picked] == [[(20, "20"), (30, "30")], [(20, "20")]]
    assert warnings == ["--steps: step 30 is not in run(s) b"]


def test_an_unknown_step_names_the_available_steps(tmp_path):
    runs = two_runs(tmp_path)
    assert available_steps(runs[0]) == ["10", "20", "30", "final"]
    with pytest.raises(UserError) as error:
        select_steps(runs, ("15",))
    assert str(error.value) == ("--steps: no run has step 15; available steps are a: 10, 20, 30, final; "
                                "b: 10, 20, final")


def test_a_run_left_without_checkpoints_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"picks no checkpoint of run b; its steps are 10, 20, final"):
        select_steps(two_runs(tmp_path), ("30",))


# ---------------------------------------------------------------------------------------------- logs


def test_trainer_state_comes_from_the_latest_checkpoint_when_the_root_has_none(tmp_path):
    for step in (9, 10):
        fake_model(tmp_path / f"checkpoint-{step}")
        write_state(tmp_path / f"checkpoint-{step}", step, [{"step": s, "loss": 1 / s} for s in range(1, step + 1)])
    fake_model(tmp_path / "checkpoint-11")  # no trainer_state.json in it
    run = discover_run(tmp_path)
    assert run.trainer_state_path == tmp_path.resolve() / "checkpoint-10" / "trainer_state.json"
    logs = read_training_logs(run)
    assert logs.log_history == [{"step": s, "loss": 1 / s} for s in range(1, 11)]
    assert logs.trainer_log == [] and logs.warnings == ()


def test_llama_factory_trainer_log_rows_and_a_cut_off_last_line(tmp_path):
    fake_model(tmp_path / "checkpoint-2")
    rows = [{"current_steps": 1, "total_steps": 2, "loss": 0.69}, {"current_steps": 2, "total_steps": 2, "loss": 0.6}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "trainer_log.jsonl").write_text(text + '{"current_steps": 3, "lo')
    logs = read_training_logs(discover_run(tmp_path))
    assert logs.log_history == [] and logs.trainer_log == rows
    assert len(logs.warnings) == 1 and "line 3 is cut off" in logs.warnings[0]
    (tmp_path / "trainer_log.jsonl").write_text('{"current_steps": 1\n' + text)
    with pytest.raises(UserError, match=r"line 1 is not JSON"):
        read_training_logs(discover_run(tmp_path))


def test_a_broken_trainer_state_is_a_user_error(tmp_path):
    fake_model(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{")
    with pytest.raises(UserError, match="cannot read trainer state"):
        read_training_logs(discover_run(tmp_path))
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text('{"log_history": {"loss": 1}}')
    with pytest.raises(UserError, match="log_history is not a list of objects"):
        read_training_logs(discover_run(tmp_path))


def test_a_root_trainer_state_that_is_not_json_names_the_file(tmp_path):
    fake_model(tmp_path)
    (tmp_path / "trainer_state.json").write_text("[")
    with pytest.raises(UserError, match=r"cannot read trainer state .*trainer_state.json"):
        discover_run(tmp_path)


# ---------------------------------------------------------------------------------------------- a real TRL run


def test_run_written_by_trl_dpo_trainer(tmp_path):
    """Four steps of TRL 1.16's DPOTrainer saving every 2 steps, then save_model + save_state at the root."""
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from conftest import write_text_pairs
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    policy_dir = save_tiny_model(tmp_path / "policy", seed=0)
    rows = [json.loads(line) for line in open(write_text_pairs(tmp_path / "pairs.jsonl", n=8, seed=3))]
    dataset = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    out = tmp_path / "trl_out"
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=2, max_steps=4, save_steps=2, logging_steps=1,
                     max_length=None, bf16=False, gradient_checkpointing=False, report_to=[], use_cpu=True, seed=0,
                     save_only_model=True)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir),
                         ref_model=AutoModelForCausalLM.from_pretrained(policy_dir), args=args,
                         train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(policy_dir))
    trainer.train()

    run = discover_run(out)
    assert steps_and_labels(run) == [(2, "2"), (4, "4")] and run.skipped == ()
    assert run.trainer_state_path == out.resolve() / "checkpoint-4" / "trainer_state.json"
    losses = [r["step"] for r in read_training_logs(run).log_history if "loss" in r]
    assert losses == [1, 2, 3, 4]

    trainer.save_model()
    trainer.save_state()
    run = discover_run(out)
    assert steps_and_labels(run) == [(2, "2"), (4, "4"), (4, "final")]
    assert run.trainer_state_path == out / "trainer_state.json"
    history = read_training_logs(run).log_history
    assert [r["step"] for r in history if "loss" in r] == [1, 2, 3, 4]
    assert all(isinstance(r["loss"], float) for r in history if "loss" in r)
    assert any("train_runtime" in r for r in history)  # the end-of-training summary only the root state has


def test_openrlhf_global_step_hf_exports_are_read_and_their_deepspeed_folders_skipped(tmp_path):
    # OpenRLHF's DPO trainer with --save_hf_ckpt: ckpt_path/global_stepN/ (DeepSpeed) + global_stepN_hf/ (HF)
    for step in (2, 4):
        shards = tmp_path / f"global_step{step}"
        shards.mkdir()
        (shards / "mp_rank_00_model_states.pt").write_bytes(b"not read")
        fake_model(tmp_path / f"global_step{step}_hf")
    (tmp_path / "latest").write_text("global_step4")
    run = discover_run(tmp_path)
    assert [(c.label, c.path.name) for c in run.checkpoints] == [("2", "global_step2_hf"), ("4", "global_step4_hf")]
    assert {s.path.name: s.reason for s in run.skipped} == {
        "global_step2": "DeepSpeed checkpoint (its Hugging Face export global_step2_hf is read)",
        "global_step4": "DeepSpeed checkpoint (its Hugging Face export global_step4_hf is read)"}


def test_a_nemo_checkpoint_is_refused_with_the_export_to_use(tmp_path):
    nemo = tmp_path / "megatron_gpt.nemo"
    nemo.write_bytes(b"tar")
    for given in (nemo, tmp_path):
        with pytest.raises(UserError) as error:
            discover_run(given)
        message = str(error.value)
        assert "\n" not in message and "NeMo checkpoint" in message and "convert_llama_nemo_to_hf.py" in message
    unpacked = tmp_path / "unpacked"
    (unpacked / "model_weights").mkdir(parents=True)
    (unpacked / "model_config.yaml").write_text("precision: bf16\n")
    nemo.unlink()
    with pytest.raises(UserError, match="NeMo checkpoint"):
        discover_run(tmp_path)


def test_torchtune_disk_logs_are_read_in_file_order(tmp_path):
    fake_model(tmp_path / "epoch_0")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "log_1700000002.txt").write_text("Step 3 | loss:0.4 \n")
    (tmp_path / "logs" / "log_1700000001.txt").write_text("Step 1 | loss:0.6 \nStep 2 | loss:0.5 \n")
    logs = read_training_logs(discover_run(tmp_path))
    assert logs.disk_log == ["Step 1 | loss:0.6 ", "Step 2 | loss:0.5 ", "Step 3 | loss:0.4 "]
    frame = curves_frame(logs)
    assert list(zip(frame["step"], frame["value"], frame["source"])) == [
        (1, 0.6, "logs/log_*.txt"), (2, 0.5, "logs/log_*.txt"), (3, 0.4, "logs/log_*.txt")]


def test_curves_keep_one_point_per_step_when_llama_factory_repeats_log_history(tmp_path):
    fake_model(tmp_path / "checkpoint-2")
    write_state(tmp_path, 3, [{"loss": 0.69, "rewards/accuracies": 0.5, "learning_rate": 1e-3, "step": 1},
                              {"loss": 0.6, "rewards/accuracies": 1.0, "learning_rate": 1e-3, "step": 2}])
    rows = [{"current_steps": 1, "loss": 0.69, "accuracy": 0.5, "lr": 1e-3},
            {"current_steps": 2, "loss": 0.6, "accuracy": 1.0, "lr": 1e-3},
            {"current_steps": 3, "loss": 0.5, "accuracy": 1.0, "lr": 1e-3}]
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = curves_frame(read_training_logs(discover_run(tmp_path)))
    points = sorted(zip(frame["step"], frame["metric"], frame["source"]))
    assert len(points) == len(set((s, m) for s, m, _ in points)) == 9  # 3 steps x 3 metrics, each once
    assert {src for s, _, src in points if s < 3} == {"trainer_state.json"}  # log_history wins
    assert {src for s, _, src in points if s == 3} == {"trainer_log.jsonl"}  # jsonl only fills what it lacks
