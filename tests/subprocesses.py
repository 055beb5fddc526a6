"""Real CLI processes started together: each pays its own Python start and torch import (3-6 s on CI's
2 cores, mostly one core each), so two of them at once take about the time of one."""

from __future__ import annotations

import subprocess


def run_together(*commands: list[str], timeout: float = 300, env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """Start every command at once, wait for all; like subprocess.run(cmd, capture_output=True, text=True, env=env)."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for cmd in commands]
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [subprocess.CompletedProcess(cmd, proc.returncode, out, err)
            for cmd, proc, (out, err) in zip(commands, procs, outputs)]
