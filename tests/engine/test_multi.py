"""N-response shared-prefix packing against scoring each (prompt, response) as its own sequence."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import tiny_llama
from oracle import sequence_logp
from test_engine_kl import tiny_gemma2

from dpo_eval.engine.cache import LogpCache
from dpo_eval.engine.multi import (
    PAD_SEGMENT,
    ResponseGroup,
    compute_groups,
    group_attention_mask,
    pack_groups,
    score_sequences,
    split_group,
)

TOL = 1e-4


def random_groups(n: int, vocab: int, seed: int, max_n: int = 5, max_prompt: int = 14, max_response: int = 9):
    rng = random.Random(seed)
    ids = lambda k: tuple(rng.randrange(1, vocab) for _ in range(k))  # noqa: E731
    return [ResponseGroup(ids(rng.randint(1, max_prompt)),
                          tuple(ids(rng.randint(1, max_response)) for _ in range(rng.randint(1, max_n))))
            for _ in range(n)]


@torch.no_grad()
def oracle_tokens(model, prompt, response) -> np.ndarray:
    """Per-token log-probs of response after prompt: one sequence, full logits, log_softmax, gather."""
    ids = torch.tensor([list(prompt) + list(response)])
    logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    return logps.gather(1, ids[0, 1:, None]).squeeze(1)[len(prompt) - 1:].numpy()


@pytest.mark.parametrize("make", [lambda: tiny_llama(seed=3), lambda: tiny_gemma2(4)], ids=["llama", "gemma2-softcap"])
@pytest.mark.parametrize("budget", [1, 40, 10_000])
def test_n_response_packing_equals_separate_scoring(make, budget):
    model = make()
    groups = random_groups(7, model.config.vocab_size, seed=budget)
    results = compute_groups(model, groups, pad_id=0, token_budget=budget, show_progress=False)
    for group, rows in zip(groups, results):
        assert len(rows) == len(group.responses)
        for response, (total, squares, count, _) in zip(group.responses, rows):
            per_token = oracle_tokens(model, group.prompt_ids, response)
            assert abs(total - per_token.sum()) <= TOL
            assert abs(total - sequence_logp(model, group.prompt_ids, response)) <= TOL
            assert abs(squares - (per_token ** 2).sum()) <= TOL * max(1.0, squares)
            assert count == len(response)


def test_a_response_never_sees_another():
    """Changing response 1 leaves responses 0 and 2 of the same group exactly as they were."""
    model = tiny_llama(seed=5)
    prompt, a, b, c = (3, 4, 5, 6), (7, 8, 9), (10, 11), (12, 13, 14, 15)
    before = compute_groups(model, [ResponseGroup(prompt, (a, b, c))], pad_id=0, token_budget=100,
                            show_progress=False)[0]
    after = compute_groups(model, [ResponseGroup(prompt, (a, (20, 21, 22, 23, 24), c))], pad_id=0,
                           token_budget=100, show_progress=False)[0]
    assert abs(before[0][0] - after[0][0]) <= 1e-6 and abs(before[2][0] - after[2][0]) <= 1e-6
    assert abs(before[1][0] - after[1][0]) > 1e-3  # the changed response itself did change


def test_layout_positions_and_mask():
    batch = pack_groups([[ResponseGroup((1, 2), ((3, 4), (5,), (6, 7)))]], pad_id=0)
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 2, 2, 3]
    assert batch.segments[0].tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert batch.source_index.tolist() == [1, 2, 1, 1, 5]
    assert batch.target_ids.tolist() == [3, 4, 5, 6, 7] and batch.owner.tolist() == [0, 0, 1, 2, 2]
    allowed = group_attention_mask(batch.segments, batch.group_slots, torch.float32)[0, 0] == 0
    # the last token of response 3 sees the prompt and response 3 only
    assert allowed[6].tolist() == [True, True, False, False, False, True, True]
    two = pack_groups([[ResponseGroup((1,), ((2,),)), ResponseGroup((3,), ((4,),))], [ResponseGroup((5,), ((6,),))]], 0)
    allowed = group_attention_mask(two.segments, two.group_slots, torch.float32)[:, 0] == 0
    assert not allowed[0, 2, 1]  # the second group never sees the first
    assert two.segments[1].tolist() == [0, 1, PAD_SEGMENT, PAD_SEGMENT]


def test_split_group_respects_the_budget():
    groups = split_group((1, 2), [(3,) * 4, (4,) * 4, (5,) * 9, (6,)], token_budget=10)
    assert [len(g.responses) for g in groups] == [2, 1, 1]
    assert all(g.prompt_ids == (1, 2) for g in groups)
    assert groups[1].packed_length == 11  # too long for the budget: alone


def test_score_sequences_caches_and_groups_by_prompt(tmp_path):
    model = tiny_llama(seed=6)
    rng = random.Random(0)
    prompts = [tuple(rng.randrange(1, 97) for _ in range(5)) for _ in range(3)]
    seqs = [(p, tuple(rng.randrange(1, 97) for _ in range(rng.randint(1, 6)))) for p in prompts for _ in range(4)]
    cache = LogpCache(tmp_path, "fp", "cpu-float32-seqstats")
    loads = []
    first = score_sequences(lambda: loads.append(1) or model, seqs, cache, pad_id=0, token_budget=64,
                            show_progress=False)
    assert first.n_computed == len(seqs) and loads == [1]
    for (prompt, response), total in zip(seqs, first.logp_sum):
        assert abs(total - sequence_logp(model, prompt, response)) <= TOL
    again = score_sequences(lambda: pytest.fail("a fully cached model must not load"), seqs, cache, pad_id=0,
                            token_budget=64, show_progress=False)
    assert again.n_computed == 0
    np.testing.assert_array_equal(again.logp_sum, first.logp_sum)
    np.testing.assert_array_equal(again.tokens, [len(r) for _, r in seqs])


def test_group_needs_tokens():
    with pytest.raises(ValueError):
        ResponseGroup((), ((1,),))
    with pytest.raises(ValueError):
        ResponseGroup((1,), ((1,), ()))
