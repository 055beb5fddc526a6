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

Clustering by prompt. Several pairs (or responses) often share a prompt and are not independent. Given
each row's prompt id, means stay means over rows (each pair weighted once), and their SEs are the
cluster-robust linearised SE of a ratio of totals (as dpo_eval.metrics.kl.cluster_ratio), with T_g the
sum of prompt g's values, n_g its row count, n = sum_g n_g and P prompts:

    mean = sum_g T_g / n,        se = sqrt( P / (P - 1) * sum_g (T_g - mean n_g)^2 ) / n.

With one row per prompt this is std(ddof=1) / sqrt(n) exactly. The displacement share's interval is
Wilson's at the effective sample size (cluster_wilson_interval). Without prompt ids each row is its own
prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import norm

from dpo_eval.metrics.findings import (
    DropNoise,
    Finding,
    Thresholds,
    abs_ratio,
    check_degradation,
    check_dispersion,
    check_drastic_drop,
    check_entropy_change,
    check_likelihood_displacement,
)
from dpo_eval.metrics.kl import cluster_ratio

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
    """SE of the mean, clustered by prompt (module docstring); std (ddof 1) / sqrt(n) with one row per prompt."""
    quantiles: dict[str, float]
    """Linear-interpolation quantiles at QUANTILES, keyed "q05", "q25", "q50", "q75", "q95"."""
    n_prompts: int
    """Prompts (clusters) among the n values; n when no prompt ids were given."""


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
    n_prompts: int
    """Distinct prompts among the n pairs (the SEs' clusters); n when no prompt ids were given."""
    chosen: ResponseDrift
    rejected: ResponseDrift
    margin: DeltaSummary
    """Δ_chosen - Δ_rejected per pair (sums): the implicit reward margin divided by β."""
    displacement_share: float
    """#(Δ_chosen < 0) / n: pairs whose chosen response lost probability (Razin et al. 2024)."""
    displacement_ci: tuple[float, float]
    """95% Wilson score interval of displacement_share at the prompt-clustered effective sample size
    (cluster_wilson_interval); the plain Wilson interval when each pair has its own prompt."""
    drop_ratio: float
    """|mean Δ_rejected| / |mean Δ_chosen| (sums); inf when only the denominator is 0, NaN when both are."""
    chosen_rejected_cov: float
    """Covariance of mean Δ_chosen and mean Δ_rejected (sums), clustered by prompt as their SEs
    (cluster_covariance): each pair gives both, so the drastic-drop test's contrasts are paired."""


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
    relative_change_se: float = float("nan")
    """Delta-method SE of relative_change = P/R - 1 (r = P/R, both means estimated): paired
    std(p - r q, ddof 1) / sqrt n / R, else sqrt(se_P^2 + r^2 se_R^2) / R; NaN with fewer than 2 values or R 0."""


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


def prompt_codes(prompt_id: ArrayLike | None, n: int) -> tuple[np.ndarray, int]:
    """(cluster code in [0, P) of each of n rows, P); None makes each row its own prompt."""
    if prompt_id is None:
        return np.arange(n, dtype=np.intp), n
    ids = pd.Series(np.asarray(prompt_id, dtype=object))
    if ids.shape != (n,):
        raise ValueError(f"prompt_id has shape {ids.shape}, expected ({n},): one prompt id per row")
    if ids.isna().any():
        raise ValueError(f"prompt_id is missing at row {int(np.flatnonzero(ids.isna())[0])}: give every row its prompt")
    codes, uniques = pd.factorize(ids.astype(str), sort=True)
    return codes.astype(np.intp), len(uniques)


