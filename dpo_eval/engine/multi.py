"""N responses to one prompt in one pass: shared-prefix packing generalised from a pair to N.

A group is laid out as [prompt | y1 | y2 | ... | yN]; rows hold several groups back to back.
The prompt is processed once for all N responses. A 4D attention mask lets each response see the
prompt and itself only, and position ids restart every response right after the prompt, so each
response sees exactly the context it would see alone (``dpo_eval.engine.packing`` is the N = 2
case, kept there for the pair engine). Layout of one group at offset 0 (P prompt tokens, L_k the
length of response k, O_k = P + L_1 + ... + L_{k-1} its offset)::

    positions      0 .. P-1 | O_1 .. O_1+L_1-1 | ... | O_N .. O_N+L_N-1 | pad
    position id    0 .. P-1 | P   .. P+L_1-1   | ... | P   .. P+L_N-1   | 0
    segment        0        | 1                | ... | N                | -1
    response k, token j: target at O_k + j, source hidden state at P-1 (j = 0) or O_k + j - 1 (j > 0)
    query in segment k >= 1 may attend: keys of segment 0 and of segment k, causally, same group

``compute_groups`` uses this layout only where a model cannot reuse a prompt cache: elsewhere the
prompt's keys and values are computed once and each response runs as its own row after them
(``dpo_eval.engine.prefix``), so no response attends over the other responses' positions. The
listwise trainer keeps this layout, as it needs gradients through one pass.

Besides the summed log-prob of each response, the engine returns the sum of squared per-token
log-probs, so ``-sqrt(sum of squares) = -||per-token log-probs||_2`` (RewardBench's "norm"
reference-free score) comes from the same pass. Results per sequence are cached on disk in a
directory of their own (``sequence_cache``), keyed by ``TokenizedPair(prompt, response, ()).content_key()``.

Under torchrun (``score_sequences(..., ctx=...)``) every rank plans the batches one process would make
and computes every world_size-th (``compute_groups_sharded``); the ranks' rows are all-gathered, so
every rank holds every sequence's statistics, bit for bit those of one process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from dpo_eval.engine.batching import plan_batches, shard_batches
from dpo_eval.engine.cache import LogpCache, numerics_tag
from dpo_eval.engine.distributed import DistContext, all_gather_dicts, barrier
from dpo_eval.engine.flex import packed_last_hidden
from dpo_eval.engine.logprobs import _decoder_and_head, _mask_dtype, output_head, token_logps
from dpo_eval.engine.prefix import group_batch_stats, plan_prompt_batches, supports_prefix_cache
from dpo_eval.tokenization import TokenizedPair

PROMPT_SEGMENT, PAD_SEGMENT = 0, -1
SEQUENCE_STATS_TAG = "seqstats"  # cache rows: (sum, sum of squares, tokens, 0)


@dataclass(frozen=True)
class ResponseGroup:
    """One prompt and the N >= 1 non-empty responses scored against it."""

    prompt_ids: tuple[int, ...]
    responses: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("a group needs at least one prompt token (the first response token's context)")
        if not self.responses or any(len(r) == 0 for r in self.responses):
            raise ValueError("a group needs at least one response, each with at least one token")

    @property
    def packed_length(self) -> int:
        return len(self.prompt_ids) + sum(len(r) for r in self.responses)


@dataclass
class GroupBatch:
    """Tensors for one forward pass: B rows of padded length L holding groups.

    input_ids, position_ids, segments, group_slots: (B, L) int64; segments as in the module table,
        group_slots the group each position belongs to (-1 for padding).
    source_index: (T,) flat indices into (B*L) of the hidden states predicting each response token.
    target_ids: (T,) the response tokens. owner: (T,) the sequence (group-major, response-minor) of each.
    n_sequences: responses in the batch.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    group_slots: torch.Tensor
    source_index: torch.Tensor
    target_ids: torch.Tensor
    owner: torch.Tensor
    n_sequences: int

    def to(self, device: torch.device) -> GroupBatch:
        tensors = (self.input_ids, self.position_ids, self.segments, self.group_slots, self.source_index,
                   self.target_ids, self.owner)
        return GroupBatch(*(t.to(device, non_blocking=True) for t in tensors), n_sequences=self.n_sequences)


