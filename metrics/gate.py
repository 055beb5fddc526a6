"""Gate checks on a results.json document: which figures exist, how a check selects and compares them.

Figures (FIGURES) are the numeric fields of the metrics dataclasses that `dpo-eval report` writes,
derived from their type hints so the list cannot drift from what is written:

    checkpoint scope (checkpoints[SELECTOR].<figure>)     top scope (<figure>)
    rewards      metrics.rewards.RewardAccuracy            recommended       Recommendation
                 (+ tie_tolerance, per_subset.<subset>.*)  fits.kl_quality   KLQualityFit
    winrate      metrics.winrate.ModelWinRate              past_peak.<run>   PastPeak
    quality      value, se
    kl           metrics.kl.KLSummary
    offpolicy    metrics.kl.OffPolicyLogRatios
    length       metrics.length.LengthComparison (+ pair_reward_length: PairRewardLength, lc_gap: LcGap)
    drift        metrics.drift.CheckpointDrift

A tuple (a CI) is addressed by index: ``winrate.win_rate_ci[0]`` is the CI's low end. A figure may be
given as alternatives ``kl.analytic.mean|kl.k1.mean``: the first that is not null is used.

Selectors: ``final`` (the last checkpoint of each run), ``best`` (results' ``recommended``), ``all``
(every trained checkpoint; the reference rows at step 0 are left out), or a step number (that step in
each run that has it, the reference row included for 0).

A check never passes on a number it does not have: a null or absent figure, an empty selection, or a
baseline with no matching checkpoint is a failure whose reason says what is missing (for a null figure,
from results.json's ``missing``: why, and the flag that adds it).
Likewise ``findings: none of severity X`` never passes on findings that were never computed
(FINDING_NEEDS: without a judge lc_gap and over_optimisation cannot fire) unless it names, with
``among``, only findings that were.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dpo_eval.metrics import drift, gate_noise, kl, length, overoptimization, rewards, winrate
from dpo_eval.metrics.findings import SEVERITIES

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
SELECTORS = ("final", "best", "all", "<step number>")
WILDCARD = "*"
"""A path segment that any name matches (a subset or run name); shown as <subset> / <run>."""
Key = str | int


# ---------------------------------------------------------------------------------------------- figures


def _type_paths(hint: object, owner: type, name: str) -> list[str]:
    """Suffixes (".a.b", "[0]", "") of the numeric leaves under one field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _type_paths(inner[0], owner, name) if len(inner) == 1 else []
    if hint in (int, float):
        return [""]
    if dataclasses.is_dataclass(hint):
        return ["." + path for path in dataclass_figures(hint)]
    if origin is tuple and args and all(a in (int, float) for a in args):
        return [f"[{i}]" for i in range(len(args))]
    if (owner, name) == (drift.DeltaSummary, "quantiles"):
        return [f".q{round(q * 100):02d}" for q in drift.QUANTILES]
    return []  # str, bool and free-form dicts are not figures


def dataclass_figures(cls: type) -> list[str]:
    """Dotted paths of every numeric field of a metrics dataclass, nested dataclasses expanded."""
    hints = typing.get_type_hints(cls)
    return [f.name + suffix for f in dataclasses.fields(cls) for suffix in _type_paths(hints[f.name], cls, f.name)]


def _under(prefix: str, paths: Sequence[str]) -> list[str]:
    return [f"{prefix}.{p}" for p in paths]


def _checkpoint_figures() -> tuple[str, ...]:
    accuracy = dataclass_figures(rewards.RewardAccuracy)
    return tuple([
        *_under("rewards", [*accuracy, "tie_tolerance", *_under("per_subset.<subset>", accuracy)]),
        *_under("winrate", dataclass_figures(winrate.ModelWinRate)),
        "quality.value", "quality.se",
        *_under("kl", dataclass_figures(kl.KLSummary)),
        *_under("offpolicy", dataclass_figures(kl.OffPolicyLogRatios)),
        *_under("length", [*dataclass_figures(length.LengthComparison),
                           *_under("pair_reward_length", dataclass_figures(length.PairRewardLength)),
                           *_under("lc_gap", dataclass_figures(length.LcGap))]),
        *_under("drift", dataclass_figures(drift.CheckpointDrift)),
    ])


