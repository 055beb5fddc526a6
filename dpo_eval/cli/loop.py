"""`dpo-eval loop`: YAML + --set overrides -> LoopConfig -> run_loop()."""

from __future__ import annotations

import click

EXAMPLES = """
\b
Examples:
  dpo-eval loop data/loop/loop.yaml
  dpo-eval loop loop.yaml --set rounds=3 --set pairs=max_random --set train.learning_rate=5e-6
\b
A loop killed at any moment continues where it stopped when the same command is rerun.
"""


@click.command("loop", epilog=EXAMPLES)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting (YAML value; sampling.temperature=0.7 or train.beta=0.1 for nested keys).")
def loop_command(config: str, overrides: tuple[str, ...]) -> None:
    """Iterative DPO: sample from the current policy, label, form pairs, train a round; repeat.

    Writes OUTPUT_DIR/round-R/ (a run dir plus the round's samples, labels and pairs) and
    OUTPUT_DIR/loop.json (per-round counts). Settings and defaults: see docs/loop.md.
    """
    from dpo_eval.loop.config import load_loop_config
    from dpo_eval.loop.run import run_loop

    record = run_loop(load_loop_config(config, overrides))
    click.echo(f"{len(record['rounds'])} round(s) in {record['config']['output_dir']}", err=True)
