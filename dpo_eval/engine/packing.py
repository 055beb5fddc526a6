"""Shared-prefix packing: one row holds [prompt | chosen | rejected] of a pair.

The prompt is processed once for both responses. A 4D attention mask keeps the rejected
response from seeing the chosen one, and position ids restart the rejected response right
after the prompt, so each response sees exactly the context it would see alone.

Row layout and what each response token is predicted from (P, C, R = lengths)::

    positions   0 .. P-1 | P .. P+C-1 | P+C .. P+C+R-1 | pad
    position id 0 .. P-1 | P .. P+C-1 | P   .. P+R-1   | 0
    chosen  token k: target at P+k,   source hidden state at P+k-1
    rejected token k: target at P+C+k, source at P-1 (k = 0) or P+C+k-1 (k > 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dpo_eval.tokenization import TokenizedPair

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


@dataclass
class PackedBatch:
    """Tensors for one forward pass over B packed pairs of padded length L.

    input_ids, position_ids: (B, L) int64.
    segments: (B, L) int64, PROMPT/CHOSEN/REJECTED/PAD per position.
    source_index: (N,) flat indices into (B*L) of the hidden states that predict each response token.
    target_ids: (N,) the response tokens.
    owner: (N,) which sequence each token belongs to: 2*row (chosen) or 2*row + 1 (rejected).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    source_index: torch.Tensor
    target_ids: torch.Tensor
    owner: torch.Tensor

    @property
    def n_rows(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(*(t.to(device, non_blocking=True) for t in (
            self.input_ids, self.position_ids, self.segments, self.source_index, self.target_ids, self.owner)))


def _row_indices(pair: TokenizedPair, row: int, width: int) -> tuple[list[int], list[int], list[int]]:
    p, c, r = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
    base = row * width
    sources = [base + p + k - 1 for k in range(c)]
    sources += [base + p - 1] + [base + p + c + k - 1 for k in range(1, r)]
    targets = list(pair.chosen_ids) + list(pair.rejected_ids)
    owners = [2 * row] * c + [2 * row + 1] * r
    return sources, targets, owners


def pack_pairs(pairs: Sequence[TokenizedPair], pad_id: int) -> PackedBatch:
    """Pack pairs one per row, right-padded to the longest row."""
    width = max(p.packed_length for p in pairs)
    n = len(pairs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    segments = torch.full((n, width), PAD, dtype=torch.long)
    sources: list[int] = []
    targets: list[int] = []
    owners: list[int] = []
    for row, pair in enumerate(pairs):
        p, c, r = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
        ids = pair.prompt_ids + pair.chosen_ids + pair.rejected_ids
        input_ids[row, : p + c + r] = torch.tensor(ids, dtype=torch.long)
        position_ids[row, : p + c] = torch.arange(p + c)
        position_ids[row, p + c: p + c + r] = torch.arange(p, p + r)
        segments[row, :p], segments[row, p: p + c], segments[row, p + c: p + c + r] = PROMPT, CHOSEN, REJECTED
        s, t, o = _row_indices(pair, row, width)
        sources += s
        targets += t
        owners += o
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return PackedBatch(input_ids, position_ids, segments, as_long(sources), as_long(targets), as_long(owners))


def attention_mask_4d(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, L, L): 0 where query i may attend key j, the dtype's minimum elsewhere.

    Allowed: causal (j <= i), key not padding (a padding query sees itself so no row is empty),
    and a rejected query never sees a chosen key.
    """
    length = segments.shape[1]
    idx = torch.arange(length, device=segments.device)
    causal = idx[None, :, None] >= idx[None, None, :]
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & (key != PAD) & ~((query == REJECTED) & (key == CHOSEN))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]
