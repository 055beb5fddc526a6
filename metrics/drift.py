"""How a checkpoint's log-probs moved away from the reference's on held-out pairs and beyond them.

Per response, Δ = log π(y|x) - log π_ref(y|x) (a sum over the response's tokens), and Δ / |y| per token.

- Likelihood displacement (Razin et al. 2024, "Unintentional Unalignment: Likelihood Displacement in
  Direct Preference Optimization"): the chosen response's log-prob falls although DPO is meant to raise
  it. Share = #(Δ_chosen < 0) / n, with a Wilson score interval.
- 3D properties (Yan et al. 2024, "3D-Properties: Identifying Challenges in DPO and Charting a Path
  Forward"):
  drastic drop: the rejected log-prob falls much faster than the chosen one moves,
      drop ratio = |mean Δ_rejected| / |mean Δ_chosen|, and speed = OLS slope of mean Δ against step;
  degradation: chosen and rejected both fall while the margin mean(Δ_chosen - Δ_rejected) grows;
  dispersion: probability moves to responses in no pair (the reference's own samples, responses to
      other prompts), and the next-token entropy on prompts changes.

Input columns (pairs.parquet from `dpo-eval score`): PAIR_COLUMNS. Rows with a NaN in any of them are
left out and counted. Nothing here modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import norm

from dpo_eval.metrics.findings import (
    Finding,
    Thresholds,
    abs_ratio,
    check_degradation,
    check_dispersion,
    check_drastic_drop,
    check_entropy_change,
    check_likelihood_displacement,
)

PAIR_COLUMNS = ("policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp",
                "chosen_tokens", "rejected_tokens")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class DeltaSummary:
    """Summary of a sample of Δ log π values; NaN figures when n is 0 (se NaN when n < 2)."""

    n: int
    mean: float
    median: float
    se: float
    """Standard error of the mean: std (ddof 1) / sqrt(n)."""
    quantiles: dict[str, float]
    """Linear-interpolation quantiles at QUANTILES, keyed "q05", "q25", "q50", "q75", "q95"."""


@dataclass(frozen=True)
class ResponseDrift:
    """Δ log π of a set of responses, as sums over tokens and per token (mean of Δ_i / tokens_i)."""

    total: DeltaSummary
    per_token: DeltaSummary


@dataclass(frozen=True)
class PairDrift:
    """One checkpoint against the reference on held-out pairs."""

    n: int
    """Pairs used (no NaN in PAIR_COLUMNS)."""
    n_missing: int
    """Pairs left out for a NaN."""
    chosen: ResponseDrift
    rejected: ResponseDrift
    margin: DeltaSummary
    """Δ_chosen - Δ_rejected per pair (sums): the implicit reward margin divided by β."""
    displacement_share: float
    """#(Δ_chosen < 0) / n: pairs whose chosen response lost probability (Razin et al. 2024)."""
    displacement_ci: tuple[float, float]
    """95% Wilson score interval of displacement_share."""
    drop_ratio: float
    """|mean Δ_rejected| / |mean Δ_chosen| (sums); inf when only the denominator is 0, NaN when both are."""


@dataclass(frozen=True)
class EntropyChange:
    """Mean next-token entropy (nats) of the policy on prompts against the reference's."""

    n_policy: int
    n_ref: int
    policy_mean: float
    ref_mean: float
    change: float
    """policy_mean - ref_mean."""
    relative_change: float
    """policy_mean / ref_mean - 1 (NaN when ref_mean is 0)."""
    se: float
    """SE of change: paired (std of differences / sqrt n) when is_paired, else Welch sqrt(s1²/n1 + s2²/n2)."""
    is_paired: bool
    """True when both arrays have the same length and are taken as the same prompts in the same order."""


@dataclass(frozen=True)
class Dispersion:
    """Δ log π on responses in no pair, and the entropy change; a part is None when not measured."""

    reference_samples: ResponseDrift | None
    """The reference's own samples for the held-out prompts."""
    other_prompts: ResponseDrift | None
    """Responses taken from other prompts (scored as answers to a prompt they do not belong to)."""
    entropy: EntropyChange | None


@dataclass(frozen=True)
class CheckpointDrift:
    """What drift_findings needs to know about one checkpoint."""

    step: int
    pairs: PairDrift
    dispersion: Dispersion | None = None


