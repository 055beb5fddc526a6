"""Engine vs anchor under CPU contention: a grid of busy cores x thread counts x token budgets (issue #7).

    taskset -c 0,1 python benchmarks/contention_bench.py --out contention.json     # < 4 min, quiet machine
    python benchmarks/contention_bench.py --tiny --n 2 --busy 0 --out /tmp/c.json   # seconds (the test)

Model: a random-init LlamaForCausalLM with SmolLM2-135M's shape (float32, CPU; nothing is
downloaded). Pairs: random token ids with HH-like lengths (prompt 60-200, responses 20-120
tokens, uniform, fixed seed); the n-pair set is a prefix of one seeded sequence.

Each configuration runs in its own child process (torch.set_num_threads in the child before any
work): build the model, one warm-up pass over a few pairs, then one timed full pass per busy
level. For busy level K, K busy loops (``while True: pass``, benchmarks/busy.py) run on the
cores this process may use for the duration of that pass only. The engine is called as
score_bench's worker calls it (dpo_eval.engine.runner.score_with_cache, a fresh LogpCache per
pass); the anchor is benchmarks/anchor.py.

Configurations (--configs): ``anchor`` (batch --anchor-batch pairs), ``engine-b<budget>-t<threads>``;
``t<k>`` fixed threads, ``tauto`` the idle-core rule of dpo_eval.engine.threads, measured at the
start of each timed pass (inside the timing); a ``-passive`` suffix runs the child with
OMP_WAIT_POLICY=PASSIVE (threads sleep at barriers instead of spinning). Anchor threads = all
allowed cores unless ``-t<k>``.

Without --n, a calibration child times the engine and the anchor on a few pairs, and n is the
largest number of pairs (at most --n-max) whose predicted grid fits --time-budget (slowdowns
guessed from the issue, SLOWDOWN). A cell predicted to end past the budget is skipped (recorded
as such). The JSON is rewritten after every configuration, so a killed run keeps what it did.

Reading the output: per busy level, seconds, tokens/s (sequence tokens: sum of |prompt+chosen| +
|prompt+rejected|), speedup vs the anchor at the same busy level, slowdown vs the same
configuration's quiet pass, CPU time / wall time of the benchmark process (2.0 = both cores
fully used; spinning counts as used), the busy loops' CPU time / wall (the cores they took),
"other": what the rest of the machine used on our cores (from /proc/stat; ~0 on a quiet machine,
else the run was disturbed), involuntary context switches, threads used and forwards run.

What each comparison tests (mechanisms in dpo_eval/engine/threads.py's docstring):
t1 vs t2 at busy 1 - OpenMP's static split waits for the thread that shares its core (straggler);
b4096 vs b1024 - fewer, larger forwards, so fewer barriers per token ("fwd" column); tauto - the
idle-core rule should match the better of t1 and t2 at every busy level, quiet included;
t2-passive - spinning at barriers vs sleeping (OMP_WAIT_POLICY can only be set before torch loads).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from busy import BusyLoops  # noqa: E402 - benchmarks/ is not a package

SCHEMA_VERSION = 1
SMOLLM2_135M = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                    rms_norm_eps=1e-5, max_position_embeddings=2048)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=512, tie_word_embeddings=True, max_position_embeddings=512)
LENGTHS = dict(prompt=(60, 200), response=(20, 120))
TINY_LENGTHS = dict(prompt=(8, 24), response=(4, 12))
DEFAULT_CONFIGS = ("anchor,engine-b1024-t2,engine-b1024-tauto,engine-b1024-t1,engine-b4096-t2,"
                   "engine-b4096-t1,engine-b1024-t2-passive")
# Guessed time factors vs a quiet all-cores pass (issue #7's 2-core figures; threads=1 ~1.8x slower
# quiet, and on its own core with one busy loop). Used only to size n and to skip cells past the budget.
SLOWDOWN = {"anchor": (1.0, 1.8, 2.1), "all": (1.0, 2.9, 3.9), "few": (1.8, 2.3, 3.2), "auto": (1.0, 2.3, 3.2)}


@dataclass(frozen=True)
class Config:
    """One grid row: method, anchor batch (pairs) or engine token budget, threads (None = auto)."""

    name: str
    method: str
    batch: int
    threads: int | None
    is_passive: bool = False

    def slowdown(self, busy: int, cores: int) -> float:
        key = ("anchor" if self.method == "anchor" else "auto" if self.threads is None
               else "all" if self.threads >= cores else "few")
        row = SLOWDOWN[key]
        return row[min(busy, len(row) - 1)] * (1 + max(0, busy - len(row) + 1))


def parse_config(name: str, anchor_batch: int, cores: int) -> Config:
    """'anchor', 'anchor-b8-t1', 'engine-b1024-t2', 'engine-b4096-tauto-passive' -> Config."""
    method, *parts = name.split("-")
    if method not in ("anchor", "engine"):
        raise SystemExit(f"--configs: unknown method in {name!r}; use anchor[-b<pairs>][-t<k>] or "
                         "engine[-b<budget>][-t<k>|-tauto][-passive]")
    batch, threads, passive = anchor_batch if method == "anchor" else 1024, cores, False
    for part in parts:
        if m := re.fullmatch(r"b(\d+)", part):
            batch = int(m[1])
        elif m := re.fullmatch(r"t(\d+|auto)", part):
            threads = None if m[1] == "auto" else int(m[1])
        elif part == "passive":
            passive = True
        else:
            raise SystemExit(f"--configs: cannot read {part!r} in {name!r} (b<int>, t<int>, tauto, passive)")
    if method == "anchor" and threads is None:
        raise SystemExit(f"--configs: {name!r}: tauto is for the engine only")
    return Config(name, method, batch, threads, passive)


def synthetic_lengths(n: int, tiny: bool, seed: int) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) lengths of n pairs, uniform in LENGTHS (a prefix-stable sequence)."""
    import numpy as np

    lim = TINY_LENGTHS if tiny else LENGTHS
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(lim["prompt"][0], lim["prompt"][1] + 1)),
             *(int(rng.integers(lim["response"][0], lim["response"][1] + 1)) for _ in range(2)))
            for _ in range(n)]


