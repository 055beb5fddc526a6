"""Length inflation: does a checkpoint answer longer than the reference, and does length buy its wins?

After Park et al. 2024, "Disentangling Length from Quality in Direct Preference Optimization": DPO's
implicit reward correlates with length, policies grow verbose, and judges reward verbosity.

Samples frame (one row per sample, from `dpo-eval generate`): SAMPLE_COLUMNS
    prompt_id       the prompt's id; samples of two models on the same id are paired by prompt
    n_tokens        response length in tokens (required, no NaN)
    output          response text (optional): lengths in characters = len(output)
    finish_reason   optional; "length" means the sample hit max_new_tokens (truncated)
Pairs frame (pairs.parquet): reward_chosen, reward_rejected, chosen_tokens, rejected_tokens.
Judgments frame (as dpo_eval.metrics.winrate): preference in [0, 1] (1 = the model wins, NaN
unscored), length_model, length_baseline; diff = length_model - length_baseline; prompt_id (optional):
judgments of one prompt are one cluster in a bucket's SE.

Tests: Wilcoxon signed-rank on per-prompt mean lengths of prompts both frames have (two-sided, scipy's
default method), the test the length_inflation finding uses, since both models answer the same prompts
and a prompt's samples are not independent; Mann-Whitney U over all samples (two-sided, scipy's default
method: exact for small samples without ties, else normal approximation with continuity correction),
reported for comparison only; Spearman's rho with scipy's t-distribution p-value. Inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from dpo_eval.metrics.findings import (
    Z95,
    Finding,
    Thresholds,
    check_lc_gap,
    check_length_inflation,
    lc_gap_direction,
)
from dpo_eval.metrics.kl import cluster_ratio

SAMPLE_COLUMNS = ("prompt_id", "n_tokens", "output", "finish_reason")
PAIR_COLUMNS = ("reward_chosen", "reward_rejected", "chosen_tokens", "rejected_tokens")
NAN = float("nan")


@dataclass(frozen=True)
class LengthStats:
    """Lengths of one model's samples."""

    n: int
    mean_tokens: float
    median_tokens: float
    mean_chars: float
    """Mean len(output) over rows with an output; NaN without an output column."""
    median_chars: float
    truncated_share: float
    """Share of finish_reason == "length" among rows whose finish_reason is known; NaN when none is."""
    n_finish_known: int


