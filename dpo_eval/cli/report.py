"""`dpo-eval report`: every checkpoint of one or more runs evaluated into results.json and a report."""

from __future__ import annotations

import dataclasses
import json

import click

from dpo_eval.evaluation.config import STAGES, ReportConfig, load_thresholds, resolve_stages
from dpo_eval.metrics.findings import Thresholds
from dpo_eval.model_settings import ModelLoading, pop_model_loading

DEFAULTS = {**{f.name: f.default for f in dataclasses.fields(ModelLoading)},
            **{f.name: f.default for f in dataclasses.fields(ReportConfig) if f.default is not dataclasses.MISSING}}
"""The option defaults, taken from ReportConfig and its ModelLoading (never restated here)."""

REPORT_EXAMPLES = """
\b
Examples:
  dpo-eval report runs/dpo-beta0.1
  dpo-eval report runs/dpo-beta0.1 --judge openai:gpt-4o-mini --steps 100,200,final
  dpo-eval report runs/dpo-beta0.1 --stages score,kl
  dpo-eval report runs/b0.1 runs/b0.5 --ref sft --data heldout.jsonl --out sweep_report
  dpo-eval report runs/math --judge gold:answers.jsonl --prompts questions.jsonl --n-samples 8
"""


def _stages(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """--stages score,kl -> ("score", "kl"), checked (an unknown name is a one-line UserError)."""
    if value is None:
        return None
    stages = tuple(part.strip() for part in value.split(",") if part.strip())
    resolve_stages(stages)
    return stages


class ThresholdsFile(click.ParamType):
    """--thresholds FILE -> metrics.findings.Thresholds (the default passes through as it is)."""

    name = "FILE"

    def convert(self, value, param, ctx) -> Thresholds:
        return value if isinstance(value, Thresholds) else load_thresholds(value)


def _option(flag: str, help_text: str, **kwargs):
    name = flag.lstrip("-").replace("-", "_")
    return click.option(flag, default=DEFAULTS[name], show_default=DEFAULTS[name] is not None, help=help_text,
                        **kwargs)


@click.command("report", epilog=REPORT_EXAMPLES)
@click.argument("run_dirs", nargs=-1, required=True)
@_option("--ref", "Reference model [default: each run's dpo_eval.json, else its adapters' base model].")
@_option("--data", "Held-out pairs, a file or a Hub dataset [default: the runs' dpo_eval.json eval data].")
@_option("--prompts", "Prompts to sample [default: the held-out pairs' prompts].")
@_option("--split", "Split of a Hub dataset --data (org/name[@revision]) [default: test, or the only one].")
@_option("--subset", "Config (subset) of a Hub dataset --data.")
@_option("--judge", "openai:MODEL, local:PATH, gold:ANSWERS or rule:module:function [default: no judge].")
@_option("--steps", "Checkpoints to evaluate, e.g. 100,200,final [default: all].")
@_option("--stages", f"Stages to run, comma-separated, of {','.join(STAGES)} (what they need is added: kl, "
         "unseen and judge need samples) [default: all].", callback=_stages)
@_option("--out", "Results folder [default: RUN_DIR/.dpo_eval of the first run].")
@_option("--n-samples", "Samples per prompt and model.", type=int)
@_option("--max-new-tokens", "Longest sample.", type=int)
@_option("--temperature", "Sampling temperature (0: greedy).", type=float)
@_option("--top-p", "Nucleus sampling.", type=float)
@_option("--seed", "Seed of sampling, judge order and bootstrap.", type=int)
@_option("--template", "Render prompts with the chat template (auto: if there is one) or as plain text.",
         type=click.Choice(["auto", "chat", "plain"]))
@_option("--max-prompts", "Only the first N prompts are sampled [default: all].", type=int)
@_option("--beta", "β of implicit rewards [default: the run's dpo_eval.json, else 0.1].", type=float)
@_option("--judge-mode", "verdict: both orders; probability: one seeded order, P(label).",
         type=click.Choice(["verdict", "probability"]))
@_option("--judge-template", "Built-in judge template name or a file.")
@_option("--judge-base-url", "OpenAI-compatible server of an openai: judge.")
@_option("--judge-api-key-env", "Environment variable holding the judge server's API key.")
@_option("--judge-concurrency", "Parallel judge requests.", type=click.IntRange(min=1))
@_option("--bootstrap-resamples", "Bootstrap resamples of win-rate CIs.", type=int)
@_option("--lc-resamples", "Bootstrap resamples of length-controlled win-rate CIs.", type=int)
@_option("--batch-size", "Prompts sampled together (does not change the samples).", type=int)
@_option("--token-budget", "Padded tokens per forward pass of the log-prob passes [default: 1024 on CPU, "
         "32768 on CUDA].", type=int)
@_option("--device", "cpu, cuda, cuda:1 or auto.")
@_option("--dtype", "auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16.")
@_option("--cache-dir", "Log-prob and model cache [default: ~/.cache/dpo_eval].")
@click.option("--thresholds", type=ThresholdsFile(), default=DEFAULTS["thresholds"],
              help="YAML or JSON of finding thresholds to override, e.g. kl_budget: 5 (names: "
              "metrics.findings.Thresholds) [default: its defaults].")
@click.option("--trust-remote-code", is_flag=True, default=DEFAULTS["trust_remote_code"],
              help="Allow model code from the model folders (checkpoints, reference, a local judge).")
@click.option("--allow-pickle", is_flag=True, default=DEFAULTS["allow_pickle"],
              help="Allow pickled .bin weights (they can run code).")
@click.option("--render/--no-render", default=DEFAULTS["render"], show_default=True,
              help="Write report.html and report.md from results.json.")
@click.option("--vllm", is_flag=True, default=DEFAULTS["vllm"],
              help="Sample with a vLLM server started per model (needs `make vllm-env`).")
@_option("--vllm-python", "Python of the vLLM environment [default: .venv-vllm/bin/python].")
@click.option("--vllm-arg", "vllm_args", multiple=True,
              help="Passed to vLLM unchanged, e.g. --vllm-arg=--tensor-parallel-size=2 (repeatable).")
@_option("--logprob-backend", "Log-probs of the score stage from the engine or from vLLM (a server per model, "
         "--vllm-python/--vllm-arg; the kl and entropy stages do not run).", type=click.Choice(["engine", "vllm"]))
@click.option("--vllm-url", "vllm_urls", multiple=True, metavar="CHECKPOINT=URL",
              help="With --logprob-backend vllm: a vLLM server you run for a checkpoint (folder name or step, "
                   "RUN/NAME, or path), e.g. --vllm-url checkpoint-200=http://host:8000/v1 (repeatable; the others are started).")
@_option("--vllm-ref-url", "With --logprob-backend vllm: a vLLM server you run for the reference.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def report_command(run_dirs, no_progress, vllm_args, vllm_urls, **options) -> None:
    """Evaluate every checkpoint of RUN_DIR(s): rewards, KL, drift, lengths, win rates -> results.json.

    Costly steps are stored under OUT/store by content (models, data, settings): a rerun computes only
    what is new, and a killed run resumes where it stopped.
    """
    from dpo_eval.evaluation.pipeline import report

    result = report(ReportConfig(run_dirs=tuple(run_dirs), show_progress=not no_progress,
                                 vllm_args=tuple(vllm_args), vllm_urls=tuple(vllm_urls),
                                 models=pop_model_loading(options), **options))
    if not result.is_main_process:  # torchrun: rank 0 reports
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for phase, seconds in result.timings.items():
        computed = result.ledger.n_computed(phase)
        click.echo(f"{phase:>9}: {seconds:8.2f} s" + (f"  ({computed} computed)" if computed else ""), err=True)
    click.echo(json.dumps({"out": str(result.out), "n_checkpoints": len(result.document["checkpoints"]),
                           "computed": result.ledger.n_computed()}))
    click.echo(f"wrote {result.out / 'results.json'}", err=True)
