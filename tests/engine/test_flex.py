"""The FlexAttention BlockMask path against the dense 4D-mask path it replaces (float32, CPU).

The mask_mod is held entry for entry to the dense mask tensor (create_mask); the eager CPU kernel
(torch's reference FlexAttention) is held to the dense path per sequence to 1e-5, for pairs and for
N-response groups, prompts of different lengths in one batch, at every budget.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import random_pairs, tiny_llama
from test_multi import random_groups

from dpo_eval.engine import flex
from dpo_eval.engine.batching import plan_batches
from dpo_eval.engine.multi import (
    PAD_SEGMENT,
    PROMPT_SEGMENT,
    compute_groups,
    group_attention_mask,
    pack_groups,
)
from dpo_eval.engine.packing import PAD, PROMPT, attention_mask_4d, pack_rows
from dpo_eval.engine.runner import compute_pair_logps

TOL = 1e-5  # nats per sequence, float32
BUDGETS = [1, 40, 200, 100_000]


@pytest.fixture
def flex_calls(monkeypatch):
    """Counts calls of the flex attention function (one per layer per flex forward)."""
    calls = []
    original = flex._flex_attention

    def counted(*args, **kwargs):
        calls.append(args[1].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(flex, "_flex_attention", counted)
    return calls


def packed_rows(items, budget):
    return [[items[i] for i in row] for batch in plan_batches([x.packed_length for x in items], budget)
            for row in batch]


def flat_dense(allowed_rows: torch.Tensor) -> torch.Tensor:
    """(B, L, L) allowed-masks laid end to end: block diagonal (B L, B L), rows never see each other."""
    return torch.block_diag(*allowed_rows)


def mask_of(mask_mod, n: int) -> torch.Tensor:
    from torch.nn.attention.flex_attention import create_mask

    return create_mask(mask_mod, 1, 1, n, n, device="cpu")[0, 0]


@pytest.mark.parametrize("budget", BUDGETS)
def test_pair_mask_mod_is_the_dense_mask_entry_for_entry(budget):
    pairs = random_pairs(9, 97, seed=budget)
    batch = pack_rows(packed_rows(pairs, budget)[:5], pad_id=0)
    dense = attention_mask_4d(batch.segments, batch.pair_slots, torch.float32)[:, 0] == 0
    mod = flex.packing_mask_mod(batch.segments.reshape(-1), batch.pair_slots.reshape(-1), PROMPT, PAD)
    assert torch.equal(mask_of(mod, batch.segments.numel()), flat_dense(dense))


@pytest.mark.parametrize("budget", BUDGETS)
def test_group_mask_mod_is_the_dense_mask_entry_for_entry(budget):
    groups = random_groups(7, 97, seed=budget)
    batch = pack_groups(packed_rows(groups, budget)[:4], pad_id=0)
    dense = group_attention_mask(batch.segments, batch.group_slots, torch.float32)[:, 0] == 0
    mod = flex.packing_mask_mod(batch.segments.reshape(-1), batch.group_slots.reshape(-1), PROMPT_SEGMENT,
                                PAD_SEGMENT)
    assert torch.equal(mask_of(mod, batch.segments.numel()), flat_dense(dense))


def test_block_mask_skips_other_pairs_blocks():
    """Two 200-token pairs in one row: the first pair's queries never touch the second's keys' blocks."""
    from dpo_eval.tokenization import TokenizedPair

    rng = random.Random(0)
    ids = lambda k: tuple(rng.randrange(1, 97) for _ in range(k))  # noqa: E731
    pairs = [TokenizedPair(str(i), "s", ids(128), ids(64), ids(64)) for i in range(2)]  # 256 tokens each
    batch = pack_rows([pairs], pad_id=0)
    mask = flex.packing_block_mask(batch.segments, batch.pair_slots, PROMPT, PAD)
    dense_blocks = mask.to_dense()[0, 0]  # (4, 4) blocks of 128: which are visited
    assert dense_blocks.shape == (4, 4)
    assert not dense_blocks[:2, 2:].any() and not dense_blocks[2:, :2].any()  # other pair: skipped
    assert dense_blocks[1, 0] and dense_blocks[3, 2]  # responses see their own prompt


def score(model, pairs, budget, path):
    flex.set_packed_attention(model, path)
    rows = compute_pair_logps(model, pairs, pad_id=0, token_budget=budget, show_progress=False)
    return np.array([rows[p.content_key()] for p in pairs])


@pytest.mark.parametrize("budget", BUDGETS)
def test_pair_scoring_flex_equals_dense_per_sequence(budget, flex_calls):
    model = tiny_llama(seed=1)
    pairs = random_pairs(9, model.config.vocab_size, seed=budget, max_prompt=30)
    assert len({len(p.prompt_ids) for p in pairs}) > 4  # prompts of different lengths share batches
    dense = score(model, pairs, budget, "dense")
    assert not flex_calls
    got = score(model, pairs, budget, "flex")
    assert flex_calls  # the flex kernel ran
    assert np.abs(got[:, :2] - dense[:, :2]).max() <= TOL
    assert np.array_equal(got[:, 2:], dense[:, 2:])


