"""The noise of a gate regression: a figure's standard error from its own section of results.json, and
the decision a `regression:` check takes on the change against its baseline.

A regression fails on a change its 95% CI supports, not on a point estimate past the tolerance:

    change c = baseline - value (``may not drop``) or value - baseline (``may not rise``)
    SE(c)    = sqrt(SE(value)^2 + SE(baseline)^2)
    fails when c - Z95 * SE(c) > tolerance    (the change's 95% CI lies wholly beyond the tolerance)

so the bound shown is baseline - tolerance - Z95 * SE(c) for a drop (+ for a rise). The SE is unpaired:
the baseline must be made on the same pairs and prompts (metrics.gate_baseline), whose shared noise
this ignores, so it is too large, never too small (a fail is never a false alarm of the SE). Where
either side has no SE (a count, a ratio with none saved, a CI end) the point estimates are compared, as
before, and the note says so.

Where a figure's SE is found (FIGURE_SE): `mean` / `value` -> the section's `se`; `per_token_mean` ->
`per_token_se`; `mean_margin` -> `margin_se`; `accuracy` -> (accuracy_ci_high - accuracy_ci_low) / (2 Z95);
`win_rate`, `lc_win_rate` -> their `_ci`'s width / (2 Z95). Those CIs are Wilson's / the bootstrap's,
so the SE read from their width is an approximation where they are asymmetric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile: a two-sided 95% interval."""

SE_FIELDS = {"mean": "se", "value": "se", "per_token_mean": "per_token_se", "mean_margin": "margin_se"}
"""A figure's name -> the field of its section that holds its SE."""
CI_FIELDS = {"accuracy": ("accuracy_ci_low", "accuracy_ci_high"), "win_rate": ("win_rate_ci",),
             "lc_win_rate": ("lc_win_rate_ci",)}
"""A figure's name -> its 95% CI in its section: two fields (low, high), or one [low, high] field."""


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _ci_bounds(section: dict, fields: tuple[str, ...]) -> tuple[float | None, float | None]:
    if len(fields) == 2:
        return _finite(section.get(fields[0])), _finite(section.get(fields[1]))
    ci = section.get(fields[0])
    return (_finite(ci[0]), _finite(ci[1])) if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)


def figure_se(section: object, name: object) -> float | None:
    """The SE of figure `name` from its own `section` of results.json (FIGURE_SE), or None where it has none
    (a CI end addressed by index, a figure without a saved SE or CI, a zero-width interval)."""
    if not isinstance(section, dict) or not isinstance(name, str):
        return None
    if name in SE_FIELDS:
        se = _finite(section.get(SE_FIELDS[name]))
    elif name in CI_FIELDS:
        low, high = _ci_bounds(section, CI_FIELDS[name])
        se = None if low is None or high is None else (high - low) / (2 * Z95)
    else:
        return None
    return se if se is not None and se > 0 else None


@dataclass(frozen=True)
class RegressionDecision:
    """A regression check on one figure: the bound the value is held to, and whether it holds."""

    bound: float
    """The value's bound: baseline -/+ tolerance, moved by Z95 * SE(change) when both sides have an SE."""
    passed: bool
    change: float
    """baseline - value for a drop, value - baseline for a rise (positive: it got worse)."""
    change_se: float | None
    """Unpaired SE of the change; None when a side has no SE (then the point estimates decide)."""
    tolerance: float
    """The absolute tolerance (a relative one times |baseline|)."""

    @property
    def is_inconclusive(self) -> bool:
        """Passed, but its CI reaches past the tolerance: no regression shown, none ruled out either."""
        ci = self.change_ci
        return self.passed and ci is not None and ci[1] > self.tolerance

    @property
    def change_ci(self) -> tuple[float, float] | None:
        if self.change_se is None:
            return None
        return self.change - Z95 * self.change_se, self.change + Z95 * self.change_se


def decide_regression(direction: str, value: float, base_value: float, tolerance: float,
                      value_se: float | None, base_se: float | None) -> RegressionDecision:
    """Whether `value` regressed against `base_value` by more than `tolerance` (absolute, >= 0); direction
    "drop" (higher is better) or "rise" (lower is better). See the module docstring for the rule."""
    if direction not in ("drop", "rise"):
        raise ValueError(f"direction must be drop or rise, got {direction!r}")
    sign = 1.0 if direction == "drop" else -1.0
    change = sign * (base_value - value)
    se = None if value_se is None or base_se is None else math.hypot(value_se, base_se)
    margin = tolerance + (0.0 if se is None else Z95 * se)
    bound = base_value - sign * margin
    return RegressionDecision(bound=bound, passed=change <= margin, change=change, change_se=se, tolerance=tolerance)


def describe(decision: RegressionDecision, direction: str, tolerance_text: str) -> str:
    """The note's clause on the decision: the change with its CI, or that point estimates were compared."""
    if decision.change_ci is None:
        return (f"{direction} {decision.change:.4g} (point estimates: a side has no SE), may {direction} by "
                f"{tolerance_text}")
    low, high = decision.change_ci
    if decision.is_inconclusive:
        verdict = "inconclusive: the CI reaches past the tolerance, it is not shown beyond it"
    else:
        verdict = "within the tolerance" if decision.passed else "beyond the tolerance"
    return (f"{direction} {decision.change:.4g} [95% CI {low:.4g}, {high:.4g}] (unpaired SE), may {direction} by "
            f"{tolerance_text}: {verdict}")