def sequence_tokens(lengths) -> int:
    return sum(2 * p + c + r for p, c, r in lengths)


def synthetic_pairs(lengths, vocab: int, seed: int) -> list:
    import numpy as np

    from dpo_eval.tokenization import TokenizedPair

    rng = np.random.default_rng(seed + 1)
    ids = lambda k: tuple(int(x) for x in rng.integers(1, vocab, k))  # noqa: E731
    return [TokenizedPair(id=f"p{i}", subset="synthetic", prompt_ids=ids(p), chosen_ids=ids(c),
                          rejected_ids=ids(r)) for i, (p, c, r) in enumerate(lengths)]


# ------------------------------------------------------------------------------------------ child


def build_model(shape: dict, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**shape, attn_implementation="sdpa")).float().eval()


def score_pass(cfg: Config, model, pairs: list) -> tuple[list[tuple[float, float]], int]:
    """(chosen, rejected) log-probs per pair and the number of forwards, by the configuration's method."""
    from anchor import anchor_logps

    from dpo_eval.engine.batching import plan_batches
    from dpo_eval.engine.cache import LogpCache
    from dpo_eval.engine.runner import score_with_cache

    if cfg.method == "anchor":
        return anchor_logps(model, pairs, 0, cfg.batch), math.ceil(len(pairs) / cfg.batch)
    with tempfile.TemporaryDirectory(prefix="contention-cache-") as tmp:
        cache = LogpCache(Path(tmp), "contention-bench", "cpu-float32")
        got = score_with_cache(lambda: model, pairs, cache, pad_id=0, token_budget=cfg.batch, show_progress=False)
    forwards = len(plan_batches([p.packed_length for p in pairs], cfg.batch))
    return list(zip(got.chosen_logp.tolist(), got.rejected_logp.tolist())), forwards


def cores_in_use(before: str, after: str, cpus, seconds: float) -> float:
    """Busy cores, all processes together, on the allowed cpus between two /proc/stat texts."""
    from dpo_eval.engine.threads import parse_proc_stat

    a, b = parse_proc_stat(before), parse_proc_stat(after)
    busy = sum((b[c][1] - b[c][0]) - (a[c][1] - a[c][0]) for c in cpus if c in a and c in b)
    return busy / os.sysconf("SC_CLK_TCK") / seconds