def _top_figures() -> tuple[str, ...]:
    return tuple([*_under("recommended", dataclass_figures(overoptimization.Recommendation)),
                  *_under("fits.kl_quality", dataclass_figures(overoptimization.KLQualityFit)),
                  *_under("past_peak.<run>", dataclass_figures(overoptimization.PastPeak))])


CHECKPOINT_FIGURES = _checkpoint_figures()
"""Figures of one checkpoint (after ``checkpoints[SELECTOR].``)."""
TOP_FIGURES = _top_figures()
"""Figures of the whole results document."""


PATH_TOKEN = re.compile(r"""(?:^|\.)(?P<name>[^.\[\]"'|\s]+)|\[(?P<index>\d+)\]|\[(?P<quoted>"[^"]*"|'[^']*')\]""")
"""A path's parts: .name (name alone at the start), [0], or ["a name.with dots"]."""


def split_path(text: str) -> list[Key]:
    """'a.b_ci[0]' -> ["a", "b_ci", 0]; '<subset>' -> WILDCARD; 'x["beta0.1"]' -> ["x", "beta0.1"].

    Raises ValueError where the text is not such a path.
    """
    keys: list[Key] = []
    position = 0
    while position < len(text):
        match = PATH_TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"cannot read {text!r} at {text[position:]!r}: write name.name[0], and "
                             'name["with.dots"] for a run or subset name with dots')
        name, index, quoted = match["name"], match["index"], match["quoted"]
        if name is not None:
            keys.append(WILDCARD if name.startswith("<") and name.endswith(">") else name)
        else:
            keys.append(int(index) if index is not None else quoted[1:-1])
        position = match.end()
    if not keys:
        raise ValueError("an empty figure path")
    return keys


def figure_tree(figures: Sequence[str]) -> dict:
    """The figures as a nested dict of keys; a leaf is an empty dict."""
    tree: dict = {}
    for figure in figures:
        node = tree
        for key in split_path(figure):
            node = node.setdefault(key, {})
    return tree


def _show(key: Key) -> str:
    return f"[{key}]" if isinstance(key, int) else "<name>" if key == WILDCARD else key


def figure_error(keys: Sequence[Key], tree: dict) -> str | None:
    """None when keys name a figure of tree; else what is wrong and the allowed keys at that point."""
    node, done = tree, ""
    for key in keys:
        step = key if key in node else WILDCARD if WILDCARD in node and isinstance(key, str) and key else None
        if step is None:
            where = f"after '{done}'" if done else "at the start"
            return f"unknown key {_show(key)!r} {where}; allowed: {', '.join(_show(k) for k in node)}"
        node = node[step]
        done += _show(key) if isinstance(key, int) or not done else f".{key}"
    if node:
        return f"'{done}' is a group, not a figure; add one of: {', '.join(_show(k) for k in node)}"
    return None


# ---------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class FigureRef:
    """A figure as a check names it: scope, selector and alternative key paths (first non-null is used)."""

    text: str
    selector: str | None
    """final, best, all or a step number as text; None for a top-scope figure."""
    alternatives: tuple[tuple[Key, ...], ...]


@dataclass(frozen=True)
class ThresholdCheck:
    name: str
    figure: FigureRef
    op: str
    threshold: float


@dataclass(frozen=True)
class FindingsCheck:
    """No finding of `severity` or a more severe one (SEVERITIES order), among `codes` (all when empty).

    Fails when one of those findings could not be computed (FINDING_NEEDS: no judge, a stage not run),
    unless `codes` names only findings that were computed.
    """

    name: str
    severity: str
    codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegressionCheck:
    """value may not move against the baseline's by more than tolerance (times |baseline| if relative)."""

    name: str
    figure: FigureRef
    direction: str
    """"drop" (higher is better) or "rise" (lower is better)."""
    tolerance: float
    is_relative: bool


Check = ThresholdCheck | FindingsCheck | RegressionCheck


@dataclass(frozen=True)
class CheckResult:
    """One row of the gate's table and one JUnit testcase."""

    name: str
    figure: str
    """The figure path used (the alternative that had a value), or "findings"."""
    checkpoint: str
    """"run/label", or "" for a figure of the whole document."""
    op: str
    bound: float
    """The number the value is compared with (for a regression: baseline -/+ tolerance)."""
    value: float | None
    passed: bool
    reason: str = ""
    """Why there is no value ("missing: ..."); empty when there is one."""
    note: str = ""
    """Context: the baseline behind a regression bound, the findings counted."""
    is_inconclusive: bool = False
    """A regression that passed although its change's CI reaches past the tolerance (metrics.gate_noise)."""


