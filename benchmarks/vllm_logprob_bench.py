"""Sequence log-probs through the engine vs through vLLM (``--logprob-backend vllm``), side by side.

    python benchmarks/vllm_logprob_bench.py                                   # SmolLM2-135M, 64 sequences
    python benchmarks/vllm_logprob_bench.py --sequences 4 --prompt-len 8 --response-len 8   # a smoke run
    python benchmarks/vllm_logprob_bench.py --vllm-arg=--tensor-parallel-size=2 --dtype bf16   # on GPUs

Same model, same (prompt ids, response ids) sequences (random ids: speed does not depend on them), no
cache: the engine (``dpo_eval.engine.multi.compute_groups``, prompt keys and values reused) and a vLLM
server started as ``--logprob-backend vllm`` starts it (``dpo_eval.vllm_server``; its start-up is timed
apart and left out of its rate), each after one warm-up request. Printed: sequences/s of each, the ratio
vllm/engine, and the largest per-sequence log-prob difference (they must agree, to ~1e-3 nats in
float32). No timing is asserted anywhere; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a model path or alias (a full model vLLM can serve)")
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--response-len", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="fp32", help="the engine's dtype; vLLM gets --dtype of the same name")
    ap.add_argument("--vllm-python", default=None, help="default: .venv-vllm/bin/python")
    ap.add_argument("--vllm-arg", dest="vllm_args", action="append", default=[],
                    help="passed to vLLM unchanged (repeatable)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if min(args.sequences, args.prompt_len, args.response_len) < 1:
        ap.error("--sequences, --prompt-len and --response-len must be at least 1")
    return args


def make_sequences(args, vocab_size: int) -> list[tuple[tuple, tuple]]:
    rng = random.Random(0)
    draw = lambda n: tuple(rng.randrange(vocab_size) for _ in range(n))  # noqa: E731
    return [(draw(args.prompt_len), draw(args.response_len)) for _ in range(args.sequences)]


def time_engine(model, sequences, device) -> tuple[float, list[float]]:
    from dpo_eval.engine.batching import default_token_budget
    from dpo_eval.engine.multi import ResponseGroup, compute_groups

    groups = [ResponseGroup(p, (r,)) for p, r in sequences]
    budget = default_token_budget(device)
    compute_groups(model, groups[:1], pad_id=0, token_budget=budget, show_progress=False)  # warm-up
    start = time.perf_counter()
    rows = compute_groups(model, groups, pad_id=0, token_budget=budget, show_progress=False)
    return time.perf_counter() - start, [group[0][0] for group in rows]


def time_vllm(model_dir: str, sequences, args) -> tuple[float, float, list[float]]:
    from dpo_eval.engine.vllm_backend import compute_vllm_rows
    from dpo_eval.vllm_server import vllm_server

    vllm_dtype = {"fp32": "float32", "bf16": "bfloat16"}.get(args.dtype, args.dtype)
    extra = [f"--dtype={vllm_dtype}", *args.vllm_args]
    start = time.perf_counter()
    with vllm_server(model_dir, "model", args.vllm_python, extra) as url:
        started = time.perf_counter() - start
        compute_vllm_rows(url, "model", sequences[:1], show_progress=False)  # warm-up
        start = time.perf_counter()
        rows = compute_vllm_rows(url, "model", sequences, show_progress=False)
        seconds = time.perf_counter() - start
    return started, seconds, [row[0] for row in rows]


def main(argv=None) -> dict:
    from dpo_eval.engine.cache import resolve_cache_dir
    from dpo_eval.models import identify_model, load_model, resolve_device, resolve_dtype

    args = parse_args(argv)
    device = resolve_device(args.device)
    identity = identify_model(args.model, cache_dir=resolve_cache_dir(None))
    model = load_model(args.model, device=device, dtype=resolve_dtype(args.dtype, device),
                       cache_dir=resolve_cache_dir(None)).model
    sequences = make_sequences(args, model.config.vocab_size)
    engine_s, engine_logps = time_engine(model, sequences, device)
    del model
    start_s, vllm_s, vllm_logps = time_vllm(identity.resolved, sequences, args)
    n = len(sequences)
    figures = {"device": str(device), "sequences": n, "prompt_len": args.prompt_len, "response_len": args.response_len,
               "engine_seq_per_s": n / engine_s, "vllm_seq_per_s": n / vllm_s, "vllm_start_s": start_s,
               "ratio_vllm_over_engine": engine_s / vllm_s,
               "max_abs_logp_diff": max(abs(a - b) for a, b in zip(engine_logps, vllm_logps))}
    print(f"{'backend':8} {'seq/s':>10}\n{'engine':8} {figures['engine_seq_per_s']:10.2f}\n"
          f"{'vllm':8} {figures['vllm_seq_per_s']:10.2f}   (start-up {start_s:.0f} s, not counted)\n"
          f"ratio vllm/engine: {figures['ratio_vllm_over_engine']:.2f}x; "
          f"largest log-prob difference {figures['max_abs_logp_diff']:.2e} nats")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
