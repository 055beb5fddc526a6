"""KTO training data: unpaired (prompt, completion, label) examples and their KL companions.

KTO's reference point z0 is estimated from *mismatched* sequences: prompt i with the completion
of another item of the same micro-batch (Ethayarajh et al. 2024; TRL does likewise). We pack
each example as a pair [prompt_i | completion_i | completion_j]: the engine then returns the
example's own log-prob and its KL companion's in one pass, with the prompt run once.

z0 is the mean of (policy - reference) over the KL companions of the current micro-batch of
*every* rank (an all-reduce under torch.distributed, as TRL gathers it), then clamped at >= 0:
see `kto_kl_estimate`. Gradient accumulation micro-steps each get their own z0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from dpo_eval.data.formats import read_source
from dpo_eval.data.pairs import PreferencePair, load_pairs
from dpo_eval.engine.distributed import DistContext
from dpo_eval.errors import UserError
from dpo_eval.tokenization import TokenizedPair, TokenizerSettings, tokenize_pairs
from dpo_eval.train.losses import LossOutput, PairLogps, kto_kl_estimate, kto_loss

UNPAIRED_COLUMNS = ("prompt", "completion", "label")


@dataclass(frozen=True)
class UnpairedExample:
    id: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    is_desirable: bool
    row: int = 0  # 0-based row of the source file (a preference pair gives two examples)


def _unpaired_row(row: dict, index: int, source: str) -> tuple[PreferencePair, bool]:
    where = f"{source}: row {index + 1}"
    prompt, completion, label = (row.get(k) for k in UNPAIRED_COLUMNS)
    if not isinstance(label, bool):
        raise UserError(f"{where}: field 'label' must be true or false, got {label!r}")
    if isinstance(completion, str) and isinstance(prompt, str):
        if not completion.strip():
            raise UserError(f"{where}: field 'completion' is empty; fix the row")
    elif isinstance(completion, list) and isinstance(prompt, list | str):
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if not completion or completion[-1].get("role") != "assistant":
            raise UserError(f"{where}: field 'completion' must end with an assistant message")
    else:
        raise UserError(f"{where}: 'prompt' and 'completion' must be strings or chat message lists")
    pair_id = str(row.get("id", index))
    return PreferencePair(pair_id, str(row.get("subset") or "default"), prompt, completion, completion), label


def load_unpaired(path: str, tokenizer, settings: TokenizerSettings, *, limit: int | None = None,
                  data_format: str = "auto", skip_invalid: bool = False,
                  sources: dict[str, str] | None = None) -> list[UnpairedExample]:
    """Unpaired rows (prompt, completion, label), or preference pairs split in two (chosen good, rejected bad).

    ``sources["train"]`` gets the source's name: the path as given, a Hub dataset pinned to its commit."""
    records, source = read_source(path)
    if records and all(k in records[0] for k in ("completion", "label")):
        rows = [_unpaired_row(r, i, str(path)) for i, r in enumerate(records[:limit] if limit else records)]
        tokenized = tokenize_pairs([pair for pair, _ in rows], tokenizer, settings).pairs
        examples = [UnpairedExample(t.id, t.prompt_ids, t.chosen_ids, label, row)
                    for row, (t, (_, label)) in enumerate(zip(tokenized, rows))]
    else:
        loaded = load_pairs(Path(path), data_format=data_format, skip_invalid=skip_invalid, limit=limit)
        source, examples = loaded.source, []
        for row, t in enumerate(tokenize_pairs(loaded.pairs, tokenizer, settings).pairs):  # row exact unless skipped
            examples.append(UnpairedExample(f"{t.id}/chosen", t.prompt_ids, t.chosen_ids, True, row))
            examples.append(UnpairedExample(f"{t.id}/rejected", t.prompt_ids, t.rejected_ids, False, row))
    if sources is not None:
        sources["train"] = source
    return examples


def kto_pairs(examples: Sequence[UnpairedExample], items: Sequence[int], max_length: int | None = None,
              special: frozenset[int] = frozenset()) -> list[TokenizedPair]:
    """Each item packed with its KL companion: the completion of the next item (cyclically).

    With max_length the companion is cut to fit beside the prompt, but never below one token that
    is not in `special` (the ids mask_special_tokens drops), so its log-prob always has a token.
    """
    out = []
    for position, index in enumerate(items):
        example = examples[index]
        other = examples[items[(position + 1) % len(items)]].completion_ids
        if max_length is not None:
            first_kept = next((i for i, t in enumerate(other) if t not in special), 0)
            other = other[: max(1 + first_kept, max_length - len(example.prompt_ids))]
        out.append(TokenizedPair(example.id, "kto", example.prompt_ids, example.completion_ids, other))
    return out


def mean_across_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a scalar over the data-parallel ranks, detached: all-reduce(SUM) / world size.

    One process: the value itself. Every rank must call it (once per micro-batch), like any collective.
    """
    if not ctx.is_distributed:
        return value.detach()
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / ctx.world_size


def kto_step_loss(logps: PairLogps, is_desirable: torch.Tensor, params: dict,
                  ctx: DistContext | None = None) -> LossOutput:
    """KTO on packed examples: column chosen = the example, column rejected = its KL companion.

    z0 averages the KL companions of this micro-batch over every rank of `ctx` (None: one process).
    """
    reduce = partial(mean_across_ranks, ctx=ctx) if ctx is not None else None
    z0 = kto_kl_estimate(logps.policy_rejected.detach(), logps.ref_rejected, reduce)
    return kto_loss(logps.policy_chosen, logps.ref_chosen, is_desirable, z0, **params)