def _place(group: ResponseGroup, slot: int, first_seq: int, start: int, row: int, width: int,
           t: dict, out: tuple[list, list, list]) -> None:
    """Write one group at row[start:] and append its (sources, targets, owners)."""
    p = len(group.prompt_ids)
    ids = list(group.prompt_ids) + [tok for r in group.responses for tok in r]
    t["input_ids"][row, start: start + len(ids)] = torch.tensor(ids)
    t["position_ids"][row, start: start + p] = torch.arange(p)
    t["segments"][row, start: start + p] = PROMPT_SEGMENT
    t["group_slots"][row, start: start + len(ids)] = slot
    base, offset = row * width + start, start + p
    sources, targets, owners = out
    for k, response in enumerate(group.responses):
        n = len(response)
        t["position_ids"][row, offset: offset + n] = torch.arange(p, p + n)
        t["segments"][row, offset: offset + n] = k + 1
        sources.extend([base + p - 1] + [row * width + offset + j - 1 for j in range(1, n)])
        targets.extend(response)
        owners.extend([first_seq + k] * n)
        offset += n


def pack_groups(rows: Sequence[Sequence[ResponseGroup]], pad_id: int) -> GroupBatch:
    """Pack groups back to back in rows, right-padded to the longest row."""
    width = max(sum(g.packed_length for g in row) for row in rows)
    shape = (len(rows), width)
    t = {"input_ids": torch.full(shape, pad_id, dtype=torch.long),
         "position_ids": torch.zeros(shape, dtype=torch.long),
         "segments": torch.full(shape, PAD_SEGMENT, dtype=torch.long),
         "group_slots": torch.full(shape, -1, dtype=torch.long)}
    out: tuple[list, list, list] = ([], [], [])
    slot = n_seq = 0
    for row_index, row in enumerate(rows):
        start = 0
        for group in row:
            _place(group, slot, n_seq, start, row_index, width, t, out)
            start += group.packed_length
            slot += 1
            n_seq += len(group.responses)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return GroupBatch(**t, source_index=as_long(out[0]), target_ids=as_long(out[1]), owner=as_long(out[2]),
                      n_sequences=n_seq)


def group_attention_mask(segments: torch.Tensor, group_slots: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, L, L): 0 where query i may attend key j, the dtype's minimum elsewhere.

    Allowed: causal (j <= i), same group, key not padding, and the key is a prompt token or in the
    query's own segment (a response never sees another response). A padding query sees itself.
    """
    length = segments.shape[1]
    idx = torch.arange(length, device=segments.device)
    causal = idx[None, :, None] >= idx[None, None, :]
    query, key = segments[:, :, None], segments[:, None, :]
    same_group = group_slots[:, :, None] == group_slots[:, None, :]
    allowed = causal & same_group & (key != PAD_SEGMENT) & ((key == PROMPT_SEGMENT) | (key == query))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def sequence_stats(model: torch.nn.Module, batch: GroupBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sums, sums of squares, token counts), each (n_sequences,), of per-token response log-probs.

    The vocabulary projection runs on response positions only, in chunks (``token_logps``); attention
    runs on a FlexAttention BlockMask where the model and device take it (``dpo_eval.engine.flex``).
    """
    decoder, _ = _decoder_and_head(model)
    head, transform = output_head(model)
    hidden = packed_last_hidden(
        model, decoder, batch.input_ids, batch.position_ids, batch.segments, batch.group_slots,
        prompt=PROMPT_SEGMENT, pad=PAD_SEGMENT,
        dense_mask=lambda: group_attention_mask(batch.segments, batch.group_slots,
                                                _mask_dtype(model, batch.input_ids.device)),
    ).index_select(0, batch.source_index)
    per_token = token_logps(hidden, batch.target_ids, head, transform, head.weight.shape[0])
    zeros = torch.zeros(batch.n_sequences, dtype=torch.float32, device=per_token.device)
    sums = zeros.index_add(0, batch.owner, per_token)
    squares = zeros.index_add(0, batch.owner, per_token * per_token)
    return sums, squares, torch.bincount(batch.owner, minlength=batch.n_sequences)


SeqRow = tuple[float, float, int, int]  # sum, sum of squares, tokens, 0 (the cache's 4-column layout)


