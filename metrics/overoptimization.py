"""Quality against KL from the reference: functional fits, past-peak detection, checkpoint choice.

Functional forms of Gao, Schulman & Hilton 2022, "Scaling Laws for Reward Model Overoptimization"
(arXiv:2210.10760), in d = sqrt(KL(pi || pi_ref)):

    best-of-n ("bon"):  R(d) = d (alpha - beta d)        peak d* = alpha / (2 beta),    R(d*) = alpha^2 / (4 beta)
    RL ("rl"):          R(d) = d (alpha - beta log d)    dR/dd = alpha - beta log d - beta = 0
                                                          peak d* = exp(alpha / beta - 1), R(d*) = beta d*

R is quality RELATIVE TO THE REFERENCE, so that R(0) = 0: pass a score minus the reference's score,
or a win rate against the reference minus 0.5. Both forms are linear in (alpha, beta) for fixed d,
so each is fitted by (weighted) linear least squares on the columns (d, -d^2) or (d, -d log d)
(d log d = 0 at d = 0), with weights 1 / quality_se^2 when quality SEs are given. Parameter
covariance: (X^T W X)^-1 with SEs (taken as known, like curve_fit's absolute_sigma), else
s^2 (X^T X)^-1 with s^2 = RSS / (n - 2). The better form is the one with the lower (weighted) RMSE
sqrt(sum w r^2 / sum w); both have two parameters, so this is the same choice AIC would make.
A negative KL estimate (possible with k1) is noise around 0 and enters as d = 0.

A peak exists when beta > 0 (and, for bon, alpha > 0). beta <= 0: no peak, "still rising". bon with
beta > 0 and alpha <= 0 falls from the start: "no gain". Peak uncertainty: delta method, from the
gradient of d* (and of R(d*)) in (alpha, beta) and the parameter covariance; it is a poor
approximation when beta is within a couple of SEs of 0 (d* then runs off to infinity). The fit
pools all rows given: checkpoints of one run, or the points of a sweep of several runs.

Past peak (the over-optimisation signature of Rafailov et al. 2024, "Scaling Laws for Reward Model
Overoptimization in Direct Alignment Algorithms", arXiv:2406.02900): per run, S = the step of the
best observed quality; the run is past its peak when the LAST checkpoint's quality is lower by more
than max(k * sqrt(se_S^2 + se_last^2), tolerance) while its implicit reward is higher than at S.

Frame: one row per checkpoint, columns run, step, kl, quality, optional quality_se, implicit_reward.
Rows whose quality or kl is NaN (not evaluated) are left out. Inputs are not modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

FRAME_COLUMNS = ("run", "step", "kl", "quality")
OPTIONAL_COLUMNS = ("quality_se", "implicit_reward")
FORMS = ("bon", "rl")


@dataclass(frozen=True)
class FormFit:
    """One functional form R(d) fitted to (KL, quality) points; d = sqrt(KL)."""

    form: str
    """"bon": R = d (alpha - beta d); "rl": R = d (alpha - beta log d)."""
    alpha: float
    """Initial slope-like coefficient (quality per unit d)."""
    beta: float
    """Curvature coefficient; > 0 bends the curve down into a peak."""
    alpha_se: float
    """SE of alpha from the parameter covariance."""
    beta_se: float
    """SE of beta."""
    alpha_beta_cov: float
    """Covariance of alpha and beta."""
    rmse: float
    """Weighted RMS residual sqrt(sum w r^2 / sum w) in quality units (plain RMSE without SEs)."""
    n: int
    """Points fitted."""
    shape: str
    """"peak" (a maximum at d* > 0), "still rising" (beta <= 0) or "no gain" (falls from d = 0)."""
    peak_kl: float | None
    """KL at the peak, d*^2; None without a peak."""
    peak_kl_se: float | None
    """Delta-method SE of peak_kl."""
    peak_quality: float | None
    """Fitted quality at the peak, R(d*)."""
    peak_quality_se: float | None
    """Delta-method SE of peak_quality."""
    is_peak_in_range: bool | None
    """Whether peak_kl is within the largest KL fitted (else the peak is an extrapolation)."""


@dataclass(frozen=True)
class KLQualityFit:
    """Both forms fitted to the same points, and the better one."""

    bon: FormFit
    """Best-of-n form."""
    rl: FormFit
    """RL form."""
    best: str
    """Form with the lower weighted RMSE ("bon" on a tie)."""
    is_weighted: bool
    """Whether quality SEs weighted the fit."""
    max_kl: float
    """Largest KL among the fitted points."""

    @property
    def best_fit(self) -> FormFit:
        """The FormFit named by `best`."""
        return self.bon if self.best == "bon" else self.rl


@dataclass(frozen=True)
class PastPeak:
    """Whether one run's quality fell after its best checkpoint while its implicit reward rose."""

    run: str
    peak_step: int
    """Step S of the best observed quality (the earliest on a tie)."""
    peak_quality: float
    last_step: int
    last_quality: float
    drop: float
    """peak_quality - last_quality (>= 0)."""
    threshold: float
    """max(k * sqrt(se_S^2 + se_last^2), tolerance); SEs count as 0 without quality_se."""
    peak_implicit_reward: float | None
    last_implicit_reward: float | None
    is_quality_falling: bool
    """drop > threshold."""
    is_implicit_reward_rising: bool | None
    """last_implicit_reward > peak_implicit_reward; None without the implicit_reward column."""
    is_past_peak: bool
    """is_quality_falling and the implicit reward rose (or is unknown: a fall alone then raises the flag)."""
    reason: str
    """One sentence with the numbers."""


