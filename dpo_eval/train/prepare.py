"""Training data: tokenized pairs and the reference log-probs, precomputed through the engine's cache.

The reference model is loaded only when the cache lacks something, and freed before the policy
trains; with keep_ref_live it stays and scores each micro-batch instead.
"""

from __future__ import annotations

import gc
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dpo_eval.data.pairs import load_pairs
from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import LogpCache, default_cache_dir
from dpo_eval.engine.distributed import DistContext
from dpo_eval.engine.runner import compute_batch, score_with_cache
from dpo_eval.models import check_same_vocabulary, identify_model, load_model, load_tokenizer
from dpo_eval.tokenization import TokenizedPair, TokenizerSettings, tokenize_pairs
from dpo_eval.train.config import TrainConfig


@dataclass
class PreparedData:
    train: list[TokenizedPair]
    eval: list[TokenizedPair]
    tokenizer: object
    pad_id: int
    exclude_ids: torch.Tensor | None
    cache_root: Path
    tokenization: dict
    ref_identity: dict | None = None
    ref_train: np.ndarray | None = None  # (n, 2): chosen, rejected
    ref_eval: np.ndarray | None = None
    ref_model: torch.nn.Module | None = None  # only with keep_ref_live

    def ref_logps(self, items: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Reference (chosen, rejected) log-probs of training items, each (len(items),) float32."""
        if self.ref_model is not None:
            rows = np.array(compute_batch(self.ref_model, [[self.train[i]] for i in items], self.pad_id,
                                          self.exclude_ids))[:, :2]
        elif self.ref_train is not None:
            rows = self.ref_train[items]
        else:
            return None
        values = torch.tensor(rows, dtype=torch.float32, device=device)
        return values[:, 0], values[:, 1]


def _tokenized(path: str | None, config: TrainConfig, tokenizer, settings: TokenizerSettings):
    if path is None:
        return [], None
    loaded = load_pairs(path, data_format=config.data_format, skip_invalid=config.skip_invalid,
                        limit=config.limit if path == config.data else None)
    tokenized = tokenize_pairs(loaded.pairs, tokenizer, settings)
    return tokenized.pairs, tokenized


def _numerics(device: torch.device, dtype: torch.dtype, exclude_ids: torch.Tensor | None) -> str:
    tag = f"{device.type}-{str(dtype).removeprefix('torch.')}"
    if exclude_ids is not None:
        tag += "-excl" + hashlib.blake2b(str(sorted(exclude_ids.tolist())).encode(), digest_size=4).hexdigest()
    return tag


def prepare_data(config: TrainConfig, ctx: DistContext, device: torch.device, dtype: torch.dtype,
                 uses_ref: bool) -> PreparedData:
    cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    ref_path = config.ref or config.policy
    tokenizer = load_tokenizer(config.policy, ref_path, cache_dir=cache_root)
    if config.ref and config.ref != config.policy:
        check_same_vocabulary(tokenizer, load_tokenizer(ref_path, cache_dir=cache_root), "policy", "reference")
    settings = TokenizerSettings(template=config.template, max_length=config.max_length,
                                 truncation=config.truncation)
    train, tokenized = _tokenized(config.data, config, tokenizer, settings)
    evaluation, _ = _tokenized(config.eval_data, config, tokenizer, settings)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    exclude = torch.tensor(sorted(tokenizer.all_special_ids)) if config.mask_special_tokens else None
    data = PreparedData(train, evaluation, tokenizer, pad_id, exclude, cache_root,
                        {"template": config.template, "mode": tokenized.mode, "max_length": config.max_length,
                         "truncation": config.truncation, "n_truncated": tokenized.n_truncated,
                         "mask_special_tokens": config.mask_special_tokens})
    if uses_ref:
        _attach_reference(data, config, ref_path, ctx, device, dtype)
    return data


def _attach_reference(data: PreparedData, config: TrainConfig, ref_path: str, ctx: DistContext,
                      device: torch.device, dtype: torch.dtype) -> None:
    identity = identify_model(ref_path, cache_dir=data.cache_root, allow_pickle=config.allow_pickle)
    data.ref_identity = identity.to_dict()

    def load() -> torch.nn.Module:
        return load_model(ref_path, device=device, dtype=dtype, cache_dir=data.cache_root,
                          trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle).model

    if config.keep_ref_live:
        data.ref_model = load()
        return
    cache = LogpCache(data.cache_root, identity.fingerprint, _numerics(device, dtype, data.exclude_ids),
                      writer_tag=str(ctx.rank))
    every = data.train + data.eval
    result = score_with_cache(load, every, cache, pad_id=data.pad_id, token_budget=default_token_budget(device),
                              ctx=ctx, desc="reference log-probs", show_progress=config.show_progress,
                              exclude_ids=data.exclude_ids)
    rows = np.stack([result.chosen_logp, result.rejected_logp], axis=1)
    data.ref_train, data.ref_eval = rows[: len(data.train)], rows[len(data.train):]
    gc.collect()
