"""Reranking speed: N candidates packed with their prompt once vs each candidate as its own sequence.

    python benchmarks/rerank_bench.py                       # SmolLM2-135M, N = 8, prompts as long as responses
    python benchmarks/rerank_bench.py --model tiny --prompts 2 --prompt-len 8 --response-len 8   # a smoke run

Same model, machine, token budget and batching (``dpo_eval.engine.multi.compute_groups``), one
timed run of each after a warm-up: "packed" lays out [prompt | y1 | ... | yN] per prompt, "separate"
lays out [prompt | yi] for every candidate, so the prompt is processed N times. Token ids are random
(speed does not depend on them). Printed: candidates/s of each, the ratio packed/separate (the goal
is >= 3x at N = 8 with prompts as long as the responses), and the largest log-prob difference between
the two (they must agree). No timing is asserted anywhere; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpo_eval.engine.batching import default_token_budget  # noqa: E402
from dpo_eval.engine.multi import ResponseGroup, compute_groups  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a model path or alias, or 'tiny' (a random 2-layer Llama)")
    ap.add_argument("--n", type=int, default=8, help="candidates per prompt")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--response-len", type=int, default=256)
    ap.add_argument("--token-budget", type=int, default=None, help="default: the engine's for the device")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args(argv)
    if min(args.n, args.prompts, args.prompt_len, args.response_len) < 1:
        ap.error("--n, --prompts, --prompt-len and --response-len must be at least 1")
    return args


def load(args) -> torch.nn.Module:
    from dpo_eval.engine.cache import resolve_cache_dir
    from dpo_eval.models import load_model, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    if args.model == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        return LlamaForCausalLM(config).eval().to(device)
    return load_model(args.model, device=device, dtype=resolve_dtype(args.dtype, device),
                      cache_dir=resolve_cache_dir(None)).model


def make_groups(args, vocab: int) -> list[ResponseGroup]:
    rng = random.Random(0)
    ids = lambda k: tuple(rng.randrange(1, vocab) for _ in range(k))  # noqa: E731
    return [ResponseGroup(ids(args.prompt_len), tuple(ids(args.response_len) for _ in range(args.n)))
            for _ in range(args.prompts)]


def timed(model, groups, budget: int) -> tuple[float, list[float]]:
    device = next(model.parameters()).device
    compute_groups(model, groups[:1], pad_id=0, token_budget=budget, show_progress=False)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    rows = compute_groups(model, groups, pad_id=0, token_budget=budget, show_progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, [r[0] for group in rows for r in group]


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = load(args)
    device = next(model.parameters()).device
    budget = args.token_budget or default_token_budget(device)
    packed = make_groups(args, model.config.vocab_size)
    separate = [ResponseGroup(g.prompt_ids, (r,)) for g in packed for r in g.responses]
    t_packed, lp_packed = timed(model, packed, budget)
    t_separate, lp_separate = timed(model, separate, budget)
    n = len(separate)
    report = {"device": str(device), "model": args.model, "n": args.n, "prompts": args.prompts,
              "prompt_len": args.prompt_len, "response_len": args.response_len, "token_budget": budget,
              "packed_candidates_per_s": n / t_packed, "separate_candidates_per_s": n / t_separate,
              "ratio": t_separate / t_packed,
              "max_abs_logp_diff": max(abs(a - b) for a, b in zip(lp_packed, lp_separate))}
    print(json.dumps(report))
    print(f"packed {report['packed_candidates_per_s']:.1f} cand/s, separate {report['separate_candidates_per_s']:.1f} "
          f"cand/s, ratio {report['ratio']:.2f}x (N={args.n}, prompt {args.prompt_len}, response {args.response_len})",
          file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