def summarize_deltas(values: ArrayLike, prompt_id: ArrayLike | None = None) -> DeltaSummary:
    """n, mean, median, SE clustered by prompt_id (module docstring) and QUANTILES of a 1-D sample.

    se = sqrt(P/(P-1) sum_g (T_g - mean n_g)^2) / n, NaN with fewer than 2 prompts; without prompt ids
    (each value its own prompt) that is std (ddof 1) / sqrt n.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    n = x.size
    codes, n_prompts = prompt_codes(prompt_id, n)
    if n == 0:
        nan = float("nan")
        return DeltaSummary(0, nan, nan, nan, {_qname(q): nan for q in QUANTILES}, 0)
    mean, se = cluster_ratio(x, np.ones(n), codes, n_prompts)
    qs = np.quantile(x, QUANTILES)
    return DeltaSummary(n=n, mean=float(x.mean()), median=float(np.median(x)), se=se,
                        quantiles={_qname(q): float(v) for q, v in zip(QUANTILES, qs)}, n_prompts=n_prompts)


def response_drift(policy_logp: ArrayLike, ref_logp: ArrayLike, tokens: ArrayLike,
                   prompt_id: ArrayLike | None = None) -> ResponseDrift:
    """Δ = policy - ref per response (sums) and Δ / tokens; arrays (n,), tokens > 0; SEs clustered by prompt_id."""
    policy, ref, count = (np.asarray(a, dtype=np.float64) for a in (policy_logp, ref_logp, tokens))
    if not policy.shape == ref.shape == count.shape or policy.ndim != 1:
        raise ValueError(f"policy {policy.shape}, reference {ref.shape} and tokens {count.shape} "
                         "must be 1-D of one length")
    if (count <= 0).any():
        raise ValueError("token counts must be > 0: a response with no tokens has no per-token log-prob")
    delta = policy - ref
    return ResponseDrift(total=summarize_deltas(delta, prompt_id), per_token=summarize_deltas(delta / count, prompt_id))


def cluster_covariance(x: np.ndarray, y: np.ndarray, codes: np.ndarray, n_prompts: int) -> float:
    """Covariance of mean(x) and mean(y) (rows paired), clustered by prompt as summarize_deltas' SE:
    P/(P-1) sum_g (Tx_g - mean(x) n_g)(Ty_g - mean(y) n_g) / n^2; NaN with fewer than 2 prompts.
    cluster_covariance(x, x, ...) is summarize_deltas(x).se squared."""
    n = x.size
    if n_prompts < 2 or n == 0:
        return float("nan")
    sizes = np.bincount(codes, minlength=n_prompts).astype(np.float64)
    rx = np.bincount(codes, x, n_prompts) - x.mean() * sizes
    ry = np.bincount(codes, y, n_prompts) - y.mean() * sizes
    return float(n_prompts / (n_prompts - 1) * np.sum(rx * ry) / n ** 2)


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n; (NaN, NaN) when n is 0.

    center = (p + z²/2n) / (1 + z²/n),  half = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²),  z = Φ⁻¹((1+level)/2)
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return _wilson(k / n, n, level) if n else (float("nan"), float("nan"))


def cluster_wilson_interval(is_success: ArrayLike, prompt_id: ArrayLike | None = None,
                            level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a share of n rows clustered by prompt: Wilson's at the effective size.

        p = k / n,   se_c = sqrt(P/(P-1) sum_g (k_g - p n_g)^2) / n     (k_g, n_g: prompt g's successes, rows)
        se_1^2 = p (1 - p) / (n - 1)                                    (the same with each row its own prompt)
        deff = max(1, se_c^2 / se_1^2),   n_eff = n / deff,   interval = Wilson(p, n_eff)

    (Wilson's formula of wilson_interval with n_eff for n; deff floored at 1 so clustering never narrows
    the interval, as Korn & Graubard 1998 do for clustered proportions.) When deff cannot be estimated
    (p is 0 or 1, or fewer than 2 prompts) each prompt counts once: n_eff = P. With one row per prompt
    deff = 1 and n_eff = n: exactly wilson_interval(k, n). (NaN, NaN) for no rows.
    """
    x = np.asarray(is_success, dtype=np.float64)
    if x.ndim != 1 or ((x != 0) & (x != 1)).any():
        raise ValueError("is_success must be a 1-D array of 0/1 (or booleans)")
    n = x.size
    codes, n_prompts = prompt_codes(prompt_id, n)
    if n == 0:
        return float("nan"), float("nan")
    p, se_c = cluster_ratio(x, np.ones(n), codes, n_prompts)
    if 0.0 < p < 1.0 and n_prompts > 1:
        deff = max(1.0, se_c ** 2 * (n - 1) / (p * (1 - p)))
        n_eff = n / deff
    else:
        n_eff = float(n_prompts)
    return _wilson(p, n_eff, level)