def timed_pass(cfg: Config, model, pairs: list, busy: int, pin: str, cores: int) -> dict:
    """One full pass with `busy` loops on our cores; auto threads are chosen inside the timing."""
    import resource

    import torch

    from dpo_eval.engine.threads import PROC_STAT, auto_threads

    with BusyLoops(busy, pin) as loops:
        time.sleep(0.2)  # let the scheduler spread the loops before timing
        stat0, ru0 = PROC_STAT.read_text(), resource.getrusage(resource.RUSAGE_SELF)
        cpu0, start = time.process_time(), time.perf_counter()
        auto = None
        if cfg.threads is None:
            torch.set_num_threads(cores)
            auto = asdict(auto_threads())
        logps, forwards = score_pass(cfg, model, pairs)
        seconds = time.perf_counter() - start
        cpu, ru1, stat1 = time.process_time() - cpu0, resource.getrusage(resource.RUSAGE_SELF), PROC_STAT.read_text()
    mine, theirs = cpu / seconds, loops.cpu_seconds() / seconds
    return {"busy": busy, "status": "ok", "seconds": seconds, "cpu_per_wall": mine, "busy_cpu_per_wall": theirs,
            "others_cpu_per_wall": cores_in_use(stat0, stat1, os.sched_getaffinity(0), seconds) - mine - theirs,
            "threads": torch.get_num_threads(), "auto": auto, "forwards": forwards,
            "involuntary_switches": ru1.ru_nivcsw - ru0.ru_nivcsw, "voluntary_switches": ru1.ru_nvcsw - ru0.ru_nvcsw,
            "logps": logps}