@dataclass(frozen=True)
class LengthComparison:
    """A checkpoint's sample lengths against the reference's on the same prompts. Ratios: checkpoint /
    reference (NaN when the reference's figure is 0 or NaN)."""

    checkpoint: LengthStats
    reference: LengthStats
    mean_tokens_ratio: float
    median_tokens_ratio: float
    mean_chars_ratio: float
    median_chars_ratio: float
    mannwhitney_u: float
    """U of the checkpoint's token counts: #(c > r) + 0.5 #(c == r) over all sample pairs."""
    mannwhitney_p: float
    """Over all samples as independent: for comparison only (findings use wilcoxon_p, paired by prompt)."""
    n_paired_prompts: int
    """Prompts with samples from both models."""
    mean_paired_diff: float
    """Mean over those prompts of (checkpoint's mean tokens - reference's mean tokens)."""
    wilcoxon_statistic: float
    """scipy's two-sided statistic: the smaller of the signed-rank sums; NaN with no non-zero difference."""
    wilcoxon_p: float
    paired_ratio: float
    """Over the shared prompts: mean of the checkpoint's per-prompt mean tokens / mean of the reference's."""
    paired_ratio_ci: tuple[float, float]
    """95% CI of paired_ratio, delta method paired by prompt: SE = sqrt(sum_p (y_p - R x_p)^2 / (P (P-1))) /
    mean(x), with y_p, x_p the two models' per-prompt mean tokens; NaN with fewer than 2 prompts."""
    truncation_rise: float
    """Over the shared prompts with a known finish_reason: mean of (checkpoint's - reference's) per-prompt share
    of samples that hit max_new_tokens; NaN without finish reasons."""
    truncation_rise_se: float
    """SE of truncation_rise over those prompts (std of the differences / sqrt P)."""


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho with its two-sided p-value; NaN with fewer than 3 points or a constant input."""

    n: int
    rho: float
    p_value: float


@dataclass(frozen=True)
class PairRewardLength:
    """Implicit reward against length on preference pairs."""

    responses: Correlation
    """Chosen and rejected responses stacked: reward against tokens (2n points)."""
    margins: Correlation
    """Per pair: reward_chosen - reward_rejected against chosen_tokens - rejected_tokens."""


@dataclass(frozen=True)
class LengthBucket:
    """Win rate of the judgments whose length difference lies in (low, high] ([low, high] for the first)."""

    low: float
    high: float
    n: int
    win_rate: float
    """Mean preference (NaN when n is 0)."""
    se: float
    """SE of win_rate clustered by prompt_id when the judgments have it (the ratio SE of
    dpo_eval.metrics.kl.cluster_ratio over the bucket's prompts: sqrt(P/(P-1) sum_g (S_g - w n_g)^2) / n,
    S_g, n_g prompt g's summed preference and rows); std (ddof 1) / sqrt(n) with one row per prompt or
    without prompt ids. NaN with fewer than 2 prompts (rows)."""
    mean_length_diff: float


@dataclass(frozen=True)
class LcGap:
    """Raw minus length-controlled win rate, with the CI of the difference and its direction."""

    raw: float
    raw_ci: tuple[float, float]
    lc: float
    lc_ci: tuple[float, float]
    gap: float
    """raw - lc."""
    threshold: float
    exceeds_threshold: bool
    """|gap| > threshold."""
    cis_disjoint: bool
    """The LC CI lies wholly below the raw CI (lc_ci high < raw_ci low)."""
    gap_ci: tuple[float, float]
    """CI of raw - lc, paired bootstrap over prompts (both recomputed on each resample of prompts)."""
    gap_ci_excludes_zero: bool
    """gap_ci lies wholly above or below 0: the finding needs it (False when the CI is unknown)."""
    length_ratio: float
    """Checkpoint / reference mean length in tokens: the side (longer, shorter) the gap comes from."""
    direction: str
    """findings.lc_gap_direction: "helped by longer answers", "held back by shorter answers", ..."""


def length_stats(samples: pd.DataFrame) -> LengthStats:
    """Token and character lengths and the truncated share of one model's samples (see SAMPLE_COLUMNS)."""
    tokens = _tokens(samples)
    has_output = "output" in samples.columns
    chars = samples["output"].dropna().astype(str).str.len().to_numpy(np.float64) if has_output else []
    has_finish = "finish_reason" in samples.columns
    finish = samples["finish_reason"].dropna() if has_finish else pd.Series([], dtype=object)
    return LengthStats(
        n=int(tokens.size), mean_tokens=_mean(tokens), median_tokens=_median(tokens), mean_chars=_mean(chars),
        median_chars=_median(chars),
        truncated_share=float((finish == "length").mean()) if len(finish) else NAN,
        n_finish_known=int(len(finish)))


def compare_lengths(checkpoint: pd.DataFrame, reference: pd.DataFrame) -> LengthComparison:
    """Lengths of a checkpoint's samples against the reference's, with Mann-Whitney and Wilcoxon tests."""
    ck, ref = length_stats(checkpoint), length_stats(reference)
    ck_tokens, ref_tokens = _tokens(checkpoint), _tokens(reference)
    if ck_tokens.size and ref_tokens.size:
        mw = stats.mannwhitneyu(ck_tokens, ref_tokens, alternative="two-sided")
        u, p = float(mw.statistic), float(mw.pvalue)
    else:
        u, p = NAN, NAN
    paired_ck, paired_ref = _prompt_means(checkpoint, reference, lambda f: f["n_tokens"].astype(np.float64))
    diffs = paired_ck - paired_ref  # per shared prompt: checkpoint's mean tokens - reference's
    w_stat, w_p = _wilcoxon(diffs)
    return LengthComparison(
        checkpoint=ck, reference=ref,
        mean_tokens_ratio=_ratio(ck.mean_tokens, ref.mean_tokens),
        median_tokens_ratio=_ratio(ck.median_tokens, ref.median_tokens),
        mean_chars_ratio=_ratio(ck.mean_chars, ref.mean_chars),
        median_chars_ratio=_ratio(ck.median_chars, ref.median_chars),
        mannwhitney_u=u, mannwhitney_p=p, n_paired_prompts=int(diffs.size), mean_paired_diff=_mean(diffs),
        wilcoxon_statistic=w_stat, wilcoxon_p=w_p, **_paired_ratio(paired_ck, paired_ref),
        **_paired_truncation(checkpoint, reference))


def spearman(x: ArrayLike, y: ArrayLike) -> Correlation:
    """Spearman's rho of paired 1-D arrays (pairs with a NaN dropped) and scipy's two-sided p-value."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x {a.shape} and y {b.shape} must be 1-D of one length")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return Correlation(n, NAN, NAN)
    result = stats.spearmanr(a, b)
    return Correlation(n, float(result.statistic), float(result.pvalue))


def pair_reward_length(pairs: pd.DataFrame) -> PairRewardLength:
    """Spearman correlation of implicit reward with length on pairs (columns PAIR_COLUMNS)."""
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs frame lacks columns {missing}; needs {list(PAIR_COLUMNS)}")
    rc, rr, tc, tr = (pairs[c].to_numpy(np.float64) for c in PAIR_COLUMNS)
    return PairRewardLength(responses=spearman(np.concatenate([rc, rr]), np.concatenate([tc, tr])),
                            margins=spearman(rc - rr, tc - tr))


def sample_reward_length(samples: pd.DataFrame) -> Correlation:
    """Spearman correlation of log π - log π_ref (columns policy_logp, ref_logp) with n_tokens on samples.

    The implicit reward is β times that log-ratio; rho is the same for any β > 0, so β is not needed.
    """
    missing = [c for c in ("policy_logp", "ref_logp", "n_tokens") if c not in samples.columns]
    if missing:
        raise ValueError(f"samples frame lacks columns {missing}: score the samples with the reference first")
    log_ratio = samples["policy_logp"].to_numpy(np.float64) - samples["ref_logp"].to_numpy(np.float64)
    return spearman(log_ratio, samples["n_tokens"].to_numpy(np.float64))


def win_rate_by_length(judgments: pd.DataFrame, *, n_buckets: int = 4,
                       bins: Sequence[float] | None = None) -> list[LengthBucket]:
    """Win rate per bucket of diff = length_model - length_baseline, over one model's scored rows.

    Buckets: quantiles of diff into n_buckets (equal quantiles merged), or the fixed increasing edges
    `bins` (rows outside them are left out). Intervals are (low, high], the first [low, high].
    """
    diff, pref, prompts = _scored_diffs(judgments)
    if bins is not None:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"bins must be at least two strictly increasing edges, got {list(bins)}")
    else:
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
        if diff.size == 0:
            return []
        edges = np.unique(np.quantile(diff, np.linspace(0.0, 1.0, n_buckets + 1)))
        if edges.size == 1:  # every difference equal: one bucket
            edges = np.repeat(edges, 2)
    # bucket j holds edges[j] < d <= edges[j+1]; the first also holds d == edges[0]
    index = np.searchsorted(edges, diff, side="left") - 1
    index[diff == edges[0]] = 0
    inside = (index >= 0) & (index < edges.size - 1)
    return [_bucket(edges[j], edges[j + 1], diff[inside & (index == j)], pref[inside & (index == j)],
                    prompts[inside & (index == j)]) for j in range(edges.size - 1)]


def lc_gap(raw: float, raw_ci: tuple[float, float], lc: float, lc_ci: tuple[float, float],
           gap_ci: tuple[float, float], length_ratio: float, threshold: float | None = None) -> LcGap:
    """raw - lc with its paired CI gap_ci (dpo_eval.metrics.winrate's lc_gap_ci) and direction; flagged when
    |gap| is above threshold (default Thresholds().lc_gap)."""
    limit = Thresholds().lc_gap if threshold is None else threshold
    gap = raw - lc
    return LcGap(raw=raw, raw_ci=tuple(raw_ci), lc=lc, lc_ci=tuple(lc_ci), gap=gap, threshold=limit,
                 exceeds_threshold=bool(abs(gap) > limit), cis_disjoint=bool(lc_ci[1] < raw_ci[0]),
                 gap_ci=tuple(gap_ci), gap_ci_excludes_zero=bool(gap_ci[0] > 0 or gap_ci[1] < 0),
                 length_ratio=length_ratio, direction=lc_gap_direction(gap, length_ratio))


def length_findings(comparison: LengthComparison, gap: LcGap | None = None,
                    thresholds: Thresholds | None = None, step: int | None = None) -> list[Finding]:
    """length_inflation and lc_gap findings of one checkpoint (see dpo_eval.metrics.findings).

    length_inflation's test is the prompt-paired one (wilcoxon_p: per-prompt mean lengths, checkpoint -
    reference, over shared prompts); Mann-Whitney over all samples is reported beside it, never used here.
    """
    t = thresholds or Thresholds()
    c = comparison
    found = [check_length_inflation(c.paired_ratio, c.wilcoxon_p, c.checkpoint.truncated_share,
                                    c.reference.truncated_share, t, step, n_paired_prompts=c.n_paired_prompts,
                                    ratio_ci=c.paired_ratio_ci,
                                    truncation_rise=(c.truncation_rise, c.truncation_rise_se))]
    if gap is not None:
        found.append(check_lc_gap(gap.raw, gap.raw_ci, gap.lc, gap.lc_ci, gap.gap_ci, gap.length_ratio, t, step))
    return [f for f in found if f is not None]


def _tokens(samples: pd.DataFrame) -> np.ndarray:
    missing = [c for c in ("prompt_id", "n_tokens") if c not in samples.columns]
    if missing:
        raise ValueError(f"samples frame lacks columns {missing}; needs prompt_id, n_tokens "
                         "(output and finish_reason optional)")
    tokens = samples["n_tokens"].to_numpy(np.float64)
    if np.isnan(tokens).any():
        raise ValueError(f"n_tokens is missing on {int(np.isnan(tokens).sum())} sample(s): fill or drop them")
    return tokens


def _prompt_means(checkpoint: pd.DataFrame, reference: pd.DataFrame, values) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt both frames have (sorted by id): each frame's mean of values(frame) (a Series, NaN dropped)."""
    ck = values(checkpoint).groupby(checkpoint["prompt_id"].astype(str)).mean().dropna()
    ref = values(reference).groupby(reference["prompt_id"].astype(str)).mean().dropna()
    shared = ck.index.intersection(ref.index).sort_values()
    return ck[shared].to_numpy(np.float64), ref[shared].to_numpy(np.float64)


def _paired_ratio(y: np.ndarray, x: np.ndarray) -> dict:
    """paired_ratio and its delta-method 95% CI from the shared prompts' mean tokens, checkpoint's y and the
    reference's x (LengthComparison)."""
    if y.size == 0 or x.mean() <= 0:
        return {"paired_ratio": NAN, "paired_ratio_ci": (NAN, NAN)}
    ratio = float(y.mean() / x.mean())
    if y.size < 2:
        return {"paired_ratio": ratio, "paired_ratio_ci": (NAN, NAN)}
    se = float(np.sqrt(np.sum((y - ratio * x) ** 2) / (y.size * (y.size - 1))) / x.mean())
    return {"paired_ratio": ratio, "paired_ratio_ci": (ratio - Z95 * se, ratio + Z95 * se)}


def _paired_truncation(checkpoint: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """truncation_rise and its SE over the shared prompts with a known finish_reason (LengthComparison)."""
    if "finish_reason" not in checkpoint.columns or "finish_reason" not in reference.columns:
        return {"truncation_rise": NAN, "truncation_rise_se": NAN}

    def truncated(frame: pd.DataFrame) -> pd.Series:
        known = frame["finish_reason"].notna()
        return (frame["finish_reason"] == "length").astype(np.float64).where(known)

    ck, ref = _prompt_means(checkpoint, reference, truncated)
    d = ck - ref
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else NAN
    return {"truncation_rise": _mean(d), "truncation_rise_se": se}


def _wilcoxon(diffs: np.ndarray) -> tuple[float, float]:
    if np.count_nonzero(diffs) == 0:
        return NAN, NAN
    result = stats.wilcoxon(diffs, alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def _scored_diffs(judgments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(diff, preference, prompt id as str; each row its own prompt without a prompt_id column) of scored rows."""
    needed = ("preference", "length_model", "length_baseline")
    missing = [c for c in needed if c not in judgments.columns]
    if missing:
        raise ValueError(f"judgments frame lacks columns {missing}; needs {list(needed)}")
    if "model" in judgments.columns and judgments["model"].nunique() > 1:
        raise ValueError(f"judgments hold {judgments['model'].nunique()} models: pass one model's rows")
    pref = judgments["preference"].to_numpy(np.float64)
    diff = judgments["length_model"].to_numpy(np.float64) - judgments["length_baseline"].to_numpy(np.float64)
    keep = ~np.isnan(pref) & ~np.isnan(diff)
    if ((pref[keep] < 0) | (pref[keep] > 1)).any():
        raise ValueError("preference must be a probability in [0, 1] or NaN (unscored)")
    has_ids = "prompt_id" in judgments.columns
    prompts = judgments["prompt_id"].astype(str).to_numpy() if has_ids else np.arange(len(judgments)).astype(str)
    return diff[keep], pref[keep], prompts[keep]


def _bucket(low: float, high: float, diff: np.ndarray, pref: np.ndarray, prompts: np.ndarray) -> LengthBucket:
    codes, uniques = pd.factorize(pd.Series(prompts, dtype=object), sort=True)
    _, se = cluster_ratio(pref, np.ones(pref.size), codes.astype(np.intp), len(uniques))
    return LengthBucket(low=float(low), high=float(high), n=int(pref.size), win_rate=_mean(pref), se=se,
                        mean_length_diff=_mean(diff))


def _mean(values: ArrayLike) -> float:
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()) if x.size else NAN


def _median(values: ArrayLike) -> float:
    x = np.asarray(values, dtype=np.float64)
    return float(np.median(x)) if x.size else NAN


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator and np.isfinite(denominator) else NAN
