"""The costly steps of `dpo-eval report`, each writing one store artifact into a work folder.

Each step calls the library function its own command uses (``score``, ``generate``, ``judge``, the
engine's ``analytic_kl`` / ``prompt_entropy`` / ``score_with_cache``) and writes plain files:

| kind      | per                        | files                     | made by                                  |
|-----------|----------------------------|---------------------------|------------------------------------------|
| score     | row (checkpoint/reference) | pairs.parquet, summary.json | dpo_eval.score.score                   |
| samples   | model (and its reference), | samples.jsonl, ...        | dpo_eval.generate.generate (resumable)   |
|           | per sampling settings      |                           |                                          |
| kl        | row                        | kl.parquet                | dpo_eval.engine.kl.analytic_kl           |
| entropy   | model                      | entropy.parquet           | dpo_eval.engine.entropy.prompt_entropy   |
| unseen    | row                        | unseen.parquet            | dpo_eval.engine.runner.score_with_cache  |
| judge     | row (not the reference)    | judgments.jsonl, ...      | dpo_eval.judge.run.judge (resumable)     |

samples: each model is sampled with the user's settings (--temperature, --top-p: what the judge and the
length figures read) and, when those are tempered or truncated, once more untempered (temperature 1,
top-p 1; Plan.untempered_sampling): the samples of π itself that kl and unseen take their expectations
over. Untempered user settings give one key, so one set of samples serves both.

kl: analytic KL along each of the row's untempered samples.
unseen: log-probs, under the row's model and the reference, of responses in no pair: every untempered
reference sample (source ``reference_samples``), and for each prompt i the reference's first sample of prompt
i+1 (cyclically; source ``other_prompts``). Empty samples are left out (no per-token figure).
The reference row's KL along its own samples is 0 exactly (policy = reference): no pass is run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from dpo_eval.evaluation.parallel import compute_sharded
from dpo_eval.evaluation.plan import Plan, Row, RunPlan
from dpo_eval.evaluation.vllm_urls import served_parts

SAMPLES_FILE = "samples.jsonl"
KL_SAMPLES = "kl_samples"
"""Where a model's untempered samples (Plan.untempered_sampling) are found among the report's artifact folders
(``pipeline.Paths``): kl and unseen read them; ``samples`` are those at the user's sampling (judge, lengths).
One folder when the two settings are equal."""


def _device(plan: Plan):
    """This rank's device (cuda:LOCAL_RANK under torchrun on GPUs) and the dtype."""
    from dpo_eval.engine.distributed import device_for_rank
    from dpo_eval.models import resolve_device, resolve_dtype

    device = device_for_rank(resolve_device(plan.config.models.device), plan.ctx)
    return device, resolve_dtype(plan.config.models.dtype, device)


def _budget(plan: Plan) -> int:
    """--token-budget, else the device's default."""
    from dpo_eval.engine.batching import default_token_budget

    return plan.config.models.token_budget or default_token_budget(_device(plan)[0])


# ---------------------------------------------------------------------------------------------- keys


def score_parts(plan: Plan, run_plan: RunPlan, row: Row) -> dict:
    return {"policy": row.identity.fingerprint, "reference": run_plan.ref_identity.fingerprint,
            "pairs_sha256": plan.pairs_sha256, "tokenization": asdict(run_plan.tokenization),
            "tokenizer_sha256": row.tokenizer_sha256, "beta": run_plan.beta, "norm": "sum",
            "numerics": plan.numerics,
            **served_parts(plan.vllm_servers, row.identity.fingerprint, run_plan.ref_identity.fingerprint)}


def samples_parts(plan: Plan, run_plan: RunPlan, fingerprint: str, tokenizer: str, sampling: dict) -> dict:
    """Key parts of a model's samples made with ``sampling`` (Plan.sampling or Plan.untempered_sampling)."""
    return {"model": fingerprint, "reference": run_plan.ref_identity.fingerprint, "tokenizer_sha256": tokenizer,
            "prompts_sha256": plan.prompts_sha256, "sampling": sampling, "numerics": plan.numerics,
            **served_parts(plan.vllm_servers, fingerprint, run_plan.ref_identity.fingerprint)}


