"""One source of defaults: every click option's default is the command's config dataclass default.

A flag whose default differs from the dataclass (or an option with no field to land in) fails here,
so the CLI and the Python API can never disagree about what a run did.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing

import click
import pytest

from dpo_eval.cli import main

NO_DEFAULT = object()
# Options whose value reaches the config under another name, or inverted.
RENAMED = {"no_progress": ("show_progress", lambda flag_default: not flag_default)}


def dataclass_defaults(cls) -> dict:
    """Field name -> default, nested dataclass fields flattened by their own names: a default_factory's
    dataclass by the values it makes (ReportConfig.models), a required one (ModelSettings) by its defaults."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out.update({n.name: getattr(value, n.name) for n in dataclasses.fields(value)}
                       if dataclasses.is_dataclass(value) else {f.name: value})
        elif dataclasses.is_dataclass(nested := typing.get_type_hints(cls)[f.name]):
            out.update(dataclass_defaults(nested))
        else:
            out[f.name] = NO_DEFAULT
    return out


def signature_defaults(function) -> dict:
    return {name: (p.default if p.default is not inspect.Parameter.empty else NO_DEFAULT)
            for name, p in inspect.signature(function).parameters.items()}


def config_defaults(command_name: str) -> dict:
    from dpo_eval.evaluation.config import ReportConfig
    from dpo_eval.gate.config import GateConfig
    from dpo_eval.generate import GenerateConfig
    from dpo_eval.judge.run import JudgeConfig
    from dpo_eval.judge.winrate import winrate
    from dpo_eval.rerank import RerankConfig
    from dpo_eval.rewardbench.run import RewardBenchConfig
    from dpo_eval.score import ScoreConfig

    return {"score": lambda: dataclass_defaults(ScoreConfig),
            "generate": lambda: dataclass_defaults(GenerateConfig),
            "judge": lambda: dataclass_defaults(JudgeConfig),
            "winrate": lambda: signature_defaults(winrate),
            "rewardbench": lambda: dataclass_defaults(RewardBenchConfig),
            "rerank": lambda: dataclass_defaults(RerankConfig),
            "report": lambda: dataclass_defaults(ReportConfig),
            "gate": lambda: dataclass_defaults(GateConfig)}[command_name]()


def normalise(value):
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize("command_name", ["score", "generate", "judge", "winrate", "report", "rewardbench", "rerank",
                                          "gate"])
def test_every_option_default_is_the_config_default(command_name):
    defaults = config_defaults(command_name)
    command = main.commands[command_name]
    context = click.Context(command)
    mismatches, orphans = [], []
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        name, convert = RENAMED.get(param.name, (param.name, lambda d: d))
        name = {"judge_spec": "judge"}.get(name, name)
        if name not in defaults:
            orphans.append(param.name)
            continue
        expected = defaults[name]
        if expected is NO_DEFAULT:
            if not (param.required or command_name == "winrate"):
                mismatches.append(f"--{param.name}: the config has no default, so the option must be required")
            continue
        got = normalise(convert(param.get_default(context, call=True)))
        if param.multiple and not isinstance(got, tuple):  # a repeatable option given no value: empty
            got = ()
        if got != normalise(expected):
            mismatches.append(f"--{param.name}: option default {got!r} != config default {expected!r}")
    assert not orphans, f"{command_name}: options with no config field: {orphans}"
    assert not mismatches, f"{command_name}: " + "; ".join(mismatches)


def test_checker_sees_a_planted_mismatch():
    """The comparison itself can fail: a config whose default differs from the option's is caught."""

    @dataclasses.dataclass(frozen=True)
    class Planted:
        beta: float = 0.2

    option = click.Option(["--beta"], default=0.1)
    assert dataclass_defaults(Planted)["beta"] != option.default


MODEL_LOADING_COMMANDS = ("score", "generate", "judge", "report", "rewardbench", "rerank", "gate")


def test_every_model_loading_command_takes_the_same_loading_flags():
    present = [name for name in MODEL_LOADING_COMMANDS if name in main.commands]
    assert {"score", "generate", "judge"} <= set(present)
    for name in present:
        flags = {opt for param in main.commands[name].params for opt in getattr(param, "opts", [])}
        assert {"--allow-pickle", "--trust-remote-code"} <= flags, f"dpo-eval {name} lacks a model-loading flag"


SCORING_COMMANDS = ("score", "rerank", "rewardbench")


def _described(param: click.Parameter) -> tuple:
    return (tuple(param.opts), param.default, getattr(param, "help", None), getattr(param, "is_flag", False),
            getattr(param, "show_default", None), param.type.name)


def test_scoring_commands_take_the_shared_engine_options_in_order():
    """score, rerank and rewardbench list dpo_eval.cli.options.engine_options, as written there, in its order."""
    from dpo_eval.cli.options import engine_options

    probe = click.command("probe")(engine_options(lambda **_: None))
    shared = [_described(p) for p in probe.params]
    assert [d[0] for d in shared] == [("--token-budget",), ("--device",), ("--dtype",), ("--cache-dir",),
                                      ("--trust-remote-code",), ("--allow-pickle",), ("--no-progress",)]
    for name in SCORING_COMMANDS:
        described = [_described(p) for p in main.commands[name].params if isinstance(p, click.Option)]
        flags = [d[0] for d in described]
        start = flags.index(shared[0][0])
        assert described[start:start + len(shared)] == shared, f"dpo-eval {name}: engine options differ or moved"
