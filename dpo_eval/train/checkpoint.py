"""Run directory layout: checkpoint-{step}/ (weights, trainer_state.json, training_state.pt), manifest.

Every checkpoint is written to a temporary directory and renamed into place, so a run killed at
any moment leaves only complete checkpoints; resume picks the newest.

Test-only hook: with the environment variable DPO_EVAL_PAUSE_AFTER_CHECKPOINT=N, the trainer writes
the marker file RUN_DIR/.paused-after-checkpoint-N once checkpoint-N is saved, then waits until
that file is deleted (or the process is killed). Tests use it to kill a run at a known step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

from dpo_eval.errors import UserError
from dpo_eval.jsonio import write_json

MANIFEST = "dpo_eval.json"
TRAINING_STATE = "training_state.pt"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
PAUSE_ENV = "DPO_EVAL_PAUSE_AFTER_CHECKPOINT"
IGNORED_FOR_RESUME = {"show_progress", "log_every", "eval_every", "save_every", "max_steps", "epochs"}


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint-N with the largest N, or None."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("checkpoint-*")
             if (m := CHECKPOINT.match(p.name)) and (p / TRAINING_STATE).exists()]
    return max(found)[1] if found else None


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, tokenizer, optimizer,
                    trainer_state: dict) -> Path:
    """Write checkpoint-{step} atomically: weights (save_pretrained), optimizer and RNG, trainer state."""
    final = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".checkpoint-{step}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
               tmp / TRAINING_STATE)
    write_json(tmp / TRAINER_STATE, trainer_state)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def pause_marker(run_dir: Path, step: int) -> Path:
    return run_dir / f".paused-after-checkpoint-{step}"


def pause_if_requested(run_dir: Path, step: int, poll_s: float = 0.05) -> None:
    """Test-only: if DPO_EVAL_PAUSE_AFTER_CHECKPOINT equals `step`, write the pause marker and wait
    until it is deleted (see the module docstring). Read at call time; unset, it does nothing."""
    if os.environ.get(PAUSE_ENV, "").strip() != str(step):
        return
    marker = pause_marker(run_dir, step)
    marker.write_text(f"paused after checkpoint-{step}, pid {os.getpid()}\n")
    while marker.exists():
        time.sleep(poll_s)


def load_training_state(checkpoint: Path) -> dict:
    """Optimizer state, step and RNG state of a checkpoint (tensors and plain values only)."""
    return torch.load(checkpoint / TRAINING_STATE, map_location="cpu", weights_only=True)


def load_checkpoint_weights(checkpoint: Path, module: torch.nn.Module) -> None:
    """Load a checkpoint's weights into module in place (full weights, or a LoRA adapter)."""
    from safetensors.torch import load_file

    adapter = checkpoint / "adapter_model.safetensors"
    if adapter.exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(module, load_file(adapter))
        return
    state: dict = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        state.update(load_file(file))
    missing, _ = module.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k}
    if set(missing) - tied:
        raise UserError(f"{checkpoint}: weights missing for {sorted(set(missing) - tied)[:3]}; "
                        "the checkpoint does not match this model")


def check_manifest(run_dir: Path, manifest: dict) -> None:
    """Refuse to resume a run dir that holds a run with other settings."""
    path = run_dir / MANIFEST
    if not path.exists():
        return
    old = json.loads(path.read_text()).get("config", {})
    new = manifest["config"]
    changed = sorted(k for k in set(old) | set(new) if k not in IGNORED_FOR_RESUME and old.get(k) != new.get(k))
    if changed:
        raise UserError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                        "use a new output_dir or the same settings to resume")
