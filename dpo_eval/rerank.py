"""`dpo-eval rerank`: best-of-n with a DPO policy's implicit reward (or a reference-free score).

For each prompt, its N candidate responses are scored in one pass of the engine per model (the
prompt's keys and values computed once for all N: ``dpo_eval.engine.prefix``), then ranked by

    r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))        (Rafailov et al., 2023)

("avg": each log-prob divided by the response's tokens; reference-free: log pi_ref taken as 0;
"norm", reference-free only: -||per-token log-probs||_2, as RewardBench has it). The best has
rank 1; equal rewards keep the candidates' order in the input. Prompts are rendered as ``dpo-eval
generate`` renders them (the chat template with a generation prompt when the tokenizer has one),
and a candidate's tokens are what follows (chat) or ``tok(prompt + output)`` past the prompt plus
EOS (plain), as ``dpo_eval.tokenization`` does for responses.

``rerank(...)`` is the library call on loaded models; ``run_rerank(config)`` is the command: it
reads a candidates file, caches log-probs per sequence, and writes OUT/reranked.jsonl (the top-k
candidates of each prompt in rank order, as generation rows with their scores: a best-of-n file
``dpo-eval judge`` reads) and OUT/summary.json. Under torchrun each rank computes its share of the
batches and rank 0 writes (as ``dpo-eval score``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dpo_eval.data.formats import read_records
from dpo_eval.data.pairs import PreferencePair
from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import resolve_cache_dir
from dpo_eval.engine.distributed import DistContext, device_for_rank, init_distributed, shutdown
from dpo_eval.engine.multi import SequenceStats, score_sequences, sequence_cache
from dpo_eval.errors import UserError
from dpo_eval.jsonio import write_json, write_jsonl
from dpo_eval.logprob_settings import LogprobSettings, check_one_process
from dpo_eval.metrics.rewardbench import sequence_values
from dpo_eval.model_settings import ModelSettings
from dpo_eval.models import (
    check_same_vocabulary,
    identify_model,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from dpo_eval.scoring_checks import check_scoring
from dpo_eval.tokenization import TokenizerSettings, padding_id, tokenize_pair

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    output: str
    sample_index: int
    row: int = 0  # 1-based row of the file it came from (0: built in code)


@dataclass(frozen=True)
class CandidateSet:
    """One prompt (a string or chat messages) and its N candidate outputs."""

    prompt_id: str
    prompt: str | list[dict]
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class ScoredCandidate:
    output: str
    sample_index: int
    rank: int  # 1 = best
    reward: float
    policy_logp: float
    ref_logp: float  # NaN when reference-free
    n_tokens: int


@dataclass(frozen=True)
class RankedPrompt:
    prompt_id: str
    prompt: str | list[dict]
    ranked: tuple[ScoredCandidate, ...]  # best first

    @property
    def best(self) -> ScoredCandidate:
        return self.ranked[0]


def candidate_sets(items: Sequence[tuple[str | list[dict], Sequence[str]]]) -> list[CandidateSet]:
    """(prompt, outputs) tuples as CandidateSets numbered from 0 (for the library call)."""
    return [CandidateSet(str(i), prompt, tuple(Candidate(o, j) for j, o in enumerate(outputs)))
            for i, (prompt, outputs) in enumerate(items)]


def _check_row(row: dict, where: str) -> tuple[str, object, str, int | None]:
    prompt = row.get("prompt", row.get("instruction"))
    if row.get("prompt_id") is None or not isinstance(row.get("output"), str) or not isinstance(prompt, str | list) \
            or not prompt:
        raise UserError(f"{where}: needs prompt_id, prompt (a string or messages) and output; "
                        "give rows as `dpo-eval generate` writes them")
    index = row.get("sample_index")
    is_integral = isinstance(index, int) or (isinstance(index, float) and index.is_integer())
    if index is not None and (isinstance(index, bool) or not is_integral):
        raise UserError(f"{where}: sample_index must be an integer, got {index!r}; fix it or drop the field")
    return str(row["prompt_id"]), prompt, row["output"], None if index is None else int(index)


def read_candidates(path: str, limit: int | None = None) -> list[CandidateSet]:
    """Rows `prompt_id`, `prompt` (or `instruction`), `output`, optional `sample_index`, grouped by
    prompt_id in file order; the first `limit` prompts."""
    groups: dict[str, tuple[object, list[Candidate], int]] = {}
    records = read_records(path)
    if not records:
        raise UserError(f"{path}: no rows; give a candidates file with prompt_id, prompt and output per row")
    for number, row in enumerate(records, start=1):
        prompt_id, prompt, output, index = _check_row(row, f"{path}: row {number}")
        if prompt_id in groups and groups[prompt_id][0] != prompt:
            raise UserError(f"{path}: row {number}: prompt_id {prompt_id!r} has a different prompt than row "
                            f"{groups[prompt_id][2]}; give each prompt its own prompt_id")
        cands = groups.setdefault(prompt_id, (prompt, [], number))[1]
        cands.append(Candidate(output, len(cands) if index is None else index, number))
    sets = [CandidateSet(pid, prompt, tuple(c)) for pid, (prompt, c, _) in groups.items()]
    return sets[:limit] if limit else sets


def _uses_chat(tokenizer, template: str) -> bool:
    from dpo_eval.generate import uses_chat  # generate's rule, so candidates it wrote are scored as sampled

    return uses_chat(tokenizer, template)


def tokenize_candidates(sets: Sequence[CandidateSet], tokenizer, template: str = "auto",
                        source: str = "") -> list[tuple[tuple, tuple]]:
    """(prompt ids, response ids) of every candidate, set by set."""
    is_chat = _uses_chat(tokenizer, template)
    sequences = []
    for s in sets:
        if isinstance(s.prompt, list) and not is_chat:
            raise UserError(f"prompt {s.prompt_id!r} holds chat messages but the tokenizer has no chat template "
                            "(or --template plain was asked); give plain-text prompts")
        for c in s.candidates:
            where = f"{source}: row {c.row}" if source and c.row else f"prompt {s.prompt_id!r} candidate {c.sample_index}"
            if is_chat:
                prompt = s.prompt if isinstance(s.prompt, list) else [{"role": "user", "content": s.prompt}]
                reply = [{"role": "assistant", "content": c.output}]
                pair = PreferencePair(s.prompt_id, "", prompt, reply, reply, where=where)
            else:
                pair = PreferencePair(s.prompt_id, "", s.prompt, c.output, c.output, where=where)
            t = tokenize_pair(pair, tokenizer, "chat" if is_chat else "plain", TokenizerSettings())
            sequences.append((t.prompt_ids, t.chosen_ids))
    return sequences


def rank_sets(sets: Sequence[CandidateSet], policy: SequenceStats, ref: SequenceStats | None, beta: float,
              norm: str) -> list[RankedPrompt]:
    """Rewards of every candidate (flat, set by set) ranked within each set; ties keep input order."""
    rewards = beta * sequence_values(policy.logp_sum, policy.logp_sumsq, None if ref is None else ref.logp_sum,
                                     policy.tokens, norm)
    out, start = [], 0
    for s in sets:
        idx = list(range(start, start + len(s.candidates)))
        order = sorted(range(len(idx)), key=lambda k: -rewards[idx[k]])  # stable: ties keep input order
        ranked = tuple(ScoredCandidate(s.candidates[k].output, s.candidates[k].sample_index, rank, float(rewards[idx[k]]),
                                       float(policy.logp_sum[idx[k]]),
                                       float(ref.logp_sum[idx[k]]) if ref is not None else math.nan,
                                       int(policy.tokens[idx[k]])) for rank, k in enumerate(order, start=1))
        out.append(RankedPrompt(s.prompt_id, s.prompt, ranked))
        start += len(s.candidates)
    return out


def rerank(policy: torch.nn.Module, ref: torch.nn.Module | None, tokenizer,
           candidates: Sequence[CandidateSet] | Sequence[tuple], *, beta: float = 0.1, norm: str = "sum",
           template: str = "auto", token_budget: int | None = None, show_progress: bool = False) -> list[RankedPrompt]:
    """Best-of-n on loaded models: every prompt's candidates ranked by implicit reward (ref None:
    reference-free). candidates: CandidateSets, or (prompt, [outputs]) tuples. Nothing is cached."""
    check_scoring(beta, norm, ref is None)
    sets = [c if isinstance(c, CandidateSet) else candidate_sets([c])[0] for c in candidates]
    sequences = tokenize_candidates(sets, tokenizer, template)
    budget = token_budget or default_token_budget(next(policy.parameters()).device)
    run = lambda m, d: score_sequences(lambda: m, sequences, None, pad_id=padding_id(tokenizer),  # noqa: E731
                                       token_budget=budget, desc=d, show_progress=show_progress)
    ref_stats = None if ref is None else run(ref, "reference log-probs")
    return rank_sets(sets, run(policy, "policy log-probs"), ref_stats, beta, norm)


@dataclass(frozen=True)
class RerankConfig:
    """Everything `dpo-eval rerank` needs; the defaults are the command's defaults."""

    policy: str
    candidates: str
    models: ModelSettings  # the reference (always explicit) and how models load
    top_k: int = 1
    beta: float = 0.1
    norm: str = "sum"
    out: str = "rerank_out"
    template: str = "auto"
    limit: int | None = None
    show_progress: bool = True
    logprobs: LogprobSettings = field(default_factory=LogprobSettings)  # engine, or vLLM (--logprob-backend)

    def validate(self) -> None:
        check_scoring(self.beta, self.norm, self.models.is_reference_free)
        if self.top_k < 0:
            raise UserError(f"--top-k must be 0 (keep every candidate) or more, got {self.top_k}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}; leave it out for every prompt")
        self.models.validate()
        self.logprobs.validate()


