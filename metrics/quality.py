"""Quality of a checkpoint relative to the reference, from whichever signal a run has.

The KL-vs-quality fits (metrics.overoptimization) need R(0) = 0: quality is always a difference from
the reference, never an absolute score. Three sources:

- "winrate" / "lc_winrate": the judge's win rate of the checkpoint's samples against the reference's,
  value = w - 1/2 (the reference against itself wins half), se = (ci_high - ci_low) / (2 z_{(1+level)/2})
  from the CI `winrate` already reports (a percentile-bootstrap CI; read as normal-approximate).
  From the judgments themselves (`quality_from_preferences`): value = w - 1/2 with w the mean scored
  preference, and the SE clustered by prompt, since a prompt's judgments (several samples, both orders)
  are not independent: with T_p the sum and n_p the count of prompt p's scored preferences, n = sum n_p,

      se = sqrt(P / (P - 1) * sum_p (T_p - w n_p)^2) / n          (a ratio estimator's SE, as metrics.kl)

  which is std(ddof=1) / sqrt(n) when every prompt has one judgment.
- "gold": a verifier's accuracy on the checkpoint's samples minus its accuracy on the reference's
  samples of the same prompts, paired by prompt. Over the P prompts both sets have (samples of one
  prompt are not independent, and both models answer the same prompts, so a prompt's difficulty
  cancels in its difference):

      d_p = a_p - b_p      (a_p, b_p: the checkpoint's and the reference's mean over prompt p's samples)
      value = (1/P) sum_p d_p,        se = std(d, ddof=1) / sqrt(P)

  Prompts only one set has are left out; se is NaN when P < 2.
- "external": a column of reward scores on the samples (any reward model), the same paired difference
  of per-prompt means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import norm

from dpo_eval.metrics.kl import cluster_ratio

SOURCES = ("winrate", "lc_winrate", "gold", "external")


@dataclass(frozen=True)
class Quality:
    """A checkpoint's quality minus the reference's, with its standard error."""

    source: str
    """One of SOURCES."""
    value: float
    """Checkpoint minus reference (for win rates: w - 0.5)."""
    se: float
    """Standard error of value (NaN when it cannot be estimated)."""
    checkpoint_mean: float
    """The checkpoint's own figure (win rate, accuracy or mean score)."""
    reference_mean: float
    """The reference's figure (0.5 for win rates)."""


def quality_from_winrate(win_rate: float, ci: tuple[float, float], *, level: float = 0.95,
                         source: str = "winrate") -> Quality:
    """Win rate vs the reference as quality: w - 0.5, se from the CI's width."""
    if source not in ("winrate", "lc_winrate"):
        raise ValueError(f"source must be 'winrate' or 'lc_winrate', got {source!r}")
    low, high = ci
    se = (high - low) / (2 * norm.ppf((1 + level) / 2)) if np.isfinite(low) and np.isfinite(high) else np.nan
    return Quality(source, float(win_rate) - 0.5, float(se), float(win_rate), 0.5)


def quality_from_preferences(preference: ArrayLike, prompt_id: ArrayLike) -> Quality:
    """Win rate - 0.5 from scored preferences (n,) in [0, 1] (NaN: unscored, left out), SE clustered by prompt.

    value = mean(p) - 0.5 over the scored; se = sqrt(P/(P-1) sum_p (T_p - w n_p)^2) / n (module docstring);
    NaN value with no scored preference, NaN se with fewer than two prompts.
    """
    values = np.asarray(preference, dtype=np.float64)
    prompts = np.asarray(prompt_id, dtype=object)
    if values.shape != prompts.shape or values.ndim != 1:
        raise ValueError(f"preference and prompt_id must be 1-D of one length, got {values.shape} and {prompts.shape}")
    scored = ~np.isnan(values)
    codes, uniques = pd.factorize(pd.Series(prompts[scored]).astype(str), sort=True)
    win_rate, se = cluster_ratio(values[scored], np.ones(int(scored.sum())), codes, len(uniques))
    return Quality("winrate", win_rate - 0.5, se, win_rate, 0.5)


def quality_difference(checkpoint_values: ArrayLike, checkpoint_prompts: ArrayLike, reference_values: ArrayLike,
                       reference_prompts: ArrayLike, *, source: str) -> Quality:
    """Mean over shared prompts of the checkpoint's per-prompt mean minus the reference's, with the paired SE.

    checkpoint_values: (n,) per-sample correctness (0/1) for "gold", or reward scores for "external";
    the prompt ids say which prompt each sample answers. value = mean_p d_p, se = std(d, ddof=1) / sqrt(P)
    over the P prompts both sets have (module docstring); checkpoint_mean and reference_mean are the
    means of a_p and b_p over those prompts. Raises ValueError when no prompt is shared.
    """
    if source not in ("gold", "external"):
        raise ValueError(f"source must be 'gold' or 'external', got {source!r}")
    mine = _prompt_means(checkpoint_values, checkpoint_prompts, "checkpoint")
    theirs = _prompt_means(reference_values, reference_prompts, "reference")
    shared = mine.index.intersection(theirs.index).sort_values()
    if shared.empty:
        raise ValueError("checkpoint and reference share no prompt: quality is a per-prompt paired difference, "
                         "so score both on the same prompts")
    a, b = mine[shared].to_numpy(np.float64), theirs[shared].to_numpy(np.float64)
    d = a - b
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return Quality(source, float(d.mean()), se, float(a.mean()), float(b.mean()))


def _prompt_means(values: ArrayLike, prompts: ArrayLike, name: str) -> pd.Series:
    """Per prompt id (as str): the mean of its samples' values."""
    array = np.asarray(values, dtype=np.float64)
    ids = np.asarray(prompts, dtype=object).astype(str)
    if array.ndim != 1 or array.shape != ids.shape:
        raise ValueError(f"{name}: values {array.shape} and prompt ids {ids.shape} must be 1-D of one length")
    if array.size == 0:
        raise ValueError(f"{name}: no samples")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: values must be finite (drop unscored samples first)")
    return pd.Series(array).groupby(ids).mean()
