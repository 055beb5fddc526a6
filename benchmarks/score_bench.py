"""Scoring speed: the anchors' method vs the dpo-eval engine, same model, pairs and machine, one run.

    python benchmarks/score_bench.py                      # SmolLM2-135M-Instruct on HH-RLHF pairs
    python benchmarks/score_bench.py --n 32 --batch-size 8

    python benchmarks/score_bench.py --busy-cores 1        # also under contention: quiet and busy ratios

Each method runs in its own child process (so peak memory is its own). Printed: tokens/s of
each, the ratio, peak RSS growth, and the largest reward difference (must be <= 1e-3).
Tokens counted are the same for both methods: sum over pairs of |prompt+chosen| + |prompt+rejected|.

--busy-cores K (issue #7): after each quiet timed pass, every method scores the same model again
while K busy loops (``while True: pass``, benchmarks/busy.py) run on the cores this process may
use (under ``taskset -c 0,1``: those two); the loops exist only during that pass. The engine's
busy passes use their own cache (engine_cache_busy), so they compute as much as the quiet ones.
The quiet and the busy engine/anchor ratios are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="reference model (policy = perturbed copies)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--n", type=int, default=64, help="pairs")
    ap.add_argument("--batch-size", type=int, default=8, help="anchor pairs per forward")
    ap.add_argument("--token-budget", type=int, default=None, help="engine budget (default: engine's)")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--workdir", default=str(ROOT / "bench_out"))
    ap.add_argument("--busy-cores", type=int, default=0, help="busy loops during a second timed pass (0: none)")
    ap.add_argument("--busy-pin", choices=("set", "core"), default="set",
                    help="busy loops may run on all our cores (set) or loop i on our i-th core (core)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--models", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.busy_cores < 0:
        ap.error("--busy-cores must be >= 0")
    return args


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux) and return the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    return _status_bytes("VmHWM")


def tokenized_pairs(args, model_dir: str):
    from dpo_eval.data.pairs import load_pairs
    from dpo_eval.models import load_tokenizer
    from dpo_eval.tokenization import TokenizerSettings, tokenize_pairs

    tok = load_tokenizer(model_dir, cache_dir=Path(args.workdir) / "cache")
    loaded = load_pairs(args.data, skip_invalid=True, limit=args.n)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return tokenize_pairs(loaded.pairs, tok, TokenizerSettings()).pairs, pad


def make_checkpoint(base_dir: str, out: Path, seed: int) -> str:
    """A 'trained' checkpoint: the base weights plus small seeded noise, saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists():
        return str(out)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02 * p.std())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return str(out)


def timed_score(args, model, path: str, pairs, pad: int, cache_name: str) -> tuple[np.ndarray, float, int]:
    """(logps (n, 2), seconds, peak RSS growth) of one pass of args.worker's method over pairs."""
    from anchor import anchor_logps

    from dpo_eval.engine.batching import DEFAULT_CPU_BUDGET
    from dpo_eval.engine.cache import LogpCache
    from dpo_eval.engine.runner import score_with_cache
    from dpo_eval.models import identify_model

    cache_root = Path(args.workdir) / "cache"
    identity = identify_model(path, cache_dir=cache_root) if args.worker != "anchor" else None
    rss_before = reset_peak_rss()
    start = time.perf_counter()
    if args.worker == "anchor":
        rows = np.array(anchor_logps(model, pairs, pad, args.batch_size))
    else:
        cache = LogpCache(Path(args.workdir) / cache_name, identity.fingerprint, "cpu-float32")
        got = score_with_cache(lambda m=model: m, pairs, cache, pad_id=pad,
                               token_budget=args.token_budget or DEFAULT_CPU_BUDGET, show_progress=False)
        rows = np.stack([got.chosen_logp, got.rejected_logp], axis=1)
    return rows, time.perf_counter() - start, peak_rss() - rss_before


def worker(args) -> dict:
    """Run one method over the given models (quiet, then with busy loops if asked); timings exclude loading."""
    import torch
    from busy import BusyLoops

    from dpo_eval.models import load_model

    models = args.models.split(",")
    pairs, pad = tokenized_pairs(args, models[0])
    cache_root = Path(args.workdir) / "cache"
    result = {"passes": [], "busy_passes": [], "peak_growth": 0, "threads": torch.get_num_threads(),
              "busy_cores": args.busy_cores}
    for path in models:
        model = load_model(path, device=torch.device("cpu"), dtype=torch.float32, cache_dir=cache_root).model
        for param in model.parameters():  # fault in mmapped weights so they are not counted as peak
            param.detach().sum()
        rows, seconds, growth = timed_score(args, model, path, pairs, pad, "engine_cache")
        result["peak_growth"] = max(result["peak_growth"], growth)
        result["passes"].append({"model": path, "seconds": seconds, "logps": rows.tolist()})
        if args.busy_cores:
            with BusyLoops(args.busy_cores, args.busy_pin) as loops:
                time.sleep(0.2)  # let the scheduler spread the loops before timing
                rows, seconds, _ = timed_score(args, model, path, pairs, pad, "engine_cache_busy")
            result["busy_passes"].append({"model": path, "seconds": seconds, "logps": rows.tolist(),
                                          "busy_cpu_per_wall": loops.cpu_seconds() / seconds})
        del model
    result["sequence_tokens"] = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return result