@dataclass(frozen=True)
class Recommendation:
    """The checkpoint to pick, and why."""

    run: str
    step: int
    kl: float
    quality: float
    quality_se: float | None
    reason: str
    """One sentence with the numbers and the rule applied."""


def quality_curve(form: str, alpha: float, beta: float, kl: ArrayLike) -> np.ndarray:
    """R(sqrt(kl)) of a form; kl (n,) >= 0 (negative values enter as 0)."""
    return _design(form, _root(kl)) @ np.array([alpha, beta])


def fit_form(kl: ArrayLike, quality: ArrayLike, quality_se: ArrayLike | None = None, form: str = "bon") -> FormFit:
    """Least-squares fit of one form to points (kl, quality relative to the reference), arrays (n,)."""
    d = _root(kl)
    y = np.asarray(quality, dtype=np.float64)
    se = np.ones_like(d) if quality_se is None else np.asarray(quality_se, dtype=np.float64)
    if y.shape != d.shape or se.shape != d.shape:
        raise ValueError(f"kl {d.shape}, quality {y.shape} and quality_se {se.shape} must have one shape")
    if not (np.all(np.isfinite(y)) and np.all(se > 0.0) and np.all(np.isfinite(se))):
        raise ValueError("quality must be finite and quality_se finite and > 0 at every point")
    weights = 1.0 / se ** 2
    x = _design(form, d)
    if np.linalg.matrix_rank(x) < 2 or d.size < 3:
        raise ValueError(f"fitting KL vs quality needs at least 3 points with 2 distinct KL > 0; got KL {np.round(d**2, 4).tolist()}")
    root_w = np.sqrt(weights)
    params = np.linalg.lstsq(x * root_w[:, None], y * root_w, rcond=None)[0]
    residual = y - x @ params
    weighted_ss = float(np.sum(weights * residual ** 2))
    cov = np.linalg.inv(x.T @ (weights[:, None] * x))
    if quality_se is None:
        cov = cov * weighted_ss / (d.size - 2)
    alpha, beta = (float(v) for v in params)
    return FormFit(form=form, alpha=alpha, beta=beta, alpha_se=float(np.sqrt(cov[0, 0])),
                   beta_se=float(np.sqrt(cov[1, 1])), alpha_beta_cov=float(cov[0, 1]),
                   rmse=float(np.sqrt(weighted_ss / weights.sum())), n=int(d.size),
                   **_peak(form, alpha, beta, cov, float(d.max())))


def fit_kl_quality(frame: pd.DataFrame) -> KLQualityFit:
    """Fit both forms to every evaluated row of `frame` (columns FRAME_COLUMNS, optional quality_se)."""
    rows = _clean(frame)
    se = rows["quality_se"].to_numpy() if "quality_se" in rows else None
    fits = {form: fit_form(rows["kl"].to_numpy(), rows["quality"].to_numpy(), se, form) for form in FORMS}
    best = "bon" if fits["bon"].rmse <= fits["rl"].rmse else "rl"
    return KLQualityFit(bon=fits["bon"], rl=fits["rl"], best=best, is_weighted=se is not None,
                        max_kl=float(rows["kl"].clip(lower=0.0).max()))


