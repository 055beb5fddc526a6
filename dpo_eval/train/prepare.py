"""Training data: tokenized pairs (or KTO examples) and the reference log-probs of every sequence the
run will see, precomputed through the engine's cache.

The reference model is loaded only when the cache lacks something, and freed before the policy
trains; with keep_ref_live it stays and scores each micro-batch instead, and so it does for TDPO
(tdpo1, tdpo2), which needs its full next-token distributions (dpo_eval.engine.seq_kl). Listwise
groups get their reference log-probs per (prompt, response) through the per-sequence cache.

With mask_special_tokens, a response made only of special tokens would have no token left to
score (and stop training mid-run): such rows are refused up front (a UserError naming file and
row), or with skip_invalid dropped and counted in `PreparedData.n_skipped_special`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dpo_eval.data.pairs import load_pairs
from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import CachedRow, LogpCache, numerics_tag, resolve_cache_dir
from dpo_eval.engine.distributed import DistContext
from dpo_eval.engine.runner import compute_batch, score_with_cache
from dpo_eval.errors import UserError
from dpo_eval.models import check_same_vocabulary, identify_model, load_model, load_tokenizer
from dpo_eval.tokenization import TokenizedPair, TokenizerSettings, padding_id, tokenize_pairs
from dpo_eval.train.config import TrainConfig
from dpo_eval.train.kto import UnpairedExample, load_unpaired
from dpo_eval.train.listwise import attach_ranked_reference
from dpo_eval.train.listwise_data import RankedGroup, load_ranked
from dpo_eval.train.losses_token import TOKEN_LOSSES


@dataclass
class PreparedData:
    train: list[TokenizedPair]  # empty for KTO
    eval: list[TokenizedPair]
    tokenizer: object
    pad_id: int
    exclude_ids: torch.Tensor | None
    cache_root: Path
    tokenization: dict
    kto_examples: list[UnpairedExample] | None = None
    ref_identity: dict | None = None
    ref_rows: dict[str, CachedRow] = field(default_factory=dict)  # content key -> reference log-probs
    ref_model: torch.nn.Module | None = None  # only with keep_ref_live
    n_skipped_special: dict[str, int] = field(default_factory=dict)  # {"train": n, "eval": n}, skip_invalid
    sources: dict[str, str] = field(default_factory=dict)  # {"train"/"eval": source name}: a Hub split's commit
    ranked: list[RankedGroup] | None = None  # listwise: prompts with K ranked responses (train is empty)

    @property
    def n_items(self) -> int:
        if self.ranked is not None:
            return len(self.ranked)
        return len(self.kto_examples) if self.kto_examples is not None else len(self.train)

    def ref_logps(self, pairs: Sequence[TokenizedPair], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference (chosen, rejected) summed log-probs of packed pairs, each (len(pairs),) float32."""
        if self.ref_model is not None:
            rows = compute_batch(self.ref_model, [[p] for p in pairs], self.pad_id, self.exclude_ids)
        else:
            rows = [self.ref_rows[p.content_key()] for p in pairs]
        values = torch.tensor([row[:2] for row in rows], dtype=torch.float32, device=device)
        return values[:, 0], values[:, 1]


def _tokenized(path: str, config: TrainConfig, tokenizer, settings: TokenizerSettings, limit: int | None,
               sources: dict[str, str], role: str):
    """The tokenized pairs of ``path``; its source name (a Hub dataset's ``org/name@<commit>:split``) goes into
    ``sources[role]``."""
    loaded = load_pairs(path, data_format=config.data_format, skip_invalid=config.skip_invalid, limit=limit)
    sources[role] = loaded.source
    return tokenize_pairs(loaded.pairs, tokenizer, settings)


def drop_special_only(items: list, responses: Callable[[object], dict[str, tuple[int, ...]]],
                      row: Callable[[int, object], int], special: frozenset[int], source: str,
                      skip_invalid: bool) -> tuple[list, int]:
    """Keep the items whose every response has a token that is not special; (kept, number dropped).

    Without skip_invalid the first offender is a UserError naming `source` and its 1-based row.
    """
    kept = []
    for index, item in enumerate(items):
        empty = [name for name, ids in responses(item).items() if all(t in special for t in ids)]
        if not empty:
            kept.append(item)
        elif not skip_invalid:
            raise UserError(f"{source}: row {row(index, item)} (id {item.id!r}): the {empty[0]} response is only "
                            "special tokens, so mask_special_tokens leaves nothing to train on; fix or drop the "
                            "row, or set skip_invalid: true to skip such rows")
    return kept, len(items) - len(kept)


def _pair_responses(pair: TokenizedPair) -> dict[str, tuple[int, ...]]:
    return {"chosen": pair.chosen_ids, "rejected": pair.rejected_ids}


