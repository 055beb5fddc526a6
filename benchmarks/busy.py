"""Busy-loop processes that keep K of the benchmark's cores busy while it is timed (issue #7).

Each loop is a pure-Python ``while True: pass`` (the issue's reproduction), restricted to the
cores this process may use (os.sched_getaffinity), so under ``taskset -c 0,1`` the loops compete
for exactly the benchmark's cores. pin="set": every loop may run on any of those cores (the
kernel places it, like an unpinned process on a 2-core machine); pin="core": loop i is pinned to
the i-th allowed core. The loop checks every ~20 ms that its parent is alive and stops after
max_seconds, so a killed benchmark never leaves loops behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

LOOP = """
import os, time
parent, end = os.getppid(), time.monotonic() + {max_seconds}
while os.getppid() == parent and time.monotonic() < end:
    for _ in range(200000):
        pass
"""


def _cpu_jiffies(pid: int) -> int:
    """utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


class BusyLoops:
    """Context manager: start k busy loops on the allowed cores, wait until each has run, kill on exit.

    cpu_seconds() after exit: CPU time the loops got (how much of the cores they took from the benchmark).
    """

    def __init__(self, k: int, pin: str = "set", max_seconds: float = 1800.0):
        if k < 0 or pin not in ("set", "core"):
            raise ValueError(f"busy loops: k must be >= 0 and pin 'set' or 'core' (got k={k}, pin={pin!r})")
        self.k, self.pin, self.max_seconds = k, pin, max_seconds
        self.cpus = sorted(os.sched_getaffinity(0))
        self.procs: list[subprocess.Popen] = []
        self.jiffies: list[int] = []
        self._used = 0

    def __enter__(self) -> BusyLoops:
        try:
            for i in range(self.k):
                proc = subprocess.Popen([sys.executable, "-c", LOOP.format(max_seconds=self.max_seconds)])
                self.procs.append(proc)
                cpus = {self.cpus[i % len(self.cpus)]} if self.pin == "core" else set(self.cpus)
                os.sched_setaffinity(proc.pid, cpus)
            self._wait_running()
        except BaseException:
            self.stop()
            raise
        self.jiffies = [_cpu_jiffies(p.pid) for p in self.procs]
        return self

    def _wait_running(self, timeout: float = 10.0) -> None:
        """Wait until every loop has used CPU time (interpreter started, loop entered)."""
        end = time.monotonic() + timeout
        while self.procs and time.monotonic() < end:
            if all(_cpu_jiffies(p.pid) > 5 for p in self.procs):
                return
            time.sleep(0.02)

    def cpu_seconds(self) -> float:
        return self._used / os.sysconf("SC_CLK_TCK") if self.procs else 0.0

    def stop(self) -> None:
        used = 0
        for proc, start in zip(self.procs, self.jiffies):
            try:
                used += _cpu_jiffies(proc.pid) - start
            except (OSError, ValueError):
                pass
        self._used = used
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