def run_worker(args, name: str, models: list[str]) -> dict:
    out = Path(args.workdir) / f"{name}.json"
    cmd = [sys.executable, __file__, "--worker", name.split("-")[0], "--models", ",".join(models),
           "--data", args.data, "--n", str(args.n), "--batch-size", str(args.batch_size),
           "--workdir", args.workdir, "--busy-cores", str(args.busy_cores), "--busy-pin", args.busy_pin]
    if args.token_budget:
        cmd += ["--token-budget", str(args.token_budget)]
    with open(out, "w") as f:
        subprocess.run(cmd, check=True, stdout=f)
    return json.loads(out.read_text())


def rewards(result: dict, beta: float, key: str = "passes") -> np.ndarray:
    ref, policy = (np.array(p["logps"]) for p in result[key][:2])
    return beta * (policy - ref)


def seconds_of(result: dict, key: str) -> float:
    return sum(p["seconds"] for p in result[key])


def report(args, anchor: dict, engine: dict, second: dict) -> None:
    from dpo_eval.engine.batching import DEFAULT_CPU_BUDGET

    tokens, busy = anchor["sequence_tokens"], args.busy_cores
    keys = ["passes"] + (["busy_passes"] if busy else [])
    diff = max(np.abs(rewards(anchor, args.beta, k) - rewards(engine, args.beta, k)).max() for k in keys)
    mb = lambda r: r["peak_growth"] / 2**20  # noqa: E731
    print(f"pairs={args.n} sequence_tokens_per_model_pass={tokens} anchor_batch={args.batch_size} "
          f"engine_budget={args.token_budget or DEFAULT_CPU_BUDGET} torch_threads={engine['threads']}")
    head = f"{'method':34s} {'seconds':>8s} {'tokens/s':>9s} {'peak RSS +MiB':>12s}"
    if busy:
        head += f" | {busy} busy: {'seconds':>8s} {'tokens/s':>9s} {'slowdown':>8s}"
    print(head)
    for label, res in (("anchor: reference + policy", anchor), ("engine: reference + policy (cold)", engine),
                       ("engine: 2nd checkpoint, ref cached", second)):
        sec = seconds_of(res, "passes")
        line = f"{label:34s} {sec:8.1f} {2 * tokens / sec:9.0f} {mb(res):12.0f}"
        if busy:
            b_sec = seconds_of(res, "busy_passes")
            line += f" | {'':7s} {b_sec:8.1f} {2 * tokens / b_sec:9.0f} {b_sec / sec:7.2f}x"
        print(line)
    ratios = {k: seconds_of(anchor, k) / seconds_of(engine, k) for k in keys}
    line = f"speedup engine/anchor (cold): {ratios['passes']:.2f}x"
    if busy:
        line += f" quiet | {ratios['busy_passes']:.2f}x with {busy} busy core(s) ({args.busy_pin})"
    print(line)
    print(f"second checkpoint time / first: {seconds_of(second, 'passes') / seconds_of(engine, 'passes'):.2f}")
    print(f"max |reward difference| anchor vs engine: {diff:.2e} ({'OK' if diff <= 1e-3 else 'FAIL'})")
    if diff > 1e-3:
        sys.exit(1)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        json.dump(worker(args), sys.stdout)
        return
    from dpo_eval.models import identify_model

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    base = identify_model(args.model, cache_dir=work / "cache").resolved
    ckpt1 = make_checkpoint(base, work / "checkpoint-1", seed=1)
    ckpt2 = make_checkpoint(base, work / "checkpoint-2", seed=2)
    subprocess.run(["rm", "-rf", str(work / "engine_cache"), str(work / "engine_cache_busy")], check=True)
    anchor = run_worker(args, "anchor", [base, ckpt1])
    engine = run_worker(args, "engine", [base, ckpt1])
    second = run_worker(args, "engine-second", [ckpt2, base])
    report(args, anchor, engine, second)


if __name__ == "__main__":
    main()
