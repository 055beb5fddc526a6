"""Next-token entropy of a model at chosen positions, projected chunk by chunk (never (batch, seq, vocab)).

H_t = -sum_v p_v log p_v with log p = log_softmax(logits) in float32. Used by the dispersion
diagnostic: the policy's entropy where a response would start, compared with the reference's.

Sequences run through the same packed, token-budget batches as log-prob scoring (one sequence
is a pair without a rejected response), so only the hidden states (N, H) of the wanted
positions are kept; the vocabulary projection runs on ``chunk_size`` positions at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from dpo_eval.engine.batching import plan_batches
from dpo_eval.engine.logprobs import PROJECTION_ELEMENTS, output_head, response_hidden
from dpo_eval.engine.packing import PackedBatch, pack_rows
from dpo_eval.errors import UserError
from dpo_eval.tokenization import TokenizedPair


@dataclass(frozen=True)
class PromptEntropy:
    """Next-token entropy (nats) at the end of one prompt.

    last: H of the distribution of the first response token, p(. | prompt).
    mean_last_k: mean of H over the last k prompt positions (the last included).
    k: positions averaged, min(last_k, prompt length).
    """

    last: float
    mean_last_k: float
    k: int


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def chunk_rows(vocab_size: int, chunk_size: int | None, tensors_alive: int = 1) -> int:
    """Positions per projection chunk: chunk_size, or what keeps each chunk near PROJECTION_ELEMENTS."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return chunk_size
    return max(1, PROJECTION_ELEMENTS // max(vocab_size * tensors_alive, 1))


def sequence_batches(sequences: Sequence[tuple[Sequence[int], Sequence[int]]], token_budget: int,
                     pad_id: int, *, desc: str = "", show_progress: bool = False,
                     ) -> Iterator[tuple[list[int], PackedBatch]]:
    """Pack (context, targets) sequences into token-budget batches; yields (sequence indices, batch).

    batch.owner // 2 indexes the yielded list; the hidden state predicting targets[k] sits at
    source_index in the order of the targets.
    """
    items = [TokenizedPair(str(i), "", tuple(ctx), tuple(tgt), ()) for i, (ctx, tgt) in enumerate(sequences)]
    for i, item in enumerate(items):
        if not item.prompt_ids:
            raise UserError(f"sequence {i} has an empty prompt: the first token needs a context to be predicted "
                            "from; drop the sequence or prepend a BOS token")
    batches = plan_batches([item.packed_length for item in items], token_budget)
    total = sum(item.packed_length for item in items)
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc=desc, file=sys.stderr,
               disable=not show_progress or total == 0, dynamic_ncols=True)
    for batch in batches:
        order = [i for row in batch for i in row]
        yield order, pack_rows([[items[i] for i in row] for row in batch], pad_id)
        bar.update(sum(items[i].packed_length for i in order))
    bar.close()


def chunk_entropy(hidden: torch.Tensor, head: torch.nn.Module, transform) -> torch.Tensor:
    """Entropy (N,) float32 of the next-token distributions of hidden (N, H)."""
    logp = torch.log_softmax(transform(head(hidden)).float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def hidden_entropy(hidden: torch.Tensor, model: torch.nn.Module, rows: int) -> torch.Tensor:
    """Entropy (N,) float32 of the model's next-token distribution for each row of hidden (N, H)."""
    head, transform = output_head(model)
    parts = [chunk_entropy(hidden[start: start + rows], head, transform) for start in range(0, hidden.shape[0], rows)]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


@torch.inference_mode()
def prompt_entropy(model: torch.nn.Module, prompts: Sequence[Sequence[int]], *, token_budget: int,
                   pad_id: int, last_k: int = 1, chunk_size: int | None = None,
                   show_progress: bool = False) -> list[PromptEntropy]:
    """The model's next-token entropy at the end of each prompt, and its mean over the last k positions.

    Position t of a prompt x (t = n-k .. n-1, n = len(x)) gives H(p(. | x[:t+1])); t = n-1 is
    where the response starts. Each prompt is packed as context x[:n-k+1] with targets
    x[n-k+1:] + [pad_id]: the appended token only makes the last position a "source"; it is
    never attended to by earlier positions (causal mask) and its own prediction is unused.
    """
    if last_k < 1:
        raise UserError(f"last_k must be at least 1, got {last_k}")
    ks = [min(last_k, len(p)) for p in prompts]
    sequences = [(tuple(p[: len(p) - k + 1]), tuple(p[len(p) - k + 1:]) + (pad_id,)) for p, k in zip(prompts, ks)]
    rows = chunk_rows(output_head(model)[0].weight.shape[0], chunk_size, tensors_alive=2)
    per_position: list[np.ndarray | None] = [None] * len(prompts)
    for order, batch in sequence_batches(sequences, token_budget, pad_id, desc="entropy",
                                         show_progress=show_progress):
        batch = batch.to(model_device(model))
        ent = hidden_entropy(response_hidden(model, batch), model, rows).double().cpu().numpy()
        counts = torch.bincount(batch.owner // 2, minlength=len(order)).cpu().numpy()
        for index, values in zip(order, np.split(ent, np.cumsum(counts)[:-1])):  # owners are contiguous
            per_position[index] = values
    return [PromptEntropy(float(h[-1]), float(h.mean()), k) for h, k in zip(per_position, ks)]
