"""A round's phases (samples, labels, pairs) as content-keyed folders that appear only when complete.

`ensure_phase(round_dir, name, parts, compute)` follows dpo_eval.evaluation.store: `compute(work)` writes
into ROUND/NAME.partial/ (kept between attempts, so generate resumes from its own partial file),
then key.json (the key parts and their sha256) is written and the folder renamed to ROUND/NAME/.
A finished folder whose key differs from this run's is refused (a run in OUTPUT_DIR with other
settings), never reused or overwritten.

Test-only hook: with DPO_EVAL_LOOP_PAUSE_AT=R:NAME (NAME a phase, or `round` for just after round R
is recorded in loop.json), the loop writes OUTPUT_DIR/.paused-at-R-NAME just before it commits that
phase and waits until the file is deleted (or the process is killed). Unset, it does nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.evaluation.store import content_key
from dpo_eval.jsonio import write_json

KEY_FILE = "key.json"
PAUSE_ENV = "DPO_EVAL_LOOP_PAUSE_AT"


def pause_marker(output_dir: str | Path, round_index: int, name: str) -> Path:
    return Path(output_dir) / f".paused-at-{round_index}-{name}"


def pause_if_requested(output_dir: str | Path, round_index: int, name: str, poll_s: float = 0.05) -> None:
    """Test-only pause (module docstring); read at call time."""
    if os.environ.get(PAUSE_ENV, "").strip() != f"{round_index}:{name}":
        return
    marker = pause_marker(output_dir, round_index, name)
    marker.write_text(f"paused at round {round_index} {name}, pid {os.getpid()}\n")
    while marker.exists():
        time.sleep(poll_s)


def ensure_phase(round_dir: Path, name: str, parts: dict, compute: Callable[[Path], None],
                 round_index: int) -> Path:
    """The finished folder ROUND/NAME for these key parts, computing it first if it is missing."""
    final, work = round_dir / name, round_dir / f"{name}.partial"
    key = content_key({"phase": name, **parts})
    if (final / KEY_FILE).is_file():
        stored = json.loads((final / KEY_FILE).read_text()).get("key")
        if stored != key:
            raise UserError(f"{final} was made with other settings (model, prompts, sampling or labeller); "
                            "use a new output_dir or the same settings to resume")
        return final
    work.mkdir(parents=True, exist_ok=True)
    try:
        compute(work)
    except UserError:
        if name != "samples":  # cheap phases leave nothing behind; samples keep their resumable partial file
            shutil.rmtree(work, ignore_errors=True)
        raise
    write_json(work / KEY_FILE, {"phase": name, "key": key, "parts": parts})
    pause_if_requested(round_dir.parent, round_index, name)
    if final.exists():  # a stale folder without key.json (never made by this code)
        shutil.rmtree(final)
    os.replace(work, final)
    return final
