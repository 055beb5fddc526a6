"""The `dpo-eval` command line: one click group; each subcommand calls a library function."""

from __future__ import annotations

import click

from dpo_eval.cli.gate import gate_command
from dpo_eval.cli.generate import generate_command
from dpo_eval.cli.judge import judge_command
from dpo_eval.cli.loop import loop_command
from dpo_eval.cli.render import render_command
from dpo_eval.cli.report import report_command
from dpo_eval.cli.rerank import rerank_command
from dpo_eval.cli.rewardbench import rewardbench_command
from dpo_eval.cli.score import score_command
from dpo_eval.cli.train import train_command
from dpo_eval.cli.winrate import winrate_command
from dpo_eval.errors import UserError


class CliError(click.ClickException):
    """A user mistake: one line on stderr, exit code 2, no traceback."""

    exit_code = 2


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as err:
            raise CliError(str(err)) from None


@click.group(cls=Group)
@click.version_option(package_name="dpo-eval")
def main() -> None:
    """Evaluate and diagnose preference-tuned (DPO-family) language models."""


main.add_command(score_command)
main.add_command(train_command)
main.add_command(loop_command)
main.add_command(winrate_command)
main.add_command(judge_command)
main.add_command(generate_command)
main.add_command(rewardbench_command)
main.add_command(rerank_command)
main.add_command(render_command)
main.add_command(report_command)
main.add_command(gate_command)
