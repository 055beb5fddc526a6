"""Analytic KL(policy || reference) along sampled responses, from both models' full next-token distributions.

For a response y to prompt x, with p_t = pi(. | x, y_<t) and q_t = pi_ref(. | x, y_<t)::

    KL_t   = sum_v p_t(v) (log p_t(v) - log q_t(v))        (log p, log q: log_softmax in float32)
    kl(y)  = sum_{t=1..|y|} KL_t
    k1(y)  = log pi(y | x) - log pi_ref(y | x)             (the sampled tokens only)

For y ~ pi both are unbiased for the sequence-level KL(pi(. | x) || pi_ref(. | x)) (chain rule),
but kl(y) averages over each step's next token exactly instead of sampling it: the
Rao-Blackwellized estimator of Amini, Vieira & Cotterell (2025), "Better Estimation of the KL
Divergence Between Language Models". It is never negative and usually has far lower variance
than k1 (tests/engine/test_kl.py shows ~9x lower SD over seeds on a perturbed model), but for
sequence totals that is not guaranteed: when a token's log-ratio runs against the KL still to come
(a policy that learned to stop early: ending is a large log-ratio with little KL after it), k1 can
vary less. A two-step example: pi picks a or b with 1/2 each, pi_ref gives a 5/6, b 1/6; b ends the
sequence; after a, pi always picks a, pi_ref gives a 0.2. Then k1 = log 3 on every path (variance 0)
while kl(y) is 0.294 + log 5 after a and 0.294 after b. tests/test_diagnostics_real_run.py saw this
on a trained tiny run (SE 0.22 analytic vs 0.17 k1); report both. One pass gives both, plus the
policy's next-token entropy H_t = -sum_v p_t(v) log p_t(v).

Each model runs its own forward over the same packed token-budget batches; only the hidden
states (N, H) at response positions are kept, then both heads project ``chunk_size`` positions
at a time: at most a (chunk, vocab) float32 block per model is alive, never (batch, seq, vocab).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dpo_eval.engine.entropy import chunk_rows, model_device, sequence_batches
from dpo_eval.engine.logprobs import output_head, response_hidden
from dpo_eval.errors import UserError

CHUNK_TENSORS = 4  # (chunk, vocab) float32 blocks alive at once: log p, log q, p, p * (log p - log q)


@dataclass(frozen=True)
class SampleKL:
    """Per-sequence results of analytic_kl (sums over the response tokens, nats).

    kl: sum_t KL(p_t || q_t), the analytic (Rao-Blackwellized) KL along the sample.
    policy_logp, ref_logp: log-probabilities of the sampled response under each model
        (k1 = policy_logp - ref_logp).
    n_tokens: response tokens.
    policy_entropy_mean: mean_t H(p_t), the policy's next-token entropy along the response
        (nan for an empty response).
    """

    kl: float
    policy_logp: float
    ref_logp: float
    n_tokens: int
    policy_entropy_mean: float


def _chunk_stats(h_policy: torch.Tensor, h_ref: torch.Tensor, targets: torch.Tensor, heads) -> torch.Tensor:
    """(chunk, 4) float32 columns KL_t, log p(target), log q(target), H(p_t) for hidden rows (chunk, H)."""
    (head_p, transform_p), (head_q, transform_q) = heads
    logp = torch.log_softmax(transform_p(head_p(h_policy)).float(), dim=-1)
    logq = torch.log_softmax(transform_q(head_q(h_ref)).float(), dim=-1).to(logp.device)
    picked_p = logp.gather(1, targets[:, None]).squeeze(1)
    picked_q = logq.gather(1, targets[:, None]).squeeze(1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1)
    kl = (p * logq.neg_().add_(logp)).sum(-1)  # logq becomes log p - log q in place
    return torch.stack([kl, picked_p, picked_q, entropy], dim=1)


def _check_pair(policy: torch.nn.Module, ref: torch.nn.Module) -> int:
    vocab_p, vocab_q = output_head(policy)[0].weight.shape[0], output_head(ref)[0].weight.shape[0]
    if vocab_p != vocab_q:
        raise UserError(f"analytic KL needs one vocabulary: the policy's head has {vocab_p} rows and the "
                        f"reference's {vocab_q}; use a reference with the policy's tokenizer and vocabulary")
    return vocab_p


def _batch_sums(policy: torch.nn.Module, ref: torch.nn.Module, batch, n_sequences: int,
                rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sums (n, 4) of the _chunk_stats columns and token counts (n,) for one packed batch."""
    device = model_device(policy)
    on_policy = batch.to(device)
    h_policy = response_hidden(policy, on_policy)
    h_ref = response_hidden(ref, batch.to(model_device(ref)))  # projected on the reference's device
    targets, owner = on_policy.target_ids, on_policy.owner // 2
    heads = (output_head(policy), output_head(ref))
    sums = torch.zeros(n_sequences, 4, dtype=torch.float64, device=device)
    for start in range(0, targets.shape[0], rows):
        stop = start + rows
        stats = _chunk_stats(h_policy[start:stop], h_ref[start:stop], targets[start:stop], heads)
        sums.index_add_(0, owner[start:stop], stats.double())
    return sums, torch.bincount(owner, minlength=n_sequences)


@torch.inference_mode()
def analytic_kl(policy_model: torch.nn.Module, ref_model: torch.nn.Module,
                sequences: Sequence[tuple[Sequence[int], Sequence[int]]], *, token_budget: int, pad_id: int,
                chunk_size: int | None = None, show_progress: bool = False) -> list[SampleKL]:
    """Analytic per-token KL summed along each (prompt_ids, sample_ids) sequence, with k1's log-probs.

    sequences: (prompt token ids, response token ids) per sample; a prompt must be non-empty.
    token_budget: padded tokens per forward pass (as in scoring); chunk_size: response positions
    projected at once (default: about 16M logits per block). Returns one SampleKL per sequence,
    in input order. Both models see the same packed batches; with the models on different
    devices, each chunk of reference log-probs moves to the policy's device.
    """
    rows = chunk_rows(_check_pair(policy_model, ref_model), chunk_size, tensors_alive=CHUNK_TENSORS)
    results: list[SampleKL | None] = [None] * len(sequences)
    for order, batch in sequence_batches(sequences, token_budget, pad_id, desc="analytic KL",
                                         show_progress=show_progress):
        sums, counts = _batch_sums(policy_model, ref_model, batch, len(order), rows)
        for index, row, n in zip(order, sums.cpu().tolist(), counts.cpu().tolist()):
            entropy = row[3] / n if n else float("nan")
            results[index] = SampleKL(kl=row[0], policy_logp=row[1], ref_logp=row[2], n_tokens=n,
                                      policy_entropy_mean=entropy)
    return results  # type: ignore[return-value]