def detect_past_peak(frame: pd.DataFrame, *, k: float = 2.0, tolerance: float = 0.0) -> dict[str, PastPeak]:
    """Per run (sorted by name): is the last checkpoint's quality significantly below the run's best?

    `tolerance` is in quality units: the smallest drop that counts whatever the SEs (with no
    quality_se, any drop larger than it counts). The best observed quality is the maximum of noisy
    values, biased upward; k * SE guards against calling that noise a fall.
    """
    if k < 0 or tolerance < 0:
        raise ValueError(f"k and tolerance must be >= 0, got k={k}, tolerance={tolerance}")
    rows = _clean(frame)
    return {str(run): _past_peak(str(run), group.sort_values("step"), k, tolerance)
            for run, group in rows.groupby("run", sort=True)}


def recommend_checkpoint(frame: pd.DataFrame, kl_budget: float | None = None,
                         fit: KLQualityFit | None = None) -> Recommendation:
    """The checkpoint to pick among the evaluated rows of `frame` (all runs together).

    Rule: keep the rows with KL <= kl_budget (all rows without a budget); take the best observed
    quality among them (ties: lower KL, earlier step, then run name). With a fit whose better form has a peak,
    pick instead, among the kept rows within 1 SE of that best quality (quality >= best - its SE),
    the one whose KL is nearest the fitted peak KL: those checkpoints are statistically tied, and the
    fit pools every point. Without SEs only exact ties of the best are candidates.
    """
    rows = _clean(frame)
    kept = rows if kl_budget is None else rows[rows["kl"] <= kl_budget]
    if kept.empty:
        raise ValueError(f"no evaluated checkpoint has KL <= {kl_budget} (smallest KL is {rows['kl'].min():.4g}): "
                         "raise kl_budget")
    budget_text = "" if kl_budget is None else f" with KL <= {kl_budget:.4g}"
    best = kept.sort_values(["quality", "kl", "step", "run"], ascending=[False, True, True, True]).iloc[0]
    best_se = float(best["quality_se"]) if "quality_se" in kept else 0.0
    if fit is None or fit.best_fit.shape != "peak":
        why = "" if fit is None else f"; the {fit.best} fit has no peak ({fit.best_fit.shape})"
        reason = f"the best observed quality among {len(kept)} checkpoints{budget_text}{why}"
        return _recommendation(best, reason)
    peak_kl = fit.best_fit.peak_kl
    near = kept[kept["quality"] >= best["quality"] - best_se]
    pick = near.assign(distance=(near["kl"] - peak_kl).abs()).sort_values(["distance", "kl", "step", "run"]).iloc[0]
    reason = (f"nearest the fitted {fit.best} peak at KL {peak_kl:.4g} among the {len(near)} checkpoints{budget_text} "
              f"within 1 SE of the best observed quality {best['quality']:.4g} (run {best['run']} step {best['step']})")
    return _recommendation(pick, reason)


def _recommendation(row: pd.Series, reason: str) -> Recommendation:
    se = float(row["quality_se"]) if "quality_se" in row.index else None
    se_text = "" if se is None else f" +- {se:.4g}"
    head = f"run {row['run']} step {row['step']} (KL {row['kl']:.4g}, quality {row['quality']:.4g}{se_text}): "
    return Recommendation(run=str(row["run"]), step=int(row["step"]), kl=float(row["kl"]),
                          quality=float(row["quality"]), quality_se=se, reason=head + reason)


def _past_peak(run: str, rows: pd.DataFrame, k: float, tolerance: float) -> PastPeak:
    quality = rows["quality"].to_numpy()
    peak, last = rows.iloc[int(np.argmax(quality))], rows.iloc[-1]
    se = (float(peak["quality_se"]), float(last["quality_se"])) if "quality_se" in rows else (0.0, 0.0)
    drop = float(peak["quality"] - last["quality"])
    threshold = max(k * float(np.hypot(*se)), tolerance)
    has_reward = "implicit_reward" in rows
    peak_reward = float(peak["implicit_reward"]) if has_reward else None
    last_reward = float(last["implicit_reward"]) if has_reward else None
    rising = bool(last_reward > peak_reward) if has_reward else None
    falling = drop > threshold
    is_past = falling and rising is not False
    reward_text = "" if not has_reward else f"; implicit reward {peak_reward:.4g} -> {last_reward:.4g}"
    verdict = "past its peak" if is_past else "not past its peak"
    reason = (f"run {run} is {verdict}: quality {float(peak['quality']):.4g} at step {peak['step']} (best) vs "
              f"{float(last['quality']):.4g} at the last step {last['step']}, drop {drop:.4g} vs threshold "
              f"{threshold:.4g}{reward_text}")
    return PastPeak(run=run, peak_step=int(peak["step"]), peak_quality=float(peak["quality"]),
                    last_step=int(last["step"]), last_quality=float(last["quality"]), drop=drop,
                    threshold=threshold, peak_implicit_reward=peak_reward, last_implicit_reward=last_reward,
                    is_quality_falling=falling, is_implicit_reward_rising=rising, is_past_peak=is_past,
                    reason=reason)


