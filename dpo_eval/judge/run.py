"""`dpo-eval judge`: candidates vs a baseline, prompt by prompt, into a judgments table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.jsonio import write_json, write_jsonl
from dpo_eval.judge.backends import OpenAIJudge, RuleJudge
from dpo_eval.judge.gold import GoldJudge
from dpo_eval.judge.judging import MODES, Comparison, Judging
from dpo_eval.judge.outputs import check_same_prompts, read_outputs
from dpo_eval.judge.store import JudgmentStore
from dpo_eval.judge.templates import load_template


@dataclass(frozen=True)
class JudgeConfig:
    candidates: str
    baseline: str
    judge: str  # "openai:MODEL", "local:PATH", "gold:ANSWERS_FILE" or "rule:module:function"
    out: str
    mode: str = "verdict"
    template: str = "pairwise"
    seed: int = 0
    concurrency: int = 4
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 0.5
    cache_dir: str | None = None
    trust_remote_code: bool = False  # local judges: allow model code from the model dir
    allow_pickle: bool = False  # local judges: allow pickled .bin weights
    show_progress: bool = True


def make_backend(config: JudgeConfig, template):
    kind, _, rest = config.judge.partition(":")
    if kind == "openai" and rest:
        return OpenAIJudge(rest, config.base_url, template, api_key_env=config.api_key_env,
                           timeout=config.timeout, max_retries=config.retries, backoff=config.backoff)
    if kind == "rule" and rest:
        return RuleJudge(rest)
    if kind == "gold" and rest:
        return GoldJudge(rest)
    if kind == "local" and rest:
        from dpo_eval.judge.local import LocalJudge

        return LocalJudge(rest, template, cache_dir=config.cache_dir, trust_remote_code=config.trust_remote_code,
                          allow_pickle=config.allow_pickle)
    raise UserError(f"--judge {config.judge!r}: use openai:MODEL (any OpenAI-compatible server, e.g. vLLM, "
                    "with --base-url), local:MODEL_PATH (transformers, in-process), gold:ANSWERS_FILE or "
                    "rule:module:function")


def judge(config: JudgeConfig) -> list[dict]:
    """Judge every prompt the candidates and the baseline share; write OUT/judgments.jsonl + summary."""
    if config.mode not in MODES:
        raise UserError(f"--mode {config.mode!r}: use one of {', '.join(MODES)}")
    model, candidates = read_outputs(config.candidates)
    _, baseline = read_outputs(config.baseline)
    shared = check_same_prompts(config.candidates, candidates, config.baseline, baseline)
    template = load_template(config.template)
    out = Path(config.out)
    store = JudgmentStore(out / "judge_cache.sqlite")
    judging = Judging(make_backend(config, template), template, store, config.mode, config.seed)
    comparisons = [Comparison(model, pid, candidates[pid].prompt, candidates[pid].text, baseline[pid].text)
                   for pid in shared]
    try:
        records = judging.run(comparisons, config.concurrency, config.show_progress)
    finally:
        store.close()
    write_jsonl(out / "judgments.jsonl", records)
    unscored = [r for r in records if r["preference"] is None]
    write_json(out / "judge_summary.json", {
        "schema_version": 1, "model": model, "n": len(records), "n_unscored": len(unscored),
        "n_judge_calls": judging.n_judge_calls, "mode": config.mode, "seed": config.seed,
        "judge": judging.backend.config, "template": template.name, "template_sha256": template.sha256,
        "prompts_only_in_candidates": len(candidates) - len(shared)})
    return records