# ---------------------------------------------------------------------------------------------- values

_ABSENT = object()
REASON_WORDS = {"winrate": "win rate", "lc_win_rate": "lc win rate", "lc_win_rate_ci": "lc win rate",
                "lc_gap": "lc win rate", "quality": "win rate", "recommended": "recommended",
                "kl_quality": "fit", "fits": "fit", "past_peak": "fit",
                "rewards": "reward accuracy", "offpolicy": "off-policy", "drift": "pair drift",
                "dispersion": "dispersion", "entropy": "entropy", "kl": "kl estimates", "analytic": "analytic kl",
                "length": "length figures"}
"""Which `missing` entry (by a word of its `what`) explains a null section; the nearest section's word
is tried first. A report run with --stages names each stage not run in `missing` with such words."""
COMPARED_WITH_REFERENCE = ("winrate", "quality", "length")
FINDING_NEEDS: dict[str, tuple[str, ...]] = {
    "likelihood_displacement": ("pair drift",), "drastic_drop": ("pair drift",), "degradation": ("pair drift",),
    "dispersion": ("dispersion to responses",), "dispersion_entropy": ("entropy",),
    "length_inflation": ("length figures",), "kl_budget": ("kl estimates",),
    "lc_gap": ("lc win rate",), "over_optimisation": ("quality-vs-kl fit",)}
"""Each finding code (metrics.findings) and the words of a `missing` entry's `what` that mean its inputs
were never computed (no judge: over-optimisation and the LC gap cannot fire; a stage not run)."""


def _part(key: Key) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    return f".{key}" if re.fullmatch(r"[^.\[\]\"'|\s]+", key) else f"[{json.dumps(key)}]"


def join_path(keys: Sequence[Key]) -> str:
    """The inverse of split_path (a name with dots or spaces quoted in brackets)."""
    return "".join(_part(k) for k in keys).lstrip(".")


def checkpoint_label(checkpoint: dict | None) -> str:
    return "" if checkpoint is None else f"{checkpoint['run']}/{checkpoint['label']}"


def lookup(document: object, keys: Sequence[Key]) -> tuple[object, int]:
    """The value at keys and -1; or (None or _ABSENT, depth) where a null or absent key was met."""
    node = document
    for depth, key in enumerate(keys):
        found = (isinstance(node, list) and key < len(node)) if isinstance(key, int) else \
            (isinstance(node, dict) and key in node)
        if not found:
            return _ABSENT, depth
        node = node[key]
        if node is None:
            return None, depth
    return node, -1


def _missing_entry(results: dict, keys: Sequence[Key], depth: int) -> str | None:
    """why + flag of the `missing` entry that explains a null at keys[depth] (nearest section first)."""
    for key in reversed(keys[:depth + 1]):
        word = REASON_WORDS.get(key) if isinstance(key, str) else None
        entry = next((m for m in results.get("missing", []) if word and word in m["what"].lower()), None)
        if entry is not None:
            return f"missing: {entry['why']} (flag: {entry['flag']})"
    return None


def null_reason(results: dict, checkpoint: dict | None, keys: Sequence[Key], depth: int, absent: bool) -> str:
    """'missing: ...' for a figure that is null (or absent) at keys[depth]."""
    path = join_path(keys[:depth + 1])
    if checkpoint is not None and checkpoint.get("is_reference") and keys[0] in COMPARED_WITH_REFERENCE:
        return f"missing: {checkpoint_label(checkpoint)} is the reference; {path} compares a model with it"
    explained = _missing_entry(results, keys, depth)
    if explained:
        return explained
    fits_reason = (results.get("fits") or {}).get("reason")
    if keys[0] in ("recommended", "fits") and fits_reason:
        return f"missing: {fits_reason}"
    if absent:
        return f"missing: {path} is not in results.json (written by another dpo-eval version?)"
    return f"missing: {path} is null in results.json, and its `missing` list gives no reason"


def resolve(results: dict, checkpoint: dict | None, figure: FigureRef) -> tuple[str, float | None, str]:
    """(path used, value, reason): the first alternative with a finite number, else the reasons none has."""
    document = results if checkpoint is None else checkpoint
    reasons = []
    for keys in figure.alternatives:
        value, depth = lookup(document, keys)
        if depth >= 0:
            reasons.append(null_reason(results, checkpoint, keys, depth, value is _ABSENT))
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            reasons.append(f"missing: {join_path(keys)} is {value!r}, not a finite number")
        else:
            return join_path(keys), float(value), ""
    return join_path(figure.alternatives[0]), None, "; ".join(dict.fromkeys(reasons))


