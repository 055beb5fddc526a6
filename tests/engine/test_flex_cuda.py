"""The flex path on CUDA (compiled Triton kernels, the default there): scoring and the trainer's packed
micro-batch gradients equal to the dense path in float32. Skipped without a CUDA device."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import random_pairs, tiny_llama

from dpo_eval.engine import flex
from dpo_eval.engine.batching import plan_batches
from dpo_eval.engine.logprobs import packed_logps
from dpo_eval.engine.packing import pack_rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                                reason="needs a CUDA device with Triton (the flex kernels are compiled there)")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def true_float32():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def micro_batch(model, seed: int):
    pairs = random_pairs(8, model.config.vocab_size, seed=seed, max_prompt=40)
    rows = plan_batches([p.packed_length for p in pairs], sum(p.packed_length for p in pairs))
    return pack_rows([[pairs[i] for i in row] for batch in rows for row in batch], pad_id=0).to(CUDA)


def test_auto_is_flex_on_cuda_and_scores_equal_dense():
    model = tiny_llama(seed=1).to(CUDA)
    batch = micro_batch(model, 0)
    with torch.no_grad():
        assert flex.use_flex(model, CUDA)
        got, counts = packed_logps(model, batch)
        flex.set_packed_attention(model, "dense")
        dense, dense_counts = packed_logps(model, batch)
    assert (got - dense).abs().max() <= 1e-5 and torch.equal(counts, dense_counts)


def test_trainer_micro_batch_gradients_equal_dense():
    model = tiny_llama(seed=2).to(CUDA).train()
    batch = micro_batch(model, 1)
    grads = {}
    for path in ("flex", "dense"):
        flex.set_packed_attention(model, path)
        model.zero_grad()
        sums, _ = packed_logps(model, batch)
        (sums[:, 0] - sums[:, 1]).sum().backward()
        grads[path] = [p.grad.clone() for p in model.parameters()]
    for g_flex, g_dense in zip(grads["flex"], grads["dense"], strict=True):
        assert torch.allclose(g_flex, g_dense, atol=1e-5, rtol=1e-4)
