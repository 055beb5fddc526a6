"""sDPO: stepwise DPO over a list of data splits, each stage's reference the previous stage's policy.

Kim et al. 2024, "sDPO: Don't Use Your Data All at Once" (arXiv:2403.19270). With splits D_1..D_T:

    stage 1:  policy_0 = config.policy,  reference = config.ref (or the policy), data D_1
    stage t:  policy and reference both start as the final checkpoint of stage t-1, data D_t

so each stage's reference is more aligned than the last (the paper's point: a stronger lower bound
for the DPO target). Every other setting (loss, beta, max_steps or epochs, ...) applies to each
stage as written. Stage t trains in OUTPUT_DIR/stage-t, an ordinary run directory (checkpoints,
manifest), so everything that reads a run reads a stage. The reference log-probs of each stage go
through the engine's cache under the new reference's fingerprint, so they are recomputed once per
stage and a rerun recomputes nothing.

Resume: OUTPUT_DIR/dpo_eval_stages.json records each finished stage (final checkpoint, reference
fingerprint). A rerun skips finished stages and continues the first unfinished one from its newest
checkpoint (the recipe's own resume); a run killed after a stage's final checkpoint but before it
was recorded resumes that stage at its last step, which trains nothing, then records it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.jsonio import write_json
from dpo_eval.train import checkpoint as ckpt
from dpo_eval.train.config import TrainConfig

STAGES_MANIFEST = "dpo_eval_stages.json"


def stage_dir(output_dir: str | Path, stage: int) -> Path:
    """The run directory of stage `stage` (1-based)."""
    return Path(output_dir) / f"stage-{stage}"


def stage_config(config: TrainConfig, stage: int, previous_final: str | None) -> TrainConfig:
    """The plain (stage-less) config of stage `stage`; previous_final is stage-1's final checkpoint."""
    values = {"stages": None, "data": config.stages[stage - 1], "output_dir": str(stage_dir(config.output_dir, stage))}
    if stage > 1:
        if previous_final is None:
            raise ValueError(f"stage {stage} needs the final checkpoint of stage {stage - 1}")
        values.update(policy=previous_final, ref=previous_final)
    return replace(config, **values)


def _read_manifest(config: TrainConfig) -> dict:
    path = Path(config.output_dir) / STAGES_MANIFEST
    if not path.exists():
        return {"schema_version": 1, "kind": "dpo_eval.train.stages", "stages": list(config.stages), "finished": []}
    manifest = json.loads(path.read_text())
    if manifest.get("stages") != list(config.stages):
        raise UserError(f"{config.output_dir} holds an sDPO run with other stages ({manifest.get('stages')}); "
                        "use a new output_dir or the same stages to resume")
    return manifest


def _final_checkpoint(run_dir: Path) -> str:
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        raise UserError(f"{run_dir} has no checkpoint after its stage finished; delete it and rerun")
    return str(latest)


def train_stages(config: TrainConfig, train_one: Callable[[TrainConfig], list[dict]]) -> list[dict]:
    """Train every stage in order with `train_one` (recipe.train); returns the log histories, each
    record tagged with its `stage`. Finished stages (per the stages manifest) are not run again:
    their history is read from their final checkpoint."""
    if not config.stages:
        raise ValueError("train_stages needs config.stages")
    manifest = _read_manifest(config)
    finished = {entry["stage"]: entry for entry in manifest["finished"]}
    history: list[dict] = []
    previous: str | None = None
    for stage in range(1, len(config.stages) + 1):
        if stage in finished and Path(finished[stage]["final_checkpoint"]).exists():
            previous = finished[stage]["final_checkpoint"]
            state = json.loads((Path(previous) / ckpt.TRAINER_STATE).read_text())
            history += [{**record, "stage": stage} for record in state.get("log_history", [])]
            continue
        settings = stage_config(config, stage, previous)
        history += [{**record, "stage": stage} for record in train_one(settings)]
        previous = _final_checkpoint(Path(settings.output_dir))
        run_manifest = json.loads((Path(settings.output_dir) / ckpt.MANIFEST).read_text())
        finished[stage] = {"stage": stage, "data": settings.data, "run_dir": settings.output_dir,
                           "final_checkpoint": previous, "reference": run_manifest.get("reference")}
        manifest["finished"] = [finished[k] for k in sorted(finished)]
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun the main process writes it
            write_json(Path(config.output_dir) / STAGES_MANIFEST, manifest)
    return history
