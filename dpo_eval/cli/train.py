"""`dpo-eval train`: YAML + --set overrides -> TrainConfig -> train()."""

from __future__ import annotations

import click

EXAMPLES = """
\b
Examples:
  dpo-eval train run.yaml
  dpo-eval train run.yaml --set learning_rate=5e-6 --set loss=ipo --set max_steps=200
  dpo-eval train --set policy=smollm2 --set data=pairs.jsonl --set output_dir=runs/a --set train_top_layers=2
  torchrun --nproc_per_node 2 -m dpo_eval.cli train run.yaml
\b
A run killed at any moment continues from its last checkpoint when the same command is rerun.
"""


@click.command("train", epilog=EXAMPLES)
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting (YAML value; loss_params.gamma=0.5 for nested keys).")
def train_command(config: str | None, overrides: tuple[str, ...]) -> None:
    """Train a policy with DPO or a variant; writes checkpoint-N/ dirs and a run manifest.

    Losses: dpo (label_smoothing -> cDPO), ipo, hinge, rdpo, simpo, orpo, cpo, dpop; nll_coef adds
    an NLL term on chosen responses. Settings and defaults: see docs/train.md.
    """
    from dpo_eval.train.config import load_config
    from dpo_eval.train.recipe import train

    settings = load_config(config, overrides)
    history = train(settings)
    last = [h for h in history if "loss" in h]
    if last:  # KTO logs no reward accuracy (unpaired items)
        accuracy = last[-1].get("rewards/accuracies")
        click.echo(f"step {last[-1]['step']}: loss {last[-1]['loss']:.4f}"
                   + (f", reward accuracy {accuracy:.3f}" if accuracy is not None else ""), err=True)
    click.echo(f"checkpoints in {settings.output_dir}", err=True)
