"""`dpo-eval judge`: candidates vs baseline -> judgments (cached, resumable)."""

from __future__ import annotations

import json

import click

JUDGE_EXAMPLES = """
\b
Examples:
  dpo-eval judge --candidates ckpt200/samples.jsonl --baseline ref/samples.jsonl \\
      --judge openai:gpt-4o-mini --out judged/ckpt200
  dpo-eval judge --candidates c.jsonl --baseline b.jsonl --judge openai:smollm2 \\
      --base-url http://localhost:8000/v1 --api-key-env NONE --mode probability --out j
  dpo-eval judge --candidates c.jsonl --baseline b.jsonl --judge local:smollm2 --mode probability --out j
  dpo-eval judge --candidates c.jsonl --baseline b.jsonl --judge rule:my_checks:exact_match --out j
"""


@click.command("judge", epilog=JUDGE_EXAMPLES)
@click.option("--candidates", required=True, help="jsonl of prompt_id, prompt, output (+ model).")
@click.option("--baseline", required=True, help="The baseline's outputs, same format.")
@click.option("--judge", "judge_spec", required=True,
              help="openai:MODEL (OpenAI-compatible server, e.g. vLLM), local:MODEL_PATH, gold:ANSWERS_FILE "
                   "or rule:module:function.")
@click.option("--out", required=True, help="Output dir: judgments.jsonl, judge_summary.json, judge_cache.sqlite.")
@click.option("--mode", type=click.Choice(["verdict", "probability"]), default="verdict", show_default=True,
              help="verdict: both orders judged; probability: one seeded order, P(label).")
@click.option("--template", default="pairwise", show_default=True, help="Built-in template name or a file.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--base-url", default="https://api.openai.com/v1", show_default=True)
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the API key (never written anywhere).")
@click.option("--timeout", default=60.0, show_default=True, type=float, help="Seconds per request.")
@click.option("--retries", default=5, show_default=True, type=click.IntRange(min=0))
@click.option("--backoff", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="First retry delay in seconds; doubles each retry (with jitter).")
@click.option("--cache-dir", default=None, help="Model cache for local judges [default: ~/.cache/dpo_eval].")
@click.option("--trust-remote-code", is_flag=True, help="Local judges: allow model code from the model dir.")
@click.option("--allow-pickle", is_flag=True, help="Local judges: allow pickled .bin weights (they can run code).")
@click.option("--no-progress", is_flag=True)
def judge_command(judge_spec, no_progress, **options) -> None:
    """Judge candidates against a baseline with an LLM or rule judge; cached and resumable.

    Unparseable or failed judgments are recorded as unscored with a reason (never ties or losses);
    rerunning retries only those that failed in transport.
    """
    from dpo_eval.judge.run import JudgeConfig, judge

    records = judge(JudgeConfig(judge=judge_spec, show_progress=not no_progress, **options))
    unscored = sum(r["preference"] is None for r in records)
    click.echo(json.dumps({"n": len(records), "n_unscored": unscored}))
    click.echo(f"wrote {options['out']}/judgments.jsonl", err=True)
