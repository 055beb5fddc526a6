"""Listwise DPO: the Plackett-Luce loss over K ranked responses to one prompt, and its training step.

Rafailov et al. 2023, "Direct Preference Optimization" (arXiv:2305.18290), Appendix A.3 (the
Plackett-Luce model); also Liu et al. 2024, "LiPO: Listwise Preference Optimization through
Learning-to-Rank" (arXiv:2402.01878), whose "DPO-PL" baseline this is. With the responses of a
prompt ordered best first, y_1 > y_2 > ... > y_K, and r_k = beta * (log pi(y_k|x) - log pi_ref(y_k|x)):

    P(order | x) = prod_{k=1..m} exp(r_k) / sum_{j=k..K} exp(r_j)
    loss         = -log P = sum_{k=1..m} (logsumexp_{j>=k} r_j - r_k)

m = K - 1 for a full ranking (the k = K factor is 1), m = 1 when only the best is known (a `chosen`
and a list of `rejected`: the top-1 Plackett-Luce, "the chosen one beats all of these"). K = 2 is
DPO: logsumexp(r_1, r_2) - r_1 = -log sigmoid(r_1 - r_2). TRL 1.16 has no listwise loss.

Training packs each prompt with its K responses as one group (``dpo_eval.engine.multi``: the
prompt runs once, each response sees only the prompt and itself); ``multi.sequence_stats`` runs
with gradients (its chunked projection is checkpointed like the pair engine's). Reference
log-probs are precomputed per (prompt, response) through the per-sequence cache.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from dpo_eval.engine.batching import default_token_budget, plan_batches
from dpo_eval.engine.cache import LogpCache
from dpo_eval.engine.multi import (
    GroupBatch,
    pack_groups,
    score_sequences,
    sequence_cache,
    sequence_key,
    sequence_stats,
)
from dpo_eval.train.listwise_data import RankedGroup
from dpo_eval.train.loss_base import LossOutput, PairLogps, _require_positive
from dpo_eval.train.losses import nll_term

__all__ = ["RankedLogps", "group_logps", "plackett_luce_loss", "ranked_micro_loss"]


@dataclass(frozen=True)
class RankedLogps:
    """Summed response log-probs of a batch of ranked groups, responses ordered best first.

    policy, ref: (batch, K) float; entries where `valid` is False are padding (groups with fewer
    than K responses) and are ignored. valid: (batch, K) bool, True on a prefix of each row.
    n_ranked: (batch,) int, m above: how many leading choice terms count (1 <= m <= responses - 1).
    """

    policy: torch.Tensor
    ref: torch.Tensor
    valid: torch.Tensor
    n_ranked: torch.Tensor

    def __post_init__(self) -> None:
        if self.policy.ndim != 2 or self.policy.shape != self.ref.shape or self.valid.shape != self.policy.shape:
            raise ValueError(f"RankedLogps: policy {tuple(self.policy.shape)}, ref {tuple(self.ref.shape)} and valid "
                             f"{tuple(self.valid.shape)} must all be the same (batch, K)")
        if self.valid.dtype != torch.bool or self.n_ranked.shape != self.policy.shape[:1]:
            raise ValueError("RankedLogps: valid must be a bool (batch, K) tensor and n_ranked (batch,)")
        n_valid = self.valid.sum(-1)
        if bool((n_valid < 2).any()) or bool((self.n_ranked < 1).any()) or bool((self.n_ranked >= n_valid).any()):
            raise ValueError("RankedLogps: every group needs >= 2 responses and 1 <= n_ranked <= responses - 1")
        if bool((self.valid[:, 1:] & ~self.valid[:, :-1]).any()):
            raise ValueError("RankedLogps: valid must be True on a prefix of each row (padding last)")


def plackett_luce_loss(logps: RankedLogps, beta: float = 0.1) -> LossOutput:
    """Listwise (Plackett-Luce) DPO, DPO paper Appendix A.3; see the module docstring.

        r_k  = beta * (policy_k - ref_k)
        loss = sum_{k < m} (logsumexp_{j >= k, valid} r_j - r_k)        (0-based k)
        rewards: chosen r_1 (the best), rejected the mean of r_2..r_K (the rest)

    Returns per-group losses (batch,); K = 2 (m = 1) equals dpo_loss.
    """
    _require_positive("beta", beta)
    rewards = beta * (logps.policy - logps.ref)
    floor = torch.finfo(rewards.dtype).min / 4  # exp(floor - anything finite) = 0: padding adds nothing
    masked = rewards.masked_fill(~logps.valid, floor)
    suffix = torch.logcumsumexp(masked.flip(-1), dim=-1).flip(-1)  # logsumexp_{j >= k}
    positions = torch.arange(rewards.shape[1], device=rewards.device)
    counted = positions[None, :] < logps.n_ranked[:, None]
    losses = torch.where(counted, suffix - masked, torch.zeros_like(masked)).sum(-1)
    rest = logps.valid.clone()
    rest[:, 0] = False
    rest_mean = (rewards * rest).sum(-1) / rest.sum(-1)
    return LossOutput(losses, rewards[:, 0].detach(), rest_mean.detach())


def group_logps(model: torch.nn.Module, batch: GroupBatch,
                exclude_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs and token counts (n_sequences,) of a packed group batch, differentiable."""
    if exclude_ids is not None and exclude_ids.numel():
        raise ValueError("listwise training does not support mask_special_tokens")
    sums, _, counts = sequence_stats(model, batch)
    return sums, counts


