"""Reranking speed: N candidates packed with their prompt once vs each candidate as its own sequence.

    python benchmarks/rerank_bench.py                       # SmolLM2-135M, N = 8, prompts as long as responses
    python benchmarks/rerank_bench.py --model tiny --prompts 2 --prompt-len 8 --response-len 8   # a smoke run

Same model, machine and token budget (``dpo_eval.engine.multi.compute_groups``), one timed run of
each after a warm-up:
- "reranker": what ``dpo-eval rerank`` does, each prompt run once and its keys and values reused by
  its N candidates (``dpo_eval.engine.prefix``);
- "separate" (the baseline): every [prompt | candidate] as its own sequence, so the prompt runs N times;
- "masked" (with --masked): the earlier layout, one row [prompt | y1 | ... | yN] under a 4D mask.
Token ids are random (speed does not depend on them). Printed: candidates/s of each, the ratio
reranker/separate, the token ratio N (P + L) / (P + N (L - 1)) (what reuse alone can save: the speed-up
cannot pass it by much, as every candidate token still runs through every layer), and the largest
log-prob difference from the baseline (they must agree). No timing is asserted anywhere; run it on a
quiet machine.
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
from dpo_eval.engine.prefix import supports_prefix_cache  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a model path or alias, or 'tiny' (a random 2-layer Llama)")
    ap.add_argument("--n", type=int, default=8, help="candidates per prompt")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--response-len", type=int, default=256)
    ap.add_argument("--token-budget", type=int, default=None, help="default: the engine's for the device")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--masked", action="store_true", help="also time the 4D-mask layout of whole groups")
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


def timed(model, groups, budget: int, reuse: bool) -> tuple[float, list[float]]:
    device = next(model.parameters()).device
    run = lambda gs: compute_groups(model, gs, pad_id=0, token_budget=budget, show_progress=False,  # noqa: E731
                                    reuse_prompt_cache=reuse)
    run(groups[:1])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    rows = run(groups)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, [r[0] for group in rows for r in group]


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = load(args)
    device = next(model.parameters()).device
    budget = args.token_budget or default_token_budget(device)
    if not supports_prefix_cache(model):
        raise SystemExit(f"{type(model).__name__} cannot reuse a prompt cache; the reranker would use the 4D mask")
    grouped = make_groups(args, model.config.vocab_size)
    separate = [ResponseGroup(g.prompt_ids, (r,)) for g in grouped for r in g.responses]
    t_separate, lp_separate = timed(model, separate, budget, reuse=False)
    t_reranker, lp_reranker = timed(model, grouped, budget, reuse=True)
    n, p, length = len(separate), args.prompt_len, args.response_len
    report = {"device": str(device), "model": args.model, "n": args.n, "prompts": args.prompts,
              "prompt_len": p, "response_len": length, "token_budget": budget,
              "reranker_candidates_per_s": n / t_reranker, "separate_candidates_per_s": n / t_separate,
              "ratio": t_separate / t_reranker,
              "token_ratio": args.n * (p + length) / (p + args.n * (length - 1)),
              "max_abs_logp_diff": max(abs(a - b) for a, b in zip(lp_reranker, lp_separate))}
    if args.masked:
        t_masked, lp_masked = timed(model, grouped, budget, reuse=False)
        report |= {"masked_candidates_per_s": n / t_masked, "masked_ratio": t_separate / t_masked,
                   "masked_max_abs_logp_diff": max(abs(a - b) for a, b in zip(lp_masked, lp_separate))}
    print(json.dumps(report))
    print(f"reranker {report['reranker_candidates_per_s']:.2f} cand/s, separate "
          f"{report['separate_candidates_per_s']:.2f} cand/s: ratio {report['ratio']:.2f}x (token ratio "
          f"{report['token_ratio']:.2f}x; N={args.n}, prompt {p}, response {length}, budget {budget})", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
