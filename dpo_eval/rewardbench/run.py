"""`dpo-eval rewardbench`: a DPO policy and its reference as a reward model on RewardBench-format data.

Data: a local file of rows `prompt`, `chosen`, `rejected`, `subset` (optional `id`), as the
allenai/reward-bench dataset holds them (the hub may be unreachable, so the file is given). Each
pair is scored under policy and reference (or reference-free, ``--ref none``) by the N-response
engine (``dpo_eval.engine.multi``: the prompt once for both responses), and summarised as
RewardBench v1 does (``dpo_eval.metrics.rewardbench``). Writes OUT/rewardbench.json, recording
the reference's identity and fingerprint, beta, the norm and the conventions, and OUT/pairs.parquet.
Under torchrun each rank computes its share of the batches and rank 0 writes (as ``dpo-eval score``).

Conventions: by default, the prompt is a user turn rendered with the chat template and a
generation prompt, the response is what follows (the assistant header is context, not scored),
and rewards are beta * log-ratio, as ``dpo-eval score`` does. ``--compat rewardbench`` uses
RewardBench's own (``dpo_eval.rewardbench.compat``) so a score can be compared with its leaderboard.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dpo_eval.data.pairs import PreferencePair, load_pairs
from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import resolve_cache_dir
from dpo_eval.engine.distributed import DistContext, device_for_rank, init_distributed, shutdown
from dpo_eval.engine.multi import SequenceStats, score_sequences, sequence_cache
from dpo_eval.errors import UserError
from dpo_eval.jsonio import atomic_path, write_json
from dpo_eval.logprob_settings import LogprobSettings, check_one_process, numerics
from dpo_eval.metrics.rewardbench import sequence_values, summarize_rewardbench
from dpo_eval.model_settings import ModelSettings
from dpo_eval.models import (
    ModelIdentity,
    check_same_vocabulary,
    identify_model,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from dpo_eval.rewardbench.compat import MAX_LENGTH, MAX_PROMPT_LENGTH, tokenize_rewardbench
from dpo_eval.scoring_checks import check_scoring
from dpo_eval.tokenization import InvalidPairError, TokenizerSettings, padding_id, tokenize_pairs

SCHEMA_VERSION = 1
COMPAT = ("none", "rewardbench")


@dataclass(frozen=True)
class RewardBenchConfig:
    """Everything `dpo-eval rewardbench` needs; the defaults are the command's defaults."""

    policy: str
    data: str
    models: ModelSettings  # the reference (always explicit) and how models load
    beta: float = 0.1
    norm: str = "sum"
    compat: str = "none"
    out: str = "rewardbench_out"
    limit: int | None = None
    skip_invalid: bool = False
    split: str | None = None  # of a Hub dataset (allenai/reward-bench: filtered) or saved DatasetDict
    subset: str | None = None  # a Hub dataset's config
    tokenization: TokenizerSettings = field(default_factory=TokenizerSettings)
    show_progress: bool = True
    logprobs: LogprobSettings = field(default_factory=LogprobSettings)  # engine, or vLLM (--logprob-backend)

    def validate(self) -> None:
        check_scoring(self.beta, self.norm, self.models.is_reference_free)
        if self.compat not in COMPAT:
            raise UserError(f"--compat must be one of {', '.join(COMPAT)}, got {self.compat!r}")
        if self.compat == "rewardbench" and not self.models.is_reference_free and self.norm != "sum":
            raise UserError("--compat rewardbench with a reference scores the summed log-ratio only: "
                            "drop --norm, or use --compat none")
        self.models.validate()
        self.logprobs.validate()
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}; leave it out for every pair")


@dataclass(frozen=True)
class RewardBenchResult:
    pairs: pd.DataFrame
    summary: dict
    is_main_process: bool = True  # False on the other ranks of a torchrun job


@dataclass(frozen=True)
class _Tokenized:
    ids: list[str]
    subsets: list[str]
    sequences: list[tuple[tuple, tuple]]  # 2 per pair: (prompt, chosen), (prompt, rejected)
    is_truncated: list[bool]
    n_skipped: int
    skip_reasons: tuple[str, ...]


