"""dpo_eval.engine.threads: the idle-core rule on fake /proc/stat snapshots (no timing involved)."""

from __future__ import annotations

import os

import pytest
import torch

from dpo_eval.engine.threads import (
    auto_threads,
    choose_threads,
    idle_cores,
    is_user_fixed,
    parse_proc_stat,
    threads_for_idle,
)


def stat_text(rows: dict[int, tuple[int, int, int]]) -> str:
    """A /proc/stat with cpuN lines built from (user, idle, iowait) jiffies; the other fields fixed small."""
    lines = ["cpu  999 0 999 999 0 0 0 0 0 0"]
    for cpu, (user, idle, iowait) in rows.items():
        # user nice system idle iowait irq softirq steal guest guest_nice
        lines.append(f"cpu{cpu} {user} 1 2 {idle} {iowait} 3 4 5 77 88")
    lines += ["intr 1 2 3", "ctxt 12345", "btime 1700000000", "procs_running 3"]
    return "\n".join(lines) + "\n"


def test_parse_proc_stat_reads_idle_plus_iowait_and_the_first_eight_fields():
    parsed = parse_proc_stat(stat_text({0: (100, 50, 7), 3: (10, 20, 0)}))
    assert set(parsed) == {0, 3}  # the aggregate "cpu" line and non-cpu lines are skipped
    # total = user + nice(1) + system(2) + idle + iowait + irq(3) + softirq(4) + steal(5); guest not added
    assert parsed[0] == (50 + 7, 100 + 1 + 2 + 50 + 7 + 3 + 4 + 5)
    assert parsed[3] == (20, 10 + 1 + 2 + 20 + 0 + 3 + 4 + 5)


def test_parse_proc_stat_accepts_old_kernels_with_fewer_fields():
    assert parse_proc_stat("cpu0 1 2 3 4\n") == {0: (4, 10)}


def test_idle_cores_sums_the_idle_share_of_each_allowed_cpu():
    before = {0: (100, 1000), 1: (200, 1000), 2: (0, 0)}
    after = {0: (110, 1010), 1: (205, 1020), 2: (0, 50)}
    # cpu0: 10/10 idle; cpu1: 5/20; cpu2 not allowed
    assert idle_cores(before, after, [0, 1]) == pytest.approx(1.0 + 0.25)
    # a cpu without ticks, or missing from a snapshot, counts as idle
    assert idle_cores(before, {0: (100, 1000), 1: (205, 1020)}, [0, 1, 7]) == pytest.approx(1.0 + 0.25 + 1.0)


@pytest.mark.parametrize(("idle", "current", "want"), [
    (2.0, 2, 2), (1.49, 2, 1), (1.5, 2, 2), (0.0, 2, 1), (0.3, 4, 1), (3.6, 2, 2), (2.6, 8, 3),
])
def test_threads_for_idle_rounds_and_clamps(idle, current, want):
    assert threads_for_idle(idle, current) == want


def test_user_fixed_by_request_or_environment():
    assert is_user_fixed(3, {})
    assert is_user_fixed(None, {"OMP_NUM_THREADS": "2"})
    assert is_user_fixed(None, {"MKL_NUM_THREADS": "1"})
    assert not is_user_fixed(None, {"OMP_NUM_THREADS": "  ", "OTHER": "1"})


class FakeMachine:
    """Two /proc/stat snapshots, a clock and this process's CPU time, advanced by sleep()."""

    def __init__(self, first: str, second: str, own_seconds: float = 0.0):
        self.snapshots, self.t, self.own, self.own_seconds, self.slept = [first, second], 0.0, 0.0, own_seconds, []

    def read(self) -> str:
        return self.snapshots[0] if not self.slept else self.snapshots[1]

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        self.own += self.own_seconds

    def choose(self, **kw):
        args = dict(requested=None, env={}, current=2, cpus={0, 1}, read_stat=self.read,
                    own_cpu_seconds=lambda: self.own, clock=lambda: self.t, sleep=self.sleep, interval=0.1)
        return choose_threads(**(args | kw))


# 100 ms at 100 jiffies/s = 10 ticks per cpu
QUIET = (stat_text({0: (0, 0, 0), 1: (0, 0, 0)}), stat_text({0: (0, 10, 0), 1: (0, 10, 0)}))
ONE_BUSY = (stat_text({0: (0, 0, 0), 1: (0, 0, 0)}), stat_text({0: (10, 0, 0), 1: (0, 10, 0)}))
BOTH_BUSY = (stat_text({0: (0, 0, 0), 1: (0, 0, 0)}), stat_text({0: (10, 0, 0), 1: (10, 0, 0)}))