def kl_parts(plan: Plan, run_plan: RunPlan, row: Row, samples_key: str) -> dict:
    return {"samples": samples_key, "policy": row.identity.fingerprint,
            "reference": run_plan.ref_identity.fingerprint, "tokenizer_sha256": row.tokenizer_sha256,
            "numerics": plan.numerics}


def entropy_parts(plan: Plan, fingerprint: str, tokenizer: str) -> dict:
    return {"model": fingerprint, "prompts_sha256": plan.prompts_sha256, "template": plan.config.template,
            "tokenizer_sha256": tokenizer, "max_prompts": plan.config.max_prompts, "last_k": 1,
            "numerics": plan.numerics}


def unseen_parts(plan: Plan, run_plan: RunPlan, row: Row, ref_samples_key: str) -> dict:
    return {"reference_samples": ref_samples_key, "policy": row.identity.fingerprint,
            "reference": run_plan.ref_identity.fingerprint, "template": plan.config.template,
            "tokenizer_sha256": run_plan.ref_tokenizer_sha256, "numerics": plan.numerics,
            **served_parts(plan.vllm_servers, row.identity.fingerprint, run_plan.ref_identity.fingerprint)}


def judge_parts(plan: Plan, samples_key: str, ref_samples_key: str) -> dict:
    return {"candidates": samples_key, "baseline": ref_samples_key, "judge": plan.judge}


# ---------------------------------------------------------------------------------------------- steps


def run_score(plan: Plan, run_plan: RunPlan, row: Row, work: Path) -> None:
    from dpo_eval.model_settings import ModelSettings
    from dpo_eval.score import ScoreConfig, score

    c = plan.config
    models = ModelSettings.with_ref(run_plan.reference.path, replace(c.models, cache_dir=str(plan.cache_root)))
    score(ScoreConfig(policy=row.path, data=plan.inputs.pairs.path, models=models, beta=run_plan.beta,
                      out=str(work), tokenization=run_plan.tokenization, show_progress=c.show_progress,
                      logprobs=_logprob_settings(plan, row.identity.fingerprint, run_plan.ref_identity.fingerprint)))


def _logprob_settings(plan: Plan, model: str | None = None, ref: str | None = None):
    """The report's backend as the scoring commands take it, for the model and reference of these
    fingerprints: the servers the user runs for them (--vllm-url, --vllm-ref-url), else started ones."""
    from dpo_eval.logprob_settings import LogprobSettings

    c = plan.config
    if c.logprob_backend == "engine":
        return LogprobSettings()
    model_url, ref_url = (plan.vllm_servers.get(fingerprint, (None,))[0] for fingerprint in (model, ref))
    return LogprobSettings(c.logprob_backend, c.vllm_python, tuple(c.vllm_args), model_url, ref_url)


def run_samples(plan: Plan, run_plan: RunPlan, model_path: str, work: Path, sampling: dict,
                fingerprint: str | None = None) -> None:
    """The model's samples at ``sampling``'s temperature and top-p; the rest is the report's config (with
    --vllm, one server for every sampling: its requests carry their sampling parameters)."""
    from dpo_eval.generate import GenerateConfig, generate

    c = plan.config
    vllm_args = tuple(c.vllm_args)
    generate(GenerateConfig(model=model_path, prompts=plan.prompts_path, out=str(work), n=c.n_samples,
                            ref=run_plan.reference.path, temperature=sampling["temperature"],
                            top_p=sampling["top_p"],
                            max_new_tokens=c.max_new_tokens, seed=c.seed, template=c.template,
                            batch_size=c.batch_size, limit=c.max_prompts, device=c.models.device,
                            dtype=c.models.dtype,
                            cache_dir=str(plan.cache_root), show_progress=c.show_progress, vllm=c.vllm,
                            vllm_python=c.vllm_python, vllm_args=vllm_args,
                            logprobs=_logprob_settings(plan, fingerprint, run_plan.ref_identity.fingerprint),
                            **c.models.model_flags))


def _load(plan: Plan, path: str):
    """A model of the report, loaded with the report's device, dtype and loading flags."""
    from dpo_eval.models import load_model

    device, dtype = _device(plan)
    return load_model(path, device=device, dtype=dtype, cache_dir=plan.cache_root,
                      **plan.config.models.model_flags).model


