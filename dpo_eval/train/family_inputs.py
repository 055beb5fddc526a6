"""What the trainer feeds the family losses besides summed log-probs (`PairLogps.extras`), and NPO's data.

- LD-DPO: each response's log-prob beyond its pair's shared length L = min(nc, nr). The policy's comes
  from the training forward (`packed_logps_with_tails`); the reference's is computed once per pair and
  cached like the reference log-probs (same model fingerprint and numerics, its own "-tails" directory).
- Rainbow-PO contextual scaling: the reference's mean next-token entropy over each response's tokens,
  divided by log(vocabulary size), averaged over the pair's two responses; cached likewise ("-entropy").
- SPPO: the columns `chosen_win_prob` and `rejected_win_prob` of the training file, matched by pair id.
- NPO: unpaired examples (`load_unpaired`: rows with `label`, or pairs split into chosen = true and
  rejected = false); `label: false` are the forget set, `label: true` the retain set, kept only when
  retain_coef > 0. Each example is packed alone (a pair without a rejected response).

Cache rows keep the engine's layout (two floats, two integer token counts): tails (chosen, rejected,
tokens beyond the shared length of each), entropies (chosen, rejected, response tokens of each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dpo_eval.data.formats import read_records
from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import CachedRow, LogpCache, numerics_tag
from dpo_eval.engine.distributed import DistContext, barrier
from dpo_eval.engine.entropy import chunk_rows, hidden_entropy
from dpo_eval.engine.logprobs import (
    output_head,
    packed_token_logps,
    prefix_sums,
    response_hidden,
)
from dpo_eval.engine.packing import PackedBatch, pack_rows
from dpo_eval.engine.runner import compute_pair_logps
from dpo_eval.errors import UserError
from dpo_eval.models import load_model
from dpo_eval.tokenization import TokenizedPair
from dpo_eval.train.kto import UnpairedExample
from dpo_eval.train.losses import LossOutput
from dpo_eval.train.losses_family import ENTROPY_KEY, TAIL_KEYS, WIN_PROB_KEYS, npo_loss, required_extras

# ------------------------------------------------------------------------------- tails and entropies


def pair_tails(per_token: torch.Tensor, owner: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """(n_pairs, 2): each response's log-prob beyond its pair's shared length min(nc, nr) (0 for the shorter)."""
    counts = torch.bincount(owner, minlength=2 * n_pairs).view(-1, 2)
    shared = counts.min(dim=1).values.repeat_interleave(2)
    totals = torch.zeros(2 * n_pairs, dtype=per_token.dtype, device=per_token.device).index_add(0, owner, per_token)
    return (totals - prefix_sums(per_token, owner, shared)).view(-1, 2)


def packed_logps_with_tails(model: torch.nn.Module, batch: PackedBatch,
                            exclude_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """As engine `packed_logps`, plus the LD-DPO tails: (sums, counts, tails), each (n_pairs, 2)."""
    per_token, owner = packed_token_logps(model, batch, exclude_ids)
    sums = torch.zeros(2 * batch.n_pairs, dtype=per_token.dtype, device=per_token.device).index_add(0, owner, per_token)
    counts = torch.bincount(owner, minlength=2 * batch.n_pairs)
    return sums.view(-1, 2), counts.view(-1, 2), pair_tails(per_token, owner, batch.n_pairs)


@torch.inference_mode()
def compute_tail_batch(model: torch.nn.Module, rows: Sequence[Sequence[TokenizedPair]], pad_id: int,
                       exclude_ids: torch.Tensor | None = None) -> list[CachedRow]:
    """One forward: per pair (chosen_tail, rejected_tail, chosen tail tokens, rejected tail tokens)."""
    batch = pack_rows(rows, pad_id).to(next(model.parameters()).device)
    per_token, owner = packed_token_logps(model, batch, exclude_ids)
    tails = pair_tails(per_token, owner, batch.n_pairs).double().cpu().tolist()
    counts = torch.bincount(owner, minlength=2 * batch.n_pairs).view(-1, 2)
    beyond = (counts - counts.min(dim=1, keepdim=True).values).cpu().tolist()
    return [(c, r, int(nc), int(nr)) for (c, r), (nc, nr) in zip(tails, beyond)]


@torch.inference_mode()
def compute_entropy_batch(model: torch.nn.Module, rows: Sequence[Sequence[TokenizedPair]], pad_id: int,
                          exclude_ids: torch.Tensor | None = None) -> list[CachedRow]:
    """One forward: per pair (chosen_entropy, rejected_entropy, chosen tokens, rejected tokens), an entropy
    being the mean next-token entropy over the response's tokens / log(vocabulary size)."""
    batch = pack_rows(rows, pad_id).to(next(model.parameters()).device)
    hidden, targets, owner = response_hidden(model, batch), batch.target_ids, batch.owner
    if exclude_ids is not None and exclude_ids.numel():
        keep = ~torch.isin(targets, exclude_ids.to(targets.device))
        hidden, owner = hidden[keep], owner[keep]
    vocab = output_head(model)[0].weight.shape[0]
    entropy = hidden_entropy(hidden, model, chunk_rows(vocab, None)) / math.log(vocab)
    counts = torch.bincount(owner, minlength=2 * batch.n_pairs)
    sums = torch.zeros(2 * batch.n_pairs, device=entropy.device).index_add(0, owner, entropy)
    means = (sums / counts.clamp(min=1)).view(-1, 2).double().cpu().tolist()
    return [(c, r, int(nc), int(nr)) for (c, r), (nc, nr) in zip(means, counts.view(-1, 2).cpu().tolist())]