@dataclass(frozen=True)
class DriftSpeed:
    """OLS slopes of mean Δ (sums) against step across checkpoints; NaN with fewer than two distinct steps."""

    n_points: int
    chosen_slope: float
    rejected_slope: float
    margin_slope: float
    ratio: float
    """|rejected_slope| / |chosen_slope|: how many times faster rejected moves than chosen."""


def summarize_deltas(values: ArrayLike) -> DeltaSummary:
    """n, mean, median, SE (std ddof 1 / sqrt n) and QUANTILES of a 1-D sample."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    n = x.size
    if n == 0:
        nan = float("nan")
        return DeltaSummary(0, nan, nan, nan, {_qname(q): nan for q in QUANTILES})
    se = float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    qs = np.quantile(x, QUANTILES)
    return DeltaSummary(n=n, mean=float(x.mean()), median=float(np.median(x)), se=se,
                        quantiles={_qname(q): float(v) for q, v in zip(QUANTILES, qs)})


def response_drift(policy_logp: ArrayLike, ref_logp: ArrayLike, tokens: ArrayLike) -> ResponseDrift:
    """Δ = policy - ref per response (sums) and Δ / tokens; arrays (n,), tokens > 0."""
    policy, ref, count = (np.asarray(a, dtype=np.float64) for a in (policy_logp, ref_logp, tokens))
    if not policy.shape == ref.shape == count.shape or policy.ndim != 1:
        raise ValueError(f"policy {policy.shape}, reference {ref.shape} and tokens {count.shape} "
                         "must be 1-D of one length")
    if (count <= 0).any():
        raise ValueError("token counts must be > 0: a response with no tokens has no per-token log-prob")
    delta = policy - ref
    return ResponseDrift(total=summarize_deltas(delta), per_token=summarize_deltas(delta / count))


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n; (NaN, NaN) when n is 0.

    center = (p + z²/2n) / (1 + z²/n),  half = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²),  z = Φ⁻¹((1+level)/2)
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + level / 2.0))
    p = k / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, center - half)), float(min(1.0, center + half))


def pair_drift(pairs: pd.DataFrame) -> PairDrift:
    """Δ log π of chosen and rejected responses of held-out pairs (columns PAIR_COLUMNS)."""
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs frame lacks columns {missing}; needs {list(PAIR_COLUMNS)} (pairs.parquet "
                         "from `dpo-eval score` with a reference)")
    values = pairs[list(PAIR_COLUMNS)].to_numpy(dtype=np.float64)
    keep = ~np.isnan(values).any(axis=1)
    pc, pr, rc, rr, tc, tr = values[keep].T
    chosen, rejected = response_drift(pc, rc, tc), response_drift(pr, rr, tr)
    n = int(keep.sum())
    fell = int(np.sum(pc - rc < 0))
    return PairDrift(
        n=n, n_missing=int((~keep).sum()), chosen=chosen, rejected=rejected,
        margin=summarize_deltas((pc - rc) - (pr - rr)),
        displacement_share=fell / n if n else float("nan"), displacement_ci=wilson_interval(fell, n),
        drop_ratio=abs_ratio(rejected.total.mean, chosen.total.mean) if n else float("nan"))


def entropy_change(policy_entropy: ArrayLike, ref_entropy: ArrayLike) -> EntropyChange:
    """Mean next-token entropy of the policy on prompts against the reference's (1-D arrays, NaN dropped)."""
    pol, ref = np.asarray(policy_entropy, dtype=np.float64), np.asarray(ref_entropy, dtype=np.float64)
    if pol.ndim != 1 or ref.ndim != 1:
        raise ValueError(f"entropies must be 1-D arrays, got shapes {pol.shape} and {ref.shape}")
    is_paired = pol.shape == ref.shape
    if is_paired:
        keep = ~(np.isnan(pol) | np.isnan(ref))
        pol, ref = pol[keep], ref[keep]
        se = float(np.std(pol - ref, ddof=1) / np.sqrt(pol.size)) if pol.size > 1 else float("nan")
    else:
        pol, ref = pol[~np.isnan(pol)], ref[~np.isnan(ref)]
        se = (float(np.sqrt(np.var(pol, ddof=1) / pol.size + np.var(ref, ddof=1) / ref.size))
              if min(pol.size, ref.size) > 1 else float("nan"))
    nan = float("nan")
    pm, rm = (float(pol.mean()) if pol.size else nan), (float(ref.mean()) if ref.size else nan)
    return EntropyChange(n_policy=int(pol.size), n_ref=int(ref.size), policy_mean=pm, ref_mean=rm,
                         change=pm - rm, relative_change=pm / rm - 1.0 if rm else nan, se=se,
                         is_paired=is_paired)


