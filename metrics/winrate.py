"""Win rates against a common baseline, their percentile-bootstrap CIs, and a per-model summary.

Input: a judgments frame, one row per (model, prompt) comparison against the baseline, columns
`model`, `prompt_id`, `preference` (probability in [0, 1] that the model's output beats the
baseline's; 0.5 a tie; NaN unscored), optional `length_model`, `length_baseline` (output lengths)
and `position_consistent` (False where both A/B orders were judged and disagreed; NaN where only
one order was judged). Unscored rows enter no figure and are counted in `n_unscored`: they are
never a tie or a loss.

    win rate          = mean of p over scored rows
    discrete win rate = mean of 1[p > 0.5] + 0.5 * 1[p == 0.5] over scored rows
    LC win rate       = see dpo_eval.metrics.length_control (Dubois et al. 2024), fitted per model
    LC gap            = win rate - LC win rate, its CI paired over prompts (same resample for both)

Every figure of a model is a function of that model's rows, the seed and the settings only: its
fits use its own rows, and its bootstraps draw from a generator seeded by (seed, the model's name),
so adding or removing other models leaves it unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from dpo_eval.metrics.bootstrap import NAN_PAIR, check_bootstrap_args, percentile_ci, resample_indices
from dpo_eval.metrics.length_control import bootstrap_lc_intervals, fit_length_control, lc_win_rate

JUDGMENT_COLUMNS = ("model", "prompt_id", "preference")
LENGTH_COLUMNS = ("length_model", "length_baseline")


@dataclass(frozen=True)
class ModelWinRate:
    """One model's win rates against the baseline. Rates are fractions in [0, 1]; NaN when n is 0."""

    model: str
    """The model's name, as in the `model` column."""
    n: int
    """Scored rows (preference not NaN): the rows every figure below is computed on."""
    n_unscored: int
    """Rows with preference NaN: left out of every figure, never counted as a tie or a loss."""
    win_rate: float
    """Mean preference over scored rows (a tie, 0.5, counts half)."""
    win_rate_ci: tuple[float, float]
    """Percentile-bootstrap CI of win_rate resampling the model's prompts (prompt_bootstrap_ci: a prompt's
    rows are one cluster); (NaN, NaN) when n is 0."""
    discrete_win_rate: float
    """Mean of 1[p > 0.5] + 0.5 * 1[p == 0.5] over scored rows."""
    lc_win_rate: float | None
    """Length-controlled win rate: predicted win rate at zero length difference, from a logistic fit
    on this model's scored rows with both lengths (Dubois et al. 2024). None when the frame has no
    length columns; NaN when this model has no such row."""
    lc_win_rate_ci: tuple[float, float] | None
    """Percentile-bootstrap CI of lc_win_rate, resampling prompt ids and refitting; None with lc_win_rate."""
    lc_gap_ci: tuple[float, float] | None
    """Percentile-bootstrap CI of win_rate - lc_win_rate, paired over prompts: each resample of prompt ids
    recomputes both on the same rows (those with both lengths); None with lc_win_rate."""
    position_bias_rate: float | None
    """Fraction of scored rows with position_consistent False among those where it is not NaN (both
    A/B orders judged); None when no scored row was judged in both orders."""


def mean_preference(pref: ArrayLike) -> float:
    """Win rate: mean of the preferences (1-D, in [0, 1]) that are not NaN; NaN when none is scored."""
    scored = _scored(pref)
    return float(scored.mean()) if scored.size else float("nan")


def discrete_win_rate(pref: ArrayLike) -> float:
    """Mean of 1[p > 0.5] + 0.5 * 1[p == 0.5] over preferences that are not NaN; NaN when none is scored."""
    scored = _scored(pref)
    if scored.size == 0:
        return float("nan")
    return float(np.mean((scored > 0.5) + 0.5 * (scored == 0.5)))


def position_bias_rate(position_consistent: ArrayLike) -> float | None:
    """Fraction of False among the values that are not NaN/None; None when every value is missing."""
    values = pd.Series(position_consistent, dtype=object)
    judged = values[~values.isna()]
    if judged.empty:
        return None
    if not judged.map(lambda v: isinstance(v, bool | np.bool_) or v in (0, 1)).all():
        raise ValueError(f"position_consistent must hold True, False or NaN; got {judged.unique()[:5].tolist()}")
    return float(np.mean(~judged.astype(bool).to_numpy()))


def bootstrap_ci(values: ArrayLike, statistic: Callable[[np.ndarray], float], *, n_resamples: int = 2000,
                 level: float = 0.95, rng: np.random.Generator | int) -> tuple[float, float]:
    """Percentile-bootstrap CI (low, high) of statistic(values), resampling rows (axis 0) with replacement.

    `values` is taken as given (drop NaNs first if the statistic cannot take them). `rng` is a seed or
    a numpy Generator (which is advanced). (NaN, NaN) for empty input.
    """
    check_bootstrap_args(n_resamples, level)
    data = np.asarray(values)
    if data.ndim == 0:
        raise ValueError("values must be an array of rows, got a scalar")
    n = data.shape[0]
    if n == 0:
        return NAN_PAIR
    stats = np.array([statistic(data[draw]) for draw in resample_indices(n, n_resamples, rng)], dtype=np.float64)
    return NAN_PAIR if np.isnan(stats).any() else percentile_ci(stats, level)


