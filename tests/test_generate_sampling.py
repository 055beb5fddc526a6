"""The per-row-seeded sampling loop of `generate` (dpo_eval.sampling), held to HF's generate."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama, word_tokenizer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from dpo_eval.sampling import next_token_scores, sample_seed, sample_sequences

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [20, 21, 22, 23]]
EOS = 3


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab_size=len(word_tokenizer()), seed=1)


def hf_generate(model, prompt: list[int], max_new_tokens: int, **sampling) -> list[int]:
    """HF's own generate on one unpadded prompt; the new tokens, cut after EOS."""
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=max_new_tokens, pad_token_id=0, eos_token_id=EOS, **sampling)
    new = out[0, len(prompt):].tolist()
    return new[: new.index(EOS) + 1] if EOS in new else new


def ours(model, prompts, seeds, **settings) -> list[list[int]]:
    return sample_sequences(model, prompts, seeds, eos_ids={EOS}, pad_id=0, **{"max_new_tokens": 10, **settings})


def test_greedy_batch_equals_hf_generate_row_by_row(model):
    batch = ours(model, PROMPTS, [0] * len(PROMPTS), temperature=0, top_p=1.0)
    assert batch == [hf_generate(model, p, 10, do_sample=False) for p in PROMPTS]


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)])
def test_seeded_sampling_equals_hf_generate_under_the_same_seed(model, temperature, top_p):
    """One row drawn with torch.Generator(seed) == HF's do_sample (top_k=0) after torch.manual_seed(seed)."""
    for seed, prompt in enumerate(PROMPTS):
        torch.manual_seed(seed)
        expected = hf_generate(model, prompt, 10, do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        assert ours(model, [prompt], [seed], temperature=temperature, top_p=top_p) == [expected]


def test_a_row_does_not_depend_on_its_batch(model):
    seeds = [11, 12, 13, 14]
    together = ours(model, PROMPTS, seeds, temperature=1.0, top_p=0.95)
    alone = [ours(model, [p], [s], temperature=1.0, top_p=0.95)[0] for p, s in zip(PROMPTS, seeds)]
    shuffled = ours(model, PROMPTS[::-1], seeds[::-1], temperature=1.0, top_p=0.95)[::-1]
    assert together == alone == shuffled
    same_prompt = ours(model, [PROMPTS[1]] * 3, [1, 2, 3], temperature=1.0, top_p=1.0)
    assert len({tuple(s) for s in same_prompt}) == 3  # other seeds, other samples


def test_generation_stops_at_eos_and_nothing_follows(model):
    rows = ours(model, PROMPTS, [0, 1, 2, 3], temperature=1.0, top_p=1.0, max_new_tokens=40)
    for row in rows:
        assert 1 <= len(row) <= 40 and EOS not in row[:-1]


def test_scores_match_hf_warpers():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0)) * 3
    for temperature, top_p in [(0.7, 0.9), (1.0, 0.3), (2.0, 1.0), (0.5, 0.01)]:
        expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_p < 1.0:
            expected = TopPLogitsWarper(top_p)(None, expected)
        got = next_token_scores(logits, temperature, top_p)
        assert torch.equal(torch.isinf(got), torch.isinf(expected))
        assert torch.allclose(got[~torch.isinf(got)], expected[~torch.isinf(expected)])
    kept = torch.isfinite(next_token_scores(logits, 1.0, 0.01)).sum(dim=-1)
    assert kept.tolist() == [1] * 5  # a tiny top_p keeps just the most likely token


def test_top_p_keeps_the_smallest_set_reaching_p_by_hand():
    # probs 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps {0.5, 0.3} (0.5 < 0.75 <= 0.8);
    # top_p 0.81 needs 0.15 too (0.8 < 0.81 <= 0.95)
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isfinite(next_token_scores(logits, 1.0, 0.75)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(next_token_scores(logits, 1.0, 0.81)).tolist() == [[True, True, True, False]]


def test_sample_seed_is_a_pure_function_of_seed_prompt_and_index():
    assert sample_seed(0, "p1", 0) == sample_seed(0, "p1", 0)
    assert len({sample_seed(s, p, i) for s in (0, 1) for p in ("p1", "p2") for i in (0, 1)}) == 8
    assert 0 <= sample_seed(7, "x", 3) < 2**63