def worker(spec: dict) -> dict:
    t0 = time.perf_counter()
    import torch
    from gpu_check import bootstrap_imports

    bootstrap_imports(ROOT)
    cfg, cores = Config(**spec["config"]), len(os.sched_getaffinity(0))
    out = {"config": spec["config"], "torch_default_threads": torch.get_num_threads()}
    torch.set_num_threads(cfg.threads or cores)
    model = build_model(spec["shape"], spec["seed"])
    pairs = synthetic_pairs(spec["lengths"], spec["shape"]["vocab_size"], spec["seed"])
    out["startup_seconds"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    score_pass(cfg, model, pairs[: spec["warmup"]])
    out["warmup_seconds"] = time.perf_counter() - t1
    out["passes"] = []
    first = None
    for busy in spec["busy"]:
        if first is not None:
            predicted = first["seconds"] * cfg.slowdown(busy, cores) / cfg.slowdown(first["busy"], cores)
            if time.time() + predicted > spec["deadline"]:
                out["passes"].append({"busy": busy, "status": "skipped",
                                      "reason": f"predicted {predicted:.0f} s would pass the time budget"})
                continue
        result = timed_pass(cfg, model, pairs, busy, spec["pin"], cores)
        out["passes"].append(result)
        first = first or result
    return out


def calibrate(spec: dict) -> dict:
    """Seconds per sequence token of the engine (budget 1024) and of the anchor, quiet, all cores."""
    engine, anchor = (Config("engine", "engine", 1024, None), Config("anchor", "anchor", spec["anchor_batch"], None))
    t0 = time.perf_counter()
    import torch
    from gpu_check import bootstrap_imports

    bootstrap_imports(ROOT)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = build_model(spec["shape"], spec["seed"])
    pairs = synthetic_pairs(spec["lengths"], spec["shape"]["vocab_size"], spec["seed"])
    startup = time.perf_counter() - t0
    score_pass(engine, model, pairs[:2])
    warmup = time.perf_counter() - t0 - startup
    rates = {}
    tokens = sequence_tokens(spec["lengths"])
    for cfg in (engine, anchor):
        start = time.perf_counter()
        score_pass(cfg, model, pairs)
        rates[cfg.method] = (time.perf_counter() - start) / tokens
    return {"startup_seconds": startup, "warmup_seconds": warmup, "seconds_per_token": rates,
            "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------ parent


def run_child(mode: str, spec: dict, work: Path, env: dict) -> dict:
    spec_path, out_path = work / f"{spec['name']}.spec.json", work / f"{spec['name']}.result.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--spec", str(spec_path),
                           "--result", str(out_path)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"config": spec.get("config"), "status": "failed", "stderr_tail": proc.stderr[-3000:]}
    return json.loads(out_path.read_text())


def child_env(passive: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def predict(cal: dict, configs: list[Config], lengths, busy: list[int], cores: int) -> float:
    tokens = sequence_tokens(lengths)
    per_child = cal["startup_seconds"] + cal["warmup_seconds"]
    cells = sum(cal["seconds_per_token"][c.method] * tokens * c.slowdown(b, cores) + 0.5
                for c in configs for b in busy)
    return len(configs) * per_child + cells


def choose_n(args, configs, cores, work, started) -> tuple[int, dict | None]:
    if args.n is not None:
        return args.n, None
    probe = synthetic_lengths(min(4, args.n_max), args.tiny, args.seed)
    spec = {"name": "calibration", "shape": shape_of(args), "seed": args.seed, "lengths": probe,
            "anchor_batch": args.anchor_batch}
    cal = run_child("calibrate", spec, work, child_env(False))
    if cal.get("status") == "failed":  # run the grid anyway (the JSON keeps the error)
        print("calibration failed; using n = 8:\n" + cal["stderr_tail"], file=sys.stderr)
        return min(8, args.n_max), cal
    room = 0.9 * args.time_budget - (time.time() - started)
    lengths = synthetic_lengths(args.n_max, args.tiny, args.seed)
    n = fit_n(lambda k: predict(cal, configs, lengths[:k], args.busy, cores), room, args.n_max)
    cal["predicted_seconds"] = predict(cal, configs, lengths[:n], args.busy, cores)
    return n, cal


def fit_n(predicted, room: float, n_max: int, n_min: int = 4) -> int:
    """The largest n in [n_min, n_max] with predicted(n) <= room (predicted grows with n); n_min if none."""
    n = min(n_min, n_max)
    for k in range(n, n_max + 1):
        if predicted(k) <= room:
            n = k
    return n


def shape_of(args) -> dict:
    shape = dict(TINY if args.tiny else SMOLLM2_135M)
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    return shape


def environment(cpus: list[int]) -> dict:
    import torch

    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    cpuinfo = read("/proc/cpuinfo") or ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())
    return {"cpus_allowed": cpus, "cpu_count": os.cpu_count(), "cpu_model": model,
            "thread_siblings": {c: read(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list")
                                for c in cpus},
            "loadavg_at_start": read("/proc/loadavg"), "kernel": platform.release(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_parallel_info": torch.__config__.parallel_info(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
                                                   "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}}


def summarise(results: dict[str, dict]) -> dict:
    """Per busy level: speedup of each configuration over the anchor (anchor seconds / seconds), slowdown
    vs its own quiet pass, and the largest |log-prob difference| from the anchor (first pass)."""
    def seconds(name: str, busy: int) -> float | None:
        for p in results.get(name, {}).get("passes", []):
            if p["busy"] == busy and p["status"] == "ok":
                return p["seconds"]
        return None

    anchor = next((n for n, r in results.items() if r.get("config", {}).get("method") == "anchor"), None)
    ref = next((p["logps"] for p in results.get(anchor, {}).get("passes", []) if p["status"] == "ok"), None)
    out: dict = {"anchor": anchor, "speedup_vs_anchor": {}, "slowdown_vs_quiet": {}, "max_abs_diff_vs_anchor": {}}
    for name, res in results.items():
        for p in res.get("passes", []):
            if p["status"] != "ok":
                continue
            a, q = seconds(anchor, p["busy"]) if anchor else None, seconds(name, 0)
            key = f"busy{p['busy']}"
            out["speedup_vs_anchor"].setdefault(key, {})[name] = a / p["seconds"] if a else None
            out["slowdown_vs_quiet"].setdefault(key, {})[name] = p["seconds"] / q if q else None
        mine = next((p["logps"] for p in res.get("passes", []) if p["status"] == "ok"), None)
        if ref is not None and mine is not None:
            out["max_abs_diff_vs_anchor"][name] = max(abs(x - y) for a, b in zip(ref, mine) for x, y in zip(a, b))
    return out


def fmt(x: float | None, spec: str) -> str:
    """x formatted with a trailing 'x' (a ratio), or a dash of the same width."""
    text = format(x, spec) if x is not None else "-"
    return f"{text:>{len(format(0.0, spec))}s}x"


def print_report(doc: dict) -> None:
    s, tokens = doc["summary"], doc["sequence_tokens"]
    print(f"\npairs={doc['n']} sequence_tokens={tokens} packed_tokens={doc['packed_tokens']} "
          f"shape={doc['shape_name']} cpus={doc['environment']['cpus_allowed']} pin={doc['pin']}")
    print(f"{'busy':>4s} {'config':24s} {'seconds':>8s} {'tok/s':>7s} {'vs anchor':>9s} {'vs quiet':>8s} "
          f"{'cpu/wall':>8s} {'loops':>6s} {'other':>6s} {'invol.sw':>8s} {'thr':>3s} {'fwd':>4s}")
    for busy in doc["busy"]:
        key = f"busy{busy}"
        for name, res in doc["results"].items():
            for p in (p for p in res.get("passes", []) if p["busy"] == busy):
                if p["status"] != "ok":
                    print(f"{busy:4d} {name:24s} {p['status']}: {p.get('reason', '')}")
                    continue
                print(f"{busy:4d} {name:24s} {p['seconds']:8.2f} {tokens / p['seconds']:7.0f} "
                      f"{fmt(s['speedup_vs_anchor'][key].get(name), '8.2f')} "
                      f"{fmt(s['slowdown_vs_quiet'][key].get(name), '7.2f')} {p['cpu_per_wall']:8.2f} "
                      f"{p['busy_cpu_per_wall']:6.2f} {p['others_cpu_per_wall']:6.2f} {p['involuntary_switches']:8d} {p['threads']:3d} {p['forwards']:4d}")
        for name, res in doc["results"].items():
            if res.get("status") == "failed" and busy == doc["busy"][0]:
                print(f"   - {name:24s} FAILED (stderr tail in the JSON)")
    print("\nspeedup over the anchor at the same busy level (anchor seconds / seconds):")
    print(f"{'config':24s} " + " ".join(f"{'busy' + str(b):>7s}" for b in doc["busy"]))
    for name in doc["results"]:
        print(f"{name:24s} " + " ".join(f"{fmt(s['speedup_vs_anchor'].get(f'busy{b}', {}).get(name), '6.2f')}"
                                        for b in doc["busy"]))
    diffs = s["max_abs_diff_vs_anchor"]
    if diffs:
        print(f"max |log-prob difference| vs the anchor (nats per sequence): {max(diffs.values()):.2e}")
    print(f"total {doc['total_seconds']:.0f} s (budget {doc['time_budget']:.0f} s)")


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="JSON results path (required)")
    ap.add_argument("--n", type=int, default=None, help="pairs (default: calibrated to --time-budget)")
    ap.add_argument("--n-max", type=int, default=24, help="most pairs the calibration may choose")
    ap.add_argument("--busy", default="0,1,2", help="busy-loop counts, comma separated (0 = quiet)")
    ap.add_argument("--pin", choices=("set", "core"), default="set",
                    help="busy loops may run on all our cores (set) or loop i on core i (core)")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma separated, in run order")
    ap.add_argument("--anchor-batch", type=int, default=8, help="anchor pairs per forward")
    ap.add_argument("--time-budget", type=float, default=210.0, help="seconds; sizes n, skips cells past it")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up pairs per child")
    ap.add_argument("--layers", type=int, default=None, help="override the number of layers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="tiny model and lengths (for the test)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.busy = [int(b) for b in args.busy.split(",")]
    if any(b < 0 for b in args.busy) or (args.n is not None and args.n < 1):
        ap.error("--busy counts must be >= 0 and --n >= 1")
    if not args.worker and not args.out:
        ap.error("--out is required (the JSON results path)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        result = calibrate(spec) if args.worker == "calibrate" else worker(spec)
        Path(args.result).write_text(json.dumps(result))
        return 0
    started, cpus = time.time(), sorted(os.sched_getaffinity(0))
    configs = [parse_config(c, args.anchor_batch, len(cpus)) for c in args.configs.split(",")]
    if len({c.name for c in configs}) != len(configs):
        raise SystemExit("--configs: a configuration is named twice")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        n, cal = choose_n(args, configs, len(cpus), Path(tmp), started)
        lengths = synthetic_lengths(n, args.tiny, args.seed)
        doc = {"schema_version": SCHEMA_VERSION, "command": sys.argv, "n": n, "busy": args.busy, "pin": args.pin,
               "shape_name": "tiny" if args.tiny else "smollm2-135m", "shape": shape_of(args),
               "sequence_tokens": sequence_tokens(lengths), "packed_tokens": sum(map(sum, lengths)),
               "time_budget": args.time_budget, "calibration": cal, "environment": environment(cpus),
               "results": {}, "summary": {}, "total_seconds": 0.0}
        for cfg in configs:
            spec = {"name": cfg.name, "config": asdict(cfg), "shape": doc["shape"], "seed": args.seed,
                    "lengths": lengths, "warmup": min(args.warmup, n), "busy": args.busy, "pin": args.pin,
                    "deadline": started + args.time_budget}
            doc["results"][cfg.name] = run_child("worker", spec, Path(tmp), child_env(cfg.is_passive))
            doc["summary"], doc["total_seconds"] = summarise(doc["results"]), time.time() - started
            write_json(out, doc)
    print_report(doc)
    print(f"JSON: {out}")
    return 1 if any(r.get("status") == "failed" for r in doc["results"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
