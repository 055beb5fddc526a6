"""Shared-prefix packing: a pair is laid out as [prompt | chosen | rejected]; rows hold several pairs.

The prompt is processed once for both responses. A 4D attention mask keeps the rejected
response from seeing the chosen one, and position ids restart the rejected response right
after the prompt, so each response sees exactly the context it would see alone. On CUDA the same
mask runs as a FlexAttention BlockMask instead of a (B, 1, L, L) tensor (``dpo_eval.engine.flex``).

Pairs in the same row never see each other (block-diagonal mask). Layout of one pair starting
at offset 0, and what each response token is predicted from (P, C, R = lengths)::

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
    """Tensors for one forward pass: B rows of padded length L holding n pairs.

    input_ids, position_ids: (B, L) int64.
    segments: (B, L) int64, PROMPT/CHOSEN/REJECTED/PAD per position.
    pair_slots: (B, L) int64, which pair of the batch each position belongs to (-1 for padding).
    source_index: (N,) flat indices into (B*L) of the hidden states that predict each response token.
    target_ids: (N,) the response tokens.
    owner: (N,) which sequence each token belongs to: 2*pair (chosen) or 2*pair + 1 (rejected),
        pairs numbered in the order the rows list them.
    n_pairs: pairs in the batch.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    pair_slots: torch.Tensor
    source_index: torch.Tensor
    target_ids: torch.Tensor
    owner: torch.Tensor
    n_pairs: int

    def to(self, device: torch.device) -> PackedBatch:
        tensors = (self.input_ids, self.position_ids, self.segments, self.pair_slots, self.source_index,
                   self.target_ids, self.owner)
        return PackedBatch(*(t.to(device, non_blocking=True) for t in tensors), n_pairs=self.n_pairs)


def _place(pair: TokenizedPair, slot: int, start: int, row: int, width: int, tensors: dict) -> tuple:
    """Write one pair at row[start:], return its (sources, targets, owners) index lists."""
    p, c, r = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
    end = start + p + c + r
    tensors["input_ids"][row, start:end] = torch.tensor(pair.prompt_ids + pair.chosen_ids + pair.rejected_ids)
    tensors["position_ids"][row, start: start + p + c] = torch.arange(p + c)
    tensors["position_ids"][row, start + p + c: end] = torch.arange(p, p + r)
    seg = tensors["segments"][row]
    seg[start: start + p], seg[start + p: start + p + c], seg[start + p + c: end] = PROMPT, CHOSEN, REJECTED
    tensors["pair_slots"][row, start:end] = slot
    base = row * width + start
    sources = [base + p + k - 1 for k in range(c)]
    if r:  # a single sequence (r = 0) is a pair without a rejected response
        sources += [base + p - 1] + [base + p + c + k - 1 for k in range(1, r)]
    return sources, list(pair.chosen_ids) + list(pair.rejected_ids), [2 * slot] * c + [2 * slot + 1] * r


def pack_rows(rows: Sequence[Sequence[TokenizedPair]], pad_id: int) -> PackedBatch:
    """Pack pairs back to back in rows, right-padded to the longest row."""
    width = max(sum(p.packed_length for p in row) for row in rows)
    shape = (len(rows), width)
    tensors = {"input_ids": torch.full(shape, pad_id, dtype=torch.long),
               "position_ids": torch.zeros(shape, dtype=torch.long),
               "segments": torch.full(shape, PAD, dtype=torch.long),
               "pair_slots": torch.full(shape, -1, dtype=torch.long)}
    sources: list[int] = []
    targets: list[int] = []
    owners: list[int] = []
    slot = 0
    for row_index, row in enumerate(rows):
        start = 0
        for pair in row:
            s, t, o = _place(pair, slot, start, row_index, width, tensors)
            sources.extend(s)
            targets.extend(t)
            owners.extend(o)
            start += pair.packed_length
            slot += 1
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return PackedBatch(**tensors, source_index=as_long(sources), target_ids=as_long(targets),
                       owner=as_long(owners), n_pairs=slot)


def pack_pairs(pairs: Sequence[TokenizedPair], pad_id: int) -> PackedBatch:
    """One pair per row (the simplest layout)."""
    return pack_rows([[p] for p in pairs], pad_id)


def attention_mask_4d(segments: torch.Tensor, pair_slots: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, L, L): 0 where query i may attend key j, the dtype's minimum elsewhere.

    Allowed: causal (j <= i), same pair, key not padding (a padding query sees itself so no
    row is empty), and a rejected query never sees a chosen key.
    """
    length = segments.shape[1]
    idx = torch.arange(length, device=segments.device)
    causal = idx[None, :, None] >= idx[None, None, :]
    query, key = segments[:, :, None], segments[:, None, :]
    same_pair = pair_slots[:, :, None] == pair_slots[:, None, :]
    allowed = causal & same_pair & (key != PAD) & ~((query == REJECTED) & (key == CHOSEN))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]