def _tokenizer(plan: Plan, *paths: str):
    from dpo_eval.models import load_tokenizer

    return load_tokenizer(*paths, cache_dir=plan.cache_root, **plan.config.models.model_flags)


def _contexts(plan: Plan, tokenizer):
    """context(sample) -> the prompt token ids generate sampled from (memoised per prompt id)."""
    from dpo_eval.generate import Prompt, prompt_ids

    contexts: dict[str, list[int]] = {}

    def context(sample: dict) -> list[int]:
        key = str(sample["prompt_id"])
        if key not in contexts:
            contexts[key] = prompt_ids(tokenizer, Prompt(key, sample["prompt"]), plan.config.template)
        return contexts[key]

    return context


def run_kl(plan: Plan, run_plan: RunPlan, row: Row, samples_dir: Path, work: Path) -> None:
    """Analytic KL along each of the row's untempered samples (engine.kl.analytic_kl, as diagnostics.sample_kl)."""
    rows = read_samples(samples_dir)
    if row.identity.fingerprint == run_plan.ref_identity.fingerprint:
        frame = pd.DataFrame({"kl": [0.0] * len(rows), "n_tokens": [len(r["token_ids"]) for r in rows]})
    else:
        from dpo_eval.engine.kl import analytic_kl
        from dpo_eval.tokenization import padding_id

        tokenizer = _tokenizer(plan, row.path, run_plan.reference.path)
        context = _contexts(plan, tokenizer)
        sequences = [(context(r), [int(t) for t in r["token_ids"]]) for r in rows]
        policy, ref = _load(plan, row.path), _load(plan, run_plan.reference.path)
        budget, pad_id = _budget(plan), padding_id(tokenizer)
        results = compute_sharded(sequences, [len(c) + len(t) for c, t in sequences], budget, plan.ctx,
                                  lambda part: analytic_kl(policy, ref, part, pad_id=pad_id, token_budget=budget))
        frame = pd.DataFrame([asdict(r) for r in results], columns=["kl", "policy_logp", "ref_logp", "n_tokens",
                                                                    "policy_entropy_mean"])
    frame.insert(0, "prompt_id", [str(r["prompt_id"]) for r in rows])
    frame.insert(1, "sample_index", [int(r["sample_index"]) for r in rows])
    if plan.ctx.is_main:
        frame.to_parquet(work / "kl.parquet", index=False)


def run_entropy(plan: Plan, run_plan: RunPlan, model_path: str, work: Path) -> None:
    from dpo_eval.engine.entropy import prompt_entropy
    from dpo_eval.generate import prompt_ids, read_prompts
    from dpo_eval.tokenization import padding_id

    prompts = read_prompts(plan.prompts_path, plan.config.max_prompts)
    tokenizer = _tokenizer(plan, model_path, run_plan.reference.path)
    ids = [prompt_ids(tokenizer, p, plan.config.template) for p in prompts]
    model, budget, pad_id = _load(plan, model_path), _budget(plan), padding_id(tokenizer)
    # last_k = 1: prompt_entropy packs each prompt as (all of it, [pad]), len(prompt) + 1 tokens
    results = compute_sharded(ids, [len(i) + 1 for i in ids], budget, plan.ctx,
                              lambda part: prompt_entropy(model, part, token_budget=budget, pad_id=pad_id))
    frame = pd.DataFrame([asdict(r) for r in results], columns=["last", "mean_last_k", "k"])
    frame.insert(0, "prompt_id", [p.id for p in prompts])
    if plan.ctx.is_main:
        frame.to_parquet(work / "entropy.parquet", index=False)


