"""`dpo-eval loop`: sample from the current policy, label, form pairs, train one round; repeat.

    policy_0 = config.policy
    round R:  samples of policy_{R-1} on the round's prompt slice -> labels -> pairs
              -> train policy_{R-1} on the pairs (reference: `fixed` = config.ref or policy_0;
                 `previous` = policy_{R-1}) -> policy_R = the round's final checkpoint

OUTPUT_DIR/round-R/ is an ordinary run dir (checkpoint-N/, dpo_eval.json) plus the phase folders
samples/, labels/, pairs/ (dpo_eval.loop.round); OUTPUT_DIR/loop.json holds the config and, per
finished round, its policy, reference, final checkpoint and counts; OUTPUT_DIR itself reads as one
run dir for `dpo-eval report` (dpo_eval.loop.view).

Resume: each phase appears only when complete and is keyed by everything that made it
(dpo_eval.loop.phases); training resumes from the round's newest checkpoint (the trainer's own
resume); a finished round is recorded in loop.json and skipped. A rerun with other settings is
refused (loop.json's config, each phase's key, the trainer's manifest check).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.evaluation.store import path_sha256
from dpo_eval.generate import read_prompts
from dpo_eval.jsonio import write_json
from dpo_eval.logprob_settings import LogprobSettings
from dpo_eval.loop.config import LoopConfig, resume_view
from dpo_eval.loop.labels import make_labeller
from dpo_eval.loop.model_labels import LabelContext
from dpo_eval.loop.phases import ensure_phase, pause_if_requested
from dpo_eval.loop.round import (
    generate_config,
    label_round,
    pair_round,
    read_jsonl,
    round_prompts,
    sample_round,
)
from dpo_eval.loop.view import write_report_view
from dpo_eval.models import identify_model
from dpo_eval.train import checkpoint as ckpt
from dpo_eval.train.config import load_config as load_train_config
from dpo_eval.train.recipe import train

LOOP_FILE = "loop.json"


def round_dir(output_dir: str | Path, round_index: int) -> Path:
    """The run directory of round R (1-based)."""
    return Path(output_dir) / f"round-{round_index}"


def _read_loop_file(config: LoopConfig) -> dict:
    path = Path(config.output_dir) / LOOP_FILE
    fresh = {"schema_version": 1, "kind": "dpo_eval.loop", "config": config.to_dict(), "rounds": []}
    if not path.exists():
        return fresh
    stored = json.loads(path.read_text())
    defaults = {"logprobs": json.loads(json.dumps(dataclasses.asdict(LogprobSettings())))}  # loops made before it
    old = {k: v for k, v in resume_view({**defaults, **stored.get("config", {})}).items() if k in config.resume_key()}
    changed = sorted(k for k in set(old) | set(config.resume_key()) if old.get(k) != config.resume_key().get(k))
    if changed:
        raise UserError(f"{config.output_dir} holds a loop with other settings ({', '.join(changed)}); "
                        "use a new output_dir or the same settings to resume")
    return {**stored, "config": config.to_dict()}


def _fingerprint(path: str, config: LoopConfig) -> str:
    from dpo_eval.engine.cache import resolve_cache_dir

    flags = {k: config.train.get(k, False) for k in ("trust_remote_code", "allow_pickle")}
    return identify_model(path, cache_dir=resolve_cache_dir(config.cache_dir), **flags).fingerprint


def label_context(config: LoopConfig) -> LabelContext:
    """How model labellers load models: the loop's reference and the train settings' device, dtype, flags."""
    t = config.train
    return LabelContext(reference=config.ref or config.policy, cache_dir=config.cache_dir,
                        device=t.get("device", "auto"), dtype=t.get("dtype", "auto"), template=t.get("template", "auto"),
                        trust_remote_code=t.get("trust_remote_code", False), allow_pickle=t.get("allow_pickle", False),
                        logprobs=config.logprobs)


def run_round(config: LoopConfig, round_index: int, policy: str, ref: str, prompts: list, labeller) -> dict:
    """Run (or resume) one round; returns its loop.json entry."""
    out = round_dir(config.output_dir, round_index)
    sliced = round_prompts(prompts, round_index, config.prompts_per_round)
    settings = generate_config(config, policy, ref, out / "samples.partial", round_index)
    sample_parts = {"policy": _fingerprint(policy, config), "ref": _fingerprint(ref, config),
                    "prompts": [[p.id, p.text] for p in sliced], "n": settings.n, "seed": settings.seed,
                    "sampling": config.sampling.__dict__, "template": settings.template,
                    "device": settings.device, "dtype": settings.dtype}
    samples_dir = ensure_phase(out, "samples", sample_parts, lambda work: sample_round(settings, sliced, work),
                               round_index)
    samples = read_jsonl(samples_dir / "samples.jsonl")
    label_parts = {"samples": path_sha256(samples_dir / "samples.jsonl"), "labeller": labeller.key}
    labels_dir = ensure_phase(out, "labels", label_parts,
                              lambda work: label_round(labeller, config.labeller, samples, work, round_index),
                              round_index)
    labels = read_jsonl(labels_dir / "labels.jsonl")
    pair_parts = {"labels": path_sha256(labels_dir / "labels.jsonl"), "samples": label_parts["samples"],
                  "pairs": config.pairs, "rso": config.rso.__dict__ if config.pairs == "rso" else None,
                  "seed": config.sampling.seed}
    pairs_dir = ensure_phase(out, "pairs", pair_parts,
                             lambda work: pair_round(config, samples, labels, work, round_index), round_index)
    counts = json.loads((pairs_dir / "counts.json").read_text())
    train_settings = load_train_config(None, (), **{
        **config.train, "policy": policy, "ref": ref, "data": str(pairs_dir / "pairs.jsonl"),
        "output_dir": str(out), "eval_data": config.eval_data,
        "show_progress": config.train.get("show_progress", config.show_progress)})
    train(train_settings)
    final = ckpt.latest_checkpoint(out)
    if final is None:
        raise UserError(f"{out} has no checkpoint after its round trained; delete it and rerun")
    return {"round": round_index, "policy": policy, "reference": ref, "run_dir": str(out),
            "final_checkpoint": str(final), "counts": counts}


def run_loop(config: LoopConfig) -> dict:
    """Run every round in order (finished ones are skipped); returns the loop.json content."""
    config.validate()
    prompts = read_prompts(config.prompts)
    if not prompts:
        raise UserError(f"{config.prompts}: has no prompts")
    labeller = make_labeller(config.labeller, label_context(config), config.judge_samples, config.sampling,
                             config.judge)
    record = _read_loop_file(config)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(config.output_dir) / LOOP_FILE, record)
    if config.online:
        from dpo_eval.loop.online import run_online

        record["rounds"] = [run_online(config, prompts, labeller)]
        write_json(Path(config.output_dir) / LOOP_FILE, record)
        write_report_view(config.output_dir, record["rounds"])  # OUTPUT_DIR reads as the online run dir
        return record
    finished = {entry["round"]: entry for entry in record["rounds"]}
    start_ref = config.ref or config.policy
    policy = config.policy
    for r in range(1, config.rounds + 1):
        ref = start_ref if config.reference == "fixed" else policy
        entry = finished.get(r)
        if entry is None or not Path(entry["final_checkpoint"]).exists():
            entry = run_round(config, r, policy, ref, prompts, labeller)
            finished[r] = entry
            record["rounds"] = [finished[k] for k in sorted(finished)]
            write_json(Path(config.output_dir) / LOOP_FILE, record)
            write_report_view(config.output_dir, record["rounds"])
            pause_if_requested(config.output_dir, r, "round")
        c = entry["counts"]
        print(f"round {r}: {c['pairs']} pairs from {c['prompts']} prompts ({c['ties']} ties, "
              f"{c['skipped_prompts']} prompts skipped, {c['unscored']} unscored); policy {entry['final_checkpoint']}",
              file=sys.stderr)
        policy = entry["final_checkpoint"]
    write_report_view(config.output_dir, record["rounds"])  # also after a kill between loop.json and the view
    return record
