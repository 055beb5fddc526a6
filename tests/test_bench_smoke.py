"""benchmarks/contention_bench.py (a tiny grid from a source tree that is not pip-installed), its pieces,
benchmarks/busy.py's loops, and score_bench's quiet/busy report. No timing is asserted anywhere."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPT = BENCH / "contention_bench.py"
# Imported after .pth files: drops the editable install's finder, so dpo_eval is importable only the way
# the script makes it importable (the quiet benchmark machine has no pip-installed dpo_eval).
NO_EDITABLE = ('import sys\nsys.meta_path[:] = [f for f in sys.meta_path '
               'if "__editable__" not in getattr(f, "__module__", "")]\n')
SMOKE_CONFIGS = ("anchor", "engine-b64-t1", "engine-b1024-tauto-passive")


def load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("contention")
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(NO_EDITABLE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "PYTHONPATH": str(tmp / "site"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('dpo_eval'))"],
                           env=env, cwd=tmp, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None", "dpo_eval still importable: this run would not test the source tree"
    out = tmp / "grid.json"
    # no --n: the calibration child runs and picks n = --n-max (a tiny grid fits the budget)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--n-max", "3", "--time-budget", "900",
                           "--busy", "0,1", "--warmup", "1",
                           "--configs", ",".join(SMOKE_CONFIGS), "--out", str(out)],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"doc": json.loads(out.read_text()), "stdout": proc.stdout}


def test_grid_has_every_configuration_and_busy_level_with_finite_numbers(grid):
    doc = grid["doc"]
    assert list(doc["results"]) == list(SMOKE_CONFIGS)
    assert doc["n"] == 3
    cal = doc["calibration"]
    assert all(math.isfinite(v) and v > 0 for v in (*cal["seconds_per_token"].values(), cal["predicted_seconds"]))
    lengths = load("contention_bench").synthetic_lengths(3, tiny=True, seed=0)
    assert doc["sequence_tokens"] == sum(2 * p + c + r for p, c, r in lengths)
    for name, res in doc["results"].items():
        assert [p["busy"] for p in res["passes"]] == [0, 1], name
        for p in res["passes"]:
            assert p["status"] == "ok", (name, p)
            for field in ("seconds", "cpu_per_wall", "busy_cpu_per_wall"):
                assert math.isfinite(p[field]) and p[field] >= 0, (name, field, p[field])
            assert math.isfinite(p["others_cpu_per_wall"])
            assert p["seconds"] > 0 and p["forwards"] >= 1 and p["threads"] >= 1
            assert len(p["logps"]) == 3 and all(math.isfinite(x) for row in p["logps"] for x in row)
        for key in ("busy0", "busy1"):
            assert math.isfinite(doc["summary"]["speedup_vs_anchor"][key][name])
            assert math.isfinite(doc["summary"]["slowdown_vs_quiet"][key][name])
    assert doc["results"]["engine-b64-t1"]["passes"][0]["threads"] == 1
    assert doc["results"]["engine-b1024-tauto-passive"]["passes"][0]["auto"]["threads"] >= 1
    assert doc["results"]["engine-b1024-tauto-passive"]["config"]["is_passive"] is True
    # every configuration computes the same log-probs (float32 noise only)
    assert max(doc["summary"]["max_abs_diff_vs_anchor"].values()) < 1e-3
    assert "speedup over the anchor" in grid["stdout"] and "busy1" in grid["stdout"]


def test_summary_ratios_are_anchor_seconds_over_seconds():
    cb = load("contention_bench")
    ok = lambda busy, s, logps: {"busy": busy, "status": "ok", "seconds": s, "logps": logps}  # noqa: E731
    results = {
        "anchor": {"config": {"method": "anchor"}, "passes": [ok(0, 10.0, [[-1.0, -2.0]]), ok(1, 18.0, [[-1.0, -2.0]])]},
        "e": {"config": {"method": "engine"}, "passes": [ok(0, 4.0, [[-1.5, -2.0]]), ok(1, 12.0, [[-1.0, -2.0]])]},
        "skipped": {"config": {"method": "engine"}, "passes": [ok(0, 5.0, [[-1.0, -2.25]]),
                                                               {"busy": 1, "status": "skipped", "reason": "budget"}]},
    }
    s = cb.summarise(results)
    assert s["speedup_vs_anchor"]["busy0"] == {"anchor": 1.0, "e": 10.0 / 4.0, "skipped": 10.0 / 5.0}
    assert s["speedup_vs_anchor"]["busy1"] == {"anchor": 1.0, "e": 18.0 / 12.0}
    assert s["slowdown_vs_quiet"]["busy1"] == {"anchor": 18.0 / 10.0, "e": 12.0 / 4.0}
    assert s["max_abs_diff_vs_anchor"] == {"anchor": 0.0, "e": 0.5, "skipped": 0.25}


def test_fit_n_takes_the_largest_n_whose_prediction_fits():
    cb = load("contention_bench")
    predicted = lambda n: 10.0 + 7.0 * n  # noqa: E731
    assert cb.fit_n(predicted, room=10.0 + 7.0 * 9, n_max=24) == 9
    assert cb.fit_n(predicted, room=10.0 + 7.0 * 9 - 0.1, n_max=24) == 8
    assert cb.fit_n(predicted, room=1e9, n_max=24) == 24
    assert cb.fit_n(predicted, room=0.0, n_max=24) == 4  # nothing fits: the smallest grid, cells skipped later
    assert cb.fit_n(predicted, room=0.0, n_max=2) == 2


def test_a_failed_calibration_falls_back_to_eight_pairs(monkeypatch, tmp_path):
    cb = load("contention_bench")
    monkeypatch.setattr(cb, "run_child", lambda *a, **k: {"status": "failed", "stderr_tail": "boom"})
    args = cb.parse_args(["--out", str(tmp_path / "x.json")])
    n, cal = cb.choose_n(args, [cb.parse_config("anchor", 8, 2)], 2, tmp_path, time.time())
    assert (n, cal["status"]) == (8, "failed")


def test_predict_sums_startup_and_cells_with_the_guessed_slowdowns():
    cb = load("contention_bench")
    cal = {"startup_seconds": 3.0, "warmup_seconds": 1.0, "seconds_per_token": {"anchor": 0.01, "engine": 0.004}}
    configs = [cb.parse_config(n, 8, cores=2) for n in ("anchor", "engine-b1024-t2", "engine-b1024-t1")]
    lengths = [(100, 50, 30), (60, 20, 20)]
    tokens = (2 * 100 + 50 + 30) + (2 * 60 + 20 + 20)
    # slowdowns at busy 0 and 2: anchor 1.0, 2.1; all threads 1.0, 3.9; one thread 1.8, 3.2; +0.5 s per cell
    want = 3 * (3.0 + 1.0) + tokens * (0.01 * (1.0 + 2.1) + 0.004 * (1.0 + 3.9) + 0.004 * (1.8 + 3.2)) + 6 * 0.5
    assert cb.predict(cal, configs, lengths, [0, 2], cores=2) == pytest.approx(want)


def test_config_names_parse_and_bad_names_fail():
    cb = load("contention_bench")
    names = cb.DEFAULT_CONFIGS.split(",")
    configs = [cb.parse_config(n, anchor_batch=8, cores=2) for n in names]
    assert [(c.method, c.batch, c.threads) for c in configs] == [
        ("anchor", 8, 2), ("engine", 1024, 2), ("engine", 1024, None), ("engine", 1024, 1),
        ("engine", 4096, 2), ("engine", 4096, 1), ("engine", 1024, 2)]
    assert [c.is_passive for c in configs] == [False] * 6 + [True]
    assert cb.parse_config("engine-b512-t3-passive", 8, 2).is_passive
    for bad in ("engine-x1", "trl-b8", "anchor-tauto"):
        with pytest.raises(SystemExit):
            cb.parse_config(bad, 8, 2)


def test_synthetic_lengths_are_a_seeded_prefix_within_hh_like_bounds():
    cb = load("contention_bench")
    long = cb.synthetic_lengths(24, tiny=False, seed=0)
    assert cb.synthetic_lengths(5, tiny=False, seed=0) == long[:5]
    assert all(60 <= p <= 200 and 20 <= c <= 120 and 20 <= r <= 120 for p, c, r in long)
    assert cb.synthetic_lengths(24, tiny=False, seed=1) != long


def test_busy_loops_use_cpu_and_are_gone_after_exit():
    busy = load("busy")
    with busy.BusyLoops(1) as loops:
        time.sleep(0.1)
        procs = list(loops.procs)
        assert procs[0].poll() is None
        assert os.sched_getaffinity(procs[0].pid) == os.sched_getaffinity(0)
    assert all(p.poll() is not None for p in procs)
    assert loops.cpu_seconds() > 0


def test_busy_loops_stop_by_themselves_after_max_seconds():
    busy = load("busy")
    loops = busy.BusyLoops(1, pin="core", max_seconds=0.3).__enter__()
    try:
        assert os.sched_getaffinity(loops.procs[0].pid) == {min(os.sched_getaffinity(0))}
        loops.procs[0].wait(timeout=20)
    finally:
        loops.stop()
    with pytest.raises(ValueError):
        busy.BusyLoops(1, pin="everywhere")


def result(seconds: list[float], busy_seconds: list[float], logps: list, busy_logps: list) -> dict:
    return {"passes": [{"seconds": s, "logps": lp} for s, lp in zip(seconds, logps)],
            "busy_passes": [{"seconds": s, "logps": lp} for s, lp in zip(busy_seconds, busy_logps)],
            "peak_growth": 2**20, "threads": 2, "sequence_tokens": 100}


def test_score_bench_prints_quiet_and_busy_ratios_side_by_side(capsys):
    sb = load("score_bench")
    args = sb.parse_args(["--busy-cores", "1", "--n", "4"])
    ref, pol = [[-1.0, -2.0]], [[-1.5, -2.5]]
    anchor = result([6.0, 6.0], [10.0, 11.0], [ref, pol], [ref, pol])
    engine = result([2.0, 2.0], [5.0, 5.5], [ref, pol], [ref, pol])
    second = result([1.0, 1.0], [2.0, 2.0], [pol, ref], [pol, ref])
    sb.report(args, anchor, engine, second)
    out = capsys.readouterr().out
    assert f"{12.0 / 4.0:.2f}x quiet | {21.0 / 10.5:.2f}x with 1 busy core(s)" in out
    assert f"{10.5 / 4.0:.2f}x" in out  # the engine's slowdown under contention
    busy_bad = result([2.0, 2.0], [5.0, 5.5], [ref, pol], [ref, [[-1.5, -2.4]]])
    with pytest.raises(SystemExit):  # a wrong busy pass fails like a wrong quiet one
        sb.report(args, anchor, busy_bad, second)
    with pytest.raises(SystemExit):
        sb.parse_args(["--busy-cores", "-1"])