def test_quiet_machine_keeps_every_thread():
    machine = FakeMachine(*QUIET)
    choice = machine.choose()
    assert (choice.threads, choice.idle_cores) == (2, pytest.approx(2.0))
    assert machine.slept == [0.1]


def test_one_busy_core_gives_one_thread_and_both_busy_still_one():
    assert FakeMachine(*ONE_BUSY).choose().threads == 1
    choice = FakeMachine(*BOTH_BUSY).choose()
    assert (choice.threads, choice.idle_cores) == (1, pytest.approx(0.0))


def test_own_cpu_time_counts_as_idle():
    # both cpus look busy, but this process used 2 CPU-seconds per second of the interval: it was us
    machine = FakeMachine(*BOTH_BUSY, own_seconds=0.2)
    choice = machine.choose()
    assert (choice.threads, choice.idle_cores) == (2, pytest.approx(2.0))


def test_only_allowed_cpus_are_counted():
    first = stat_text({0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 0, 0), 3: (0, 0, 0)})
    second = stat_text({0: (0, 10, 0), 1: (0, 10, 0), 2: (10, 0, 0), 3: (10, 0, 0)})  # 2 and 3 busy, not ours
    assert FakeMachine(first, second).choose(cpus={0, 1}).threads == 2
    assert FakeMachine(first, second).choose(cpus={1, 2, 3}, current=3).threads == 1


def test_never_raises_the_current_count():
    assert FakeMachine(*QUIET).choose(current=1).threads == 1


def test_user_choice_stands_and_nothing_is_measured():
    machine = FakeMachine(*ONE_BUSY)
    assert machine.choose(env={"OMP_NUM_THREADS": "2"}).threads == 2
    assert machine.choose(requested=2).threads == 2
    assert machine.choose(requested=2).idle_cores is None
    assert machine.slept == []


def test_unreadable_statistics_leave_the_count_alone():
    def broken() -> str:
        raise FileNotFoundError("/proc/stat")

    choice = FakeMachine(*QUIET).choose(read_stat=broken, current=2)
    assert (choice.threads, choice.idle_cores) == (2, None)
    assert "FileNotFoundError" in choice.reason


def test_auto_threads_sets_torch_and_respects_a_request(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        choice = auto_threads(requested=1, interval=0.0)
        assert choice.threads == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        choice = auto_threads(interval=0.01)  # a real measurement: some count in [1, allowed cores]
        assert 1 <= choice.threads <= len(os.sched_getaffinity(0))
        assert torch.get_num_threads() == choice.threads
    finally:
        torch.set_num_threads(before)


def test_engine_threads_only_on_cpu_and_never_above_the_starting_count(monkeypatch):
    import torch

    from dpo_eval.engine import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv("DPO_EVAL_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert threads.engine_threads(torch.device("meta")) is None  # not a CPU: nothing measured or set
        monkeypatch.setattr(threads, "_STARTING_THREADS", 2)
        busy = "cpu0 10 0 0 0 0 0 0 0\ncpu1 10 0 0 0 0 0 0 0\n"
        later = "cpu0 20 0 0 0 0 0 0 0\ncpu1 20 0 0 0 0 0 0 0\n"  # both cores fully busy (not by us)
        snapshots = iter([busy, later])
        monkeypatch.setattr(threads, "PROC_STAT", type("Fake", (), {"read_text": lambda self: next(snapshots)})())
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
        choice = threads.engine_threads(torch.device("cpu"))
        assert choice.threads == 1 and torch.get_num_threads() == 1
        quiet = iter(["cpu0 0 0 0 10 0 0 0 0\ncpu1 0 0 0 10 0 0 0 0\n", "cpu0 0 0 0 20 0 0 0 0\ncpu1 0 0 0 20 0 0 0 0\n"])
        monkeypatch.setattr(threads, "PROC_STAT", type("Fake", (), {"read_text": lambda self: next(quiet)})())
        assert threads.engine_threads(torch.device("cpu")).threads == 2  # contention over: threads come back
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("DPO_EVAL_THREADS", "fixed")
        assert threads.engine_threads(torch.device("cpu")) is None
    finally:
        torch.set_num_threads(before)