@pytest.mark.parametrize("budget", BUDGETS)
def test_group_scoring_flex_equals_dense_per_sequence(budget, flex_calls):
    model = tiny_llama(seed=2)
    groups = random_groups(8, model.config.vocab_size, seed=budget)

    def run(path):
        flex.set_packed_attention(model, path)
        rows = compute_groups(model, groups, pad_id=0, token_budget=budget, show_progress=False,
                              reuse_prompt_cache=False)
        return np.array([row for group in rows for row in group], dtype=np.float64)

    dense = run("dense")
    got = run("flex")
    assert flex_calls
    assert np.abs(got[:, :2] - dense[:, :2]).max() <= TOL * max(1.0, np.abs(dense[:, 1]).max())
    assert np.array_equal(got[:, 2], dense[:, 2])


def test_gqa_and_other_shapes_match(flex_calls):
    """Heads 8 / kv heads 2 (GQA) and a wider head: the eager kernel's enable_gqa path."""
    model = tiny_llama(seed=4, hidden_size=64, num_attention_heads=8, num_key_value_heads=2)
    pairs = random_pairs(6, model.config.vocab_size, seed=9)
    assert np.abs(score(model, pairs, 120, "flex") - score(model, pairs, 120, "dense")).max() <= TOL
    assert flex_calls


def test_trainer_micro_batch_loss_flex_equals_dense(flex_calls):
    """The recipe's packing of a micro-batch (one budget = the micro-batch) and the DPO loss on it."""
    from dpo_eval.engine.logprobs import packed_logps
    from dpo_eval.train.losses import PairLogps, dpo_loss

    model = tiny_llama(seed=5)
    pairs = random_pairs(6, model.config.vocab_size, seed=11)
    packed = pack_rows(packed_rows(pairs, sum(p.packed_length for p in pairs)), pad_id=0)
    ref = torch.randn(len(pairs), 2, generator=torch.Generator().manual_seed(0)) - 30
    losses = {}
    for path in ("dense", "flex"):
        flex.set_packed_attention(model, path)
        with torch.no_grad():
            sums, counts = packed_logps(model, packed)
        out = dpo_loss(PairLogps(sums[:, 0], sums[:, 1], ref[:, 0], ref[:, 1], counts[:, 0].float(),
                                 counts[:, 1].float()), beta=0.1)
        losses[path] = out.losses
    assert flex_calls
    assert torch.allclose(losses["flex"], losses["dense"], atol=1e-6, rtol=0)


def test_auto_picks_dense_on_cpu_and_flex_when_asked():
    model = tiny_llama()
    assert not flex.use_flex(model, torch.device("cpu"))
    flex.set_packed_attention(model, "flex")
    with torch.no_grad():
        assert flex.use_flex(model, torch.device("cpu"))
    flex.set_packed_attention(model, "dense")
    assert not flex.use_flex(model, torch.device("cuda"))


def test_cpu_training_with_flex_is_refused_with_the_fix():
    model = tiny_llama().train()
    flex.set_packed_attention(model, "flex")
    with pytest.raises(ValueError, match="no backward on cpu.*'dense'"):
        flex.use_flex(model, torch.device("cpu"))


def test_sliding_window_model_keeps_the_dense_path():
    from test_engine_kl import tiny_gemma2

    model = tiny_gemma2(0)
    assert "sliding" in flex.flex_unsupported_reason(model) or "layer_types" in flex.flex_unsupported_reason(model)
    flex.set_packed_attention(model, "flex")
    with pytest.raises(ValueError, match="flex packed attention was asked for"):
        flex.use_flex(model, torch.device("cpu"))


def test_activation_checkpointing_in_training_keeps_the_dense_path():
    """Checkpointed layers rerun in backward, outside the forward's switch to the flex implementation."""
    model = tiny_llama()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})  # as the trainer
    assert flex.flex_unsupported_reason(model) is None  # eval: nothing is recomputed
    assert "activation checkpointing" in flex.flex_unsupported_reason(model.train())


def test_unknown_path_is_refused():
    with pytest.raises(ValueError, match="not one of auto, flex, dense"):
        flex.set_packed_attention(tiny_llama(), "fast")


def test_attention_implementation_is_restored_even_after_an_error():
    model = tiny_llama()
    with pytest.raises(RuntimeError, match="planted"), flex.flex_implementation(model.model):
        assert model.config._attn_implementation == flex.FLEX_IMPLEMENTATION
        raise RuntimeError("planted")
    assert model.config._attn_implementation == "sdpa"
    assert all(layer.self_attn.config._attn_implementation == "sdpa" for layer in model.model.layers)


def test_auto_falls_back_to_dense_once_when_the_flex_kernel_fails(monkeypatch):
    """"auto" on a device where flex was picked but fails (a compile error on a GPU box, say): warn, keep
    the dense mask for that model from then on, and return the dense path's numbers."""
    model = tiny_llama(seed=6)
    pairs = random_pairs(5, model.config.vocab_size, seed=12)
    dense = score(model, pairs, 100, "dense")

    def broken(*args, **kwargs):
        raise RuntimeError("planted compile failure")

    monkeypatch.setattr(flex, "_flex_attention", broken)
    monkeypatch.setattr(flex, "use_flex", lambda m, device: getattr(m, flex._PATH_ATTRIBUTE) != "dense")
    with pytest.warns(UserWarning, match="planted compile failure.*dense 4D mask from now on"):
        got = score(model, pairs, 100, "auto")
    assert np.array_equal(got, dense)
    assert getattr(model, flex._PATH_ATTRIBUTE) == "dense"
    assert model.config._attn_implementation == "sdpa"
    flex.set_packed_attention(model, "flex")  # asked for explicitly: the failure is raised
    with pytest.raises(RuntimeError, match="planted compile failure"):
        score(model, pairs, 100, "flex")
