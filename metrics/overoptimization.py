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
pools all rows given: checkpoints of one run, or the points of a sweep of several runs. A peak
outside the KL range of the fitted points [min KL, max KL] is an extrapolation
(`is_peak_extrapolated`): a recommendation never rests on such a peak.

Past peak (the over-optimisation signature of Rafailov et al. 2024, "Scaling Laws for Reward Model
Overoptimization in Direct Alignment Algorithms", arXiv:2406.02900): per run, S = the step of the
best observed quality; the run is past its peak when the LAST checkpoint's quality is lower by more
than k * SE(drop) + tolerance (the drop's one-sided bound, drop - k SE, beyond the tolerance) while its
implicit reward is higher than at S. S is picked as the maximum, so this is a one-sided test after
selection (the drop is biased upward by the pick).
SE(drop) is paired when per-prompt qualities are given (both checkpoints are judged on the same
prompts, each against the same reference, which cancels):

    d_p = q_S,p - q_last,p  over the prompts both have,   drop = mean(d),   SE = std(d, ddof=1) / sqrt(n)

Without them it is sqrt(se_S^2 + se_last^2) from quality_se (unpaired: it counts the shared
reference's noise twice and ignores the shared prompts, so it is usually too large). A row without
an SE (quality_se NaN, or no per-prompt qualities) is left out of the tests that need one, never
treated as exact: it is not a peak candidate, and a run whose last row has none is not tested.

Frame: one row per checkpoint, columns run, step, kl, quality, optional quality_se, implicit_reward.
Rows whose quality or kl is NaN (not evaluated) are left out; a NaN (or non-positive) quality_se or a
NaN implicit_reward means that row has none. Inputs are not modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

FRAME_COLUMNS = ("run", "step", "kl", "quality")
OPTIONAL_COLUMNS = ("quality_se", "implicit_reward")
PROMPT_COLUMNS = ("run", "step", "prompt_id", "quality")
"""Per-prompt qualities for the paired past-peak test: one row per (run, step, prompt)."""
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
    kl_range: tuple[float, float]
    """Smallest and largest KL of the fitted points (negative estimates as 0)."""
    is_peak_extrapolated: bool | None
    """Whether peak_kl lies outside kl_range (the data never went there); None without a peak."""


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
    min_kl: float
    """Smallest KL among the fitted points (negative estimates as 0)."""
    max_kl: float
    """Largest KL among the fitted points."""
    n_excluded: int
    """Evaluated rows left out of a weighted fit because they have no quality SE."""

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
    """Paired: mean over shared prompts of q_S,p - q_last,p; unpaired: peak_quality - last_quality."""
    drop_se: float | None
    """SE of the drop (paired or unpaired, see se_method); None when it cannot be estimated."""
    n_prompts: int | None
    """Prompts the paired drop was averaged over; None when unpaired or not tested."""
    se_method: str
    """"paired" (per-prompt differences), "unpaired" (from quality_se) or "none" (not tested)."""
    threshold: float | None
    """k * drop_se + tolerance (the drop's one-sided bound drop - k SE must pass the tolerance); None when not
    tested."""
    peak_implicit_reward: float | None
    last_implicit_reward: float | None
    is_quality_falling: bool | None
    """drop > threshold; None when not tested (no SE for the drop)."""
    is_implicit_reward_rising: bool | None
    """last_implicit_reward > peak_implicit_reward; None without the implicit_reward column."""
    is_past_peak: bool
    """is_quality_falling and the implicit reward rose (or is unknown: a fall alone then raises the flag);
    False when not tested."""
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
    rule: str = "best_quality"
    """Which rule picked it: "best_quality" (the best observed quality) or "fitted_peak" (nearest the fitted
    quality-vs-KL peak among the checkpoints tied with the best)."""


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
                   kl_range=(float(d.min() ** 2), float(d.max() ** 2)),
                   **_peak(form, alpha, beta, cov, float(d.min()), float(d.max())))


def fit_kl_quality(frame: pd.DataFrame) -> KLQualityFit:
    """Fit both forms to the evaluated rows of `frame` (columns FRAME_COLUMNS, optional quality_se).

    Weighted by 1 / quality_se^2 over the rows that have an SE; rows without one are left out (never
    weighted as exact) and counted in n_excluded. Unweighted over every row when no row has an SE.
    """
    rows = _clean(frame, is_step_unique=False)  # a regression over points: two rows may share a step
    has_se = _has_se(rows)
    is_weighted = bool(has_se.any())
    fitted = rows[has_se] if is_weighted else rows
    se = fitted["quality_se"].to_numpy() if is_weighted else None
    fits = {form: fit_form(fitted["kl"].to_numpy(), fitted["quality"].to_numpy(), se, form) for form in FORMS}
    best = "bon" if fits["bon"].rmse <= fits["rl"].rmse else "rl"
    kl = fitted["kl"].clip(lower=0.0)
    return KLQualityFit(bon=fits["bon"], rl=fits["rl"], best=best, is_weighted=is_weighted,
                        min_kl=float(kl.min()), max_kl=float(kl.max()), n_excluded=int(len(rows) - len(fitted)))


def detect_past_peak(frame: pd.DataFrame, prompt_quality: pd.DataFrame | None = None, *, k: float = 2.0,
                     tolerance: float = 0.0) -> dict[str, PastPeak]:
    """Per run (sorted by name): is the last checkpoint's quality significantly below the run's best?

    prompt_quality: the rows' per-prompt qualities (columns PROMPT_COLUMNS); the drop's SE is then paired
    over prompts (see the module docstring), else unpaired from quality_se. `tolerance` is in quality
    units: the smallest drop that counts, which the drop's one-sided bound (drop - k SE) must pass. A run whose drop has no SE is not tested
    (is_quality_falling None, is_past_peak False, the reason says why).
    """
    if k < 0 or tolerance < 0:
        raise ValueError(f"k and tolerance must be >= 0, got k={k}, tolerance={tolerance}")
    rows = _clean(frame, needs_kl=False)  # the test uses no KL: a row without one is still a checkpoint
    by_prompt = None if prompt_quality is None else _prompt_table(prompt_quality)
    return {str(run): _past_peak(str(run), group.sort_values("step"), k, tolerance,
                                 None if by_prompt is None else by_prompt.get(str(run), {}))
            for run, group in rows.groupby("run", sort=True)}


def paired_drop(peak: pd.Series, last: pd.Series) -> tuple[float, float | None, int]:
    """(mean, SE, n) of d_p = peak_p - last_p over the prompts (the index) both Series have.

    SE = std(d, ddof=1) / sqrt(n), the prompts as clusters: a quality relative to one reference on the same
    prompts has the reference cancel in d. The SE is None when n < 2 or it is 0 (no noise estimate: never
    taken as exact); the mean is NaN when no prompt is shared.
    """
    d = (peak.astype(np.float64) - last.astype(np.float64)).dropna().to_numpy()
    if d.size == 0:
        return float("nan"), None, 0
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), (se if np.isfinite(se) and se > 0.0 else None), int(d.size)


def recommend_checkpoint(frame: pd.DataFrame, kl_budget: float | None = None,
                         fit: KLQualityFit | None = None) -> Recommendation:
    """The checkpoint to pick among the evaluated rows of `frame` (all runs together).

    Rule: keep the rows with KL <= kl_budget (all rows without a budget); take the best observed
    quality among them (ties: lower KL, earlier step, then run name). With a fit whose better form has a
    peak inside the fitted KL range, pick instead, among the kept rows within 1 SE of that best quality
    (quality >= best - its SE), the one whose KL is nearest the fitted peak KL: those checkpoints are
    statistically tied, and the fit pools every point. Only exact ties of the best are candidates when it
    has no SE. An extrapolated peak (outside the fitted KL range) is not used.
    """
    rows = _clean(frame)
    kept = rows if kl_budget is None else rows[rows["kl"] <= kl_budget]
    if kept.empty:
        raise ValueError(f"no evaluated checkpoint has KL <= {kl_budget} (smallest KL is {rows['kl'].min():.4g}): "
                         "raise kl_budget")
    budget_text = "" if kl_budget is None else f" with KL <= {kl_budget:.4g}"
    best = kept.sort_values(["quality", "kl", "step", "run"], ascending=[False, True, True, True]).iloc[0]
    form_fit = None if fit is None else fit.best_fit
    if form_fit is None or form_fit.shape != "peak" or form_fit.is_peak_extrapolated:
        reason = f"the best observed quality among {len(kept)} checkpoints{budget_text}{_unused_fit(fit)}"
        return _recommendation(best, reason)
    best_se = _row_se(best)
    near = kept[kept["quality"] >= best["quality"] - (best_se or 0.0)]
    pick = near.assign(distance=(near["kl"] - form_fit.peak_kl).abs()).sort_values(
        ["distance", "kl", "step", "run"]).iloc[0]
    tied = "within 1 SE of" if best_se is not None else "tied with (it has no SE)"
    reason = (f"nearest the fitted {fit.best} peak at KL {form_fit.peak_kl:.4g} (inside the fitted KL range "
              f"{fit.min_kl:.4g} to {fit.max_kl:.4g}) among the {len(near)} checkpoints{budget_text} {tied} the best "
              f"observed quality {best['quality']:.4g} (run {best['run']} step {best['step']})")
    return _recommendation(pick, reason, rule="fitted_peak")


def _unused_fit(fit: KLQualityFit | None) -> str:
    """Why a fit did not move the recommendation ("" without a fit)."""
    if fit is None:
        return ""
    form_fit = fit.best_fit
    if form_fit.shape != "peak":
        return f"; the {fit.best} fit has no peak ({form_fit.shape})"
    return (f"; the {fit.best} fit's peak at KL {form_fit.peak_kl:.4g} is extrapolated (outside the fitted KL "
            f"range {fit.min_kl:.4g} to {fit.max_kl:.4g}), so it is not used")


def _row_se(row: pd.Series) -> float | None:
    se = float(row["quality_se"]) if "quality_se" in row.index else float("nan")
    return se if np.isfinite(se) else None


def _recommendation(row: pd.Series, reason: str, rule: str = "best_quality") -> Recommendation:
    se = _row_se(row)
    se_text = "" if se is None else f" +- {se:.4g}"
    head = f"run {row['run']} step {row['step']} (KL {row['kl']:.4g}, quality {row['quality']:.4g}{se_text}): "
    return Recommendation(run=str(row["run"]), step=int(row["step"]), kl=float(row["kl"]),
                          quality=float(row["quality"]), quality_se=se, reason=head + reason, rule=rule)


def _past_peak(run: str, rows: pd.DataFrame, k: float, tolerance: float,
               prompts: dict[int, pd.Series] | None) -> PastPeak:
    """One run's test; rows sorted by step; prompts: its per-prompt qualities by step (None: unpaired)."""
    usable = rows["step"].isin(list(prompts)) if prompts is not None else _has_se(rows)
    is_last_usable = bool(usable.iloc[-1])
    pool = rows[usable] if is_last_usable else rows
    peak, last = pool.iloc[int(np.argmax(pool["quality"].to_numpy()))], rows.iloc[-1]
    test = _drop_test(peak, last, is_last_usable, prompts, k, tolerance)
    peak_reward, last_reward = (_value(peak, "implicit_reward"), _value(last, "implicit_reward"))
    rising = None if peak_reward is None or last_reward is None else bool(last_reward > peak_reward)
    is_past = test["is_quality_falling"] is True and rising is not False
    excluded = [int(s) for s in rows["step"][~usable]]
    reason = _past_peak_reason(run, peak, last, test, is_past, (peak_reward, last_reward), excluded, k, tolerance)
    return PastPeak(run=run, peak_step=int(peak["step"]), peak_quality=float(peak["quality"]),
                    last_step=int(last["step"]), last_quality=float(last["quality"]), drop=test["drop"],
                    drop_se=test["drop_se"], n_prompts=test["n_prompts"], se_method=test["se_method"],
                    threshold=test["threshold"], peak_implicit_reward=peak_reward, last_implicit_reward=last_reward,
                    is_quality_falling=test["is_quality_falling"], is_implicit_reward_rising=rising,
                    is_past_peak=is_past, reason=reason)


def _drop_test(peak: pd.Series, last: pd.Series, is_last_usable: bool, prompts: dict[int, pd.Series] | None,
               k: float, tolerance: float) -> dict:
    """drop, drop_se, n_prompts, se_method, threshold, is_quality_falling, and why when not tested."""
    method = "unpaired" if prompts is None else "paired"
    untested = {"drop": float(peak["quality"] - last["quality"]), "drop_se": None, "n_prompts": None,
                "se_method": "none", "threshold": None, "is_quality_falling": None}
    if not is_last_usable:
        need = "quality SE" if prompts is None else "per-prompt qualities"
        return {**untested, "why": f"the last checkpoint (step {last['step']}) has no {need}"}
    if peak["step"] == last["step"]:
        return {**untested, "drop": 0.0, "se_method": method, "is_quality_falling": False, "why": ""}
    if prompts is None:
        drop, se, n = untested["drop"], float(np.hypot(peak["quality_se"], last["quality_se"])), None
    else:
        drop, se, n = paired_drop(prompts[int(peak["step"])], prompts[int(last["step"])])
        if se is None:
            return {**untested, "why": f"the paired SE of the drop is undefined or 0 over the {n} prompts steps "
                                       f"{peak['step']} and {last['step']} share"}
    threshold = k * se + tolerance  # drop - k SE > tolerance: the drop's one-sided bound beyond the tolerance
    return {"drop": drop, "drop_se": se, "n_prompts": n, "se_method": method, "threshold": threshold,
            "is_quality_falling": bool(drop > threshold), "why": ""}


def _past_peak_reason(run: str, peak: pd.Series, last: pd.Series, test: dict, is_past: bool,
                      rewards: tuple[float | None, float | None], excluded: list[int], k: float,
                      tolerance: float) -> str:
    """One sentence with the numbers, the SE's kind, and the one-sided-after-selection caveat."""
    left_out = f"; steps {excluded} left out (no SE)" if excluded and not test["why"] else ""
    reward_text = "" if None in rewards else f"; implicit reward {rewards[0]:.4g} -> {rewards[1]:.4g}"
    head = (f"quality {float(peak['quality']):.4g} at step {peak['step']} (the best) vs {float(last['quality']):.4g} "
            f"at the last step {last['step']}")
    if test["why"]:
        return f"run {run} is not tested for a fall past its peak ({test['why']}): {head}{left_out}"
    if test["drop_se"] is None:
        return f"run {run} is not past its peak: its last checkpoint has its best quality ({head}){left_out}"
    over = f" over {test['n_prompts']} prompts" if test["n_prompts"] is not None else ""
    verdict = "past its peak" if is_past else "not past its peak"
    return (f"run {run} is {verdict}: {head}, drop {test['drop']:.4g} +- {test['drop_se']:.2g} ({test['se_method']} "
            f"SE{over}) vs threshold {test['threshold']:.4g} = {k:g} SE + {tolerance:g}; one-sided, and the "
            f"peak was picked as the maximum of the run's checkpoints{reward_text}{left_out}")


def _value(row: pd.Series, column: str) -> float | None:
    value = float(row[column]) if column in row.index else float("nan")
    return value if np.isfinite(value) else None


def _peak(form: str, alpha: float, beta: float, cov: np.ndarray, min_d: float, max_d: float) -> dict:
    """Peak location, height and their delta-method SEs, sqrt(g^T cov g) with g the gradient in (alpha, beta);
    extrapolated when d* lies outside [min_d, max_d], the fitted points' range."""
    none = {"peak_kl": None, "peak_kl_se": None, "peak_quality": None, "peak_quality_se": None,
            "is_peak_extrapolated": None}
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
            "is_peak_extrapolated": not bool(min_d <= d_star <= max_d)}


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


