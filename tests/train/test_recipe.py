"""The training loop: accumulation invariance, learning, resume after kill -9, and 2-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import save_tiny_model, write_synthetic_preferences
from safetensors.torch import load_file
from subprocesses import run_together

from dpo_eval.cli import main
from dpo_eval.errors import UserError
from dpo_eval.train import checkpoint as ckpt
from dpo_eval.train.config import load_config
from dpo_eval.train.recipe import DPORecipe, train
from dpo_eval.train.schedule import global_batches


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {"model": save_tiny_model(root / "init", seed=7),
            "train": write_synthetic_preferences(root / "train.jsonl", n=64, seed=1),
            "eval": write_synthetic_preferences(root / "eval.jsonl", n=32, seed=2), "root": root}


def settings(base, out, **overrides):
    values = dict(policy=base["model"], data=base["train"], output_dir=str(out), learning_rate=1e-3,
                  lr_schedule="constant", show_progress=False, cache_dir=str(base["root"] / "cache"),
                  max_length=None)
    values.update(overrides)
    return load_config(None, (), **values)


def final_weights(run_dir: Path, step: int) -> dict:
    return load_file(run_dir / f"checkpoint-{step}" / "model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def gradients_after_one_step(config, steps: int = 1) -> dict:
    """Train `steps - 1` steps, then accumulate one global batch's gradients and return them."""
    recipe = DPORecipe(config)
    recipe.setup()
    for step in range(steps - 1):
        recipe.train_step(global_batches(64, 8, config.seed, 0)[step], step)
    recipe.accumulate_gradients(global_batches(64, 8, config.seed, 0)[steps - 1])
    return {n: p.grad.clone() for n, p in recipe.module.named_parameters() if p.grad is not None}


def test_batch_1_x_8_accumulation_equals_batch_8_x_1(base, tmp_path):
    one = settings(base, tmp_path / "a", batch_size=8, grad_accum=1)
    accum = settings(base, tmp_path / "b", batch_size=1, grad_accum=8)
    for steps in (1, 3):  # at the reference (step 0) and after two updates
        big, small = gradients_after_one_step(one, steps), gradients_after_one_step(accum, steps)
        assert big.keys() == small.keys() and len(big) > 0
        scale = max(float(g.abs().max()) for g in big.values())
        assert scale > 0
        for name in big:
            torch.testing.assert_close(small[name], big[name], atol=1e-5 * scale, rtol=1e-4, msg=name)


def test_learns_synthetic_preferences_to_90_percent(base, tmp_path):
    config = settings(base, tmp_path / "run", batch_size=8, max_steps=24, eval_data=base["eval"], eval_every=12)
    history = train(config)
    evals = [h for h in history if "eval_rewards/accuracies" in h]
    assert [h["step"] for h in evals] == [12, 24]
    runner = CliRunner()
    for policy, out in ((base["model"], "before"), (str(tmp_path / "run" / "checkpoint-24"), "after")):
        result = runner.invoke(main, ["score", "--policy", policy, "--ref", base["model"], "--data", base["eval"],
                                      "--out", str(tmp_path / out), "--cache-dir", str(tmp_path / "c"),
                                      "--no-progress"])
        assert result.exit_code == 0, result.output
    before = json.loads((tmp_path / "before" / "summary.json").read_text())["rewards"]
    after = json.loads((tmp_path / "after" / "summary.json").read_text())["rewards"]
    assert before["accuracy_ties_half"] == 0.5 and before["n_ties"] == 32  # policy == reference at start
    assert after["accuracy"] >= 0.9
    assert evals[-1]["eval_rewards/accuracies"] == pytest.approx(after["accuracy"], abs=1e-9)
    state = json.loads((tmp_path / "run" / "checkpoint-24" / "trainer_state.json").read_text())
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected"} <= set(state["log_history"][0])
    manifest = json.loads((tmp_path / "run" / "dpo_eval.json").read_text())
    assert manifest["reference"]["fingerprint"] and manifest["loss"]["name"] == "dpo"


