"""`dpo-eval gate`'s config file (gate.yaml): read and checked before any model loads.

gate.yaml:

    checks:                                   # each entry one check (a JUnit testcase per checkpoint)
      - checkpoints[final].rewards.accuracy >= 0.65            # FIGURE OP NUMBER
      - checkpoints[final].kl.analytic.mean|kl.k1.mean <= 10  # alternatives: the first non-null is used
      - findings: none of severity high                        # no finding of this severity or worse
      - findings: none of severity high among kl_budget, length_inflation   # only these findings
      - regression: checkpoints[final].rewards.accuracy may not drop by more than 0.02   # needs --baseline
      - {name: "reward accuracy", check: "checkpoints[best].rewards.accuracy >= 0.6"}    # a named check
    report:                                   # optional: ReportConfig fields for a RUN_DIR or CHECKPOINT
      n_samples: 4
      stages: [score, kl]                     # lists for tuple fields; default: the stages the checks need
    thresholds:                               # optional: when findings fire (metrics.findings.Thresholds)
      kl_budget: 5
    allow_incomparable: false                 # true: compare with a baseline made with other settings

Operators: >=, <=, >, <, ==, !=. Selectors and figures: dpo_eval.metrics.gate. A regression tolerance is
absolute (0.02) or relative to the baseline's value (5%); ``may not rise`` is for lower-is-better figures;
it fails on a change its 95% CI puts beyond the tolerance (metrics.gate_noise).
A findings check fails when a finding it counts could not be computed (no judge: over_optimisation and
lc_gap cannot fire): add what it needs, or name the findings it covers with ``among``.
Every mistake is one UserError line naming the check and listing what is allowed there.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from dpo_eval.errors import UserError, read_yaml_file
from dpo_eval.evaluation.config import ReportConfig, thresholds_from_mapping
from dpo_eval.metrics.findings import SEVERITIES, Thresholds
from dpo_eval.metrics.gate import (
    CHECKPOINT_FIGURES,
    FINDING_NEEDS,
    OPERATORS,
    TOP_FIGURES,
    Check,
    FigureRef,
    FindingsCheck,
    RegressionCheck,
    ThresholdCheck,
    figure_error,
    figure_tree,
    split_path,
)
from dpo_eval.model_settings import LOADING_FIELDS, ModelLoading


@dataclass(frozen=True)
class GateFile:
    checks: tuple[Check, ...]
    report: dict
    """ReportConfig overrides from the file's `report:` mapping, flat (report_keys: the loading settings
    by their own names; dpo_eval.model_settings.pop_model_loading nests them)."""
    thresholds: Thresholds | None = None
    """The file's `thresholds:` (defaults for the fields it leaves out); None without the block."""
    allow_incomparable: bool = False
    """Compare with a baseline made with other pairs, prompts, judge, β, reference or sampling (noted)."""


FILE_KEYS = ("checks", "report", "thresholds", "allow_incomparable")
ENTRY_KEYS = ("name", "check", "findings", "regression")
SELECTOR = re.compile(r"^checkpoints\[(?P<selector>[^\]]*)\]\.(?P<figures>.+)$")
SPACED = re.compile(r"^(?P<path>\S+)\s+(?P<op>\S+)\s+(?P<number>\S+)$")
SYMBOLIC = re.compile(r"^(?P<path>[^\s<>=!]+)\s*(?P<op>[<>=!]+)\s*(?P<number>\S+)$")
REGRESSION = re.compile(r"^(?P<path>\S+)\s+may not\s+(?P<direction>\S+)\s+by more than\s+(?P<tolerance>\S+)$")
FINDINGS = re.compile(r"^none of severity (?P<severity>\S+)(?:\s+among\s+(?P<codes>.+))?$")
CHECKPOINT_TREE = figure_tree(CHECKPOINT_FIGURES)
TOP_TREE = figure_tree(TOP_FIGURES)
THRESHOLD_EXAMPLE = "e.g. checkpoints[final].rewards.accuracy >= 0.65"


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} must be a finite number")
    return value