def _has_se(rows: pd.DataFrame) -> pd.Series:
    """Per row: whether it has a quality SE (finite and > 0 after _clean)."""
    return rows["quality_se"].notna() if "quality_se" in rows else pd.Series(False, index=rows.index)


def _clean(frame: pd.DataFrame, is_step_unique: bool = True, needs_kl: bool = True) -> pd.DataFrame:
    """Evaluated rows (quality and, with needs_kl, kl not NaN) of a copy, numeric columns as float, run as str,
    step as int; a quality_se that is not finite and > 0, or an implicit_reward that is not finite, as NaN (that
    row has none). is_step_unique: raise when a run has a step twice (the past-peak test and the recommendation
    need it)."""
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"KL-quality frame lacks columns {missing}; needs {list(FRAME_COLUMNS)} "
                         f"(optional {list(OPTIONAL_COLUMNS)})")
    columns = list(FRAME_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in frame.columns]
    rows = frame[columns].copy()
    for column in columns[2:]:
        rows[column] = _numeric(rows[column], column)
    rows = rows[rows["quality"].notna() & (rows["kl"].notna() | (not needs_kl))]
    if rows.empty:
        need = "both kl and quality" if needs_kl else "a quality"
        raise ValueError(f"KL-quality frame has no row with {need}: evaluate some checkpoints first")
    rows["run"] = rows["run"].astype(str)
    rows["step"] = _steps(rows["step"])
    if is_step_unique and rows.duplicated(["run", "step"]).any():
        first = rows[rows.duplicated(["run", "step"])].iloc[0]
        raise ValueError(f"run {first['run']} has step {first['step']} twice: keep one row per checkpoint")
    if "quality_se" in rows:
        if (rows["quality_se"] < 0.0).any():
            raise ValueError("quality_se must not be negative: NaN (or 0) where a row has no SE")
        rows["quality_se"] = rows["quality_se"].where(np.isfinite(rows["quality_se"]) & (rows["quality_se"] > 0.0))
    if "implicit_reward" in rows:
        rows["implicit_reward"] = rows["implicit_reward"].where(np.isfinite(rows["implicit_reward"]))
    return rows


