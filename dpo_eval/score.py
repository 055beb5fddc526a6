"""`dpo-eval score`: implicit rewards of a policy against a reference on preference pairs."""

from __future__ import annotations

import gc
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dpo_eval.data.pairs import load_pairs
from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import LogpCache, numerics_tag, resolve_cache_dir
from dpo_eval.engine.distributed import DistContext, device_for_rank, init_distributed, shutdown
from dpo_eval.engine.runner import ScoredPairs, score_with_cache
from dpo_eval.errors import UserError
from dpo_eval.jsonio import atomic_path, write_json
from dpo_eval.logprob_settings import LogprobSettings, check_one_process, numerics
from dpo_eval.metrics.rewards import implicit_rewards, summarize_rewards
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
from dpo_eval.scoring_checks import PAIR_NORMS, check_scoring
from dpo_eval.tokenization import TokenizedPairs, TokenizerSettings, padding_id, tokenize_pairs

SCHEMA_VERSION = 1
# The documented pairs.parquet layout, in this order (docs/score.md "Outputs"; ../shared/DESIGN.md's list, then two extras).
PAIRS_COLUMNS = ("id", "subset", "policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp",
                 "chosen_tokens", "rejected_tokens", "reward_chosen", "reward_rejected", "margin",
                 "prompt_tokens", "is_truncated")


@dataclass(frozen=True)
class ScoreConfig:
    """Everything `dpo-eval score` needs; the defaults are the command's defaults."""

    policy: str
    data: str
    models: ModelSettings  # the reference (always explicit) and how models load
    beta: float = 0.1
    norm: str = "sum"
    out: str = "score_out"
    data_format: str = "auto"
    split: str | None = None
    subset: str | None = None  # a Hub dataset's config name
    skip_invalid: bool = False
    limit: int | None = None
    tokenization: TokenizerSettings = field(default_factory=TokenizerSettings)
    tie_tolerance: float = 0.0
    show_progress: bool = True
    divergence: str = "reverse_kl"  # f-DPO: reward beta * f'(pi/pi_ref) (dpo_eval.train.losses_family.f_prime)
    divergence_alpha: float = 0.5  # the alpha of divergence "alpha_divergence"
    logprobs: LogprobSettings = field(default_factory=LogprobSettings)  # engine, or vLLM (--logprob-backend)

    def validate(self) -> None:
        from dpo_eval.train.losses_family import DIVERGENCES

        check_scoring(self.beta, self.norm, self.models.is_reference_free, norms=PAIR_NORMS)
        if self.divergence not in DIVERGENCES:
            raise UserError(f"--divergence must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}")
        if self.divergence != "reverse_kl" and (self.models.is_reference_free or self.norm != "sum"):
            raise UserError(f"--divergence {self.divergence} needs a reference and --norm sum (its reward is "
                            "beta * f'(pi/pi_ref) of whole responses); give --ref MODEL, --norm sum")
        if self.divergence == "alpha_divergence" and not 0 < self.divergence_alpha < 1:
            raise UserError(f"--divergence-alpha must lie in (0, 1), got {self.divergence_alpha}")
        self.models.validate()
        self.logprobs.validate()


@dataclass(frozen=True)
class ScoreResult:
    pairs: pd.DataFrame
    summary: dict
    is_main_process: bool = True  # False on the other ranks of a torchrun job


def _model_logps(identity: ModelIdentity, pairs: TokenizedPairs, config: ScoreConfig, ctx: DistContext,
                 device: torch.device, dtype: torch.dtype, pad_id: int, role: str) -> ScoredPairs:
    cache_root = resolve_cache_dir(config.models.cache_dir)
    if config.logprobs.is_vllm:
        return _vllm_pair_logps(identity, pairs, config, cache_root, role)
    cache = LogpCache(cache_root, identity.fingerprint, numerics_tag(device, dtype), writer_tag=str(ctx.rank))

    def load() -> torch.nn.Module:
        return load_model(identity.path, device=device, dtype=dtype, cache_dir=cache_root,
                          **config.models.model_flags).model

    budget = config.models.token_budget or default_token_budget(device)
    result = score_with_cache(load, pairs.pairs, cache, pad_id=pad_id, token_budget=budget, ctx=ctx,
                              desc=f"{role} log-probs", show_progress=config.show_progress)
    gc.collect()
    return result


def _vllm_pair_logps(identity: ModelIdentity, pairs: TokenizedPairs, config: ScoreConfig, cache_root: Path,
                     role: str) -> ScoredPairs:
    """The pair log-probs through vLLM: each pair as its two sequences (prompt, chosen), (prompt, rejected)."""
    from dpo_eval.engine.vllm_backend import vllm_stats

    sequences = [(p.prompt_ids, r) for p in pairs.pairs for r in (p.chosen_ids, p.rejected_ids)]
    stats = vllm_stats(identity, sequences, cache_root, config.logprobs, role, config.show_progress, per_item=2)
    return ScoredPairs(stats.logp_sum[0::2], stats.logp_sum[1::2], stats.tokens[0::2], stats.tokens[1::2],
                       n_computed=stats.n_computed)


