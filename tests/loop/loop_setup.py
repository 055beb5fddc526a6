"""A tiny loop for the tests: the 2-layer random Llama of tests/conftest.py, 4 prompts, a pointwise rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import save_tiny_model

LOOP_DIR = Path(__file__).resolve().parent
PROMPTS = ["tell me about the cat ", "what is good ", "why the dog sat ", "how it ran on the mat "]


def make_base(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return {"model": save_tiny_model(root / "init", seed=7), "prompts": str(prompts), "root": root}


def loop_settings(base: dict, out: Path, **overrides) -> dict:
    settings = {"policy": base["model"], "prompts": base["prompts"], "labeller": "rule:loop_rules:good_minus_bad",
                "output_dir": str(out), "rounds": 2, "prompts_per_round": 3, "samples_per_prompt": 4,
                "sampling": {"max_new_tokens": 6, "seed": 3}, "show_progress": False,
                "train": {"max_steps": 2, "batch_size": 1, "learning_rate": 1e-2, "lr_schedule": "constant",
                          "save_every": 1, "max_length": None, "cache_dir": str(base["root"] / "cache")}}
    settings.update(overrides)
    return settings


def write_loop_yaml(base: dict, out: Path, **overrides) -> Path:
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(loop_settings(base, out, **overrides)))
    return path


def environment(**extra: str) -> dict:
    paths = [str(LOOP_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            **extra}


def start_loop(config: Path, cwd: Path, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dpo_eval.cli", "loop", str(config)], cwd=cwd,
                            env=environment(**extra_env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