def _prompt_table(frame: pd.DataFrame) -> dict[str, dict[int, pd.Series]]:
    """Per run, per step: the finite per-prompt qualities indexed by prompt_id (one per prompt)."""
    missing = [c for c in PROMPT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"per-prompt quality frame lacks columns {missing}; needs {list(PROMPT_COLUMNS)}")
    rows = frame[list(PROMPT_COLUMNS)].copy()
    rows["quality"] = _numeric(rows["quality"], "quality")
    rows = rows[np.isfinite(rows["quality"])]
    rows["run"], rows["prompt_id"] = rows["run"].astype(str), rows["prompt_id"].astype(str)
    rows["step"] = _steps(rows["step"])
    if rows.duplicated(["run", "step", "prompt_id"]).any():
        first = rows[rows.duplicated(["run", "step", "prompt_id"])].iloc[0]
        raise ValueError(f"run {first['run']} step {first['step']} has prompt {first['prompt_id']} twice in the "
                         "per-prompt qualities: keep one quality per prompt")
    return {str(run): {int(step): part.set_index("prompt_id")["quality"] for step, part in group.groupby("step")}
            for run, group in rows.groupby("run")}


def _numeric(values: pd.Series, column: str) -> pd.Series:
    try:
        return pd.to_numeric(values, errors="raise").astype(np.float64)
    except (ValueError, TypeError) as error:
        raise ValueError(f"column {column} must be numeric (NaN where not evaluated): {error}") from None


def _steps(steps: pd.Series) -> pd.Series:
    values = pd.to_numeric(steps, errors="coerce")
    bad = values.isna() | (values != np.round(values))
    if bad.any():
        raise ValueError(f"step must be an integer in every row, got {steps[bad].head(3).tolist()}")
    return values.astype(np.int64)
