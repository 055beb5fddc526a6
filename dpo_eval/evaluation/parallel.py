"""`dpo-eval report` under torchrun: which rank computes what, and how the ranks stay in step.

| phase    | under torchrun (N ranks)                                                          |
|----------|-----------------------------------------------------------------------------------|
| plan     | every rank resolves the inputs (no model loads); derived prompts: rank 0 writes   |
| score    | data-parallel: ``dpo_eval.score.score`` shards the pair batches (as `dpo-eval score`) |
| kl       | data-parallel: the token-budget batches of one pass, round-robin over the ranks   |
| entropy  | data-parallel, as kl                                                              |
| unseen   | data-parallel: ``score_with_cache`` with the ranks' context                       |
| samples  | rank 0 alone (the others wait): use ``--vllm``-style servers for sampling at scale |
| judge    | rank 0 alone                                                                      |
| assemble, results.json, render | rank 0 alone                                        |

Only rank 0 writes to the run store and the results folder; the other ranks compute their share and
hand it over (``all_gather``). Whether an artifact is already stored is rank 0's answer, broadcast, so
every rank takes the same branch. A rank waiting for an artifact that rank 0 makes alone polls for it
on disk instead of waiting in a collective, whose timeout (30 minutes by default) a long sampling pass
would exceed; OUT must therefore be on a filesystem every rank sees (one machine, or a shared one).

Batches: every rank plans the same batches over all items (``engine.batching.plan_batches``) and takes
every N-th (``shard_batches``), so each item is computed in the batch it would be in with one process:
results are those of a single process, not merely close to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from dpo_eval.engine.distributed import DistContext, all_gather_dicts

T = TypeVar("T")
POLL_SECONDS = 0.5


def agree(value: T, ctx: DistContext) -> T:
    """Rank 0's ``value`` on every rank (itself with one process)."""
    if not ctx.is_distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for(is_ready: Callable[[], bool], what: str, poll_s: float = POLL_SECONDS) -> None:
    """Sleep until ``is_ready()`` (rank 0 is making ``what``; torchrun ends this rank if rank 0 fails)."""
    del what  # named for the reader of a stack dump: what this rank was waiting for
    while not is_ready():
        time.sleep(poll_s)


def batch_groups(lengths: Sequence[int], token_budget: int, ctx: DistContext) -> list[list[int]]:
    """Item indices (ascending) of each token-budget batch this rank computes, in plan order."""
    from dpo_eval.engine.batching import plan_batches, shard_batches

    batches = shard_batches(plan_batches(list(lengths), token_budget), ctx.rank, ctx.world_size)
    return [sorted(i for row in batch for i in row) for batch in batches]


def compute_sharded(items: Sequence, lengths: Sequence[int], token_budget: int, ctx: DistContext,
                    compute: Callable[[list], list]) -> list:
    """``compute(items of one batch) -> one result per item`` over this rank's batches; every rank gets
    all results, in item order.

    ``compute`` must batch its items as a single call of the engine over them would: given exactly the
    items of one planned batch, the engine's planner makes that batch again (best fit is stable on a
    subset that filled one batch), so results equal a one-process pass.
    """
    part = {}
    for group in batch_groups(lengths, token_budget, ctx):
        part.update(zip(group, compute([items[i] for i in group])))
    merged = all_gather_dicts(part, ctx)
    return [merged[i] for i in range(len(items))]


def is_done(path: Path) -> Callable[[], bool]:
    return lambda: path.is_file()
