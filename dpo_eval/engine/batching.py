"""Length-sorted batches filled to a token budget (padded tokens), not a fixed batch size.

Rows are packed with several short pairs where they fit, so almost no token is padding.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

DEFAULT_CPU_BUDGET = 1024  # measured: larger batches run slower on a 2-core CPU (cache misses)
DEFAULT_CUDA_BUDGET = 32768


def default_token_budget(device: torch.device) -> int:
    """Padded tokens per forward pass: small on CPU (cache-friendly), large on accelerators."""
    return DEFAULT_CUDA_BUDGET if device.type == "cuda" else DEFAULT_CPU_BUDGET


def _take_largest_fitting(sorted_lengths: list[int], sorted_items: list[int], room: int) -> int | None:
    """Remove and return the longest remaining item of length <= room (lists sorted ascending)."""
    pos = bisect.bisect_right(sorted_lengths, room)
    if pos == 0:
        return None
    sorted_lengths.pop(pos - 1)
    return sorted_items.pop(pos - 1)


def plan_batches(lengths: Sequence[int], token_budget: int) -> list[list[list[int]]]:
    """Group items into batches of rows; each row holds one or more whole items, back to back.

    A batch's width is its longest remaining item; it gets max(1, budget // width) rows, and
    each row is filled with the longest items that still fit (best fit, longest first), so
    short items fill the gaps long ones leave and padding is nearly zero. Returns
    batches -> rows -> item indices; an item longer than the budget gets a batch of its own.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], -i))
    sorted_lengths = [lengths[i] for i in order]
    batches: list[list[list[int]]] = []
    while order:
        width = sorted_lengths[-1]
        rows: list[list[int]] = []
        for _ in range(max(1, token_budget // max(width, 1))):
            row, room = [], width
            while (item := _take_largest_fitting(sorted_lengths, order, room)) is not None:
                row.append(item)
                room -= lengths[item]
            if not row:
                break
            rows.append(row)
        batches.append(rows)
    return batches


def shard_batches(batches: list, rank: int, world_size: int) -> list:
    """The batches one data-parallel rank computes (round-robin, so work is balanced)."""
    return batches[rank::world_size]