@torch.inference_mode()
def compute_groups(model: torch.nn.Module, groups: Sequence[ResponseGroup], *, pad_id: int, token_budget: int,
                   desc: str = "scoring", show_progress: bool = True, reuse_prompt_cache: bool | None = None
                   ) -> list[list[SeqRow]]:
    """Per group, per response: (sum, sum of squares, tokens, 0), batched to a token budget.

    reuse_prompt_cache: run each prompt once and reuse its keys and values for every response
    (``dpo_eval.engine.prefix``); None = wherever the model supports it, else the 4D-mask packing.
    """
    if reuse_prompt_cache is None:
        reuse_prompt_cache = supports_prefix_cache(model)
    results: list[list[SeqRow]] = [[] for _ in groups]
    bar = tqdm(total=sum(g.packed_length for g in groups), unit="tok", unit_scale=True, desc=desc,
               file=sys.stderr, disable=not show_progress or not groups, dynamic_ncols=True)
    if reuse_prompt_cache:
        for batch in plan_prompt_batches(groups, token_budget):
            for i, rows in zip(batch, group_batch_stats(model, [groups[i] for i in batch], pad_id, token_budget)):
                results[i] = rows
            bar.update(sum(groups[i].packed_length for i in batch))
    else:
        _compute_packed(model, groups, pad_id, token_budget, results, bar)
    bar.close()
    return results


def _compute_packed(model, groups: Sequence[ResponseGroup], pad_id: int, token_budget: int,
                    results: list[list[SeqRow]], bar) -> None:
    """The 4D-mask path: groups laid out as [prompt | y1 .. yN] rows, results filled in place."""
    device = next(model.parameters()).device
    for batch in plan_batches([g.packed_length for g in groups], token_budget):
        order = [i for row in batch for i in row]
        packed = pack_groups([[groups[i] for i in row] for row in batch], pad_id).to(device)
        sums, squares, counts = (x.double().cpu().numpy() for x in sequence_stats(model, packed))
        seq = 0
        for i in order:
            for _ in groups[i].responses:
                results[i].append((float(sums[seq]), float(squares[seq]), int(counts[seq]), 0))
                seq += 1
        bar.update(sum(groups[i].packed_length for i in order))


def split_group(prompt: tuple[int, ...], responses: Sequence[tuple[int, ...]], token_budget: int) -> list[ResponseGroup]:
    """Groups of consecutive responses sharing the prompt, each within token_budget where it can be
    (a response too long for the budget with its prompt gets a group of its own)."""
    groups, current, length = [], [], len(prompt)
    for response in responses:
        if current and length + len(response) > token_budget:
            groups.append(ResponseGroup(prompt, tuple(current)))
            current, length = [], len(prompt)
        current.append(response)
        length += len(response)
    if current:
        groups.append(ResponseGroup(prompt, tuple(current)))
    return groups


def sequence_key(prompt: Sequence[int], response: Sequence[int]) -> str:
    """Cache key of one (prompt, response) sequence."""
    return TokenizedPair("", "", tuple(prompt), tuple(response), ()).content_key()


def sequence_cache(root, fingerprint: str, device: torch.device, dtype: torch.dtype,
                   writer_tag: str = "0") -> LogpCache:
    """The per-sequence statistics cache of one model (a directory apart from the pair cache).

    writer_tag names the writer in its shards' file names (the rank under torchrun)."""
    return LogpCache(root, fingerprint, f"{numerics_tag(device, dtype)}-{SEQUENCE_STATS_TAG}", writer_tag=writer_tag)


def planned_batches(groups: Sequence[ResponseGroup], token_budget: int, reuse_prompt_cache: bool) -> list[list[int]]:
    """Group indices (ascending) of each batch one ``compute_groups`` call over all groups makes, in plan order."""
    if reuse_prompt_cache:
        batches = plan_prompt_batches(groups, token_budget)
    else:
        batches = [[i for row in batch for i in row] for batch in plan_batches([g.packed_length for g in groups],
                                                                                token_budget)]
    return [sorted(batch) for batch in batches]


