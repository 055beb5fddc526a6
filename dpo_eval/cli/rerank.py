"""`dpo-eval rerank`: flags -> RerankConfig -> run_rerank()."""

from __future__ import annotations

import json

import click

from dpo_eval.cli.options import engine_options, logprob_options, pop_logprob_settings
from dpo_eval.tokenization import TEMPLATES

EXAMPLES = """
\b
Examples:
  dpo-eval generate --model sft --prompts p.jsonl --n 8 --out gen && \\
  dpo-eval rerank --policy dpo_model --ref sft --candidates gen/samples.jsonl --out best_of_8
  dpo-eval rerank --policy simpo_model --ref none --norm avg --candidates c.jsonl --top-k 3
"""


@click.command("rerank", epilog=EXAMPLES)
@click.option("--policy", required=True, help="Policy model (save_pretrained dir, checkpoint, PEFT adapter, .gguf).")
@click.option("--ref", required=True, help="Reference model (same forms), or 'none' for reference-free scores.")
@click.option("--candidates", required=True,
              help="Candidates: `generate`'s samples.jsonl, or rows prompt_id, prompt, output (+ sample_index).")
@click.option("--top-k", type=int, default=1, show_default=True,
              help="Candidates kept per prompt in reranked.jsonl (0: all, ranked).")
@click.option("--beta", default=0.1, show_default=True, type=float, help="Reward scale beta.")
@click.option("--norm", type=click.Choice(["sum", "avg", "norm"]), default="sum", show_default=True,
              help="Summed log-probs, their mean, or (reference-free only) -||per-token log-probs||_2.")
@click.option("--out", default="rerank_out", show_default=True, help="Output dir for reranked.jsonl, summary.json.")
@click.option("--template", type=click.Choice(TEMPLATES), default="auto", show_default=True,
              help="Render prompts with the chat template (auto: when the tokenizer has one), as generate does.")
@click.option("--limit", type=int, default=None, help="Rerank only the first N prompts.")
@engine_options
@logprob_options
def rerank_command(no_progress, **options) -> None:
    """Best-of-n: rank each prompt's candidates by implicit reward beta * log(pi/pi_ref).

    Each prompt is processed once for all its candidates. Writes OUT/reranked.jsonl (the top-k
    of each prompt, best first, with rank, reward and log-probs: a generations file `judge`
    reads) and OUT/summary.json.
    """
    from dpo_eval.model_settings import pop_model_settings
    from dpo_eval.rerank import RerankConfig, run_rerank

    result = run_rerank(RerankConfig(models=pop_model_settings(options), logprobs=pop_logprob_settings(options), show_progress=not no_progress, **options))
    if not result.is_main_process:  # torchrun: rank 0 reports
        return
    keys = ("n_prompts", "n_candidates", "reward_best_mean", "reward_candidates_mean", "best_of_n_gain")
    click.echo(json.dumps({k: result.summary[k] for k in keys}))
    click.echo(f"wrote {options['out']}/reranked.jsonl and {options['out']}/summary.json", err=True)
