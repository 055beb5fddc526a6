"""Click options shared, word for word, by the log-prob scoring commands (score, rerank, rewardbench).

Each option lands in the config dataclass field of its name (``--no-progress`` as
``show_progress=not no_progress``); the defaults are those fields' defaults (tests/test_cli_defaults.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable)

# In --help order.
_ENGINE_OPTIONS = (
    click.option("--token-budget", type=int, default=None,
                 help="Padded tokens per forward pass [default: 1024 on CPU, 32768 on CUDA]."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ..."),
    click.option("--dtype", default="auto", show_default=True, help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16."),
    click.option("--cache-dir", default=None, help="Log-prob cache [default: ~/.cache/dpo_eval]."),
    click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model dir."),
    click.option("--allow-pickle", is_flag=True, help="Allow pickled .bin weights (they can run code)."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
)


def engine_options(command: F) -> F:
    """Add --token-budget, --device, --dtype, --cache-dir, --trust-remote-code, --allow-pickle and
    --no-progress to a command, listed in that order after the options above the decorator."""
    for option in reversed(_ENGINE_OPTIONS):  # click lists the decorator nearest the function first
        command = option(command)
    return command
