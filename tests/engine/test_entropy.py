"""Next-token entropy at the end of prompts against full logits and a float64 log_softmax."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from test_engine_kl import random_sequences, sharpened, tiny_gemma2

from dpo_eval.engine.entropy import prompt_entropy
from dpo_eval.errors import UserError

TOL = 1e-4


@torch.no_grad()
def brute_force_entropies(model, prompt) -> torch.Tensor:
    """H(p(. | prompt[:t+1])) for every prompt position t, float64."""
    logp = torch.log_softmax(model(input_ids=torch.tensor([list(prompt)])).logits[0].double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("make", [lambda: sharpened(tiny_llama(seed=1), 10), lambda: sharpened(tiny_gemma2(1), 30)],
                         ids=["llama", "gemma2-softcap"])
@pytest.mark.parametrize("budget,chunk,last_k", [(1, None, 1), (25, 2, 3), (10_000, None, 5), (10_000, 1, 1)])
def test_prompt_entropy_matches_brute_force(make, budget, chunk, last_k):
    model = make()
    prompts = [x for x, _ in random_sequences(9, model.config.vocab_size, seed=7)]
    got = prompt_entropy(model, prompts, token_budget=budget, pad_id=0, last_k=last_k, chunk_size=chunk)
    spread = []
    for prompt, result in zip(prompts, got):
        expected = brute_force_entropies(model, prompt)
        k = min(last_k, len(prompt))
        assert result.k == k
        assert abs(result.last - float(expected[-1])) <= TOL
        assert abs(result.mean_last_k - float(expected[-k:].mean())) <= TOL
        spread.append(result.last)
    assert max(spread) - min(spread) > 0.1  # prompts differ: a constant answer would fail


def test_empty_prompt_and_bad_k_are_user_errors():
    model = tiny_llama()
    with pytest.raises(UserError, match="sequence 1 has an empty prompt"):
        prompt_entropy(model, [(1, 2), ()], token_budget=64, pad_id=0)
    with pytest.raises(UserError, match="last_k"):
        prompt_entropy(model, [(1, 2)], token_budget=64, pad_id=0, last_k=0)
