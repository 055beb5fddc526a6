"""OUTPUT_DIR as one run dir for `dpo-eval report`: the rounds in order, global steps continuing.

After each finished round the loop (re)writes, in OUTPUT_DIR, what any run dir holds:

| file                   | what                                                                              |
|------------------------|-----------------------------------------------------------------------------------|
| checkpoint-G (symlink) | round R's checkpoint-N, G = N + the final steps of rounds 1..R-1                   |
| trainer_state.json     | every round's log_history, steps made global, each record tagged with its `round`  |
| dpo_eval.json          | round 1's manifest (its reference is the loop's starting reference) + `loop`       |

so `dpo-eval report OUTPUT_DIR` reads the loop as one run with no loop-specific code, and
`dpo-eval report offline_run OUTPUT_DIR` compares both. With `reference: previous` the report's
reference is still round 1's (KL from the starting policy); each round's own is in loop.json.
Everything is written atomically (a symlink made under a temporary name, then renamed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dpo_eval.jsonio import write_json
from dpo_eval.train import checkpoint as ckpt


def global_offsets(rounds: list[dict]) -> list[int]:
    """The global step before each round: the sum of the earlier rounds' final steps."""
    offsets, total = [], 0
    for entry in rounds:
        offsets.append(total)
        total += _step(Path(entry["final_checkpoint"]))
    return offsets


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("checkpoint-"))


def _link(target: Path, link: Path) -> None:
    relative = os.path.relpath(target, link.parent)
    if link.is_symlink() and os.readlink(link) == relative:
        return
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(relative, target_is_directory=True)
    os.replace(tmp, link)


def write_report_view(output_dir: str | Path, rounds: list[dict]) -> None:
    """Write the checkpoint links, merged trainer_state.json and manifest for the finished rounds."""
    out = Path(output_dir)
    history: list[dict] = []
    for entry, offset in zip(rounds, global_offsets(rounds), strict=True):
        run = Path(entry["run_dir"])
        for folder in sorted(run.glob("checkpoint-*")):
            if ckpt.CHECKPOINT.match(folder.name) and (folder / ckpt.TRAINING_STATE).exists():
                _link(folder, out / f"checkpoint-{offset + _step(folder)}")
        state = json.loads((Path(entry["final_checkpoint"]) / ckpt.TRAINER_STATE).read_text())
        history += [{**record, "step": record["step"] + offset, "round": entry["round"]}
                    for record in state.get("log_history", []) if "step" in record]
    last = rounds[-1]
    total = global_offsets(rounds)[-1] + _step(Path(last["final_checkpoint"]))
    _write_if_changed(out / ckpt.TRAINER_STATE, {"global_step": total, "max_steps": total, "log_history": history,
                                                 "round_boundaries": global_offsets(rounds)[1:]})
    manifest = json.loads((Path(rounds[0]["run_dir"]) / ckpt.MANIFEST).read_text())
    manifest["loop"] = {"rounds": [{"round": e["round"], "run_dir": e["run_dir"], "first_global_step": o + 1,
                                    "reference": e["reference"]} for e, o in zip(rounds, global_offsets(rounds))]}
    _write_if_changed(out / ckpt.MANIFEST, manifest)


def _write_if_changed(path: Path, data: dict) -> None:
    """write_json, skipped when the file already holds this content (a rerun touches nothing)."""
    if path.is_file() and json.loads(path.read_text()) == json.loads(json.dumps(data)):
        return
    write_json(path, data)
