"""TDPO's sequential KL along packed pair responses, differentiable through the policy only.

For a response y to prompt x, with p_t = pi_theta(. | x, y_<t) and q_t = pi_ref(. | x, y_<t)::

    SeqKL(x, y) = sum_{t=1..|y|} KL(q_t || p_t) = sum_t sum_v q_t(v) (log q_t(v) - log p_t(v))

the reference-first direction TDPO uses (Zeng et al. 2024, "Token-level Direct Preference
Optimization", arXiv:2404.11999, D_SeqKL(x, y; pi_ref || pi_theta)). ``dpo_eval.engine.kl`` computes
the other direction, KL(p_t || q_t), for evaluation without gradients; this module is its training
counterpart, on the pair packing the trainer uses (``dpo_eval.engine.packing``).

The reference's cost. A stored scalar log pi_ref(y | x) is not enough: the term needs q_t over the
whole vocabulary at every response position, a (tokens, vocab) object far too large to cache. So
the reference model stays loaded beside the policy and, every micro-batch, runs one forward
without gradients over the same packed batch (the prompt once for both responses); only its
last-layer hidden states at response positions, (N, H), are kept. Both heads then project
``rows`` positions at a time inside a checkpointed function: the forward keeps no (chunk, vocab)
block, backward recomputes one chunk at a time. Never a (batch, seq, vocab) tensor for either
model. Extra cost per micro-batch: one reference forward (no backward, so about a third of a
training forward+backward) and the reference head projected twice (forward and recomputation),
plus the reference weights in memory (in the compute dtype). The reference log-probs of the
responses come out of the same projection, so TDPO needs no reference cache.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from dpo_eval.engine.entropy import chunk_rows, model_device
from dpo_eval.engine.logprobs import output_head, response_hidden
from dpo_eval.engine.packing import PackedBatch

CHUNK_TENSORS = 4  # (chunk, vocab) float32 blocks alive at once: log p, log q, q, q * (log q - log p)


def _chunk_terms(h_policy: torch.Tensor, h_ref: torch.Tensor, targets: torch.Tensor, head_p: torch.nn.Module,
                 transform_p, head_q: torch.nn.Module, transform_q) -> torch.Tensor:
    """(chunk, 3) float32 columns KL(q_t || p_t), log p(target), log q(target) for hidden rows (chunk, H).

    Gradients reach h_policy and the policy head only; the reference side runs without autograd.
    """
    logp = torch.log_softmax(transform_p(head_p(h_policy)).float(), dim=-1)
    with torch.no_grad():
        logq = torch.log_softmax(transform_q(head_q(h_ref)).float(), dim=-1)
        q = logq.exp()
    kl = (q * (logq - logp)).sum(-1)
    picked_p = logp.gather(1, targets[:, None]).squeeze(1)
    picked_q = logq.gather(1, targets[:, None]).squeeze(1)
    return torch.stack([kl, picked_p, picked_q], dim=1)


def token_kl_terms(h_policy: torch.Tensor, h_ref: torch.Tensor, targets: torch.Tensor, policy: torch.nn.Module,
                   ref: torch.nn.Module, rows: int) -> torch.Tensor:
    """_chunk_terms over all rows of h_policy, h_ref (N, H) and targets (N,), `rows` at a time -> (N, 3).

    Under autograd each chunk is checkpointed, so its logits are recomputed in backward, never stored.
    """
    head_p, transform_p = output_head(policy)
    head_q, transform_q = output_head(ref)
    parts = []
    for start in range(0, h_policy.shape[0], rows):
        args = (h_policy[start: start + rows], h_ref[start: start + rows], targets[start: start + rows],
                head_p, transform_p, head_q, transform_q)
        if torch.is_grad_enabled() and h_policy.requires_grad:
            parts.append(checkpoint(_chunk_terms, *args, use_reentrant=False))
        else:
            parts.append(_chunk_terms(*args))
    return torch.cat(parts) if parts else h_policy.new_zeros(0, 3, dtype=torch.float32)


def packed_token_kl(policy: torch.nn.Module, ref: torch.nn.Module, batch: PackedBatch,
                    exclude_ids: torch.Tensor | None = None, chunk_size: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy log-probs, counts, reference log-probs and SeqKL of each response of a packed batch.

    batch on the policy's device. exclude_ids: (K,) token ids left out of every sum and count (as in
    ``packed_logps``). Returns (logps, counts, ref_logps, seq_kl), each (n_pairs, 2), column 0 chosen,
    column 1 rejected: logps and seq_kl float32 and differentiable through the policy; ref_logps
    float32 without gradient; counts int64.
    """
    vocab_p, vocab_q = output_head(policy)[0].weight.shape[0], output_head(ref)[0].weight.shape[0]
    if vocab_p != vocab_q:
        raise ValueError(f"TDPO needs one vocabulary: the policy's head has {vocab_p} rows and the "
                         f"reference's {vocab_q}; use a reference with the policy's tokenizer and vocabulary")
    device = batch.input_ids.device
    with torch.no_grad():
        h_ref = response_hidden(ref, batch.to(model_device(ref))).to(device)
    h_policy = response_hidden(policy, batch)
    targets, owner = batch.target_ids, batch.owner
    if exclude_ids is not None and exclude_ids.numel():
        keep = ~torch.isin(targets, exclude_ids.to(device))
        h_policy, h_ref, targets, owner = h_policy[keep], h_ref[keep], targets[keep], owner[keep]
    rows = chunk_rows(vocab_p, chunk_size, tensors_alive=CHUNK_TENSORS)
    terms = token_kl_terms(h_policy, h_ref, targets, policy, ref, rows)
    sums = torch.zeros(batch.n_pairs * 2, 3, dtype=torch.float32, device=terms.device).index_add(0, owner, terms)
    counts = torch.bincount(owner, minlength=batch.n_pairs * 2).view(-1, 2)
    return sums[:, 1].view(-1, 2), counts, sums[:, 2].detach().view(-1, 2), sums[:, 0].view(-1, 2)