def select_checkpoints(results: dict, selector: str) -> tuple[list[dict], str]:
    """The checkpoints a selector picks, and why there are none when the list is empty."""
    checkpoints = results["checkpoints"]
    if selector == "all":
        return [c for c in checkpoints if not c.get("is_reference")], "results.json has no trained checkpoint"
    if selector == "final":
        return list({c["run"]: c for c in checkpoints}.values()), "results.json has no checkpoint"
    if selector == "best":
        best = results.get("recommended")
        if best is None:
            return [], null_reason(results, None, ("recommended",), 0, False)
        found = [c for c in checkpoints if (c["run"], c["step"]) == (best["run"], best["step"])]
        return found, f"missing: the recommended {best['run']}/{best['step']} is not among the checkpoints"
    step = int(selector)
    steps = ", ".join(str(s) for s in sorted({c["step"] for c in checkpoints}))
    return [c for c in checkpoints if c["step"] == step], f"missing: no checkpoint at step {step} (steps: {steps})"


def _targets(results: dict, figure: FigureRef) -> tuple[list[dict | None], str]:
    if figure.selector is None:
        return [None], ""
    found, why = select_checkpoints(results, figure.selector)
    return list(found), why if why.startswith("missing:") else f"missing: {why}"


# ---------------------------------------------------------------------------------------------- evaluation


def _no_target(check: ThresholdCheck | RegressionCheck, op: str, bound: float, why: str) -> CheckResult:
    return CheckResult(check.name, check.figure.text, f"[{check.figure.selector}]", op, bound, None, False, why)


def evaluate_threshold(check: ThresholdCheck, results: dict) -> list[CheckResult]:
    """One result per selected checkpoint: passed when value OP threshold holds."""
    targets, why = _targets(results, check.figure)
    if not targets:
        return [_no_target(check, check.op, check.threshold, why)]
    out = []
    for checkpoint in targets:
        path, value, reason = resolve(results, checkpoint, check.figure)
        passed = value is not None and OPERATORS[check.op](value, check.threshold)
        out.append(CheckResult(check.name, path, checkpoint_label(checkpoint), check.op, check.threshold, value,
                               passed, reason))
    return out


def _where(finding: dict) -> str:
    """run/step of a finding, or what it has of them."""
    parts = [str(finding[k]) for k in ("run", "step") if finding.get(k) is not None]
    return "/".join(parts) or "the whole document"


def not_computed_findings(results: dict, codes: Sequence[str]) -> str:
    """'' when every finding of `codes` could fire; else which could not, why, and the flag that adds them."""
    parts = []
    for entry in results.get("missing", []):
        what = str(entry.get("what", "")).lower()
        lacking = [code for code in codes if any(word in what for word in FINDING_NEEDS.get(code, ()))]
        if lacking:
            parts.append(f"{', '.join(lacking)} ({entry['why']}): add {entry['flag']}")
    return f"not computed: {'; '.join(parts)}" if parts else ""


def evaluate_findings(check: FindingsCheck, results: dict) -> list[CheckResult]:
    """Count of findings (of check.codes, or any) at or above the severity; passed when it is 0 and every
    finding counted could have fired (a finding never computed fails: "not computed: ..."). The note
    lists the findings counted."""
    floor = SEVERITIES.index(check.severity)
    codes = check.codes or tuple(FINDING_NEEDS)
    hits = [f for f in results["findings"] if SEVERITIES.index(f["severity"]) >= floor
            and (not check.codes or f["code"] in check.codes)]
    note = "; ".join(f"{f['code']} ({f['severity']}) at {_where(f)}" for f in hits)
    reason = not_computed_findings(results, codes)
    among = f" among {', '.join(check.codes)}" if check.codes else ""
    return [CheckResult(check.name, f"findings of severity >= {check.severity}{among}", "", "==", 0.0,
                        float(len(hits)), not hits and not reason, reason, note)]