@dataclass(frozen=True)
class RerankResult:
    ranked: list[RankedPrompt]
    summary: dict
    is_main_process: bool = True  # False on the other ranks of a torchrun job


def _stats(identity, sequences, config: RerankConfig, ctx: DistContext, device, dtype, pad_id: int,
           role: str) -> SequenceStats:
    root = resolve_cache_dir(config.models.cache_dir)
    if config.logprobs.is_vllm:
        from dpo_eval.engine.vllm_backend import vllm_stats

        return vllm_stats(identity, sequences, root, config.logprobs, role, config.show_progress)

    def load() -> torch.nn.Module:
        return load_model(identity.path, device=device, dtype=dtype, cache_dir=root,
                          **config.models.model_flags).model

    cache = sequence_cache(root, identity.fingerprint, device, dtype, writer_tag=str(ctx.rank))
    return score_sequences(load, sequences, cache, pad_id=pad_id,
                           token_budget=config.models.token_budget or default_token_budget(device),
                           desc=f"{role} log-probs", show_progress=config.show_progress, ctx=ctx)


def output_rows(ranked: Sequence[RankedPrompt], top_k: int, model: str) -> list[dict]:
    """The top_k candidates of each prompt (0: all) as generation rows with rank and scores."""
    rows = []
    for item in ranked:
        for c in item.ranked[: top_k or None]:
            rows.append({"prompt_id": item.prompt_id, "prompt": item.prompt, "output": c.output, "model": model,
                         "sample_index": c.sample_index, "rank": c.rank, "reward": c.reward,
                         "policy_logp": c.policy_logp, "ref_logp": c.ref_logp, "n_tokens": c.n_tokens,
                         "n_candidates": len(item.ranked)})
    return rows


