"""The noise of a gate regression: a figure's 95% interval from its own section of results.json, and the
decision a `regression:` check takes on the change against its baseline.

A regression fails on a change its 95% CI supports, not on a point estimate past the tolerance. With v the
value, b the baseline and [lo, hi] each one's own 95% interval, the change for the worse and its CI are
Newcombe's / the MOVER's (method of variance estimates recovery; Newcombe 1998, Zou & Donner 2008), which
uses each interval's half-width on the side that matters and so keeps a Wilson interval's asymmetry:

    drop:  c = b - v,   c_low = c - sqrt((b - b_lo)^2 + (v_hi - v)^2),   c_high = c + sqrt((b_hi - b)^2 + (v - v_lo)^2)
    rise:  c = v - b,   c_low = c - sqrt((v - v_lo)^2 + (b_hi - b)^2),   c_high = c + sqrt((v_hi - v)^2 + (b - b_lo)^2)
    fails when c_low > tolerance          (the change's 95% CI lies wholly beyond the tolerance)

With symmetric intervals v ± Z95 se this is c - Z95 sqrt(se_v^2 + se_b^2). The bound shown is
b - tolerance - sqrt((b - b_lo)^2 + (v_hi - v)^2) for a drop (the mirror for a rise). The two intervals are
combined as independent: the baseline must be made on the same pairs and prompts
(metrics.gate_baseline), whose shared noise this ignores, so the CI is too wide rather than too narrow
where the two figures move together (the usual case). Where either side has no interval (a count, a
figure with no saved SE or CI, a CI end) the point estimates are compared, and the note says so.

A figure's interval (figure_interval), in its own section: `accuracy` -> (accuracy_ci_low,
accuracy_ci_high); `displacement_share` -> displacement_ci; `mean` / `value` -> ± Z95 `se`;
`per_token_mean` -> ± Z95 `per_token_se`; `mean_margin` -> ± Z95 `margin_se`; otherwise NAME_ci
([low, high]: win_rate, lc_win_rate, gap, paired_ratio) or ± Z95 NAME_se (per_token_ratio, drop,
quality, peak_kl, peak_quality, truncation_rise). A saved CI that excludes its own value (a percentile
bootstrap's can) is no interval: the point estimates decide there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dpo_eval.metrics.findings import Z95

SE_FIELDS = {"mean": "se", "value": "se", "per_token_mean": "per_token_se", "mean_margin": "margin_se"}
"""A figure's name -> the field of its section that holds its SE (else NAME_se)."""
CI_FIELDS = {"accuracy": ("accuracy_ci_low", "accuracy_ci_high"), "displacement_share": ("displacement_ci",)}
"""A figure's name -> its 95% CI in its section: two fields (low, high), or one [low, high] field (else
NAME_ci)."""
Interval = tuple[float, float]


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _ci(section: dict, fields: tuple[str, ...]) -> Interval | None:
    if len(fields) == 2:
        low, high = _finite(section.get(fields[0])), _finite(section.get(fields[1]))
    else:
        ci = section.get(fields[0])
        pair = ci if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)
        low, high = _finite(pair[0]), _finite(pair[1])
    return None if low is None or high is None or high <= low else (low, high)


def figure_interval(section: object, name: object, value: float) -> Interval | None:
    """The 95% interval of figure `name` (whose value is `value`) from its own `section` of results.json (see
    the module docstring), or None where it has none (a CI end addressed by index, a figure without a saved SE
    or CI, a zero-width interval: never taken as exact)."""
    if not isinstance(section, dict) or not isinstance(name, str):
        return None
    found = _ci(section, CI_FIELDS[name]) if name in CI_FIELDS else _ci(section, (f"{name}_ci",))
    if found is not None:
        # a (percentile bootstrap) CI that excludes its own estimate has no half-width on one side: no interval
        return found if found[0] <= value <= found[1] else None
    if name in CI_FIELDS:
        return None
    se = _finite(section.get(SE_FIELDS.get(name, f"{name}_se")))
    return None if se is None or se <= 0 else (value - Z95 * se, value + Z95 * se)


@dataclass(frozen=True)
class RegressionDecision:
    """A regression check on one figure: the bound the value is held to, and whether it holds."""

    bound: float
    """The value's bound: baseline -/+ tolerance, moved by the change's CI half-width when both sides have an
    interval."""
    passed: bool
    change: float
    """baseline - value for a drop, value - baseline for a rise (positive: it got worse)."""
    change_ci: Interval | None
    """The change's 95% CI (MOVER); None when a side has no interval (then the point estimates decide)."""
    tolerance: float
    """The absolute tolerance (a relative one times |baseline|)."""

    @property
    def is_inconclusive(self) -> bool:
        """Passed, but its CI reaches past the tolerance: no regression shown, none ruled out either."""
        return self.passed and self.change_ci is not None and self.change_ci[1] > self.tolerance


def decide_regression(direction: str, value: float, base_value: float, tolerance: float,
                      value_ci: Interval | None, base_ci: Interval | None) -> RegressionDecision:
    """Whether `value` regressed against `base_value` by more than `tolerance` (absolute, >= 0); direction
    "drop" (higher is better) or "rise" (lower is better). See the module docstring for the rule."""
    if direction not in ("drop", "rise"):
        raise ValueError(f"direction must be drop or rise, got {direction!r}")
    sign = 1.0 if direction == "drop" else -1.0
    change = sign * (base_value - value)
    if value_ci is None or base_ci is None:
        bound = base_value - sign * tolerance
        return RegressionDecision(bound=bound, passed=change <= tolerance, change=change, change_ci=None,
                                  tolerance=tolerance)
    (v_lo, v_hi), (b_lo, b_hi) = value_ci, base_ci
    if direction == "drop":  # worse: b high, v low
        toward, away = math.hypot(base_value - b_lo, v_hi - value), math.hypot(b_hi - base_value, value - v_lo)
    else:  # worse: v high, b low
        toward, away = math.hypot(value - v_lo, b_hi - base_value), math.hypot(v_hi - value, base_value - b_lo)
    low, high = change - toward, change + away
    bound = base_value - sign * (tolerance + toward)
    return RegressionDecision(bound=bound, passed=low <= tolerance, change=change, change_ci=(low, high),
                              tolerance=tolerance)


def describe(decision: RegressionDecision, direction: str, tolerance_text: str) -> str:
    """The note's clause on the decision: the change with its CI, or that point estimates were compared."""
    if decision.change_ci is None:
        return (f"{direction} {decision.change:.4g} (point estimates: a side has no SE or CI), may {direction} by "
                f"{tolerance_text}")
    low, high = decision.change_ci
    if decision.is_inconclusive:
        verdict = "inconclusive: the CI reaches past the tolerance, it is not shown beyond it"
    else:
        verdict = "within the tolerance" if decision.passed else "beyond the tolerance"
    return (f"{direction} {decision.change:.4g} [95% CI {low:.4g}, {high:.4g}], may {direction} by "
            f"{tolerance_text}: {verdict}")
