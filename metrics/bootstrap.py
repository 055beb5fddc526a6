"""The one percentile bootstrap of metrics/: index draws, argument checks, percentile intervals.

Every bootstrap here resamples units (rows, comparisons or prompts) with replacement, as many as
there are, from a seeded numpy Generator, recomputes a statistic per draw, and reads the interval
off the draws' quantiles at (1 - level) / 2 and (1 + level) / 2, ignoring draws where a figure was
undefined (NaN).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

NAN_PAIR = (float("nan"), float("nan"))


def check_bootstrap_args(n_resamples: int, level: float) -> None:
    """Raise ValueError unless n_resamples >= 1 and 0 < level < 1."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")


def resample_indices(n: int, n_resamples: int, rng: np.random.Generator | int) -> Iterator[np.ndarray]:
    """n_resamples arrays of n indices in [0, n), drawn with replacement from rng (a seed or a Generator,
    which is advanced)."""
    gen = np.random.default_rng(rng)
    for _ in range(n_resamples):
        yield gen.integers(0, n, size=n)


def percentile_ci(draws: np.ndarray, level: float) -> tuple[float, float]:
    """(low, high) percentile interval of 1-D draws, NaN draws left out; NAN_PAIR when none is left."""
    values = np.asarray(draws, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return NAN_PAIR
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def percentile_cis(draws: np.ndarray, names, level: float) -> dict[str, tuple[float, float]]:
    """Per column k of (n_resamples, K) draws: names[k] -> percentile_ci of that column."""
    return {str(name): percentile_ci(draws[:, k], level) for k, name in enumerate(names)}