def _wilson(p: float, n: float, level: float) -> tuple[float, float]:
    z = float(norm.ppf(0.5 + level / 2.0))
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, center - half)), float(min(1.0, center + half))


def pair_drift(pairs: pd.DataFrame, prompt_id: ArrayLike | None = None) -> PairDrift:
    """Δ log π of chosen and rejected responses of held-out pairs (columns PAIR_COLUMNS).

    prompt_id: (rows,) the prompt of each row of pairs (pairs sharing one are a cluster: module docstring);
    None makes each pair its own prompt.
    """
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs frame lacks columns {missing}; needs {list(PAIR_COLUMNS)} (pairs.parquet "
                         "from `dpo-eval score` with a reference)")
    values = pairs[list(PAIR_COLUMNS)].to_numpy(dtype=np.float64)
    keep = ~np.isnan(values).any(axis=1)
    codes, _ = prompt_codes(prompt_id, len(pairs))
    ids = codes[keep] if prompt_id is not None else None
    pc, pr, rc, rr, tc, tr = values[keep].T
    chosen, rejected = response_drift(pc, rc, tc, ids), response_drift(pr, rr, tr, ids)
    n = int(keep.sum())
    fell = pc - rc < 0
    pair_codes, n_prompts = prompt_codes(ids, n)
    return PairDrift(
        n=n, n_missing=int((~keep).sum()), n_prompts=chosen.total.n_prompts, chosen=chosen, rejected=rejected,
        chosen_rejected_cov=cluster_covariance(pc - rc, pr - rr, pair_codes, n_prompts),
        margin=summarize_deltas((pc - rc) - (pr - rr), ids),
        displacement_share=float(fell.mean()) if n else float("nan"),
        displacement_ci=cluster_wilson_interval(fell, ids),
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
                         is_paired=is_paired, relative_change_se=_relative_se(pol, ref, is_paired))


def _relative_se(pol: np.ndarray, ref: np.ndarray, is_paired: bool) -> float:
    """EntropyChange.relative_change_se: the delta method for a ratio of two estimated means."""
    if min(pol.size, ref.size) < 2 or not ref.mean():
        return float("nan")
    r = pol.mean() / ref.mean()
    if is_paired:
        return float(np.std(pol - r * ref, ddof=1) / np.sqrt(pol.size) / ref.mean())
    return float(np.sqrt(np.var(pol, ddof=1) / pol.size + r * r * np.var(ref, ddof=1) / ref.size) / ref.mean())


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


@dataclass(frozen=True)
class PairSlopes:
    """OLS slopes of Δ log π (sums) on step, per pair (the reference as step 0, Δ 0), averaged over the pairs
    every checkpoint scored: each mean is the slope of the mean Δ (OLS is linear in y), and its SE is
    clustered by prompt over the pairs' own slopes, so the checkpoints' shared pairs are paired."""

    n_pairs: int
    n_prompts: int
    chosen_slope: float
    chosen_se: float
    rejected_slope: float
    rejected_se: float
    margin_slope: float
    margin_se: float


def pair_slopes(steps: Sequence[int], pairs: Sequence[pd.DataFrame]) -> PairSlopes:
    """PairSlopes over the pairs (column "id", PAIR_COLUMNS, optional "prompt_key") every frame has without a
    NaN; frames[i] is the checkpoint at steps[i]. NaN slopes with fewer than two distinct steps or no pair."""
    columns = ["policy_chosen_logp", "ref_chosen_logp", "policy_rejected_logp", "ref_rejected_logp"]
    deltas = []
    for i, frame in enumerate(pairs):
        clean = frame.dropna(subset=columns).drop_duplicates("id").set_index("id")
        deltas.append(pd.DataFrame({f"c{i}": clean[columns[0]] - clean[columns[1]],
                                    f"r{i}": clean[columns[2]] - clean[columns[3]]}))
    table = pd.concat(deltas, axis=1, join="inner") if deltas else pd.DataFrame()
    x = np.append(0.0, np.asarray(steps, dtype=np.float64))
    dx = x - x.mean()
    sxx = float(dx @ dx)
    nan = float("nan")
    if table.empty or sxx <= 0:
        return PairSlopes(int(len(table)), 0, nan, nan, nan, nan, nan, nan)
    k = len(pairs)
    zero = np.zeros((len(table), 1))
    chosen = np.hstack([zero, table[[f"c{i}" for i in range(k)]].to_numpy(np.float64)]) @ dx / sxx
    rejected = np.hstack([zero, table[[f"r{i}" for i in range(k)]].to_numpy(np.float64)]) @ dx / sxx
    prompts = pairs[0].drop_duplicates("id").set_index("id").reindex(table.index).get("prompt_key")
    ids = None if prompts is None else prompts.to_numpy(dtype=object)
    c, r, m = (summarize_deltas(v, ids) for v in (chosen, rejected, chosen - rejected))
    return PairSlopes(n_pairs=c.n, n_prompts=c.n_prompts, chosen_slope=c.mean, chosen_se=c.se,
                      rejected_slope=r.mean, rejected_se=r.se, margin_slope=m.mean, margin_se=m.se)