def _partner(current: dict | None, candidates: list[dict | None], selector: str | None) -> tuple[bool, dict | None]:
    """(found, baseline checkpoint): same run (and step for all / a step number), else the only candidate.

    A top-scope figure (current None) is compared with the baseline's whole document (found, None).
    """
    if current is None:
        return True, None
    keyed = ("run",) if selector in ("final", "best") else ("run", "step")
    same = [b for b in candidates if b is not None and all(b[k] == current[k] for k in keyed)]
    if len(same) == 1:
        return True, same[0]
    if len(candidates) == 1 and not same:
        return True, candidates[0]
    return False, None


def _paired_values(results: dict, baseline: dict, current: dict | None, base: dict | None,
                   figure: FigureRef) -> tuple[str, float | None, float | None, str]:
    """(path, value, baseline value, reason): the first alternative with a number on both sides."""
    reasons = []
    for keys in figure.alternatives:
        single = dataclasses.replace(figure, alternatives=(keys,))
        path, value, reason = resolve(results, current, single)
        _, base_value, base_reason = resolve(baseline, base, single)
        if value is not None and base_value is not None:
            return path, value, base_value, ""
        reasons.append(reason or f"baseline {base_reason}")
    return join_path(figure.alternatives[0]), None, None, "; ".join(dict.fromkeys(reasons))


def evaluate_regression(check: RegressionCheck, results: dict, baseline: dict, caveat: str = "") -> list[CheckResult]:
    """One result per selected checkpoint, against its baseline partner; `caveat` is added to every note."""
    targets, why = _targets(results, check.figure)
    candidates, base_why = _targets(baseline, check.figure)
    op = ">=" if check.direction == "drop" else "<="
    if not targets:
        return [_no_target(check, op, math.nan, why)]
    out = []
    for current in targets:
        found, base = _partner(current, candidates, check.figure.selector)
        if not found:
            runs = ", ".join(checkpoint_label(c) for c in candidates if c is not None) or base_why
            reason = f"missing: the baseline has no checkpoint to match {checkpoint_label(current)} ({runs})"
            out.append(CheckResult(check.name, check.figure.text, checkpoint_label(current), op, math.nan, None,
                                   False, reason, caveat))
            continue
        path, value, base_value, reason = _paired_values(results, baseline, current, base, check.figure)
        if value is None or base_value is None:
            out.append(CheckResult(check.name, path, checkpoint_label(current), op, math.nan, value, False, reason,
                                   caveat))
            continue
        decision = _decide(check, path, value, base_value, (results, current), (baseline, base))
        tolerance = f"{check.tolerance * 100:g}%" if check.is_relative else f"{check.tolerance:g}"
        note = (f"baseline {base_value:.6g}{' at ' + checkpoint_label(base) if base else ''}; "
                f"{gate_noise.describe(decision, check.direction, tolerance)}")
        note = "; ".join(part for part in (note, caveat) if part)
        out.append(CheckResult(check.name, path, checkpoint_label(current), op, decision.bound, value,
                               decision.passed, reason, note, decision.is_inconclusive))
    return out


def _decide(check: RegressionCheck, path: str, value: float, base_value: float, new: tuple[dict, dict | None],
            old: tuple[dict, dict | None]) -> gate_noise.RegressionDecision:
    """metrics.gate_noise's decision on one figure, each side's 95% interval read from its own section."""
    keys = split_path(path)
    intervals = [gate_noise.figure_interval(lookup(document if checkpoint is None else checkpoint, keys[:-1])[0],
                                            keys[-1], figure)
                 for (document, checkpoint), figure in ((new, value), (old, base_value))]
    tolerance = check.tolerance * abs(base_value) if check.is_relative else check.tolerance
    return gate_noise.decide_regression(check.direction, value, base_value, tolerance, *intervals)


def evaluate_checks(checks: Sequence[Check], results: dict, baseline: dict | None = None,
                    baseline_caveat: str = "") -> list[CheckResult]:
    """Every check's results in order. A RegressionCheck needs a baseline (ValueError without one);
    baseline_caveat (an incomparable baseline allowed) is noted on each of its results."""
    out: list[CheckResult] = []
    for check in checks:
        if isinstance(check, ThresholdCheck):
            out += evaluate_threshold(check, results)
        elif isinstance(check, FindingsCheck):
            out += evaluate_findings(check, results)
        elif baseline is None:
            raise ValueError(f"check {check.name!r} compares with a baseline: pass one")
        else:
            out += evaluate_regression(check, results, baseline, baseline_caveat)
    return out