def drift_speed(steps: ArrayLike, chosen_means: ArrayLike, rejected_means: ArrayLike, *,
                include_reference: bool = True) -> DriftSpeed:
    """OLS slope Σ(s - s̄)(y - ȳ) / Σ(s - s̄)² of mean Δ_chosen, mean Δ_rejected and their difference on step.

    include_reference adds the point (step 0, Δ 0): the reference is the policy before training.
    """
    s, c, r = (np.asarray(a, dtype=np.float64) for a in (steps, chosen_means, rejected_means))
    if not s.shape == c.shape == r.shape or s.ndim != 1:
        raise ValueError(f"steps {s.shape}, chosen {c.shape} and rejected {r.shape} must be equal 1-D")
    if include_reference:
        s, c, r = np.append(0.0, s), np.append(0.0, c), np.append(0.0, r)
    keep = ~(np.isnan(s) | np.isnan(c) | np.isnan(r))
    s, c, r = s[keep], c[keep], r[keep]
    chosen_slope, rejected_slope, margin_slope = (_ols_slope(s, y) for y in (c, r, c - r))
    ratio = abs_ratio(rejected_slope, chosen_slope) if np.isfinite(chosen_slope) else float("nan")
    return DriftSpeed(n_points=int(s.size), chosen_slope=chosen_slope, rejected_slope=rejected_slope,
                      margin_slope=margin_slope, ratio=ratio)


def drift_findings(run: Sequence[CheckpointDrift], thresholds: Thresholds | None = None) -> list[Finding]:
    """Findings of a run's checkpoints (any order; sorted by step here).

    Each per-checkpoint finding (keyed by code and title: dispersion has one per source) is reported once,
    at the latest checkpoint where it fires; its numbers gain first_step and n_checkpoints (how many
    checkpoints it fired on). Then the run-level degradation finding: slopes across the checkpoints (with
    the reference as step 0), at the last checkpoint.
    """
    t = thresholds or Thresholds()
    ordered = sorted(run, key=lambda ckpt: ckpt.step)
    fired: dict[tuple[str, str], list[Finding]] = {}
    for ckpt in ordered:
        for finding in _checkpoint_findings(ckpt, t):
            fired.setdefault((finding.code, finding.title), []).append(finding)
    result = [_latest_with_history(found) for found in fired.values()]
    if ordered:
        last = ordered[-1]
        speed = drift_speed([c.step for c in ordered], [c.pairs.chosen.total.mean for c in ordered],
                            [c.pairs.rejected.total.mean for c in ordered])
        degradation = check_degradation(speed.chosen_slope, speed.rejected_slope, speed.margin_slope,
                                        last.pairs.chosen.per_token.mean, last.pairs.rejected.per_token.mean,
                                        t, step=last.step)
        result += [degradation] if degradation else []
    return result


def _checkpoint_findings(ckpt: CheckpointDrift, t: Thresholds) -> list[Finding]:
    p, step = ckpt.pairs, ckpt.step
    found = [
        check_likelihood_displacement(p.displacement_share, p.displacement_ci, p.n, p.chosen.total.mean, t,
                                      step),
        check_drastic_drop(p.chosen.total.mean, p.rejected.total.mean, p.rejected.per_token.mean, t, step),
    ]
    d = ckpt.dispersion
    if d is not None:
        for source, drift in (("the reference's own samples", d.reference_samples),
                              ("responses from other prompts", d.other_prompts)):
            if drift is not None:
                found.append(check_dispersion(drift.per_token.mean, p.chosen.per_token.mean, source, t, step))
        if d.entropy is not None:
            found.append(check_entropy_change(d.entropy.policy_mean, d.entropy.ref_mean, t, step))
    return [f for f in found if f is not None]


def _latest_with_history(found: list[Finding]) -> Finding:
    """The last of one finding's occurrences (sorted by step), noting the first step and how many fired."""
    latest, first = found[-1], found[0]
    numbers = {**latest.numbers, "first_step": float(first.step), "n_checkpoints": float(len(found))}
    message = latest.message + (f" First seen at step {first.step}." if first.step != latest.step else "")
    return replace(latest, numbers=numbers, message=message)


def _ols_slope(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean() if x.size else x
    sxx = float(dx @ dx)
    return float(dx @ (y - y.mean()) / sxx) if sxx > 0 else float("nan")


def _qname(q: float) -> str:
    return f"q{round(q * 100):02d}"