def _alternatives(text: str, tree: dict, prefix: str) -> tuple[tuple, ...]:
    found = []
    for alternative in text.split("|"):
        if alternative.startswith("checkpoints["):
            raise ValueError(f"write the selector once: {prefix}{alternative.partition('.')[2]}|... after it")
        keys = split_path(alternative)
        problem = figure_error(keys, tree)
        if problem:
            raise ValueError(f"unknown figure {alternative!r}: {problem}")
        found.append(tuple(keys))
    return tuple(found)


def parse_figure(text: str) -> FigureRef:
    """checkpoints[SELECTOR].FIGURE|FIGURE... or a top-scope FIGURE|FIGURE...; ValueError when wrong."""
    match = SELECTOR.match(text)
    if match:
        selector = match["selector"]
        if selector not in ("final", "best", "all") and not selector.isdigit():
            raise ValueError(f"unknown checkpoint selector {selector!r}; allowed: final, best, all, a step number")
        return FigureRef(text, selector, _alternatives(match["figures"], CHECKPOINT_TREE, f"checkpoints[{selector}]."))
    first = re.split(r"[.\[|]", text, maxsplit=1)[0]
    if first == "checkpoints":
        raise ValueError("write checkpoints[SELECTOR].FIGURE with SELECTOR one of final, best, all, a step number")
    if first in CHECKPOINT_TREE:
        raise ValueError(f"{first!r} is a figure of a checkpoint: write checkpoints[final].{text} "
                         "(selectors: final, best, all, a step number)")
    if first not in TOP_TREE:
        allowed = ", ".join(["checkpoints[SELECTOR]", *TOP_TREE])
        raise ValueError(f"unknown figure {text!r}: unknown key {first!r} at the start; allowed: {allowed}")
    return FigureRef(text, None, _alternatives(text, TOP_TREE, ""))


def parse_threshold(text: str, name: str) -> ThresholdCheck:
    match = SPACED.match(text) or SYMBOLIC.match(text)
    if not match:
        raise ValueError(f"write FIGURE OPERATOR NUMBER, {THRESHOLD_EXAMPLE}")
    if match["op"] not in OPERATORS:
        raise ValueError(f"unknown operator {match['op']!r}; allowed: {', '.join(OPERATORS)}")
    figure = parse_figure(match["path"])
    return ThresholdCheck(name, figure, match["op"], _number(match["number"], "threshold"))


def parse_regression(text: str, name: str) -> RegressionCheck:
    match = REGRESSION.match(text)
    if not match:
        raise ValueError("write regression: FIGURE may not drop by more than TOLERANCE (a number or N%), "
                         "e.g. regression: checkpoints[final].rewards.accuracy may not drop by more than 0.02")
    if match["direction"] not in ("drop", "rise"):
        raise ValueError(f"unknown direction {match['direction']!r}; allowed: drop, rise")
    tolerance, is_relative = match["tolerance"], match["tolerance"].endswith("%")
    value = _number(tolerance.removesuffix("%"), "tolerance") / (100.0 if is_relative else 1.0)
    if value < 0:
        raise ValueError(f"tolerance {tolerance!r} must be >= 0")
    return RegressionCheck(name, parse_figure(match["path"]), match["direction"], value, is_relative)


def parse_findings(text: str, name: str) -> FindingsCheck:
    match = FINDINGS.match(text)
    if not match:
        raise ValueError(f"write findings: none of severity SEVERITY (one of {', '.join(SEVERITIES)}), "
                         "optionally followed by: among CODE, CODE")
    if match["severity"] not in SEVERITIES:
        raise ValueError(f"unknown severity {match['severity']!r}; allowed: {', '.join(SEVERITIES)}")
    codes = tuple(c.strip() for c in (match["codes"] or "").split(",") if c.strip())
    unknown = [c for c in codes if c not in FINDING_NEEDS]
    if unknown or (match["codes"] is not None and not codes):
        what = f"unknown finding {unknown[0]!r}" if unknown else "no finding after among"
        raise ValueError(f"{what}; allowed: {', '.join(FINDING_NEEDS)}")
    return FindingsCheck(name, match["severity"], codes)


