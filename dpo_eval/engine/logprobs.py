"""Sequence log-probabilities of packed pairs: the one function scoring, trainer and reranker share.

The vocabulary projection runs only on response positions, in row chunks, with a float32
logsumexp: no (batch, seq, vocab) tensor is ever made.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from dpo_eval.engine.flex import packed_last_hidden
from dpo_eval.engine.packing import PAD, PROMPT, PackedBatch, attention_mask_4d

PROJECTION_ELEMENTS = 1 << 24  # logits per chunk: 16M floats = 64 MiB in float32


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    head = model.get_output_embeddings()
    decoder = model.base_model
    if head is None or decoder is model:
        raise ValueError(f"{type(model).__name__} has no separate decoder and output head; "
                         "use a causal LM (AutoModelForCausalLM)")
    return decoder, head


def _logit_transform(config):
    """Post-projection scaling some architectures apply (Gemma soft-capping, Cohere scale)."""
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def _chunk_logps(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module, transform) -> torch.Tensor:
    logits = transform(head(hidden)).float()
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logps(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module, transform,
                vocab_size: int) -> torch.Tensor:
    """log p(target) for each row of hidden (N, H) -> (N,) float32, projected chunk by chunk.

    Under autograd each chunk is recomputed in backward, so chunk logits are never all alive.
    """
    rows = max(1, PROJECTION_ELEMENTS // max(vocab_size, 1))
    parts = []
    for start in range(0, hidden.shape[0], rows):
        h, t = hidden[start: start + rows], targets[start: start + rows]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_logps, h, t, head, transform, use_reentrant=False))
        else:
            parts.append(_chunk_logps(h, t, head, transform))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _mask_dtype(model: torch.nn.Module, device: torch.device) -> torch.dtype:
    """The attention mask must match the query dtype: the autocast dtype when autocast is on."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


def output_head(model: torch.nn.Module) -> tuple[torch.nn.Module, object]:
    """The model's vocabulary projection and the scaling applied after it: logits = transform(head(h))."""
    return _decoder_and_head(model)[1], _logit_transform(model.config)


def response_hidden(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Last-layer hidden states (N, H) predicting each response token, in batch.source_index order.

    Attention: a FlexAttention BlockMask where the model and device take it, else the 4D mask
    (``dpo_eval.engine.flex.use_flex``)."""
    decoder, _ = _decoder_and_head(model)
    hidden = packed_last_hidden(
        model, decoder, batch.input_ids, batch.position_ids, batch.segments, batch.pair_slots, prompt=PROMPT,
        pad=PAD, dense_mask=lambda: attention_mask_4d(batch.segments, batch.pair_slots,
                                                      _mask_dtype(model, batch.input_ids.device)))
    return hidden.index_select(0, batch.source_index)


def packed_token_logps(model: torch.nn.Module, batch: PackedBatch,
                       exclude_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token response log-probs of a packed batch: (per_token (N,) float32, owner (N,) int64).

    owner is batch.owner (2*pair chosen, 2*pair+1 rejected) with the exclude_ids tokens dropped;
    each sequence's tokens stay in order. Differentiable when grad is enabled.
    """
    head, transform = output_head(model)
    hidden = response_hidden(model, batch)
    targets, owner = batch.target_ids, batch.owner
    if exclude_ids is not None and exclude_ids.numel():
        keep = ~torch.isin(targets, exclude_ids.to(targets.device))
        hidden, targets, owner = hidden[keep], targets[keep], owner[keep]
    return token_logps(hidden, targets, head, transform, head.weight.shape[0]), owner


def packed_logps(model: torch.nn.Module, batch: PackedBatch,
                 exclude_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts for a packed batch on the model's device.

    exclude_ids: (K,) token ids left out of sums and counts (e.g. chat-format special tokens).
    Returns (logps, counts), each (n_pairs, 2): column 0 chosen, column 1 rejected; logps float32,
    differentiable when grad is enabled.
    """
    per_token, owner = packed_token_logps(model, batch, exclude_ids)
    sums = torch.zeros(batch.n_pairs * 2, dtype=torch.float32, device=per_token.device)
    sums = sums.index_add(0, owner, per_token)
    counts = torch.bincount(owner, minlength=batch.n_pairs * 2)
    return sums.view(-1, 2), counts.view(-1, 2)


def prefix_sums(per_token: torch.Tensor, owner: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Sum of the first lengths[s] tokens of every sequence s, (S,) float (S = len(lengths)).

    per_token, owner (N,) as `packed_token_logps` returns them (each sequence's tokens in order);
    the rest of a sequence's sum is its total minus this. LD-DPO splits a pair at its shorter length.
    """
    n = lengths.shape[0]
    counts = torch.bincount(owner, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.sort(owner, stable=True).indices
    position = torch.empty_like(owner)
    position[order] = torch.arange(owner.shape[0], device=owner.device) - starts[owner[order]]
    kept = position < lengths.to(owner.device)[owner]
    return torch.zeros(n, dtype=per_token.dtype, device=per_token.device).index_add(
        0, owner[kept], per_token[kept])
