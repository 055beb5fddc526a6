"""Labellers of `dpo-eval loop`: one score per sample (pointwise), or unscored with a reason.

| spec                    | score of (prompt, output)                                                    |
|-------------------------|------------------------------------------------------------------------------|
| `gold:ANSWERS`          | 1.0 if the output contains the prompt's gold answer as whole tokens, else 0.0 |
|                         | (dpo_eval.judge.gold's matcher; a prompt without a gold answer is unscored)   |
| `rule:module:function`  | `function(prompt, output) -> float` (a finite number; anything else, or an    |
|                         | exception, is unscored with the reason); a three-argument function is a       |
|                         | pairwise judge rule instead (dpo_eval.loop.pairwise_labels)                   |

A labeller's `key` is what its labels depend on (part of the labels phase's content key), so a
changed answer file or rule gives new labels and never reuses old ones.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dpo_eval.data.prompts import prompt_text
from dpo_eval.errors import UserError
from dpo_eval.evaluation.store import path_sha256
from dpo_eval.judge.gold import GoldJudge, contains_answer

LABELLERS = ("gold:ANSWERS", "rule:module:function", "implicit:POLICY[,REF]", "rm:PATH", "self", "openai:NAME",
             "local:PATH")


@dataclass(frozen=True)
class Label:
    """One sample's label: its score (None when unscored), which labeller gave it, and why unscored."""

    score: float | None
    source: str
    reason: str = ""
    extra: dict = field(default_factory=dict)
    """Labeller-specific fields written with the label (the self-judge's judgments)."""


class Labeller(Protocol):
    key: dict

    def label_samples(self, samples: list[dict], work: Path | None = None) -> list[Label]:
        """One label per sample row (`prompt`, `output`, as generate writes them), in order; `work`: the
        labels phase's work folder, where a labeller may keep a resumable cache."""
        ...


class PointwiseLabeller:
    """A labeller that scores each (prompt, output) on its own."""

    def label(self, prompt: str | list, output: str) -> Label:
        raise NotImplementedError

    def label_samples(self, samples: list[dict], work: Path | None = None) -> list[Label]:
        return [self.label(s["prompt"], s["output"]) for s in samples]


@dataclass
class GoldLabeller(PointwiseLabeller):
    """Verifiable tasks: 1.0 when the output contains the gold answer (dpo_eval.judge.gold), else 0.0."""

    path: str

    def __post_init__(self) -> None:
        self.judge = GoldJudge(self.path)
        self.key = {"labeller": "gold", **self.judge.config}
        self.source = f"gold:{self.path}"

    def label(self, prompt: str | list, output: str) -> Label:
        gold = self.judge.answers.get(prompt_text(prompt))
        if gold is None:
            return Label(None, self.source, "no gold answer for this prompt")
        return Label(float(contains_answer(output, gold)), self.source)


@dataclass
class RuleLabeller(PointwiseLabeller):
    """A Python callable `module:function(prompt, output)` returning a number (higher is better)."""

    spec: str

    def __post_init__(self) -> None:
        module_name, _, function_name = self.spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            self.function = getattr(module, function_name)
        except (ImportError, AttributeError, ValueError):
            raise UserError(f"labeller rule:{self.spec}: cannot import {self.spec!r}; give module:function "
                            "importable from the Python path (e.g. set PYTHONPATH)") from None
        source = getattr(module, "__file__", None)
        self.key = {"labeller": "rule", "function": self.spec,
                    "module_sha256": path_sha256(source) if source else None}
        self.source = f"rule:{self.spec}"

    def label(self, prompt: str | list, output: str) -> Label:
        try:
            value = self.function(prompt_text(prompt), output)
        except Exception as err:  # a rule's own bug must not stop the run: record it
            return Label(None, self.source, f"rule raised {type(err).__name__}: {err}")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return Label(float(value), self.source)
        return Label(None, self.source, f"unparseable: a pointwise rule must return a finite number, got {value!r}")


def is_pairwise_rule(spec: str) -> bool:
    """Whether rule:module:function takes three arguments (instruction, output_a, output_b): a judge rule."""
    function = RuleLabeller(spec).function
    try:
        return len(inspect.signature(function).parameters) == 3
    except (TypeError, ValueError):
        return False


def make_labeller(spec: str, context=None, judge_samples: int = 1, sampling=None, judge=None) -> Labeller:
    """The labeller for a `labeller:` setting (this module's and dpo_eval.loop.model_labels' tables);
    context: a model_labels.LabelContext, needed by the model labellers; judge_samples and sampling
    (the loop's) by `self` (dpo_eval.loop.self_judge); judge (JudgeSettings) by the pairwise judges
    (`openai:`, `local:`, a three-argument `rule:`: dpo_eval.loop.pairwise_labels)."""
    kind, _, rest = spec.partition(":")
    if kind == "gold" and rest:
        return GoldLabeller(rest)
    if (kind in ("openai", "local") and rest) or (kind == "rule" and rest and is_pairwise_rule(rest)):
        from dpo_eval.loop.config import JudgeSettings
        from dpo_eval.loop.pairwise_labels import PairwiseJudgeLabeller

        return PairwiseJudgeLabeller(spec, context, judge or JudgeSettings())
    if kind == "rule" and rest:
        return RuleLabeller(rest)
    if kind in ("implicit", "rm") and rest:
        from dpo_eval.loop.model_labels import ImplicitLabeller, RewardModelLabeller

        return (ImplicitLabeller if kind == "implicit" else RewardModelLabeller)(rest, context)
    if kind == "self" and not rest:
        from dpo_eval.loop.self_judge import SelfLabeller

        return SelfLabeller(context, judge_samples, sampling)
    raise UserError(f"labeller {spec!r} is unknown; use one of {', '.join(LABELLERS)}")
