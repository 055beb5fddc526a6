"""The prompt's keys and values reused by its N responses, against each (prompt, response) alone."""

from __future__ import annotations

import pytest
from conftest import tiny_llama
from oracle import sequence_logp
from test_engine_kl import tiny_gemma2
from test_multi import TOL, oracle_tokens, random_groups

from dpo_eval.engine.multi import ResponseGroup, compute_groups, score_sequences
from dpo_eval.engine.prefix import plan_prompt_batches, supports_prefix_cache


def embedded_shapes(model) -> list[tuple[int, ...]]:
    """Records the (rows, tokens) of every batch the model embeds, i.e. of every forward pass."""
    shapes: list[tuple[int, ...]] = []
    model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: shapes.append(tuple(args[0].shape)))
    return shapes


@pytest.mark.parametrize("budget", [1, 23, 40, 10_000])
def test_prompt_cache_equals_separate_scoring(budget):
    model = tiny_llama(seed=7)
    groups = random_groups(9, model.config.vocab_size, seed=budget, max_n=6, max_prompt=12, max_response=8)
    results = compute_groups(model, groups, pad_id=0, token_budget=budget, show_progress=False,
                             reuse_prompt_cache=True)
    for group, rows in zip(groups, results):
        assert len(rows) == len(group.responses)
        for response, (total, squares, count, _) in zip(group.responses, rows):
            per_token = oracle_tokens(model, group.prompt_ids, response)
            assert abs(total - per_token.sum()) <= TOL
            assert abs(total - sequence_logp(model, group.prompt_ids, response)) <= TOL
            assert abs(squares - (per_token ** 2).sum()) <= TOL * max(1.0, squares)
            assert count == len(response)


def test_each_prompt_runs_once_and_responses_are_chunked_to_the_budget():
    """P = 7, responses of 3, 5, 1, 4 tokens: stage 1 embeds the prompt once; stage 2 embeds each
    response but its last token (2, 4, 0, 3), longest first, rows * (7 + longest) <= 22 per pass."""
    model = tiny_llama(seed=8)
    group = ResponseGroup(tuple(range(1, 8)), ((11, 12, 13), (14, 15, 16, 17, 18), (19,), (20, 21, 22, 23)))
    shapes = embedded_shapes(model)
    rows = compute_groups(model, [group], pad_id=0, token_budget=22, show_progress=False, reuse_prompt_cache=True)[0]
    assert shapes == [(1, 7), (2, 4), (2, 2)]
    for response, row in zip(group.responses, rows):
        assert abs(row[0] - sequence_logp(model, group.prompt_ids, response)) <= TOL


def test_responses_never_see_each_other_through_the_cache():
    """A chunk's rows come from a copy of the prompt's cache: one response's keys never reach another."""
    model = tiny_llama(seed=9)
    prompt, a, c = (3, 4, 5, 6), (7, 8, 9), (12, 13, 14, 15)
    score = lambda b: compute_groups(model, [ResponseGroup(prompt, (a, b, c))], pad_id=0, token_budget=1,  # noqa: E731
                                     show_progress=False, reuse_prompt_cache=True)[0]
    before, after = score((10, 11)), score((20, 21, 22, 23, 24))
    assert before[0][0] == after[0][0] and before[2][0] == after[2][0]
    assert abs(before[1][0] - after[1][0]) > 1e-3


def test_supported_only_where_every_layer_sees_the_whole_context():
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    small = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1)
    assert supports_prefix_cache(tiny_llama())
    assert not supports_prefix_cache(tiny_gemma2(0))  # alternating sliding-window layers
    assert not supports_prefix_cache(MistralForCausalLM(MistralConfig(**small, sliding_window=8)))
    assert supports_prefix_cache(MistralForCausalLM(MistralConfig(**small, sliding_window=None)))
    assert supports_prefix_cache(Qwen2ForCausalLM(Qwen2Config(**small, use_sliding_window=False)))


def test_compute_groups_chooses_the_path_the_model_supports():
    """Default: the prompt cache for Llama (3 passes here), the 4D-mask rows for Gemma2 (1 pass)."""
    group = ResponseGroup((1, 2, 3), ((4, 5), (6, 7, 8)))
    for model, passes in ((tiny_llama(seed=1), 2), (tiny_gemma2(1), 1)):
        shapes = embedded_shapes(model)
        compute_groups(model, [group], pad_id=0, token_budget=100, show_progress=False)
        assert len(shapes) == passes


def test_score_sequences_keeps_a_prompts_responses_in_one_group():
    """With the prompt cache a prompt's responses are not split to the budget: the prompt runs once."""
    model = tiny_llama(seed=10)
    prompt = tuple(range(1, 9))
    seqs = [(prompt, tuple(range(20 + k, 26 + k))) for k in range(6)]
    shapes = embedded_shapes(model)
    stats = score_sequences(lambda: model, seqs, None, pad_id=0, token_budget=30, show_progress=False)
    assert sum(1 for s in shapes if s[1] == len(prompt)) == 1
    for (p, r), total in zip(seqs, stats.logp_sum):
        assert abs(total - sequence_logp(model, p, r)) <= TOL


def test_plan_prompt_batches_respects_both_bounds():
    groups = [ResponseGroup((1,) * p, ((2,) * length,) * n) for p, length, n in
              [(4, 2, 1), (2, 1, 1), (9, 3, 2), (3, 1, 2), (30, 5, 1)]]
    batches = plan_prompt_batches(groups, token_budget=20)
    assert sorted(i for b in batches for i in b) == list(range(len(groups)))
    for batch in batches:
        widest = max(len(groups[i].prompt_ids) for i in batch)
        assert len(batch) == 1 or (len(batch) * widest <= 20 and sum(groups[i].packed_length for i in batch) <= 20)
    assert [4] in batches  # the 35-token group alone
    assert batches[0] == [1, 3, 0]  # prompts 2, 3, 4: 3 * 4 <= 20 and 3 + 5 + 6 <= 20