def prompt_bootstrap_ci(preference: ArrayLike, prompt_id: ArrayLike, *, n_resamples: int = 2000, level: float = 0.95,
                        rng: np.random.Generator | int) -> tuple[float, float]:
    """Percentile-bootstrap CI of the win rate resampling prompts (clusters), not rows: a prompt's rows
    (several samples, both A/B orders) are not independent.

    With T_g, n_g the sum and count of prompt g's scored preferences (NaN: unscored, left out), a resample
    g_1..g_P of the P prompts with replacement gives sum_i T_{g_i} / sum_i n_{g_i}. With one row per prompt
    this is bootstrap_ci(scored, np.mean) with the same draws. (NaN, NaN) with no scored row.
    """
    check_bootstrap_args(n_resamples, level)
    values = np.asarray(preference, dtype=np.float64)
    prompts = pd.Series(np.asarray(prompt_id, dtype=object)).astype(str).to_numpy()
    if values.shape != prompts.shape:
        raise ValueError(f"preference and prompt_id differ in length: {values.shape} vs {prompts.shape}")
    scored = ~np.isnan(values)
    if not scored.any():
        return NAN_PAIR
    codes, uniques = pd.factorize(prompts[scored], sort=False)
    totals = np.bincount(codes, values[scored], len(uniques))
    counts = np.bincount(codes, minlength=len(uniques)).astype(np.float64)
    draws = np.array([totals[d].sum() / counts[d].sum() for d in resample_indices(len(uniques), n_resamples, rng)])
    return percentile_ci(draws, level)


def summarize_win_rates(frame: pd.DataFrame, *, seed: int = 0, n_resamples: int = 2000, lc_resamples: int = 200,
                        level: float = 0.95) -> dict[str, ModelWinRate]:
    """Per model (sorted by name): win rates, CIs, LC win rate and position-bias rate of a judgments frame.

    Each model's figures come from its own rows only (its own LC fit), and its bootstraps from
    generators seeded by (seed, model name): adding a model leaves the others unchanged. An empty
    frame gives {}.
    """
    if len(frame) == 0:
        return {}
    missing = [c for c in JUDGMENT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"judgments frame lacks columns {missing}; needs {list(JUDGMENT_COLUMNS)}")
    if frame["model"].isna().any():
        raise ValueError("judgments frame has rows without a model name: fill or drop them")
    _scored(frame["preference"])  # validates the range once, before any work
    has_lengths = all(c in frame.columns for c in LENGTH_COLUMNS)
    return {model: _summarize_model(model, rows, seed, n_resamples, lc_resamples, level, has_lengths)
            for model, rows in frame.groupby(frame["model"].astype(str), sort=True)}


def model_rng(seed: int, model: str, stream: int) -> np.random.Generator:
    """The generator of one model's bootstrap `stream` (0 win rate, 1 LC): seeded by (seed, stream, crc32(model)),
    a function of the model's own name only, never of its position among other models."""
    return np.random.default_rng([seed, stream, zlib.crc32(model.encode())])


def _summarize_model(model: str, rows: pd.DataFrame, seed: int, n_resamples: int, lc_resamples: int, level: float,
                     has_lengths: bool) -> ModelWinRate:
    pref = rows["preference"].to_numpy(dtype=np.float64)
    scored = pref[~np.isnan(pref)]
    has_orders = "position_consistent" in rows.columns
    consistent = rows.loc[~np.isnan(pref), "position_consistent"] if has_orders else []
    lc, lc_ci, gap_ci = _length_controlled(model, rows, seed, lc_resamples, level) if has_lengths else (None,) * 3
    return ModelWinRate(
        model=model, n=int(scored.size), n_unscored=int(pref.size - scored.size),
        win_rate=mean_preference(scored),
        win_rate_ci=prompt_bootstrap_ci(pref, rows["prompt_id"], n_resamples=n_resamples, level=level,
                                        rng=model_rng(seed, model, 0)),
        discrete_win_rate=discrete_win_rate(scored),
        lc_win_rate=lc, lc_win_rate_ci=lc_ci, lc_gap_ci=gap_ci,
        position_bias_rate=position_bias_rate(consistent),
    )


def _length_controlled(model: str, rows: pd.DataFrame, seed: int, lc_resamples: int,
                       level: float) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """(LC win rate, its CI, CI of raw - LC) from a fit on one model's rows; NaN when none can be fitted."""
    fit = fit_length_control(rows)
    if fit.n == 0:
        return float("nan"), NAN_PAIR, NAN_PAIR
    point = lc_win_rate(fit, model)
    if lc_resamples == 0:  # point estimate only
        return point, NAN_PAIR, NAN_PAIR
    found = bootstrap_lc_intervals(rows, n_resamples=lc_resamples, level=level, rng=model_rng(seed, model, 1),
                                   gamma_l2=fit.gamma_l2, phi_l2=fit.phi_l2)[model]
    return point, found.lc_win_rate_ci, found.gap_ci


def _scored(pref: ArrayLike) -> np.ndarray:
    """The preferences that are not NaN, as float64; raises on values outside [0, 1]."""
    values = np.asarray(pref, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"preferences must be 1-D, got shape {values.shape}")
    scored = values[~np.isnan(values)]
    bad = (scored < 0.0) | (scored > 1.0)
    if bad.any():
        raise ValueError(f"preference must be a probability in [0, 1] or NaN (unscored); got {scored[bad][:3].tolist()}")
    return scored
