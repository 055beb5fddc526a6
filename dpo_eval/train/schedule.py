"""Learning-rate schedules and the order in which pairs are visited: pure functions of the step."""

from __future__ import annotations

import math

import numpy as np


def learning_rate_at(step: int, *, base_lr: float, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """LR for optimizer step `step` (0-based): linear warmup over warmup_steps, then decay to 0.

    warmup: base_lr * (step + 1) / warmup_steps.
    cosine: base_lr * 0.5 * (1 + cos(pi * progress)); linear: base_lr * (1 - progress);
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps). constant: base_lr.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    raise ValueError(f"unknown schedule {schedule!r}")


def global_batches(n_items: int, global_batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch's global batches: a seeded permutation cut into full batches (the remainder is dropped)."""
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    return [order[i: i + global_batch] for i in range(0, n_items - global_batch + 1, global_batch)]


def micro_batch(batch: np.ndarray, rank: int, world_size: int, micro: int, micro_size: int) -> np.ndarray:
    """The items of accumulation step `micro` on `rank`: rank r owns a contiguous share of the batch."""
    share = len(batch) // world_size
    mine = batch[rank * share: (rank + 1) * share]
    return mine[micro * micro_size: (micro + 1) * micro_size]