def _gather(values: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid, values[index], torch.zeros((), dtype=values.dtype, device=values.device))


def ranked_micro_loss(groups: Sequence[RankedGroup], forward: Callable, device: torch.device, pad_id: int,
                      ref_rows: dict, beta: float, nll_coef: float = 0.0) -> tuple[LossOutput, PairLogps]:
    """Pack the groups (each prompt once), score with `forward` (group_logps, maybe DDP-wrapped), apply
    the loss (+ nll_coef * the best response's mean token NLL). Also returns a PairLogps of the best
    response and the mean of the rest (policy only), for the step log."""
    lengths = [g.packed_length for g in groups]
    rows = plan_batches(lengths, token_budget=sum(lengths))
    order = [i for batch in rows for row in batch for i in row]
    packed = pack_groups([[groups[i].as_group() for i in row] for batch in rows for row in batch], pad_id)
    sums, counts = forward(packed.to(device))
    width = max(len(g.responses) for g in groups)
    first, index = 0, torch.zeros(len(groups), width, dtype=torch.long)
    valid = torch.zeros(len(groups), width, dtype=torch.bool)
    ref = torch.zeros(len(groups), width, dtype=torch.float32)
    for i in order:  # sequences come group-major in packing order
        k = len(groups[i].responses)
        index[i, :k], valid[i, :k] = torch.arange(first, first + k), True
        ref[i, :k] = torch.tensor([ref_rows[sequence_key(groups[i].prompt_ids, r)][0] for r in groups[i].responses])
        first += k
    index, valid = index.to(sums.device), valid.to(sums.device)
    policy, tokens = _gather(sums, index, valid), _gather(counts.float(), index, valid)
    n_ranked = torch.tensor([g.n_ranked for g in groups], device=sums.device)
    out = plackett_luce_loss(RankedLogps(policy, ref.to(sums.device), valid, n_ranked), beta=beta)
    rest = valid.clone()
    rest[:, 0] = False
    n_rest = rest.sum(-1)
    summary = PairLogps(policy[:, 0], ((policy * rest).sum(-1) / n_rest).detach(), None, None,
                        tokens[:, 0], (tokens * rest).sum(-1) / n_rest)
    if nll_coef:
        out = replace(out, losses=out.losses + nll_coef * nll_term(summary))
    return out, summary


def attach_ranked_reference(data, load_reference: Callable[[], torch.nn.Module], fingerprint: str,
                            device: torch.device, dtype: torch.dtype, show_progress: bool) -> None:
    """Reference log-probs of every (prompt, response) of data.ranked and of the eval pairs into data.ref_rows.

    Through the per-sequence cache of the reference: each prompt runs once for all its responses,
    and a rerun (or another stage against the same reference) computes nothing it has.
    """
    cache: LogpCache = sequence_cache(data.cache_root, fingerprint, device, dtype)
    sequences = [(g.prompt_ids, r) for g in data.ranked for r in g.responses]
    sequences += [(p.prompt_ids, r) for p in data.eval for r in (p.chosen_ids, p.rejected_ids)]
    stats = score_sequences(load_reference, sequences, cache, pad_id=data.pad_id,
                            token_budget=default_token_budget(device), desc="reference log-probs",
                            show_progress=show_progress)
    for (prompt, response), logp in zip(sequences, stats.logp_sum.tolist()):
        data.ref_rows[sequence_key(prompt, response)] = (logp, 0.0, 0, 0)
    for pair in data.eval:
        chosen = data.ref_rows[sequence_key(pair.prompt_ids, pair.chosen_ids)][0]
        rejected = data.ref_rows[sequence_key(pair.prompt_ids, pair.rejected_ids)][0]
        data.ref_rows[pair.content_key()] = (chosen, rejected, 0, 0)
    gc.collect()


def probe(beta: float, params: dict) -> None:
    """Run plackett_luce_loss once on a one-group dummy batch, so its value checks speak at config time."""
    two = -torch.ones(1, 2)
    plackett_luce_loss(RankedLogps(two, two, torch.ones(1, 2, dtype=torch.bool), torch.ones(1, dtype=torch.long)),
                       beta=beta, **params)
