"""`dpo-eval rewardbench`: flags -> RewardBenchConfig -> rewardbench()."""

from __future__ import annotations

import json

import click

from dpo_eval.cli.options import engine_options, logprob_options, pop_logprob_settings
from dpo_eval.tokenization import TEMPLATES, TRUNCATIONS, TokenizerSettings

EXAMPLES = """
\b
Examples:
  dpo-eval rewardbench --policy zephyr-dpo --ref zephyr-sft --data reward-bench-filtered.jsonl
  dpo-eval rewardbench --policy P --ref R --data rb.parquet --compat rewardbench --out rb_compat
  dpo-eval rewardbench --policy simpo_model --ref none --norm avg --data rb.jsonl
"""


@click.command("rewardbench", epilog=EXAMPLES)
@click.option("--policy", required=True, help="Policy model (save_pretrained dir, checkpoint, PEFT adapter, "
              "Hub id org/name[@revision], .gguf).")
@click.option("--ref", required=True, help="Reference model (same forms), or 'none' for reference-free scores.")
@click.option("--data", required=True, help="RewardBench-format file or Hub dataset: prompt, chosen, rejected, "
              "subset (+ id).")
@click.option("--split", default=None, help="Split of a Hub dataset or saved DatasetDict (allenai/reward-bench: filtered).")
@click.option("--subset", default=None, help="Config (subset) of a Hub dataset.")
@click.option("--beta", default=0.1, show_default=True, type=float,
              help="Reward scale (not applied under --compat rewardbench, as RewardBench does not).")
@click.option("--norm", type=click.Choice(["sum", "avg", "norm"]), default="sum", show_default=True,
              help="Summed log-probs, their mean, or (reference-free only) -||per-token log-probs||_2.")
@click.option("--compat", type=click.Choice(["none", "rewardbench"]), default="none", show_default=True,
              help="rewardbench: RewardBench's DPO tokenization and unscaled scores (see docs/rewardbench.md).")
@click.option("--out", default="rewardbench_out", show_default=True,
              help="Output dir for rewardbench.json and pairs.parquet.")
@click.option("--limit", type=int, default=None, help="Score only the first N pairs.")
@click.option("--skip-invalid", is_flag=True, help="Skip bad rows (counted in the output) instead of stopping.")
@click.option("--template", type=click.Choice(TEMPLATES), default="auto", show_default=True,
              help="Default conventions: chat template (auto: when the tokenizer has one) or plain text.")
@click.option("--max-length", type=int, default=None, help="Default conventions: cap prompt+response tokens.")
@click.option("--truncation", type=click.Choice(TRUNCATIONS), default="keep_end", show_default=True)
@engine_options
@logprob_options
def rewardbench_command(template, max_length, truncation, no_progress, **options) -> None:
    """A DPO policy and its reference as a reward model, scored as RewardBench v1.

    Writes OUT/rewardbench.json (per-subset accuracy and ties, the four sections, the score,
    prior sets when present, the reference's identity and fingerprint, beta, norm) and
    OUT/pairs.parquet. A pair is correct when the chosen response scores strictly higher.
    """
    from dpo_eval.model_settings import pop_model_settings
    from dpo_eval.rewardbench.run import RewardBenchConfig, rewardbench

    settings = TokenizerSettings(template=template, max_length=max_length, truncation=truncation)
    result = rewardbench(RewardBenchConfig(models=pop_model_settings(options), tokenization=settings, logprobs=pop_logprob_settings(options), show_progress=not no_progress, **options))
    if not result.is_main_process:  # torchrun: rank 0 reports
        return
    summary = result.summary
    click.echo(json.dumps({"score": summary["score"], "sections": summary["sections"],
                           "n_pairs": summary["data"]["n_pairs"]}))
    click.echo(f"wrote {options['out']}/rewardbench.json and {options['out']}/pairs.parquet", err=True)
