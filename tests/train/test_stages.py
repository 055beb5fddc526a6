"""sDPO stages: each stage's reference is the previous stage's final checkpoint; kill -9 between stages resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny_model, write_synthetic_preferences
from test_recipe import assert_same_weights, final_weights, wait_for_pause

from dpo_eval.errors import UserError
from dpo_eval.models import identify_model
from dpo_eval.train import checkpoint as ckpt
from dpo_eval.train.config import load_config
from dpo_eval.train.recipe import train
from dpo_eval.train.stages import STAGES_MANIFEST, stage_config

STEPS = 3  # per stage


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    return {"model": save_tiny_model(root / "init", seed=7), "root": root,
            "splits": [write_synthetic_preferences(root / f"split{k}.jsonl", n=16, seed=10 + k) for k in (1, 2)]}


def write_config(base, out: Path) -> Path:
    config = {"policy": base["model"], "stages": base["splits"], "output_dir": str(out), "learning_rate": 1e-3,
              "lr_schedule": "constant", "batch_size": 4, "max_steps": STEPS, "save_every": 1,
              "cache_dir": str(base["root"] / "cache"), "show_progress": False, "max_length": None}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(config: Path, env: dict, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "dpo_eval.cli", "train", str(config)], env=env, **kwargs)


def test_stage_config_chains_policy_and_reference(base, tmp_path):
    config = load_config(None, (), policy=base["model"], stages=base["splits"], output_dir=str(tmp_path))
    assert config.data == base["splits"][0]
    first, second = stage_config(config, 1, None), stage_config(config, 2, "/runs/x/stage-1/checkpoint-3")
    assert (first.data, first.policy, first.ref, first.stages) == (base["splits"][0], base["model"], None, None)
    assert first.output_dir == str(tmp_path / "stage-1")
    assert (second.data, second.policy, second.ref) == (base["splits"][1], "/runs/x/stage-1/checkpoint-3",
                                                        "/runs/x/stage-1/checkpoint-3")
    with pytest.raises(UserError, match="either data or stages"):
        load_config(None, (), policy="p", data="d", stages=base["splits"], output_dir="o")
    with pytest.raises(UserError, match="stages must be a non-empty list"):
        load_config(None, (), policy="p", stages=[], output_dir="o")


def test_two_stages_chain_references_and_resume_after_kill_between_stages(base, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    done = run(write_config(base, straight), env, stderr=subprocess.PIPE, text=True)  # beside the victim (apart)
    killed = tmp_path / "killed"
    config = write_config(base, killed)
    victim = run(config, {**env, ckpt.PAUSE_ENV: str(STEPS)}, stderr=subprocess.DEVNULL)
    try:  # paused after stage 1's final checkpoint, before stage 2 starts
        wait_for_pause(victim, ckpt.pause_marker(killed / "stage-1", STEPS))
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert done.wait(300) == 0, done.stderr.read()[-2000:]
    cache = identify_model(base["model"], cache_dir=base["root"] / "cache")
    stage1_final = straight / "stage-1" / f"checkpoint-{STEPS}"
    stage1_identity = identify_model(str(stage1_final), cache_dir=base["root"] / "cache")
    manifests = [json.loads((straight / f"stage-{k}" / ckpt.MANIFEST).read_text()) for k in (1, 2)]
    assert manifests[0]["reference"]["fingerprint"] == cache.fingerprint
    assert manifests[1]["reference"]["fingerprint"] == stage1_identity.fingerprint != cache.fingerprint
    assert manifests[1]["policy_init"] == str(stage1_final) and manifests[1]["data"]["path"] == base["splits"][1]
    # the new reference's log-probs were computed (and cached) under its own fingerprint
    assert list((base["root"] / "cache" / "logps").glob(f"{stage1_identity.fingerprint}-*"))
    stages = json.loads((straight / STAGES_MANIFEST).read_text())
    assert [s["final_checkpoint"] for s in stages["finished"]] == [
        str(stage1_final), str(straight / "stage-2" / f"checkpoint-{STEPS}")]

    assert not (killed / "stage-2").exists() and not (killed / STAGES_MANIFEST).exists()
    resumed = run(config, env, stderr=subprocess.PIPE, text=True)
    assert resumed.wait(300) == 0, resumed.stderr.read()[-2000:]
    assert f"(step {STEPS})" in resumed.stderr.read()
    assert_same_weights(final_weights(straight / "stage-2", STEPS), final_weights(killed / "stage-2", STEPS), atol=0)
    history = train(load_config(config))  # both stages recorded as finished: nothing loads or retrains
    states = [json.loads((killed / f"stage-{k}" / f"checkpoint-{STEPS}" / ckpt.TRAINER_STATE).read_text())
              for k in (1, 2)]
    assert history == [{**h, "stage": k} for k, s in zip((1, 2), states) for h in s["log_history"]]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 1, 2, 3]