def _peak(form: str, alpha: float, beta: float, cov: np.ndarray, max_d: float) -> dict:
    """Peak location, height and their delta-method SEs, sqrt(g^T cov g) with g the gradient in (alpha, beta)."""
    none = {"peak_kl": None, "peak_kl_se": None, "peak_quality": None, "peak_quality_se": None,
            "is_peak_in_range": None}
    if beta <= 0.0:
        return {"shape": "still rising" if alpha > 0.0 or beta < 0.0 else "no gain", **none}
    if form == "bon":
        if alpha <= 0.0:
            return {"shape": "no gain", **none}
        d_star, height = alpha / (2.0 * beta), alpha ** 2 / (4.0 * beta)
        grad_d = np.array([1.0 / (2.0 * beta), -alpha / (2.0 * beta ** 2)])
        grad_h = np.array([alpha / (2.0 * beta), -alpha ** 2 / (4.0 * beta ** 2)])
    else:
        d_star = float(np.exp(alpha / beta - 1.0))
        height = beta * d_star
        grad_d = np.array([d_star / beta, -alpha * d_star / beta ** 2])
        grad_h = np.array([d_star, d_star * (1.0 - alpha / beta)])
    d_se = float(np.sqrt(grad_d @ cov @ grad_d))
    return {"shape": "peak", "peak_kl": d_star ** 2, "peak_kl_se": 2.0 * d_star * d_se,
            "peak_quality": float(height), "peak_quality_se": float(np.sqrt(grad_h @ cov @ grad_h)),
            "is_peak_in_range": bool(d_star <= max_d)}


def _design(form: str, d: np.ndarray) -> np.ndarray:
    if form == "bon":
        curve = d * d
    elif form == "rl":
        curve = d * np.log(np.where(d > 0.0, d, 1.0))
    else:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return np.column_stack([d, -curve])


def _root(kl: ArrayLike) -> np.ndarray:
    values = np.asarray(kl, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError("kl must be a 1-D array of finite values")
    return np.sqrt(np.clip(values, 0.0, None))


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Evaluated rows (quality and kl not NaN) of a copy, numeric columns as float, run as str, step as int."""
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"KL-quality frame lacks columns {missing}; needs {list(FRAME_COLUMNS)} "
                         f"(optional {list(OPTIONAL_COLUMNS)})")
    columns = list(FRAME_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in frame.columns]
    rows = frame[columns].copy()
    for column in columns[2:]:
        try:
            rows[column] = pd.to_numeric(rows[column], errors="raise").astype(np.float64)
        except (ValueError, TypeError) as error:
            raise ValueError(f"column {column} must be numeric (NaN where not evaluated): {error}") from None
    rows = rows[rows["quality"].notna() & rows["kl"].notna()]
    if rows.empty:
        raise ValueError("KL-quality frame has no row with both kl and quality: evaluate some checkpoints first")
    rows["run"] = rows["run"].astype(str)
    rows["step"] = _steps(rows["step"])
    if rows.duplicated(["run", "step"]).any():
        first = rows[rows.duplicated(["run", "step"])].iloc[0]
        raise ValueError(f"run {first['run']} has step {first['step']} twice: keep one row per checkpoint")
    for column in OPTIONAL_COLUMNS:
        if column in rows and not np.all(np.isfinite(rows[column])):
            raise ValueError(f"{column} is missing in some evaluated rows: fill it or drop the column")
    if "quality_se" in rows and not np.all(rows["quality_se"] > 0.0):
        raise ValueError("quality_se must be > 0 in every evaluated row: drop the column to fit unweighted")
    return rows


def _steps(steps: pd.Series) -> pd.Series:
    values = pd.to_numeric(steps, errors="coerce")
    bad = values.isna() | (values != np.round(values))
    if bad.any():
        raise ValueError(f"step must be an integer in every row, got {steps[bad].head(3).tolist()}")
    return values.astype(np.int64)
