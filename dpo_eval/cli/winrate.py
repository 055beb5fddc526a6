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
    AlpacaEval annotations file (output_1 baseline, output_2 model, generator_2, preference in [1, 2];
    its legacy draw 0 is read as 1.5, as alpaca_eval does).
    """
    from dpo_eval.judge.winrate import winrate

    document = winrate(judgments, out, seed=seed, n_resamples=n_resamples, lc_resamples=lc_resamples, level=level)
    for name, result in document["models"].items():
        shown = {k: result[k] for k in ("n", "n_unscored", "win_rate", "lc_win_rate")}
        click.echo(json.dumps({"model": name, **shown}))
    click.echo(f"wrote {out}", err=True)
