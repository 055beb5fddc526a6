"""`dpo-eval render RESULTS_DIR`: report.html and report.md from a saved results dir (no model loads)."""

from __future__ import annotations

from pathlib import Path

import click

from dpo_eval.errors import UserError


@click.command("render")
@click.argument("results_dir", type=click.Path(path_type=Path))
def render_command(results_dir: Path) -> None:
    """Render RESULTS_DIR/results.json (written by `dpo-eval report`) as report.html and report.md."""
    from dpo_eval.reports.render import render

    try:
        paths = render(results_dir)
    except ValueError as error:
        raise UserError(str(error)) from None
    for path in paths:
        click.echo(str(path))