def _as_chat(pair: PreferencePair) -> PreferencePair:
    """A plain pair as one user turn and one assistant turn (RewardBench's prompts are chat prompts)."""
    if pair.is_chat:
        return pair
    return replace(pair, prompt=[{"role": "user", "content": pair.prompt}],
                   chosen=[{"role": "assistant", "content": pair.chosen}],
                   rejected=[{"role": "assistant", "content": pair.rejected}], text_form=None)


def _tokenize_default(pairs: list[PreferencePair], tokenizer, config: RewardBenchConfig) -> _Tokenized:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if config.tokenization.template != "plain" and has_template:
        pairs = [_as_chat(p) for p in pairs]
    done = tokenize_pairs(pairs, tokenizer, config.tokenization, skip_invalid=config.skip_invalid)
    sequences = [s for p in done.pairs for s in ((p.prompt_ids, p.chosen_ids), (p.prompt_ids, p.rejected_ids))]
    return _Tokenized([p.id for p in done.pairs], [p.subset for p in done.pairs], sequences,
                      [p.is_truncated for p in done.pairs], done.n_skipped, done.skip_reasons)


def _tokenize_compat(pairs: list[PreferencePair], tokenizer, config: RewardBenchConfig) -> _Tokenized:
    kept, sequences, truncated, reasons = [], [], [], []
    for pair in pairs:
        try:
            t = tokenize_rewardbench(pair, tokenizer)
        except InvalidPairError as err:
            if not config.skip_invalid:
                raise
            reasons.append(str(err))
            continue
        kept.append(pair)
        sequences += [(t.prompt_chosen, t.chosen), (t.prompt_rejected, t.rejected)]
        truncated.append(t.is_truncated)
    if not kept:
        raise UserError(f"no pair could be tokenized ({len(reasons)} skipped; first: {reasons[0]})")
    return _Tokenized([p.id for p in kept], [p.subset for p in kept], sequences, truncated, len(reasons),
                      tuple(reasons[:20]))


def _model_stats(identity: ModelIdentity, sequences, config, ctx: DistContext, device, dtype, pad_id,
                 role: str) -> SequenceStats:
    cache_root = resolve_cache_dir(config.models.cache_dir)
    if config.logprobs.is_vllm:
        from dpo_eval.engine.vllm_backend import vllm_stats

        return vllm_stats(identity, sequences, cache_root, config.logprobs, role, config.show_progress)

    def load() -> torch.nn.Module:
        return load_model(identity.path, device=device, dtype=dtype, cache_dir=cache_root,
                          **config.models.model_flags).model

    cache = sequence_cache(cache_root, identity.fingerprint, device, dtype, writer_tag=str(ctx.rank))
    stats = score_sequences(load, sequences, cache, pad_id=pad_id,
                            token_budget=config.models.token_budget or default_token_budget(device),
                            desc=f"{role} log-probs", show_progress=config.show_progress, ctx=ctx)
    gc.collect()
    return stats


def pairs_frame(tok: _Tokenized, policy: SequenceStats, ref: SequenceStats | None, config) -> pd.DataFrame:
    """One row per pair: log-probs, token counts, rewards, margin, is_correct (margin > 0)."""
    scale = 1.0 if config.compat == "rewardbench" else config.beta
    values = scale * sequence_values(policy.logp_sum, policy.logp_sumsq, None if ref is None else ref.logp_sum,
                                     policy.tokens, config.norm)
    nan = np.full(len(tok.ids), np.nan)
    frame = pd.DataFrame({
        "id": tok.ids, "subset": tok.subsets,
        "policy_chosen_logp": policy.logp_sum[0::2], "policy_rejected_logp": policy.logp_sum[1::2],
        "ref_chosen_logp": ref.logp_sum[0::2] if ref else nan, "ref_rejected_logp": ref.logp_sum[1::2] if ref else nan,
        "chosen_tokens": policy.tokens[0::2], "rejected_tokens": policy.tokens[1::2],
        "reward_chosen": values[0::2], "reward_rejected": values[1::2],
    })
    frame["margin"] = frame["reward_chosen"] - frame["reward_rejected"]
    frame["is_correct"] = frame["margin"] > 0
    frame["prompt_tokens"] = [len(p) for p, _ in tok.sequences[0::2]]
    frame["is_truncated"] = tok.is_truncated
    return frame


