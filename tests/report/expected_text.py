"""The page's number formats written out independently of reports/view.py, for the render and headline tests."""

from __future__ import annotations


def places(uncertainty: float) -> int:
    """Decimal places of `uncertainty` at 2 significant figures, read off Python's own "#.2g" rounding."""
    text = format(uncertainty, "#.2g")
    assert "e" not in text, text
    return len(text.partition(".")[2])


def expected_pm(value: float, se: float, signed: bool = False) -> str:
    """The rule written out: the SE to 2 significant figures, the value to the same decimal place."""
    p = places(se)
    return f"{value:{'+' if signed else ''}.{p}f} ± {se:.{p}f}"


def expected_rate(rate: float, ci: list[float]) -> str:
    """A rate and its CI in %, to the places of the CI's half-width (percentage points) at 2 significant figures."""
    p = places((ci[1] - ci[0]) / 2 * 100)
    return f"{rate * 100:.{p}f}% [{ci[0] * 100:.{p}f}%, {ci[1] * 100:.{p}f}%]"
