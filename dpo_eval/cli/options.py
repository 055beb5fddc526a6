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


_LOGPROB_OPTIONS = (
    click.option("--logprob-backend", type=click.Choice(["engine", "vllm"]), default="engine", show_default=True,
                 help="Sequence log-probs from the engine, or from vLLM (tensor/pipeline parallel; needs "
                      "`make vllm-env`; no entropy or analytic KL)."),
    click.option("--vllm-python", default=None, help="Python of the vLLM environment [default: .venv-vllm/bin/python]."),
    click.option("--vllm-arg", "vllm_args", multiple=True,
                 help="Passed to vLLM unchanged, e.g. --vllm-arg=--tensor-parallel-size=8 (repeatable)."),
    click.option("--vllm-url", default=None, help="A vLLM server already serving the policy (http://host:port/v1)."),
    click.option("--vllm-ref-url", default=None, help="A vLLM server already serving the reference."),
)
LOGPROB_FIELDS = ("logprob_backend", "vllm_python", "vllm_args", "vllm_url", "vllm_ref_url")


def logprob_options(command: F) -> F:
    """Add --logprob-backend, --vllm-python, --vllm-arg, --vllm-url and --vllm-ref-url (fields of
    ``dpo_eval.logprob_settings.LogprobSettings``; ``pop_logprob_settings`` collects them)."""
    for option in reversed(_LOGPROB_OPTIONS):
        command = option(command)
    return command


def pop_logprob_settings(options: dict):
    """Take the logprob options out of a command's keyword arguments, as a LogprobSettings."""
    from dpo_eval.logprob_settings import LogprobSettings

    return LogprobSettings(**{name: options.pop(name) for name in LOGPROB_FIELDS})
