"""Score many pairs with one model: cached, batched to a token budget, data-parallel, resumable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from dpo_eval.engine.batching import plan_batches, shard_batches
from dpo_eval.engine.cache import CachedRow, LogpCache
from dpo_eval.engine.distributed import DistContext, all_gather_dicts, barrier
from dpo_eval.engine.logprobs import packed_logps
from dpo_eval.engine.packing import pack_rows
from dpo_eval.engine.threads import engine_threads
from dpo_eval.tokenization import TokenizedPair

FLUSH_SECONDS = 30.0


@dataclass(frozen=True)
class ScoredPairs:
    """The engine's output: summed response log-probs per pair, in input order. All arrays (n,).

    (Not train.losses.PairLogps, which holds the trainer's tensors.)"""

    chosen_logp: np.ndarray
    rejected_logp: np.ndarray
    chosen_tokens: np.ndarray
    rejected_tokens: np.ndarray
    n_computed: int = 0  # pairs this call computed (the rest came from the cache)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def compute_batch(model: torch.nn.Module, rows: Sequence[Sequence[TokenizedPair]],
                  pad_id: int, exclude_ids: torch.Tensor | None = None) -> list[CachedRow]:
    """Log-probs of the pairs in rows (one forward pass), as (chosen, rejected, n_chosen, n_rejected),
    in row order."""
    batch = pack_rows(rows, pad_id).to(_model_device(model))
    logps, counts = packed_logps(model, batch, exclude_ids)
    logps, counts = logps.double().cpu().numpy(), counts.cpu().numpy()
    return [(float(lp[0]), float(lp[1]), int(c[0]), int(c[1])) for lp, c in zip(logps, counts)]


def compute_pair_logps(model: torch.nn.Module, pairs: Sequence[TokenizedPair], *, pad_id: int,
                       token_budget: int, ctx: DistContext = DistContext(),
                       on_rows: Callable[[dict[str, CachedRow]], None] | None = None,
                       desc: str = "scoring", show_progress: bool = True,
                       exclude_ids: torch.Tensor | None = None,
                       compute: Callable[..., list[CachedRow]] = compute_batch) -> dict[str, CachedRow]:
    """Compute every given pair (keyed by content key); this rank does its share of batches.

    on_rows receives finished rows in groups (at most every FLUSH_SECONDS) for caching.
    compute(model, rows, pad_id, exclude_ids) makes one batch's rows (default: log-probs and counts).
    Returns the rows of all ranks merged.
    """
    batches = shard_batches(plan_batches([p.packed_length for p in pairs], token_budget), ctx.rank,
                            ctx.world_size)
    total = sum(pairs[i].packed_length for batch in batches for row in batch for i in row)
    done: dict[str, CachedRow] = {}
    pending: dict[str, CachedRow] = {}
    last_flush = time.monotonic()
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc=desc, file=sys.stderr,
               disable=not (show_progress and ctx.is_main) or total == 0, dynamic_ncols=True)
    for batch in batches:
        rows = [[pairs[i] for i in row] for row in batch]
        flat = [pair for row in rows for pair in row]
        for pair, result in zip(flat, compute(model, rows, pad_id, exclude_ids)):
            pending[pair.content_key()] = result
        bar.update(sum(p.packed_length for p in flat))
        if on_rows and time.monotonic() - last_flush > FLUSH_SECONDS:
            on_rows(pending)
            done.update(pending)
            pending, last_flush = {}, time.monotonic()
    bar.close()
    if on_rows:
        on_rows(pending)
    done.update(pending)
    return all_gather_dicts(done, ctx)


def score_with_cache(load_model: Callable[[], torch.nn.Module], pairs: Sequence[TokenizedPair],
                     cache: LogpCache | None, *, pad_id: int, token_budget: int,
                     ctx: DistContext = DistContext(), desc: str = "scoring",
                     show_progress: bool = True, exclude_ids: torch.Tensor | None = None) -> ScoredPairs:
    """Pair log-probs for one model, computing only what the cache lacks.

    load_model is called only when something must be computed, so a fully cached
    reference model is never loaded. With exclude_ids, the cache's numerics tag must say so.
    """
    stored = cache.load(may_compact=ctx.is_main) if cache else {}  # compaction is safe beside readers
    barrier(ctx)  # every rank reads the same cache state before any rank writes to it
    keys = [p.content_key() for p in pairs]
    missing, seen = [], set()
    for pair, key in zip(pairs, keys):
        if key not in stored and key not in seen:
            missing.append(pair)
            seen.add(key)
    if missing:
        model = load_model()
        engine_threads(_model_device(model))  # one thread per idle core on a shared CPU (engine/threads.py)
        stored.update(compute_pair_logps(model, missing, pad_id=pad_id, token_budget=token_budget, ctx=ctx,
                                         on_rows=cache.append if cache else None, desc=desc,
                                         show_progress=show_progress, exclude_ids=exclude_ids))
    rows = np.array([stored[k] for k in keys], dtype=np.float64).reshape(-1, 4)
    return ScoredPairs(rows[:, 0], rows[:, 1], rows[:, 2].astype(np.int64), rows[:, 3].astype(np.int64),
                     n_computed=len(missing))
