"""`dpo-eval winrate`: judgments table -> win rates JSON."""

from __future__ import annotations

import json

import click

EXAMPLES = """
\b
Examples:
  dpo-eval winrate judgments.jsonl --out winrates.json
  dpo-eval winrate alpaca_eval_annotations.json --out winrates.json --seed 1 --resamples 5000
"""


@click.command("winrate", epilog=EXAMPLES)
@click.argument("judgments", type=click.Path(dir_okay=True))
@click.option("--out", required=True, help="Output JSON path.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option("--resamples", "n_resamples", default=2000, show_default=True, type=click.IntRange(min=10))
@click.option("--lc-resamples", default=200, show_default=True, type=click.IntRange(min=0),
              help="Bootstrap refits for the length-controlled CI (0: no CI).")
@click.option("--level", default=0.95, show_default=True, type=click.FloatRange(0.5, 0.999))
def winrate_command(judgments, out, seed, n_resamples, lc_resamples, level) -> None:
    """Win rate, CI, length-controlled win rate and position bias per model, from a judgments table.

    JUDGMENTS: jsonl/csv/parquet with model, prompt_id, preference (+ outputs or lengths), or an
    AlpacaEval annotations file (output_1 baseline, output_2 model, generator_2, preference in [1, 2]).
    """
    from dpo_eval.judge.winrate import winrate

    document = winrate(judgments, out, seed=seed, n_resamples=n_resamples, lc_resamples=lc_resamples, level=level)
    for name, result in document["models"].items():
        shown = {k: result[k] for k in ("n", "n_unscored", "win_rate", "lc_win_rate")}
        click.echo(json.dumps({"model": name, **shown}))
    click.echo(f"wrote {out}", err=True)


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


GENERATE_EXAMPLES = """
\b
Examples:
  dpo-eval generate --model runs/a/checkpoint-200 --ref sft --prompts prompts.jsonl --n 4 --out gen/ckpt200
  dpo-eval generate --model smollm2 --prompts data/hh_harmless_sample.jsonl --n 2 --temperature 0.7 --out gen/ref
  dpo-eval generate --model ckpt --served-model ckpt --base-url http://localhost:8000/v1 --prompts p.jsonl --out g
  dpo-eval generate --model ckpt --vllm --vllm-arg=--tensor-parallel-size=2 --prompts p.jsonl --out g
"""


@click.command("generate", epilog=GENERATE_EXAMPLES)
@click.option("--model", required=True, help="Policy model (any form `score` accepts).")
@click.option("--prompts", required=True, help="Rows with prompt (string or messages) or instruction, + prompt_id.")
@click.option("--out", required=True, help="Output dir: samples.jsonl, generate_summary.json.")
@click.option("--n", default=4, show_default=True, type=int, help="Samples per prompt.")
@click.option("--ref", default=None, help="Reference model: each sample's log-prob under it is stored too.")
@click.option("--temperature", default=1.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--top-p", default=1.0, show_default=True, type=float)
@click.option("--max-new-tokens", default=256, show_default=True, type=int)
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--template", type=click.Choice(["auto", "chat", "plain"]), default="auto", show_default=True)
@click.option("--batch-size", default=8, show_default=True, type=int, help="Prompts per generate call.")
@click.option("--limit", default=None, type=int, help="Only the first N prompts.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--cache-dir", default=None, help="Log-prob cache [default: ~/.cache/dpo_eval].")
@click.option("--base-url", default=None, help="Sample from this OpenAI-compatible server (e.g. vLLM) instead; "
              "--model stays the local copy used for tokenization and log-probs.")
@click.option("--served-model", default=None, help="Model name on the server [default: --model].")
@click.option("--api-key-env", default=None, help="Environment variable holding the server's API key.")
@click.option("--concurrency", default=4, show_default=True, type=int, help="Parallel server requests.")
@click.option("--vllm", is_flag=True, help="Start a vLLM server for this run (needs `make vllm-env`).")
@click.option("--vllm-python", default=None, help="Python of the vLLM environment [default: .venv-vllm/bin/python].")
@click.option("--vllm-arg", "vllm_args", multiple=True,
              help="Passed to vLLM unchanged, e.g. --vllm-arg=--tensor-parallel-size=2 (repeatable).")
@click.option("--no-progress", is_flag=True)
def generate_command(stop, no_progress, vllm_args, **options) -> None:
    """Sample N responses per prompt with their token counts and policy/reference log-probs.

    Resumable: a killed run keeps every finished batch and continues with the rest.
    """
    from dpo_eval.generate import GenerateConfig, generate

    samples = generate(GenerateConfig(stop=tuple(stop), vllm_args=tuple(vllm_args), show_progress=not no_progress,
                                      **options))
    click.echo(json.dumps({"n_samples": len(samples)}))
    click.echo(f"wrote {options['out']}/samples.jsonl", err=True)