def _summary(config: RerankConfig, ranked: list[RankedPrompt], policy_id, ref_id, computed: dict) -> dict:
    counts = [len(r.ranked) for r in ranked]
    best = np.array([r.best.reward for r in ranked])
    mean = np.array([np.mean([c.reward for c in r.ranked]) for r in ranked])
    return {
        "schema_version": SCHEMA_VERSION,
        "n_prompts": len(ranked), "n_candidates": int(sum(counts)),
        "candidates_per_prompt": {"min": min(counts), "max": max(counts)},
        "top_k": config.top_k,
        "reward_best_mean": float(best.mean()),
        "reward_candidates_mean": float(mean.mean()),
        "best_of_n_gain": float((best - mean).mean()),  # mean over prompts of best minus the prompt's mean
        "beta": config.beta, "norm": config.norm, "reference_free": ref_id is None,
        "policy": policy_id.to_dict(), "reference": ref_id.to_dict() if ref_id else None,
        "candidates": str(config.candidates), "template": config.template, "sequences_computed": computed,
        "logprob_backend": config.logprobs.logprob_backend,
    }


def run_rerank(config: RerankConfig) -> RerankResult:
    """Read candidates, score them under policy (and reference), write OUT/reranked.jsonl and OUT/summary.json.

    Under torchrun every rank returns the result and rank 0 alone writes it."""
    config.validate()
    was_joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed()
    check_one_process(config.logprobs, ctx)
    root = resolve_cache_dir(config.models.cache_dir)
    flags = config.models.model_flags
    policy_id = identify_model(config.policy, cache_dir=root, **flags)
    ref_id = None if config.models.is_reference_free else identify_model(config.models.ref, cache_dir=root, **flags)
    sets = read_candidates(config.candidates, config.limit)
    tokenizer = load_tokenizer(policy_id.path, *([ref_id.path] if ref_id else []), cache_dir=root)
    if ref_id is not None:
        check_same_vocabulary(tokenizer, load_tokenizer(ref_id.path, policy_id.path, cache_dir=root),
                              "policy", "reference")
    sequences = tokenize_candidates(sets, tokenizer, config.template, source=config.candidates)
    device = device_for_rank(resolve_device(config.models.device), ctx)
    dtype = resolve_dtype(config.models.dtype, device)
    pad_id = padding_id(tokenizer)
    ref = None if ref_id is None else _stats(ref_id, sequences, config, ctx, device, dtype, pad_id, "reference")
    policy = _stats(policy_id, sequences, config, ctx, device, dtype, pad_id, "policy")
    ranked = rank_sets(sets, policy, ref, config.beta, config.norm)
    computed = {"policy": policy.n_computed, "reference": ref.n_computed if ref else 0}
    summary = _summary(config, ranked, policy_id, ref_id, computed)
    if ctx.is_main:
        out = Path(config.out)
        write_jsonl(out / "reranked.jsonl", output_rows(ranked, config.top_k, config.policy))
        write_json(out / "summary.json", summary)
    if not was_joined:  # a group the caller set up stays up for it
        shutdown(ctx)
    return RerankResult(ranked, summary, ctx.is_main)