def compute_groups_sharded(model: torch.nn.Module, groups: Sequence[ResponseGroup], *, pad_id: int,
                           token_budget: int, ctx: DistContext = DistContext(), desc: str = "scoring",
                           show_progress: bool = True) -> dict[int, list[SeqRow]]:
    """This rank's share of ``compute_groups`` over all groups: {group index: its rows}.

    The rank takes every world_size-th planned batch (``shard_batches``) and computes each with one
    ``compute_groups`` call on exactly that batch's groups, in ascending index order. Both planners make
    that batch again from it (``plan_prompt_batches``: a stable sort by prompt length and bounds that
    hold for every part of a batch that met them; ``plan_batches``: best fit, longest first, ties by
    index, which picks the same items from a batch as from the superset it was taken from), so each
    sequence is computed in the batch one process computes it in: the same numbers, bit for bit.
    """
    reuse = supports_prefix_cache(model)
    mine = shard_batches(planned_batches(groups, token_budget, reuse), ctx.rank, ctx.world_size)
    bar = tqdm(total=sum(groups[i].packed_length for batch in mine for i in batch), unit="tok", unit_scale=True,
               desc=desc, file=sys.stderr, disable=not (show_progress and ctx.is_main) or not mine,
               dynamic_ncols=True)
    part: dict[int, list[SeqRow]] = {}
    for batch in mine:
        batch_groups = [groups[i] for i in batch]
        rows = compute_groups(model, batch_groups, pad_id=pad_id, token_budget=token_budget, show_progress=False,
                              reuse_prompt_cache=reuse)
        part.update(zip(batch, rows))
        bar.update(sum(g.packed_length for g in batch_groups))
    bar.close()
    return part


@dataclass(frozen=True)
class SequenceStats:
    """Per (prompt, response) sequence, in input order: arrays (n,)."""

    logp_sum: np.ndarray
    logp_sumsq: np.ndarray
    tokens: np.ndarray
    n_computed: int = 0  # sequences computed by this call, over all ranks (the rest came from the cache)


def _groups(model: torch.nn.Module, by_prompt: dict[tuple, list[tuple]], token_budget: int) -> list[ResponseGroup]:
    if supports_prefix_cache(model):  # one group per prompt: its responses are chunked to the budget
        return [ResponseGroup(prompt, tuple(responses)) for prompt, responses in by_prompt.items()]
    # a packed row holds the whole group: split it to the budget
    return [g for prompt, responses in by_prompt.items() for g in split_group(prompt, responses, token_budget)]


def score_sequences(load_model: Callable[[], torch.nn.Module], sequences: Sequence[tuple[tuple, tuple]],
                    cache: LogpCache | None, *, pad_id: int, token_budget: int, desc: str = "scoring",
                    show_progress: bool = True, ctx: DistContext = DistContext()) -> SequenceStats:
    """Statistics of every (prompt_ids, response_ids) sequence, computing only what the cache lacks.

    Missing sequences are grouped by identical prompt ids, so each prompt is processed once for all
    its responses; load_model is called only when something must be computed. Under torchrun every
    rank passes the same sequences and its ctx: each computes its share of the batches
    (``compute_groups_sharded``) and appends it to the cache (give the cache writer_tag=rank), and
    every rank returns every sequence's statistics.
    """
    stored = cache.load(may_compact=ctx.is_main) if cache else {}
    barrier(ctx)  # every rank reads the same cache state before any rank writes to it
    keys = [sequence_key(p, r) for p, r in sequences]
    by_prompt: dict[tuple, list[tuple]] = {}
    seen: set[str] = set()
    for (prompt, response), key in zip(sequences, keys):
        if key not in stored and key not in seen:
            seen.add(key)
            by_prompt.setdefault(tuple(prompt), []).append(tuple(response))
    if by_prompt:
        model = load_model()
        groups = _groups(model, by_prompt, token_budget)
        part = compute_groups_sharded(model, groups, pad_id=pad_id, token_budget=token_budget, ctx=ctx, desc=desc,
                                      show_progress=show_progress)
        fresh = {sequence_key(groups[i].prompt_ids, r): row for i, group_rows in part.items()
                 for r, row in zip(groups[i].responses, group_rows)}
        if cache:
            cache.append(fresh)
        stored.update(all_gather_dicts(fresh, ctx))
    values = np.array([stored[k] for k in keys], dtype=np.float64).reshape(-1, 4)
    return SequenceStats(values[:, 0], values[:, 1], values[:, 2].astype(np.int64), n_computed=len(seen))