def unseen_sequences(ref_rows: list[dict], context) -> pd.DataFrame:
    """The unseen responses (see the module docstring): source, prompt_id, response_prompt_id,
    sample_index, n_tokens, and the (prompt ids, response ids) to score; ``context(row)`` gives prompt ids."""
    kept = [r for r in ref_rows if r["token_ids"]]
    records = [("reference_samples", r, r) for r in kept]
    prompts = list(dict.fromkeys(str(r["prompt_id"]) for r in ref_rows))
    first = {}
    for r in kept:
        first.setdefault(str(r["prompt_id"]), r)
    by_id = {str(r["prompt_id"]): r for r in ref_rows}
    for i, prompt_id in enumerate(prompts):
        other = first.get(prompts[(i + 1) % len(prompts)])
        if other is not None and len(prompts) > 1:
            records.append(("other_prompts", by_id[prompt_id], other))
    return pd.DataFrame({
        "source": [s for s, _, _ in records], "prompt_id": [str(p["prompt_id"]) for _, p, _ in records],
        "response_prompt_id": [str(r["prompt_id"]) for _, _, r in records],
        "sample_index": [int(r["sample_index"]) for _, _, r in records],
        "n_tokens": [len(r["token_ids"]) for _, _, r in records],
        "prompt_ids": [list(context(p)) for _, p, _ in records],
        "response_ids": [list(r["token_ids"]) for _, _, r in records]})


def _logps(plan: Plan, model_path: str, identity, frame: pd.DataFrame, pad_id: int, desc: str) -> list[float]:
    """Σ log-probs of each (prompt ids, response ids) under one model, through the engine's cache (or vLLM's)."""
    from dpo_eval.engine.cache import LogpCache, numerics_tag
    from dpo_eval.engine.runner import score_with_cache
    from dpo_eval.tokenization import TokenizedPair

    if plan.config.logprob_backend == "vllm":
        from dpo_eval.engine.vllm_backend import vllm_stats

        sequences = [(tuple(p), tuple(r)) for p, r in zip(frame["prompt_ids"], frame["response_ids"])]
        settings = _logprob_settings(plan, identity.fingerprint)  # role "policy": the URL of this model
        stats = vllm_stats(identity, sequences, plan.cache_root, settings, "policy", plan.config.show_progress)
        return [float(v) for v in stats.logp_sum]
    fingerprint = identity.fingerprint
    device, dtype = _device(plan)
    pairs = [TokenizedPair(str(i), "", tuple(p), tuple(r), ())
             for i, (p, r) in enumerate(zip(frame["prompt_ids"], frame["response_ids"]))]
    cache = LogpCache(plan.cache_root, fingerprint, numerics_tag(device, dtype), writer_tag=str(plan.ctx.rank))
    result = score_with_cache(lambda: _load(plan, model_path), pairs, cache, pad_id=pad_id,
                              token_budget=_budget(plan), ctx=plan.ctx, desc=desc,
                              show_progress=plan.config.show_progress)
    return [float(v) for v in result.chosen_logp]


def run_unseen(plan: Plan, run_plan: RunPlan, row: Row, ref_samples_dir: Path, work: Path) -> None:
    from dpo_eval.tokenization import padding_id

    tokenizer = _tokenizer(plan, run_plan.reference.path)
    frame = unseen_sequences(read_samples(ref_samples_dir), _contexts(plan, tokenizer))
    pad = padding_id(tokenizer)
    frame["policy_logp"] = _logps(plan, row.path, row.identity, frame, pad, "unseen: policy")
    ref = run_plan.reference.path
    frame["ref_logp"] = _logps(plan, ref, run_plan.ref_identity, frame, pad, "unseen: reference")
    if plan.ctx.is_main:
        frame.drop(columns=["prompt_ids", "response_ids"]).to_parquet(work / "unseen.parquet", index=False)


def run_judge(plan: Plan, samples_dir: Path, ref_samples_dir: Path, work: Path) -> None:
    from dpo_eval.judge.run import JudgeConfig, judge

    c = plan.config
    judge(JudgeConfig(candidates=str(samples_dir / SAMPLES_FILE), baseline=str(ref_samples_dir / SAMPLES_FILE),
                      judge=c.judge, out=str(work), mode=c.judge_mode, template=c.judge_template, seed=c.seed,
                      concurrency=c.judge_concurrency, base_url=c.judge_base_url, api_key_env=c.judge_api_key_env,
                      cache_dir=str(plan.cache_root), show_progress=c.show_progress, **c.models.model_flags))


def read_samples(samples_dir: Path) -> list[dict]:
    """The rows of a samples artifact's samples.jsonl, in file order."""
    text = (Path(samples_dir) / SAMPLES_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