def _reward_definition(config: RewardBenchConfig) -> str:
    scale = "" if config.compat == "rewardbench" else "beta * "
    body = {"sum": "sum_t log p(y_t)", "avg": "mean_t log p(y_t)", "norm": "-||log p(y_t)||_2"}[config.norm]
    if config.models.is_reference_free:
        return f"{scale}{body} under the policy (reference-free)"
    return f"{scale}({body.replace('log p', 'log pi')} - same under the reference)"


def _summary(config, frame, tok, policy_id, ref_id, device, dtype, loaded) -> dict:
    compat = {"max_length": MAX_LENGTH, "max_prompt_length": MAX_PROMPT_LENGTH} if config.compat == "rewardbench" else {}
    return {
        "schema_version": SCHEMA_VERSION,
        **summarize_rewardbench(frame["subset"].tolist(), frame["margin"].to_numpy()),
        "reference": ref_id.to_dict() if ref_id else None,
        "reference_free": ref_id is None,
        "beta": None if config.compat == "rewardbench" else config.beta,
        "norm": config.norm,
        "compat": config.compat,
        "reward": _reward_definition(config),
        "policy": policy_id.to_dict(),
        "data": {"path": str(config.data), "source": loaded.source, "format": loaded.format, "n_pairs": len(frame),
                 "n_skipped_invalid": loaded.n_skipped + tok.n_skipped,
                 "skip_reasons": list(loaded.skip_reasons + tok.skip_reasons)[:20]},
        "tokenization": {**(asdict(config.tokenization) if config.compat == "none" else compat),
                         "n_truncated": int(frame["is_truncated"].sum())},
        "numerics": numerics(config.logprobs, device, dtype),
    }


def rewardbench(config: RewardBenchConfig) -> RewardBenchResult:
    """Score every pair, summarise as RewardBench v1, write OUT/rewardbench.json and OUT/pairs.parquet.

    Under torchrun every rank returns the result and rank 0 alone writes it."""
    config.validate()
    was_joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed()
    check_one_process(config.logprobs, ctx)
    cache_root = resolve_cache_dir(config.models.cache_dir)
    flags = config.models.model_flags
    policy_id = identify_model(config.policy, cache_dir=cache_root, **flags)
    ref_id = None if config.models.is_reference_free else identify_model(config.models.ref, cache_dir=cache_root, **flags)
    loaded = load_pairs(config.data, data_format="auto", skip_invalid=config.skip_invalid, limit=config.limit,
                        split=config.split, subset=config.subset)
    tokenizer = load_tokenizer(policy_id.path, *([ref_id.path] if ref_id else []), cache_dir=cache_root)
    if ref_id is not None:
        check_same_vocabulary(tokenizer, load_tokenizer(ref_id.path, policy_id.path, cache_dir=cache_root),
                              "policy", "reference")
    tokenize = _tokenize_compat if config.compat == "rewardbench" else _tokenize_default
    tok = tokenize(loaded.pairs, tokenizer, config)
    device = device_for_rank(resolve_device(config.models.device), ctx)
    dtype = resolve_dtype(config.models.dtype, device)
    pad_id = padding_id(tokenizer)
    engine = (tok.sequences, config, ctx, device, dtype, pad_id)
    ref = None if ref_id is None else _model_stats(ref_id, *engine, "reference")
    policy = _model_stats(policy_id, *engine, "policy")
    frame = pairs_frame(tok, policy, ref, config)
    summary = _summary(config, frame, tok, policy_id, ref_id, device, dtype, loaded)
    if ctx.is_main:
        write_outputs(Path(config.out), frame, summary)
    if not was_joined:  # a group the caller set up stays up for it
        shutdown(ctx)
    return RewardBenchResult(frame, summary, ctx.is_main)


def write_outputs(out: Path, frame: pd.DataFrame, summary: dict) -> None:
    """Write pairs.parquet and rewardbench.json atomically into out."""
    with atomic_path(out / "pairs.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(out / "rewardbench.json", summary)