def _drop_special_pairs(pairs: list, special: frozenset[int], source: str, skip: bool) -> tuple[list, int]:
    # no row was skipped when this can raise (skip_invalid is off), so list index = row index
    return drop_special_only(pairs, _pair_responses, lambda index, _: index + 1, special, source, skip)


def prepare_data(config: TrainConfig) -> PreparedData:
    """Tokenizer, tokenized training and eval data; no model is loaded."""
    cache_root = resolve_cache_dir(config.cache_dir)
    ref_path = config.ref or config.policy
    tokenizer = load_tokenizer(config.policy, ref_path, cache_dir=cache_root)
    if config.ref and config.ref != config.policy:
        check_same_vocabulary(tokenizer, load_tokenizer(ref_path, cache_dir=cache_root), "policy", "reference")
    settings = TokenizerSettings(template=config.template, max_length=config.max_length,
                                 truncation=config.truncation)
    special = frozenset(tokenizer.all_special_ids) if config.mask_special_tokens else frozenset()
    skip, skipped, sources = config.skip_invalid, {}, {"train": config.data}
    train, examples, mode, n_truncated, ranked = [], None, "plain", 0, None
    if config.loss == "listwise":
        ranked, mode = load_ranked(config.data, tokenizer, settings, limit=config.limit, sources=sources)
    elif config.loss in ("kto", "npo"):  # unpaired items; NPO keeps its negatives (dpo_eval.train.family_inputs)
        examples = load_unpaired(config.data, tokenizer, settings, limit=config.limit,
                                 data_format=config.data_format, skip_invalid=skip, sources=sources)
        examples, skipped["train"] = drop_special_only(
            examples, lambda e: {"completion": e.completion_ids}, lambda _, e: e.row + 1, special, config.data, skip)
        if config.loss == "npo":
            from dpo_eval.train.family_inputs import npo_examples

            examples = npo_examples(examples, config.loss_params, config.data)
    else:
        tokenized = _tokenized(config.data, config, tokenizer, settings, config.limit, sources, "train")
        train, mode, n_truncated = tokenized.pairs, tokenized.mode, tokenized.n_truncated
        train, skipped["train"] = _drop_special_pairs(train, special, config.data, skip)
    evaluation = (_tokenized(config.eval_data, config, tokenizer, settings, None, sources, "eval").pairs
                  if config.eval_data else [])
    evaluation, skipped["eval"] = _drop_special_pairs(evaluation, special, str(config.eval_data), skip)
    pad_id = padding_id(tokenizer)
    exclude = torch.tensor(sorted(special)) if config.mask_special_tokens else None
    return PreparedData(train, evaluation, tokenizer, pad_id, exclude, cache_root,
                        {"template": config.template, "mode": mode, "max_length": config.max_length,
                         "truncation": config.truncation, "n_truncated": n_truncated,
                         "mask_special_tokens": config.mask_special_tokens},
                        kto_examples=examples, n_skipped_special=skipped, ranked=ranked, sources=sources)


def attach_reference(data: PreparedData, config: TrainConfig, sequences: Sequence[TokenizedPair],
                     ctx: DistContext, device: torch.device, dtype: torch.dtype) -> None:
    """Reference log-probs of `sequences` (+ the eval pairs): from the cache, else one engine pass."""
    ref_path = config.ref or config.policy
    identity = identify_model(ref_path, cache_dir=data.cache_root, allow_pickle=config.allow_pickle,
                              trust_remote_code=config.trust_remote_code)
    data.ref_identity = identity.to_dict()

    def load() -> torch.nn.Module:
        return load_model(ref_path, device=device, dtype=dtype, cache_dir=data.cache_root,
                          trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle).model

    if config.keep_ref_live or config.loss in TOKEN_LOSSES:  # TDPO needs the reference's full distributions
        data.ref_model = load()
        return
    if data.ranked is not None:
        attach_ranked_reference(data, load, identity.fingerprint, device, dtype, config.show_progress)
        return
    cache = LogpCache(data.cache_root, identity.fingerprint, numerics_tag(device, dtype, data.exclude_ids),
                      writer_tag=str(ctx.rank))
    every = list(sequences) + data.eval
    result = score_with_cache(load, every, cache, pad_id=data.pad_id, token_budget=default_token_budget(device),
                              ctx=ctx, desc="reference log-probs", show_progress=config.show_progress,
                              exclude_ids=data.exclude_ids)
    for pair, chosen, rejected in zip(every, result.chosen_logp, result.rejected_logp):
        data.ref_rows[pair.content_key()] = (float(chosen), float(rejected), 0, 0)
    gc.collect()
