"""`dpo-eval generate`: N samples per prompt with policy/reference log-probs."""

from __future__ import annotations

import json

import click

GENERATE_EXAMPLES = """
\b
Examples:
  dpo-eval generate --model runs/a/checkpoint-200 --ref sft --prompts prompts.jsonl --n 4 --out gen/ckpt200
  dpo-eval generate --model smollm2 --prompts data/hh_harmless_sample.jsonl --n 2 --temperature 0.7 --out gen/ref
  dpo-eval generate --model ckpt --served-model ckpt --base-url http://localhost:8000/v1 --prompts p.jsonl --out g
  dpo-eval generate --model ckpt --vllm --vllm-arg=--tensor-parallel-size=2 --prompts p.jsonl --out g
"""


@click.command("generate", epilog=GENERATE_EXAMPLES)
@click.option("--model", required=True, help="Policy model (any form `score` accepts, a Hub id included).")
@click.option("--prompts", required=True, help="Rows with prompt (string or messages), instruction or Arena-Hard "
              "turns, + prompt_id; a file or a Hub dataset (org/name[@revision]).")
@click.option("--split", default=None, help="Split of a Hub dataset --prompts [default: test, or the only one].")
@click.option("--subset", default=None, help="Config (subset) of a Hub dataset --prompts.")
@click.option("--out", required=True, help="Output dir: samples.jsonl, generate_summary.json.")
@click.option("--n", default=4, show_default=True, type=int, help="Samples per prompt.")
@click.option("--ref", default=None, help="Reference model: each sample's log-prob under it is stored too.")
@click.option("--temperature", default=1.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--top-p", default=1.0, show_default=True, type=float)
@click.option("--max-new-tokens", default=256, show_default=True, type=int)
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Sample i of a prompt is drawn with a seed made of (--seed, prompt_id, i).")
@click.option("--template", type=click.Choice(["auto", "chat", "plain"]), default="auto", show_default=True,
              help="Chat template (auto: if the tokenizer has one) or plain text; with --base-url, plain "
              "prompts go to the server's /completions as token ids.")
@click.option("--batch-size", default=8, show_default=True, type=int,
              help="Prompts sampled together (does not change the samples).")
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
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model dir.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickled .bin weights (they can run code).")
@click.option("--no-progress", is_flag=True)
def generate_command(stop, no_progress, vllm_args, **options) -> None:
    """Sample N responses per prompt with their token counts and policy/reference log-probs.

    Resumable: a rerun into the same --out keeps every finished prompt and samples the rest; it is
    refused if a setting that changes samples (model, --n, --temperature, --top-p, --max-new-tokens,
    --stop, --seed, --template, server) differs from OUT/samples.settings.json.
    """
    from dpo_eval.generate import GenerateConfig, generate

    samples = generate(GenerateConfig(stop=tuple(stop), vllm_args=tuple(vllm_args), show_progress=not no_progress,
                                      **options))
    click.echo(json.dumps({"n_samples": len(samples)}))
    click.echo(f"wrote {options['out']}/samples.jsonl", err=True)
