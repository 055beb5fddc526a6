"""TDPO's sequential KL (packed, chunked) against a full-distribution per-sequence computation, with gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import random_pairs, tiny_llama

from dpo_eval.engine.packing import pack_rows
from dpo_eval.engine.seq_kl import packed_token_kl


def sharpened(model, factor: float = 8.0):
    """Scale the output head so next-token distributions are far from uniform (KL of order 1)."""
    model.get_output_embeddings().weight.data.mul_(factor)
    return model


def brute_force(policy, ref, prompt, response) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(SeqKL = sum_t sum_v q (log q - log p), policy logp, ref logp) from full logits of one unpadded sequence.

    Differentiable through the policy (the reference runs under no_grad).
    """
    ids = torch.tensor([list(prompt) + list(response)], device=next(policy.parameters()).device)
    start = len(prompt) - 1  # the position predicting the first response token
    logp = torch.log_softmax(policy(input_ids=ids).logits[0, start:-1].double(), dim=-1)
    with torch.no_grad():
        logq = torch.log_softmax(ref(input_ids=ids).logits[0, start:-1].double(), dim=-1)
    targets = ids[0, len(prompt):, None]
    kl = (logq.exp() * (logq - logp)).sum()
    return kl, logp.gather(1, targets).sum(), float(logq.gather(1, targets).sum())


@pytest.fixture(scope="module")
def models():
    policy = sharpened(tiny_llama(seed=3)).train()  # dropout is 0 in the tiny config
    ref = sharpened(tiny_llama(seed=4))
    ref.requires_grad_(False)
    return policy, ref


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_values_and_gradients_equal_brute_force(models, chunk_size):
    policy, ref = models
    pairs = random_pairs(5, 97, seed=11, max_prompt=8, max_response=7)
    batch = pack_rows([pairs[:2], pairs[2:4], pairs[4:]], pad_id=0)  # several pairs share a row
    logps, counts, ref_logps, seq_kl = packed_token_kl(policy, ref, batch, chunk_size=chunk_size)
    weights = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))  # an arbitrary linear objective
    policy.zero_grad()
    ((seq_kl * weights).sum() + (logps * weights.flip(1)).sum()).backward()
    ours = {n: p.grad.clone() for n, p in policy.named_parameters()}
    assert not ref_logps.requires_grad and all(p.grad is None for p in ref.parameters())

    policy.zero_grad()
    objective = torch.zeros((), dtype=torch.float64)
    for i, pair in enumerate(pairs):
        for j, response in enumerate((pair.chosen_ids, pair.rejected_ids)):
            kl, logp, ref_logp = brute_force(policy, ref, pair.prompt_ids, response)
            assert float(seq_kl[i, j].detach()) == pytest.approx(float(kl.detach()), rel=1e-4, abs=1e-4)
            assert float(logps[i, j].detach()) == pytest.approx(float(logp.detach()), rel=1e-5, abs=1e-4)
            assert float(ref_logps[i, j]) == pytest.approx(ref_logp, rel=1e-5, abs=1e-4)
            assert int(counts[i, j]) == len(response)
            objective = objective + weights[i, j] * kl + weights[i, 1 - j] * logp
    objective.backward()
    assert float(seq_kl.detach().min()) > 0.1  # far from zero: the comparison means something
    for name, param in policy.named_parameters():
        torch.testing.assert_close(ours[name], param.grad.float(), rtol=1e-4, atol=1e-5, msg=name)


def test_identical_models_have_zero_kl_and_excluded_tokens_drop_out(models):
    policy, _ = models
    pairs = random_pairs(3, 97, seed=5, max_prompt=6, max_response=6)
    batch = pack_rows([[p] for p in pairs], pad_id=0)
    with torch.no_grad():
        logps, counts, ref_logps, seq_kl = packed_token_kl(policy, policy, batch)
        torch.testing.assert_close(seq_kl, torch.zeros_like(seq_kl), atol=1e-5, rtol=0)
        torch.testing.assert_close(logps, ref_logps)
        excluded = torch.tensor([pairs[0].chosen_ids[0]])
        _, fewer, _, _ = packed_token_kl(policy, policy, batch, exclude_ids=excluded)
    dropped = [[sum(t in excluded.tolist() for t in r) for r in (p.chosen_ids, p.rejected_ids)] for p in pairs]
    assert (counts - fewer).tolist() == dropped and dropped[0][0] >= 1
