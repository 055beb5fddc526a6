"""A `dpo-eval report` killed with SIGKILL while scoring, sampling and judging resumes: the same command
finishes with the results of an uninterrupted run and recomputes nothing the killed runs had stored.
Adding a checkpoint to the run computes that checkpoint only.

The kill points are made deterministic by the test-only hook DPO_EVAL_REPORT_PAUSE_AT=<kind>:<n> (see
dpo_eval.evaluation.store): the report pauses just before committing the n-th artifact of that kind and is
killed while paused, its work folder complete but not yet committed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_run import (
    FAST,
    JUDGE_DIR,
    RULE_JUDGE,
    add_checkpoint,
    copy_run,
    threads_as_subprocesses,
    trained_once,
)

from dpo_eval.evaluation.store import KEY_FILE, LEDGER_FILE, PAUSE_ENV

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


def report_cmd(run_dir: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "dpo_eval.cli", "report", str(run_dir), "--judge", RULE_JUDGE, "--out", str(out),
            "--cache-dir", str(cache), *FAST]


def environment(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    return {**env, "PYTHONPATH": os.pathsep.join([str(JUDGE_DIR), str(ROOT)]), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", **extra}


def run_to_the_end(cmd: list[str], monkeypatch) -> None:
    """The same command run to its end, in this process (no kill here: saves a Python start)."""
    from click.testing import CliRunner

    from dpo_eval.cli import main

    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    with threads_as_subprocesses():
        result = CliRunner().invoke(main, cmd[cmd.index("report"):], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]


def kill_while_paused(cmd: list[str], out: Path, point: str, timeout_s: float = 600) -> None:
    """Start the report paused at `point` (kind:n), wait for its marker, then SIGKILL it."""
    kind, n = point.split(":")
    marker = out / "store" / f".paused-at-{kind}-{n}"
    victim = subprocess.Popen(cmd, env=environment(**{PAUSE_ENV: point}), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not marker.exists():
            if victim.poll() is not None:
                raise AssertionError(f"the report ended before pausing at {point}: {victim.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, f"no pause at {point}"
            time.sleep(0.1)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.stderr.close()
    marker.unlink()


def finished(out: Path) -> dict[str, set[str]]:
    """Names of the finished artifacts in the store, by kind (from each folder's key.json)."""
    found: dict[str, set[str]] = {}
    for key_file in (out / "store").glob(f"*/*/{KEY_FILE}"):
        if not key_file.parent.name.endswith(".partial"):
            names = json.loads(key_file.read_text())["name"].split(", ")
            found.setdefault(key_file.parent.parent.name, set()).update(names)
    return found


def ledger(out: Path) -> dict:
    return json.loads((out / "store" / LEDGER_FILE).read_text())


def names(section: dict) -> dict[str, set[str]]:
    return {kind: {n for entry in entries for n in entry.split(", ")} for kind, entries in section.items()}


def assert_reused_all(before: dict[str, set[str]], out: Path) -> None:
    """What was finished before this run was reused by it, never computed again."""
    now = ledger(out)
    computed, reused = names(now["computed"]), names(now["reused"])
    for kind, stored in before.items():
        assert not stored & computed.get(kind, set()), f"{kind}: recomputed {stored & computed.get(kind, set())}"
        assert stored <= reused.get(kind, set()), f"{kind}: {stored - reused.get(kind, set())} not reused"


def strip(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("generated_at", "timings")}


def test_killed_during_scoring_sampling_and_judging_then_resumed(tiny, tmp_path, monkeypatch):
    clean_out = tmp_path / "clean"
    run_to_the_end(report_cmd(tiny["run"], clean_out, tmp_path / "clean_cache"), monkeypatch)
    out, cache = tmp_path / "killed", tmp_path / "killed_cache"
    cmd = report_cmd(tiny["run"], out, cache)
    kill_while_paused(cmd, out, "score:2")  # reference row scored, checkpoint-2's scores not yet committed
    assert finished(out) == {"prompts": {"prompts from pairs"}, "score": {"run/0"}}
    for point in ("samples:2", "judge:1"):
        before = finished(out)
        kill_while_paused(cmd, out, point)
        assert_reused_all(before, out)
    before = finished(out)
    assert before["samples"] == {"run/@reference", "run/0", "run/2", "run/4"} and "judge" not in before
    run_to_the_end(cmd, monkeypatch)
    assert_reused_all(before, out)
    assert names(ledger(out)["computed"]) == {"judge": {"run/2", "run/4"}}
    resumed_judge = next(p.parent for p in (out / "store" / "judge").glob(f"*/{KEY_FILE}")
                         if json.loads(p.read_text())["name"] == "run/2")
    summary = json.loads((resumed_judge / "judge_summary.json").read_text())
    assert summary["n_judge_calls"] == 0  # every verdict came from the killed run's judge cache
    clean = json.loads((clean_out / "results.json").read_text())
    resumed = json.loads((out / "results.json").read_text())
    assert strip(resumed) == strip(clean)

    grown = copy_run(tiny, tmp_path / "grown" / "run")  # same name, same content: every key still matches
    add_checkpoint(grown, 6)
    run_to_the_end(report_cmd(grown, out, cache), monkeypatch)
    kinds = ("score", "samples", "kl", "entropy", "unseen", "judge")
    assert names(ledger(out)["computed"]) == {kind: {"run/6"} for kind in kinds}
    results = json.loads((out / "results.json").read_text())
    assert [c["step"] for c in results["checkpoints"]] == [0, 2, 4, 6]
    for old, new in zip(resumed["checkpoints"], results["checkpoints"]):  # the LC fit is joint: win rates move
        assert (new["fingerprint"], new["rewards"], new["kl"]) == (old["fingerprint"], old["rewards"], old["kl"])
