"""`dpo-eval judge` killed with SIGKILL at a known point behind the fault proxy, then rerun.

The proxy forwards the first HELD requests and holds every later one, so the victim is killed with
exactly HELD verdicts stored (no clock race); the rerun must finish every comparison, store nothing
twice, and ask only for what was missing.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from fault_proxy import FaultProxy

HELD = 6
N_PROMPTS = 12  # x 2 orders = 24 ordered comparisons


def judge_cmd(proxy_url: str, candidates: str, baseline: str, out: Path, timeout: float, backoff: float,
              retries: int = 8, model: str = "smollm2") -> list[str]:
    return [sys.executable, "-m", "dpo_eval.cli", "judge", "--candidates", candidates, "--baseline", baseline,
            "--judge", f"openai:{model}", "--base-url", proxy_url, "--api-key-env", "NO_KEY", "--out", str(out),
            "--timeout", str(timeout), "--retries", str(retries), "--backoff", str(backoff), "--concurrency", "2",
            "--no-progress"]


def stored(cache: Path) -> int:
    if not cache.exists():
        return 0
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]


def kill_then_rerun(upstream: str, tmp_path: Path, delay: float = 6.0, timeout: float = 4.0,
                    backoff: float = 0.01, model: str = "smollm2") -> tuple[int, list[dict], dict, Path]:
    """(verdicts stored when killed, the rerun's judgment records, its summary, the cache path).

    `timeout` and `backoff` are the judge's --timeout and --backoff, and set this test's time: every
    "delay" fault (and every held request) costs a worker `timeout` seconds, every retry about
    backoff * 2**attempt * 1.5. `delay` must exceed `timeout`, and a healthy forward must finish within it.
    `model` is the judge's served model name (openai:MODEL)."""
    assert delay > timeout, "the proxy's delay fault must outlast the client's timeout"
    rows = [{"prompt_id": str(i), "prompt": f"Name a colour ({i}).", "output": f"Colour {i}"} for i in range(N_PROMPTS)]
    candidates, baseline = tmp_path / "c.jsonl", tmp_path / "b.jsonl"
    candidates.write_text("".join(json.dumps({**r, "model": "ckpt"}) + "\n" for r in rows))
    baseline.write_text("".join(json.dumps({**r, "output": "Blue."}) + "\n" for r in rows))
    proxy = FaultProxy(upstream, delay=delay, hold_after=HELD)
    out = tmp_path / "j"
    cache = out / "judge_cache.sqlite"
    cmd = judge_cmd(proxy.url, str(candidates), str(baseline), out, timeout, backoff, model=model)
    victim = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        assert proxy.holding.wait(300), "the judge never got past the first forwarded requests"
        deadline = time.time() + 60
        while stored(cache) < HELD and time.time() < deadline:  # the last forwarded replies being stored
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        stored_before = stored(cache)
        proxy.released.set()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    finally:
        victim.kill()
        proxy.close()
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert sorted(r["prompt_id"] for r in records) == sorted(r["prompt_id"] for r in rows)  # none lost, none twice
    return stored_before, records, json.loads((out / "judge_summary.json").read_text()), cache


def keys_are_unique(cache: Path) -> bool:
    with sqlite3.connect(cache) as db:
        keys = db.execute("SELECT key FROM verdicts").fetchall()
    return len(keys) == len(set(keys))
