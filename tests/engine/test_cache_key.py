"""The log-prob cache key follows the model's config and attention implementation, not only its weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_pairs, save_tiny_model
from oracle import pair_logps
from transformers import LlamaForCausalLM

from dpo_eval.engine.cache import LogpCache, numerics_tag
from dpo_eval.engine.runner import score_with_cache
from dpo_eval.models import identify_model, load_model

CPU = torch.device("cpu")
TOL = 1e-4


def cached_logps(folder: str, cache_root: Path, pairs) -> tuple[np.ndarray, Path, int]:
    """What `score` does for one model: identify, open its cache, load only if rows are missing.

    Returns (rows (n, 2) of chosen/rejected log-probs, the cache dir, how many pairs were computed).
    """
    identity = identify_model(folder, cache_dir=cache_root)
    cache = LogpCache(cache_root, identity.fingerprint, numerics_tag(CPU, torch.float32))

    def load() -> torch.nn.Module:
        return load_model(folder, device=CPU, dtype=torch.float32, cache_dir=cache_root).model

    result = score_with_cache(load, pairs, cache, pad_id=0, token_budget=256, show_progress=False)
    return np.stack([result.chosen_logp, result.rejected_logp], axis=1), cache.dir, result.n_computed


def oracle_rows(folder: str, pairs) -> np.ndarray:
    """Per-sequence log_softmax + gather on the model as transformers loads it from the folder."""
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return np.array([pair_logps(model, pair) for pair in pairs])


def test_changed_config_field_is_recomputed(tmp_path: Path) -> None:
    folder = save_tiny_model(tmp_path / "model")
    cache_root = tmp_path / "cache"
    pairs = random_pairs(6, json.loads((Path(folder) / "config.json").read_text())["vocab_size"], seed=2)
    before, dir_before, computed = cached_logps(folder, cache_root, pairs)
    assert computed == 6
    assert cached_logps(folder, cache_root, pairs)[2] == 0  # unchanged model: all from the cache

    config_path = Path(folder) / "config.json"
    config = json.loads(config_path.read_text())
    config["rope_parameters"] = {**config["rope_parameters"], "rope_theta": 3.0}
    config_path.write_text(json.dumps(config))
    after, dir_after, computed = cached_logps(folder, cache_root, pairs)
    assert dir_after != dir_before and computed == 6
    assert np.abs(after - before).max() > 1e-3  # the field changes the numbers ...
    assert np.abs(after - oracle_rows(folder, pairs)).max() <= TOL  # ... and the new ones are right


def test_attention_implementation_is_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_tiny_model(tmp_path / "model")
    cache_root = tmp_path / "cache"
    pairs = random_pairs(4, json.loads((Path(folder) / "config.json").read_text())["vocab_size"], seed=3)
    sdpa, dir_sdpa, _ = cached_logps(folder, cache_root, pairs)
    monkeypatch.setattr(LlamaForCausalLM, "_supports_sdpa", False)  # as for a class without SDPA
    eager, dir_eager, computed = cached_logps(folder, cache_root, pairs)
    assert dir_eager != dir_sdpa and computed == 4
    assert np.abs(eager - sdpa).max() <= TOL  # the same math, another kernel
