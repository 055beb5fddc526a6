"""Length-sorted batches filled to a token budget (padded tokens), not a fixed batch size."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_CPU_BUDGET = 4096
DEFAULT_CUDA_BUDGET = 32768


def default_token_budget(device: torch.device) -> int:
    """Padded tokens per forward pass: small on CPU (cache-friendly), large on accelerators."""
    return DEFAULT_CUDA_BUDGET if device.type == "cuda" else DEFAULT_CPU_BUDGET


def plan_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group item indices into batches whose padded size (rows x longest) fits the budget.

    Items are sorted longest first, so each batch's first item sets its width and padding is
    small. An item longer than the budget gets a batch of its own.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        if current and (len(current) + 1) * width > token_budget:
            batches.append(current)
            current = []
        if not current:
            width = lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    return batches


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """The batches one data-parallel rank computes (round-robin, so work is balanced)."""
    return batches[rank::world_size]