def _entry_text(entry: object) -> tuple[str, str | None]:
    """(check text, its name if given) of a list entry: a string or a mapping of ENTRY_KEYS."""
    if isinstance(entry, str):
        return entry.strip(), None
    if not isinstance(entry, dict):
        raise ValueError(f"an entry is a string or a mapping, not {type(entry).__name__}")
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; allowed: {', '.join(ENTRY_KEYS)}")
    kinds = [k for k in ENTRY_KEYS[1:] if k in entry]
    if len(kinds) != 1:
        raise ValueError(f"give exactly one of {', '.join(ENTRY_KEYS[1:])} (got {', '.join(kinds) or 'none'})")
    body = str(entry[kinds[0]]).strip()
    text = body if kinds[0] == "check" else f"{kinds[0]}: {body}"
    return text, None if entry.get("name") is None else str(entry["name"])


def parse_check(entry: object) -> Check:
    """One entry of `checks:`; ValueError (one line) when it is wrong."""
    text, name = _entry_text(entry)
    kind, colon, body = text.partition(":")
    if colon and kind.strip() in ("findings", "regression"):
        parse = parse_findings if kind.strip() == "findings" else parse_regression
        return parse(body.strip(), name or text)
    return parse_threshold(text, name or text)


# ---------------------------------------------------------------------------------------------- the file

REPORT_FIXED = ("run_dirs", "thresholds")
"""ReportConfig fields a gate file's `report:` may not set (the target is the gate's argument; thresholds
have their own top-level block)."""


def report_keys() -> list[str]:
    """The keys of a gate file's `report:`: ReportConfig's fields less REPORT_FIXED, in their order, its
    `models` (ModelLoading) flat by their own names in its place, as the report's flags name them."""
    keys: list[str] = []
    for field in dataclasses.fields(ReportConfig):
        if field.name == "models":
            keys.extend(LOADING_FIELDS)
        elif field.name not in REPORT_FIXED:
            keys.append(field.name)
    return keys


def _accepts(hint: object, value: object) -> bool:
    """Whether a YAML value fits a ReportConfig field's type hint (int for float; bool only for bool)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is tuple:  # tuple[str, ...]: a YAML list of strings
        return isinstance(value, tuple) and all(_accepts(typing.get_args(hint)[0], v) for v in value)
    return isinstance(value, typing.get_origin(hint) or hint)  # type: ignore[arg-type]


def _report_overrides(where: str, mapping: object) -> dict:
    """The `report:` mapping checked against ReportConfig's fields and their types."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise UserError(f"{where}: report: must be a mapping of dpo-eval report settings, e.g. n_samples: 4")
    hints = {**typing.get_type_hints(ReportConfig), **typing.get_type_hints(ModelLoading)}
    allowed = report_keys()
    settings = {}
    for key, value in mapping.items():
        if key not in allowed:
            raise UserError(f"{where}: unknown report setting {key!r}; allowed: {', '.join(allowed)}")
        value = tuple(value) if isinstance(value, list) else value
        if not _accepts(hints[key], value):
            shown = "a list of strings" if "tuple[" in str(hints[key]) else f"a {hints[key]}"
            raise UserError(f"{where}: report setting {key}: {value!r} is not {shown}")
        settings[key] = value
    return settings


def load_gate_file(path: str | Path) -> GateFile:
    """Read and check gate.yaml: every check parsed, every figure and operator known (one-line UserError)."""
    where = str(path)
    document = read_yaml_file(where, "--config", "pass a gate.yaml (see data/gate.yaml)")
    if not isinstance(document, dict):
        raise UserError(f"{where}: expected a mapping with checks: (a list), got {type(document).__name__}")
    unknown = [k for k in document if k not in FILE_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(FILE_KEYS)}")
    entries = document.get("checks")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{where}: checks: must be a non-empty list, {THRESHOLD_EXAMPLE}")
    checks = []
    for number, entry in enumerate(entries, start=1):
        try:
            checks.append(parse_check(entry))
        except ValueError as error:
            raise UserError(f"{where}: check {number} ({_shown(entry)}): {error}") from None
    thresholds = document.get("thresholds")
    allow = document.get("allow_incomparable", False)
    if not isinstance(allow, bool):
        raise UserError(f"{where}: allow_incomparable: must be true or false, got {allow!r}")
    return GateFile(tuple(checks), _report_overrides(where, document.get("report")),
                    None if thresholds is None else thresholds_from_mapping(thresholds, f"{where}: thresholds"), allow)


def _shown(entry: object) -> str:
    text = entry if isinstance(entry, str) else repr(entry)
    return text if len(text) <= 80 else text[:77] + "..."
