"""Quality of a checkpoint relative to the reference, from whichever signal a run has.

The KL-vs-quality fits (metrics.overoptimization) need R(0) = 0: quality is always a difference from
the reference, never an absolute score. Three sources:

- "winrate" / "lc_winrate": the judge's win rate of the checkpoint's samples against the reference's,
  value = w - 1/2 (the reference against itself wins half), se = (ci_high - ci_low) / (2 z_{(1+level)/2})
  from the CI `winrate` already reports (a percentile-bootstrap CI; read as normal-approximate).
- "gold": a verifier's accuracy on the checkpoint's samples minus its accuracy on the reference's
  samples of the same prompts. Each accuracy is the mean over prompts of the per-prompt share correct
  (samples of one prompt are not independent), se_acc = SD(prompt shares) / sqrt(P); the two sample
  sets are independent draws, so se = sqrt(se_ckpt^2 + se_ref^2).
- "external": a column of reward scores on the samples (any reward model), the same difference of
  prompt-clustered means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from dpo_eval.metrics.kl import cluster_mean

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


def quality_difference(checkpoint_values: ArrayLike, checkpoint_prompts: ArrayLike, reference_values: ArrayLike,
                       reference_prompts: ArrayLike, *, source: str) -> Quality:
    """Prompt-clustered mean of the checkpoint's per-sample values minus the reference's (module docstring).

    checkpoint_values: (n,) per-sample correctness (0/1) for "gold", or reward scores for "external".
    """
    if source not in ("gold", "external"):
        raise ValueError(f"source must be 'gold' or 'external', got {source!r}")
    ckpt_mean, ckpt_se = _clustered(checkpoint_values, checkpoint_prompts, "checkpoint")
    ref_mean, ref_se = _clustered(reference_values, reference_prompts, "reference")
    return Quality(source, ckpt_mean - ref_mean, float(np.hypot(ckpt_se, ref_se)), ckpt_mean, ref_mean)


def _clustered(values: ArrayLike, prompts: ArrayLike, name: str) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    ids = np.asarray(prompts, dtype=object).astype(str)
    if array.ndim != 1 or array.shape != ids.shape:
        raise ValueError(f"{name}: values {array.shape} and prompt ids {ids.shape} must be 1-D of one length")
    if array.size == 0:
        raise ValueError(f"{name}: no samples")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: values must be finite (drop unscored samples first)")
    uniques, codes = np.unique(ids, return_inverse=True)
    return cluster_mean(array, codes.astype(np.intp), len(uniques))