def drift_findings(run: Sequence[CheckpointDrift], thresholds: Thresholds | None = None,
                   pairs: Sequence[pd.DataFrame] | None = None) -> list[Finding]:
    """Findings of a run's checkpoints (any order; sorted by step here).

    Each checkpoint's own findings, from its own figures alone (adding or removing another checkpoint changes
    none of them, nor their severity). Then the run-level degradation finding, at the last checkpoint: per-pair
    slopes across the checkpoints (with the reference as step 0, pair_slopes over `pairs`, the checkpoints'
    pair frames in the order of `run`), whose CIs must show both falling and the margin growing; without
    `pairs` there are no SEs and it does not fire.
    """
    t = thresholds or Thresholds()
    order = sorted(range(len(run)), key=lambda i: run[i].step)
    ordered = [run[i] for i in order]
    result = [finding for ckpt in ordered for finding in _checkpoint_findings(ckpt, t)]
    if ordered and pairs is not None:
        last = ordered[-1]
        slopes = pair_slopes([c.step for c in ordered], [pairs[i] for i in order])
        degradation = check_degradation(
            slopes.chosen_slope, slopes.rejected_slope, slopes.margin_slope, last.pairs.chosen.per_token.mean,
            last.pairs.rejected.per_token.mean, t, step=last.step,
            slope_se=(slopes.chosen_se, slopes.rejected_se, slopes.margin_se),
            per_token_se=(last.pairs.chosen.per_token.se, last.pairs.rejected.per_token.se))
        result += [degradation] if degradation else []
    return result


def _checkpoint_findings(ckpt: CheckpointDrift, t: Thresholds) -> list[Finding]:
    p, step = ckpt.pairs, ckpt.step
    found = [
        check_likelihood_displacement(p.displacement_share, p.displacement_ci, p.n, p.chosen.total.mean, t,
                                      step),
        check_drastic_drop(p.chosen.total.mean, p.rejected.total.mean, p.rejected.per_token.mean, t, step,
                           noise=DropNoise(p.chosen.total.se, p.rejected.total.se, p.chosen_rejected_cov,
                                           p.rejected.per_token.se)),
    ]
    d = ckpt.dispersion
    if d is not None:
        for source, drift in (("the reference's own samples", d.reference_samples),
                              ("responses from other prompts", d.other_prompts)):
            if drift is not None:
                # the two means as independent: they share prompts, and a prompt that moves one moves the other
                # the same way (positive covariance), so this SE errs wide (module docstring of findings)
                gap_se = float(np.hypot(drift.per_token.se, p.chosen.per_token.se))
                found.append(check_dispersion(drift.per_token.mean, p.chosen.per_token.mean, source, t, step,
                                              gap_se=gap_se))
        if d.entropy is not None:
            found.append(check_entropy_change(d.entropy.policy_mean, d.entropy.ref_mean, t, step,
                                              relative_se=d.entropy.relative_change_se))
    return [f for f in found if f is not None]


def _ols_slope(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean() if x.size else x
    sxx = float(dx @ dx)
    return float(dx @ (y - y.mean()) / sxx) if sxx > 0 else float("nan")


def _qname(q: float) -> str:
    return f"q{round(q * 100):02d}"
