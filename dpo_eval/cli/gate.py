"""`dpo-eval gate`: thresholds on results.json for CI.

Exit codes, as pytest's: 0 every check passed, 1 a check failed, 2 bad input (one line, no traceback),
3 internal error (one line naming the error and the file its traceback was written to: a bug to report,
never mistaken for a failed check).
"""

from __future__ import annotations

import dataclasses
import tempfile
import traceback

import click

from dpo_eval.errors import UserError
from dpo_eval.gate.config import EXIT_INTERNAL, GateConfig

DEFAULTS = {f.name: f.default for f in dataclasses.fields(GateConfig) if f.default is not dataclasses.MISSING}
"""The option defaults, taken from GateConfig (never restated here)."""

GATE_EXAMPLES = """
\b
Examples:
  dpo-eval gate runs/dpo/.dpo_eval/results.json --config data/gate.yaml
  dpo-eval gate runs/dpo --config gate.yaml --judge openai:gpt-4o-mini --junit gate.xml
  dpo-eval gate new/results.json --config gate.yaml --baseline main/results.json

\b
Config (gate.yaml), one check per entry:
  checks:
    - checkpoints[final].rewards.accuracy >= 0.65
    - checkpoints[final].kl.analytic.mean|kl.k1.mean <= 10
    - findings: none of severity high
    - regression: checkpoints[final].rewards.accuracy may not drop by more than 0.02
"""


def internal_error(error: Exception) -> str:
    """Write the traceback of an unexpected error to a file; return the one line that says so."""
    with tempfile.NamedTemporaryFile("w", prefix="dpo-eval-gate-", suffix=".traceback.txt", delete=False,
                                     encoding="utf-8") as handle:
        handle.write("".join(traceback.format_exception(error)))
    first = str(error).splitlines()[0] if str(error) else ""
    return (f"dpo-eval gate: internal error ({type(error).__name__}{': ' + first if first else ''}); traceback "
            f"written to {handle.name}: please report it")


def _option(flag: str, help_text: str, **kwargs):
    name = flag.lstrip("-").replace("-", "_")
    return click.option(flag, default=DEFAULTS[name], show_default=DEFAULTS[name] is not None, help=help_text,
                        **kwargs)


@click.command("gate", epilog=GATE_EXAMPLES)
@click.argument("target")
@click.option("--config", "config", required=True, help="gate.yaml with the checks (see data/gate.yaml).")
@_option("--baseline", "An earlier results.json (or its folder) for regression: checks.")
@_option("--junit", "Write JUnit XML here: one testcase per check and checkpoint.")
@_option("--ref", "Reference model, for a RUN_DIR or CHECKPOINT target (as dpo-eval report).")
@_option("--data", "Held-out pairs, for a RUN_DIR or CHECKPOINT target.")
@_option("--prompts", "Prompts to sample, for a RUN_DIR or CHECKPOINT target.")
@_option("--judge", "openai:MODEL, local:PATH, gold:ANSWERS or rule:module:function (RUN_DIR or CHECKPOINT).")
@_option("--out", "The gate's results folder [default: RUN_DIR/.dpo_eval/gate; the run store shared with "
         "dpo-eval report].")
@_option("--cache-dir", "Log-prob and model cache [default: ~/.cache/dpo_eval].")
@_option("--step-summary", "Append a Markdown summary here [default: $GITHUB_STEP_SUMMARY when set].")
@click.option("--trust-remote-code", is_flag=True, default=DEFAULTS["trust_remote_code"],
              help="Allow model code from the model folders.")
@click.option("--allow-pickle", is_flag=True, default=DEFAULTS["allow_pickle"],
              help="Allow pickled .bin weights (they can run code).")
@click.option("--no-progress", is_flag=True, help="Hide the report's progress bars.")
@click.pass_context
def gate_command(ctx: click.Context, target: str, no_progress: bool, **options) -> None:
    """Check TARGET (results.json, its folder, a RUN_DIR or a CHECKPOINT) against the thresholds of --config.

    A run dir or checkpoint is evaluated first with `dpo-eval report` (its run store makes reruns cheap).
    Prints a table of checks; exit code 0 when all pass, 1 when one fails, 2 on an input error, 3 on an
    internal error (its traceback written to a file named on stderr).
    """
    try:
        from dpo_eval.gate.run import gate
        from dpo_eval.reports.gate_summary import format_table

        outcome = gate(GateConfig(target=target, show_progress=not no_progress, **options))
        table = format_table(outcome.checks)
    except (UserError, click.ClickException):
        raise  # exit 2: the CLI group prints the one line
    except Exception as error:  # noqa: BLE001 - anything else is a bug: exit 3, never 1 ("a check failed")
        click.echo(internal_error(error), err=True)
        ctx.exit(EXIT_INTERNAL)
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(table)
    ctx.exit(outcome.exit_code)