SIDE_PASSES = {"tails": compute_tail_batch, "entropy": compute_entropy_batch}


def reference_side_rows(data, config, pairs: Sequence[TokenizedPair], ctx: DistContext, device: torch.device,
                        dtype: torch.dtype, kind: str) -> dict[str, CachedRow]:
    """The reference's `kind` rows ("tails" or "entropy") of `pairs`, by content key: from the cache (a
    directory per kind beside the log-probs), else one engine pass."""
    cache = LogpCache(data.cache_root, data.ref_identity["fingerprint"],
                      f"{numerics_tag(device, dtype, data.exclude_ids)}-{kind}", writer_tag=str(ctx.rank))
    stored = cache.load(may_compact=ctx.is_main)
    barrier(ctx)
    missing = list({p.content_key(): p for p in pairs if p.content_key() not in stored}.values())
    if missing:
        model = data.ref_model or load_model(
            config.ref or config.policy, device=device, dtype=dtype, cache_dir=data.cache_root,
            trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle).model
        stored.update(compute_pair_logps(model, missing, pad_id=data.pad_id, token_budget=default_token_budget(device),
                                         ctx=ctx, on_rows=cache.append, desc=f"reference {kind}",
                                         show_progress=config.show_progress, exclude_ids=data.exclude_ids,
                                         compute=SIDE_PASSES[kind]))
    return {p.content_key(): stored[p.content_key()] for p in pairs}


# ------------------------------------------------------------------------------------- SPPO columns


def load_win_probs(path: str, ids: set[str]) -> dict[str, tuple[float, float]]:
    """(chosen_win_prob, rejected_win_prob) by pair id (the row's `id`, else its 0-based index) for `ids`."""
    found = {}
    for index, row in enumerate(read_records(path)):
        pair_id = str(index) if row.get("id") is None else str(row["id"])
        if pair_id not in ids:
            continue
        values = []
        for column in WIN_PROB_KEYS:
            value = row.get(column)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise UserError(f"{path}: row {index + 1} (id {pair_id!r}): loss sppo needs field {column!r}, a "
                                f"number in [0, 1] (the estimated probability that the response beats the current "
                                f"policy), got {value!r}; add the column or choose another loss")
            values.append(float(value))
        found[pair_id] = (values[0], values[1])
    return found


# --------------------------------------------------------------------------------------- the inputs


