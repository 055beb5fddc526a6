"""The engine against a per-sequence log_softmax + gather oracle (float32, |diff| <= 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_pairs, tiny_llama
from oracle import pair_logps

from dpo_eval.engine.batching import plan_batches
from dpo_eval.engine.packing import CHOSEN, REJECTED, attention_mask_4d, pack_pairs, pack_rows
from dpo_eval.engine.runner import compute_pair_logps

TOL = 1e-4


def engine_rows(model, pairs, budget):
    rows = compute_pair_logps(model, pairs, pad_id=0, token_budget=budget)
    return np.array([rows[p.content_key()] for p in pairs])


@pytest.mark.parametrize("budget", [1, 64, 200, 100_000])
def test_engine_matches_oracle_for_any_budget(llama, budget):
    pairs = random_pairs(12, llama.config.vocab_size)
    got = engine_rows(llama, pairs, budget)
    for pair, row in zip(pairs, got):
        chosen, rejected = pair_logps(llama, pair)
        assert abs(row[0] - chosen) <= TOL and abs(row[1] - rejected) <= TOL
        assert row[2] == len(pair.chosen_ids) and row[3] == len(pair.rejected_ids)


def test_results_do_not_depend_on_token_budget(llama):
    pairs = random_pairs(20, llama.config.vocab_size, seed=3)
    small, large = engine_rows(llama, pairs, 48), engine_rows(llama, pairs, 10_000)
    assert np.abs(small - large).max() <= TOL


@pytest.mark.parametrize("make", [
    lambda: tiny_llama(tie_word_embeddings=True),
    lambda: _tiny("GPT2Config", "GPT2LMHeadModel", n_embd=32, n_layer=2, n_head=4, n_positions=512),
    lambda: _tiny("Qwen2Config", "Qwen2ForCausalLM", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    lambda: _tiny("Gemma2Config", "Gemma2ForCausalLM", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                  final_logit_softcapping=3.0, attn_implementation="eager"),
], ids=["llama-tied", "gpt2", "qwen2", "gemma2-softcap"])
def test_other_architectures_match_oracle(make):
    model = make()
    pairs = random_pairs(6, model.config.vocab_size, seed=5)
    got = engine_rows(model, pairs, 120)
    for pair, row in zip(pairs, got):
        chosen, rejected = pair_logps(model, pair)
        assert abs(row[0] - chosen) <= TOL and abs(row[1] - rejected) <= TOL


def _tiny(config_name, model_name, **kw):
    import transformers

    torch.manual_seed(0)
    kw.setdefault("attn_implementation", "sdpa")
    config = getattr(transformers, config_name)(vocab_size=101, **kw)
    return getattr(transformers, model_name)(config).eval()


def test_batches_fit_the_budget_and_cover_every_item_once():
    lengths = [5, 50, 7, 30, 30, 8, 49, 1, 12, 3]
    batches = plan_batches(lengths, token_budget=100)
    items = [i for batch in batches for row in batch for i in row]
    assert sorted(items) == list(range(len(lengths)))
    for batch in batches:
        width = max(sum(lengths[i] for i in row) for row in batch)
        assert len(batch) * width <= 100
        assert width == max(lengths[i] for row in batch for i in row)  # rows never wider than the longest item


def test_short_items_fill_rows_left_by_long_ones():
    # budget 10: [10] alone; width 6 -> one row: [6]; width 4 -> two rows: [4] and [3, 1]
    assert plan_batches([10, 6, 4, 3, 1], token_budget=10) == [[[0]], [[1]], [[2], [3, 4]]]
    # budget 20, width 10 -> two rows: [10] and [6, 4]; width 3 -> six rows: [3], [1]
    assert plan_batches([10, 6, 4, 3, 1], token_budget=20) == [[[0], [1, 2]], [[3], [4]]]


def test_item_longer_than_budget_gets_its_own_batch():
    assert plan_batches([50, 2], token_budget=10) == [[[0]], [[1]]]


def test_rows_with_several_pairs_match_oracle(llama):
    pairs = random_pairs(6, llama.config.vocab_size, seed=11)
    batch_rows = [pairs[:3], pairs[3:]]
    from dpo_eval.engine.runner import compute_batch

    got = compute_batch(llama, batch_rows, pad_id=0)
    for pair, row in zip(pairs, got):
        chosen, rejected = pair_logps(llama, pair)
        assert abs(row[0] - chosen) <= TOL and abs(row[1] - rejected) <= TOL


def test_rejected_tokens_never_see_chosen_tokens_nor_other_pairs():
    pairs = random_pairs(4, 50, seed=1)
    batch = pack_rows([pairs[:2], pairs[2:]], pad_id=0)
    mask = attention_mask_4d(batch.segments, batch.pair_slots, torch.float32)[:, 0]
    blocked = mask < -1e30
    rejected_q = batch.segments[:, :, None] == REJECTED
    chosen_k = batch.segments[:, None, :] == CHOSEN
    assert torch.all(blocked[rejected_q & chosen_k & (batch.pair_slots[:, :, None] == batch.pair_slots[:, None, :])])
    other_pair = (batch.pair_slots[:, :, None] != batch.pair_slots[:, None, :]) & (batch.pair_slots[:, :, None] >= 0)
    assert torch.all(blocked[other_pair])
    assert batch.input_ids.shape[0] == 2 and batch.n_pairs == 4


def test_prompt_processed_once_per_pair():
    pairs = random_pairs(4, 50, seed=2)
    batch = pack_pairs(pairs, pad_id=0)
    real_tokens = int((batch.segments != 3).sum())
    assert real_tokens == sum(p.packed_length for p in pairs)


def test_single_sequences_pack_as_pairs_without_a_rejected_response(llama):
    from dpo_eval.tokenization import TokenizedPair

    pairs = [TokenizedPair(p.id, p.subset, p.prompt_ids, p.chosen_ids, ()) for p in random_pairs(5, 97, seed=8)]
    got = engine_rows(llama, pairs, 64)
    for pair, row in zip(pairs, got):
        chosen, _ = pair_logps(llama, pair)
        assert abs(row[0] - chosen) <= TOL and row[1] == 0.0 and row[3] == 0
