"""Pick PyTorch's intra-op thread count from the cores that are idle now (issue #7: speed on a shared machine).

Why. PyTorch's CPU kernels run as OpenMP parallel regions with a static split: each of T threads
gets 1/T of the work and the region ends when the slowest thread ends. When another process
keeps one of our cores busy, the thread on that core gets about half of it (the kernel's fair
share), so every region takes about twice as long while the other thread waits at the barrier;
when the region is shorter than a scheduler time slice (a few ms), a thread that is switched out
holds up the region for a whole slice. The engine runs many short regions (30 layers x ~15 ops
per forward, several forwards per 1,000 tokens), so it pays this more than code that runs a few
large forwards. One thread per *idle* core avoids the straggler altogether.

Rule (``threads_for_idle``). Over a short interval, read each allowed CPU's idle and total jiffies
from ``/proc/stat`` (idle = idle + iowait; total = user + nice + system + idle + iowait + irq +
softirq + steal), and this process's own CPU time:

    idle_cores = sum over allowed cpus of (d idle / d total) + (own CPU seconds) / interval
    threads    = clamp(floor(idle_cores + 0.5), 1, current)

The own-time term counts the cores this process itself kept busy as idle (they are ours). The
rule only ever lowers the thread count, never raises it above the current one, and does nothing
when the user fixed the count (an explicit request, OMP_NUM_THREADS or MKL_NUM_THREADS): then
the user's choice stands. A CPU with no ticks in the interval counts as idle (no evidence of load).

The engine applies it (`engine_threads`) before each CPU scoring pass that has work to do,
against the thread count the process started with, so a pass after the contention ended gets
its threads back. Measured (benchmarks/contention_bench.py, random SmolLM2-135M-shaped model,
pinned to 2 cores of a 16-core Xeon with `taskset -c 0,1`, 2026-11-28): with one core kept busy
the engine at 2 threads took 9.6x its quiet time and ran at 0.74x the anchor's speed; with this
rule it took 1.4x its quiet time and ran 3.8x the anchor (both cores busy: 0.76x vs 3.5x).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.1
USER_FIXED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

CpuJiffies = dict[int, tuple[int, int]]  # cpu index -> (idle jiffies, total jiffies)


@dataclass(frozen=True)
class ThreadChoice:
    """What the rule decided. idle_cores is None when nothing was measured."""

    threads: int
    idle_cores: float | None
    reason: str


def parse_proc_stat(text: str) -> CpuJiffies:
    """Per-CPU (idle, total) jiffies from /proc/stat's ``cpuN`` lines (the aggregate ``cpu`` line skipped).

    Fields: user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
    already inside user, so total sums the first eight only.
    """
    out: CpuJiffies = {}
    for line in text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        values = [int(v) for v in fields[:8]] + [0] * max(0, 8 - len(fields))
        out[int(name[3:])] = (values[3] + values[4], sum(values))
    return out


def idle_cores(before: CpuJiffies, after: CpuJiffies, cpus: Collection[int]) -> float:
    """Sum over cpus of the idle share of the interval between two snapshots (0 .. len(cpus))."""
    total = 0.0
    for cpu in cpus:
        if cpu not in before or cpu not in after:
            total += 1.0
            continue
        d_idle = after[cpu][0] - before[cpu][0]
        d_total = after[cpu][1] - before[cpu][1]
        total += 1.0 if d_total <= 0 else min(1.0, max(0.0, d_idle / d_total))
    return total


def threads_for_idle(idle: float, current: int) -> int:
    """floor(idle + 0.5) threads, at least 1 and at most current (the rule never raises the count)."""
    return max(1, min(current, math.floor(idle + 0.5)))


def is_user_fixed(requested: int | None, env: Mapping[str, str]) -> bool:
    """True when the user chose the thread count: an explicit request or a non-empty OMP/MKL variable."""
    return requested is not None or any(env.get(name, "").strip() for name in USER_FIXED_ENV)


def choose_threads(*, requested: int | None, env: Mapping[str, str], current: int, cpus: Collection[int],
                   read_stat: Callable[[], str], own_cpu_seconds: Callable[[], float],
                   clock: Callable[[], float], sleep: Callable[[float], None],
                   interval: float = SAMPLE_SECONDS) -> ThreadChoice:
    """Apply the module's rule with injected readers (tests feed fake /proc/stat snapshots)."""
    if is_user_fixed(requested, env):
        return ThreadChoice(requested if requested is not None else current, None, "set by the user")
    try:
        own0, t0, before = own_cpu_seconds(), clock(), parse_proc_stat(read_stat())
        sleep(interval)
        own1, t1, after = own_cpu_seconds(), clock(), parse_proc_stat(read_stat())
    except (OSError, ValueError) as err:
        return ThreadChoice(current, None, f"no CPU statistics ({type(err).__name__}: {err})")
    own = (own1 - own0) / (t1 - t0) if t1 > t0 else 0.0
    idle = min(float(len(cpus)), idle_cores(before, after, cpus) + own)
    threads = threads_for_idle(idle, current)
    return ThreadChoice(threads, idle, f"{idle:.2f} of {len(cpus)} allowed cores idle")


def auto_threads(requested: int | None = None, interval: float = SAMPLE_SECONDS) -> ThreadChoice:
    """Measure this machine now and set torch's intra-op threads by the rule; returns the choice."""
    import torch

    choice = choose_threads(requested=requested, env=os.environ, current=torch.get_num_threads(),
                            cpus=os.sched_getaffinity(0), read_stat=PROC_STAT.read_text,
                            own_cpu_seconds=time.process_time, clock=time.monotonic, sleep=time.sleep,
                            interval=interval)
    if choice.threads != torch.get_num_threads():
        torch.set_num_threads(choice.threads)
    return choice


_STARTING_THREADS: int | None = None


def engine_threads(device) -> ThreadChoice | None:
    """Before a CPU scoring pass: set torch's threads to the idle cores now (at most the count the
    process started with); None on other devices. The user's explicit choice (OMP_NUM_THREADS,
    MKL_NUM_THREADS, or DPO_EVAL_THREADS=fixed) is left alone."""
    global _STARTING_THREADS
    import torch

    if device.type != "cpu" or os.environ.get("DPO_EVAL_THREADS", "").strip() == "fixed":
        return None
    if _STARTING_THREADS is None:
        _STARTING_THREADS = torch.get_num_threads()
    choice = choose_threads(requested=None, env=os.environ, current=_STARTING_THREADS,
                            cpus=os.sched_getaffinity(0), read_stat=PROC_STAT.read_text,
                            own_cpu_seconds=time.process_time, clock=time.monotonic, sleep=time.sleep)
    if choice.idle_cores is not None and choice.threads != torch.get_num_threads():
        torch.set_num_threads(choice.threads)
    return choice