def test_manifest_records_the_beta_and_loss_settings_used(base, tmp_path):
    train(settings(base, tmp_path / "default", loss="simpo", batch_size=4, max_steps=1))
    manifest = json.loads((tmp_path / "default" / "dpo_eval.json").read_text())
    assert manifest["loss"] == {"name": "simpo", "beta": 2.0, "gamma": 1.0, "label_smoothing": 0.0,
                                "beta_source": "loss default", "nll_coef": 0.0}
    assert manifest["config"]["beta"] == 2.0  # the beta used, so a rerun that sets it explicitly resumes
    train(settings(base, tmp_path / "set", loss="simpo", beta=0.1, batch_size=4, max_steps=1))
    manifest = json.loads((tmp_path / "set" / "dpo_eval.json").read_text())
    assert (manifest["loss"]["beta"], manifest["loss"]["beta_source"]) == (0.1, "config")
    with pytest.raises(UserError, match=r"other settings \(beta\)"):  # same dir, another beta: no silent resume
        train(settings(base, tmp_path / "set", loss="simpo", max_steps=2))


def train_cmd(base, out, *extra):
    return [sys.executable, "-m", "dpo_eval.cli", "train", "--set", f"policy={base['model']}",
            "--set", f"data={base['train']}", "--set", f"output_dir={out}", "--set", "learning_rate=1e-3",
            "--set", "batch_size=4", "--set", "save_every=1", "--set", "max_steps=8",
            "--set", f"cache_dir={base['root'] / 'cache'}", "--set", "show_progress=false", *extra]


def wait_for_pause(process: subprocess.Popen, marker: Path, timeout_s: float = 300) -> None:
    """Until the trainer is paused (marker written) — no race: it stays paused until killed."""
    deadline = time.monotonic() + timeout_s  # only bounds a broken run, never decides the step
    while not marker.exists():
        assert process.poll() is None, f"the run ended (exit {process.returncode}) without pausing"
        assert time.monotonic() < deadline, f"no {marker.name} after {timeout_s} s"
        time.sleep(0.05)


def test_resume_after_kill_9_reaches_same_weights(base, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the uninterrupted run beside the victim (one thread each, outputs apart): one Python start's wait for both
    straight = subprocess.Popen(train_cmd(base, tmp_path / "straight"), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    paused = {**env, ckpt.PAUSE_ENV: "3"}  # the trainer waits after writing checkpoint-3
    victim = subprocess.Popen(train_cmd(base, tmp_path / "killed"), env=paused, stderr=subprocess.DEVNULL)
    try:
        wait_for_pause(victim, ckpt.pause_marker(tmp_path / "killed", 3))
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    try:
        straight_err = straight.communicate(timeout=300)[1]
    finally:
        straight.kill()
    assert straight.returncode == 0, straight_err[-2000:]
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "killed").glob("checkpoint-*"))
    assert steps == [1, 2, 3], "killed while paused after checkpoint-3"
    done = subprocess.run(train_cmd(base, tmp_path / "killed"), env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr and "(step 3)" in done.stderr
    assert_same_weights(final_weights(tmp_path / "straight", 8), final_weights(tmp_path / "killed", 8), atol=0)


def test_pause_hook_waits_until_the_marker_is_deleted(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv(ckpt.PAUSE_ENV, "3")
    ckpt.pause_if_requested(tmp_path, 2)  # another step: returns at once, no marker
    assert not ckpt.pause_marker(tmp_path, 2).exists()
    waiter = threading.Thread(target=ckpt.pause_if_requested, args=(tmp_path, 3, 0.01))
    waiter.start()
    marker = ckpt.pause_marker(tmp_path, 3)
    while not marker.exists():
        time.sleep(0.01)
    waiter.join(0.2)
    assert waiter.is_alive()  # still paused: nothing releases it but deleting the marker
    marker.unlink()
    waiter.join(10)
    assert not waiter.is_alive()


def test_two_gloo_processes_match_one(base, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = train_cmd(base, tmp_path / "one", "--set", "max_steps=3")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = train_cmd(base, tmp_path / "two", "--set", "max_steps=3", "--set", "batch_size=2")
    # started together (one thread per process, outputs apart): one Python start's wait for both
    one_done, done = run_together(single, [*torchrun, *double[1:]], env=env)
    assert one_done.returncode == 0, one_done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(final_weights(tmp_path / "one", 3), final_weights(tmp_path / "two", 3), atol=1e-6)


def test_bad_config_exits_2_before_loading(tmp_path):
    result = CliRunner().invoke(main, ["train", "--set", "policy=nowhere", "--set", "data=x.jsonl",
                                       "--set", f"output_dir={tmp_path}", "--set", "loss=bogus"])
    assert result.exit_code == 2 and "loss 'bogus' is unknown" in result.output