@dataclass
class FamilyInputs:
    """Per-pair extras of one run's loss; `extras` builds them for a micro-batch."""

    needs: tuple[str, ...] = ()
    ref_tails: dict[str, CachedRow] = field(default_factory=dict)
    ref_entropy: dict[str, CachedRow] = field(default_factory=dict)
    win_probs: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def needs_policy_tails(self) -> bool:
        return TAIL_KEYS[0] in self.needs

    def extras(self, pairs: Sequence[TokenizedPair], policy_tails: torch.Tensor | None,
               device: torch.device) -> dict[str, torch.Tensor]:
        """PairLogps.extras for `pairs` (policy_tails (n, 2) from `packed_logps_with_tails`, or None)."""
        out: dict[str, torch.Tensor] = {}

        def reference(rows: dict[str, CachedRow]) -> torch.Tensor:
            return torch.tensor([rows[p.content_key()][:2] for p in pairs], dtype=torch.float32, device=device)

        if self.needs_policy_tails:
            ref = reference(self.ref_tails)
            out.update(zip(TAIL_KEYS, (policy_tails[:, 0], policy_tails[:, 1], ref[:, 0], ref[:, 1])))
        if ENTROPY_KEY in self.needs:
            out[ENTROPY_KEY] = reference(self.ref_entropy).mean(dim=1)
        if WIN_PROB_KEYS[0] in self.needs:
            probs = torch.tensor([self.win_probs[p.id] for p in pairs], dtype=torch.float32, device=device)
            out.update(zip(WIN_PROB_KEYS, (probs[:, 0], probs[:, 1])))
        return out


def prepare_family_inputs(config, data, ctx: DistContext, device: torch.device, dtype: torch.dtype) -> FamilyInputs:
    """Everything `config.loss` needs besides the log-probs, for the training pairs."""
    needs = required_extras(config.loss, config.loss_params)
    inputs = FamilyInputs(needs)
    if TAIL_KEYS[0] in needs:
        inputs.ref_tails = reference_side_rows(data, config, data.train, ctx, device, dtype, "tails")
    if ENTROPY_KEY in needs:
        inputs.ref_entropy = reference_side_rows(data, config, data.train, ctx, device, dtype, "entropy")
    if WIN_PROB_KEYS[0] in needs:
        ids = {p.id for p in data.train}
        inputs.win_probs = load_win_probs(config.data, ids)
        absent = sorted(ids - set(inputs.win_probs))
        if absent:
            raise UserError(f"{config.data}: loss sppo found no row for pair id(s) {absent[:3]}: give every row an "
                            "id and the chosen_win_prob, rejected_win_prob columns")
    return inputs


# ----------------------------------------------------------------------------------------------- NPO


def npo_examples(examples: list[UnpairedExample], params: dict, source: str) -> list[UnpairedExample]:
    """The examples NPO trains on: every forget (`label: false`) one, the retain ones when retain_coef > 0."""
    kept = examples if params.get("retain_coef", 0.0) > 0 else [e for e in examples if not e.is_desirable]
    if not any(not e.is_desirable for e in kept):
        raise UserError(f"{source}: loss npo needs negatives (rows with 'rejected', or 'label: false'); found none")
    return kept


def npo_pairs(examples: Sequence[UnpairedExample], items: Sequence[int]) -> list[TokenizedPair]:
    """Each example packed alone: a pair with no rejected response."""
    return [TokenizedPair(examples[i].id, "npo", examples[i].prompt_ids, examples[i].completion_ids, ())
            for i in items]


def npo_step_loss(examples: Sequence[UnpairedExample], items: np.ndarray, sums: torch.Tensor,
                  counts: torch.Tensor, ref_chosen: torch.Tensor, params: dict) -> LossOutput:
    """npo_loss on a micro-batch packed by `npo_pairs` (column 0 of the engine's output is the example)."""
    is_forget = torch.tensor([not examples[i].is_desirable for i in items], device=sums.device)
    return npo_loss(sums[:, 0], ref_chosen, is_forget, counts[:, 0], **params)
