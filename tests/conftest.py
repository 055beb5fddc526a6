"""Shared fixtures: tiny random causal LMs built from a config (seconds, no downloads)."""

from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_llama(vocab_size: int = 97, seed: int = 0, **overrides):
    """A 2-layer Llama with random weights; float32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    attn_implementation="sdpa")
    config = LlamaConfig(**{**settings, **overrides})
    return LlamaForCausalLM(config).eval()


def random_pairs(n: int, vocab_size: int, seed: int = 0, max_prompt: int = 20, max_response: int = 15):
    """TokenizedPairs with random ids and lengths (ids avoid 0, the pad id used in tests)."""
    from dpo_eval.tokenization import TokenizedPair

    rng = random.Random(seed)
    ids = lambda k: tuple(rng.randrange(1, vocab_size) for _ in range(k))  # noqa: E731
    return [TokenizedPair(str(i), "s%d" % (i % 2), ids(rng.randint(1, max_prompt)),
                          ids(rng.randint(1, max_response)), ids(rng.randint(1, max_response)))
            for i in range(n)]


@pytest.fixture
def llama():
    return tiny_llama()