def _pairs_frame(tokenized: TokenizedPairs, policy: ScoredPairs, ref: ScoredPairs | None,
                 config: ScoreConfig) -> pd.DataFrame:
    nan = np.full(len(tokenized.pairs), np.nan)
    frame = pd.DataFrame({
        "id": [p.id for p in tokenized.pairs],
        "subset": [p.subset for p in tokenized.pairs],
        "policy_chosen_logp": policy.chosen_logp,
        "policy_rejected_logp": policy.rejected_logp,
        "ref_chosen_logp": ref.chosen_logp if ref else nan,
        "ref_rejected_logp": ref.rejected_logp if ref else nan,
        "chosen_tokens": policy.chosen_tokens,
        "rejected_tokens": policy.rejected_tokens,
    })
    for side in ("chosen", "rejected"):
        frame[f"reward_{side}"] = implicit_rewards(
            frame[f"policy_{side}_logp"], frame[f"ref_{side}_logp"] if ref else None,
            frame[f"{side}_tokens"], config.beta, config.norm)
        if config.divergence != "reverse_kl":  # f-DPO: beta * f'(pi/pi_ref) from beta * log(pi/pi_ref)
            frame[f"reward_{side}"] = _f_divergence_rewards(frame[f"reward_{side}"].to_numpy(), config)
    frame["margin"] = frame["reward_chosen"] - frame["reward_rejected"]
    frame["prompt_tokens"] = [len(p.prompt_ids) for p in tokenized.pairs]
    frame["is_truncated"] = [p.is_truncated for p in tokenized.pairs]
    return frame[list(PAIRS_COLUMNS)]


def _f_divergence_rewards(dpo_rewards: np.ndarray, config: ScoreConfig) -> np.ndarray:
    """beta * f'(u) from beta * log u, f' normalised to f'(1) = 0 as the trainer's f-DPO uses it."""
    from dpo_eval.train.losses_family import f_prime

    logratios = torch.as_tensor(dpo_rewards / config.beta, dtype=torch.float64)
    return config.beta * f_prime(logratios, config.divergence, config.divergence_alpha).numpy()


def _tokenize(config: ScoreConfig, policy: ModelIdentity, ref: ModelIdentity | None, cache_root: Path):
    loaded = load_pairs(config.data, data_format=config.data_format, skip_invalid=config.skip_invalid,
                        limit=config.limit, split=config.split, subset=config.subset)
    flags = {"trust_remote_code": config.models.trust_remote_code}
    tokenizer = load_tokenizer(policy.path, *([ref.path] if ref else []), cache_dir=cache_root, **flags)
    if ref is not None:
        ref_tokenizer = load_tokenizer(ref.path, policy.path, cache_dir=cache_root, **flags)
        check_same_vocabulary(tokenizer, ref_tokenizer, "policy", "reference")
    tokenized = tokenize_pairs(loaded.pairs, tokenizer, config.tokenization, skip_invalid=config.skip_invalid)
    pad_id = padding_id(tokenizer)
    return loaded, tokenized, pad_id


def score(config: ScoreConfig) -> ScoreResult:
    """Score every pair under policy (and reference), write pairs.parquet and summary.json."""
    config.validate()
    was_joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed()
    check_one_process(config.logprobs, ctx)
    cache_root = resolve_cache_dir(config.models.cache_dir)
    flags = config.models.model_flags
    policy_id = identify_model(config.policy, cache_dir=cache_root, **flags)
    ref_id = None if config.models.is_reference_free else identify_model(config.models.ref, cache_dir=cache_root, **flags)
    loaded, tokenized, pad_id = _tokenize(config, policy_id, ref_id, cache_root)
    device = device_for_rank(resolve_device(config.models.device), ctx)
    dtype = resolve_dtype(config.models.dtype, device)
    ref_logps = None if ref_id is None else _model_logps(
        ref_id, tokenized, config, ctx, device, dtype, pad_id, "reference")
    policy_logps = _model_logps(policy_id, tokenized, config, ctx, device, dtype, pad_id, "policy")
    frame = _pairs_frame(tokenized, policy_logps, ref_logps, config)
    summary = _summary(config, frame, loaded, tokenized, policy_id, ref_id, device, dtype,
                       {"policy": policy_logps.n_computed, "reference": ref_logps.n_computed if ref_logps else 0})
    if ctx.is_main:
        write_outputs(Path(config.out), frame, summary)
    if not was_joined:  # a group the caller set up (dpo-eval report under torchrun) stays up for it
        shutdown(ctx)
    return ScoreResult(frame, summary, ctx.is_main)


def _prompt_keys(tokenized: TokenizedPairs) -> list[str]:
    """Each pair's prompt identity (its prompt's token ids): pairs sharing a prompt are one cluster of the
    reward accuracy's CI and the margin's SE (dpo_eval.metrics.rewards)."""
    return [hashlib.sha256(repr(pair.prompt_ids).encode()).hexdigest()[:16] for pair in tokenized.pairs]


def _summary(config, frame, loaded, tokenized, policy_id, ref_id, device, dtype, computed) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "rewards": summarize_rewards(frame.assign(prompt_key=_prompt_keys(tokenized)), config.tie_tolerance),
        "beta": config.beta,
        "norm": config.norm,
        "divergence": {"name": config.divergence, "alpha": config.divergence_alpha},
        "reference_free": ref_id is None,
        "policy": policy_id.to_dict(),
        "reference": ref_id.to_dict() if ref_id else None,
        "data": {"path": str(config.data), "source": loaded.source, "format": loaded.format, "n_pairs": len(frame),
                 "n_skipped_invalid": loaded.n_skipped + tokenized.n_skipped,
                 "skip_reasons": list(loaded.skip_reasons + tokenized.skip_reasons)[:20]},
        "tokenization": {**asdict(config.tokenization), "mode": tokenized.mode,
                         "n_truncated": tokenized.n_truncated},
        "numerics": numerics(config.logprobs, device, dtype),
        "pairs_computed": computed,
    }


def write_outputs(out: Path, frame: pd.DataFrame, summary: dict) -> None:
    """Write pairs.parquet and summary.json atomically into out."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "pairs.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(out / "summary.json", summary)

