"""Length-controlled win rate, after Dubois et al. 2024, "Length-Controlled AlpacaEval: A Simple Way
to Debias Automatic Evaluators" (arXiv:2404.04475).

A judge that favours longer answers inflates the win rate of verbose models. A logistic model of the
judge's preference separates quality from length, and the length-controlled (LC) win rate is the
predicted win rate with the length term switched off:

    logit P(model m beats the baseline on prompt i) = theta_m + phi_m * tanh(z) + gamma_i
    z = (length_model - length_baseline) / s,   s = std of that difference over the fitted rows

theta_m is the model's quality, phi_m its length effect, gamma_i a difficulty of prompt i. The fit
minimises the soft-label cross-entropy (the preference in [0, 1] is the target) plus
gamma_l2 / 2 * |gamma|^2 + phi_l2 / 2 * |phi|^2 (Gaussian priors; theta is unpenalised), with
L-BFGS-B and an analytic gradient. The gamma penalty fixes the level shared by theta and gamma and
keeps the fit finite with a single model (one row per prompt); the small phi penalty keeps phi at
0 when the lengths carry no information (e.g. every difference equal).

    LC win rate of m = mean over m's prompts of sigmoid(theta_m + gamma_i)   (z = 0)

`fit_length_control` fits whatever models its frame holds jointly (gamma shared by them). A
report fits each checkpoint on its own rows (dpo_eval.metrics.winrate.summarize_win_rates), as
AlpacaEval 2 fits its GLM per model: a joint fit would make one checkpoint's LC win rate depend on
which other checkpoints are in the frame.

The gap raw - LC (how much of the raw win rate length explains) gets a paired bootstrap over
prompts: each resample draws prompts with replacement, recomputes the raw win rate (mean
preference) and the LC win rate (refit) on the same rows, and takes raw - LC.

Simplified from the paper: there, gamma_i enters through a per-model weight and the baseline has
its own parameters; here the baseline is implicit (shared by every row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit

from dpo_eval.metrics.bootstrap import check_bootstrap_args, percentile_cis, resample_indices

REQUIRED_COLUMNS = ("model", "prompt_id", "preference", "length_model", "length_baseline")


@dataclass(frozen=True)
class LengthControlFit:
    """A length-control fit over every model of a judgments frame (jointly when it holds several)."""

    theta: dict[str, float]
    """Per model: quality on the logit scale (win probability vs the baseline at zero length difference
    on a prompt of difficulty 0)."""
    phi: dict[str, float]
    """Per model: weight of tanh(z), the length effect on the logit scale."""
    gamma: dict[str, float]
    """Per prompt id: shared logit offset (positive = easy to beat the baseline on)."""
    prompts: dict[str, tuple[str, ...]]
    """Per model: the prompt ids of its fitted rows (sorted, unique); the LC win rate averages over them."""
    length_scale: float
    """s in z = length difference / s: the std (ddof 0) of the difference, or 1.0 when that std is 0."""
    n: int
    """Rows fitted: scored (preference not NaN) and with both lengths known."""
    converged: bool
    """Whether L-BFGS-B reported convergence."""
    gamma_l2: float
    """L2 penalty on gamma used by the fit."""
    phi_l2: float
    """L2 penalty on phi used by the fit."""


@dataclass(frozen=True)
class _Rows:
    """Fitted rows as integer codes and floats; models and prompts are sorted name arrays."""

    models: np.ndarray
    prompts: np.ndarray
    model_idx: np.ndarray
    prompt_idx: np.ndarray
    diff: np.ndarray
    target: np.ndarray


def fit_length_control(frame: pd.DataFrame, *, gamma_l2: float = 1.0, phi_l2: float = 0.01) -> LengthControlFit:
    """Fit the length-control model to `frame` (jointly over its models) (columns REQUIRED_COLUMNS, one row per comparison).

    Rows whose preference is NaN (unscored) or whose lengths are missing are left out. A frame with no
    such row gives an empty fit (n 0, empty dicts).
    """
    rows = _encode(frame)
    _check_penalties(gamma_l2, phi_l2)
    n_models, n_prompts = len(rows.models), len(rows.prompts)
    theta, phi, gamma, scale, converged = _fit_rows(rows.model_idx, rows.prompt_idx, rows.diff, rows.target,
                                                   n_models, n_prompts, gamma_l2, phi_l2)
    prompts = {str(name): tuple(str(p) for p in rows.prompts[np.unique(rows.prompt_idx[rows.model_idx == k])])
               for k, name in enumerate(rows.models)}
    return LengthControlFit(
        theta={str(name): float(v) for name, v in zip(rows.models, theta)},
        phi={str(name): float(v) for name, v in zip(rows.models, phi)},
        gamma={str(name): float(v) for name, v in zip(rows.prompts, gamma)},
        prompts=prompts, length_scale=scale, n=len(rows.target), converged=converged,
        gamma_l2=float(gamma_l2), phi_l2=float(phi_l2),
    )


def lc_win_rate(fit: LengthControlFit, model: str) -> float:
    """Mean over the model's fitted prompts of sigmoid(theta_m + gamma_i): the win rate at zero length difference."""
    if model not in fit.theta:
        raise KeyError(f"model {model!r} has no fitted rows; fitted models: {sorted(fit.theta)}")
    gamma = np.array([fit.gamma[p] for p in fit.prompts[model]])
    return float(np.mean(expit(fit.theta[model] + gamma)))


@dataclass(frozen=True)
class LcIntervals:
    """Percentile-bootstrap intervals of one model's LC figures, from one prompt resampling."""

    lc_win_rate_ci: tuple[float, float]
    """CI of the LC win rate."""
    gap_ci: tuple[float, float]
    """CI of raw - LC win rate, both recomputed on the same resample (paired over prompts)."""


def bootstrap_lc_win_rates(frame: pd.DataFrame, *, n_resamples: int = 200, level: float = 0.95,
                           rng: np.random.Generator | int, gamma_l2: float = 1.0,
                           phi_l2: float = 0.01) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of every model's LC win rate (bootstrap_lc_intervals' lc_win_rate_ci)."""
    intervals = bootstrap_lc_intervals(frame, n_resamples=n_resamples, level=level, rng=rng, gamma_l2=gamma_l2,
                                       phi_l2=phi_l2)
    return {model: found.lc_win_rate_ci for model, found in intervals.items()}


def bootstrap_lc_intervals(frame: pd.DataFrame, *, n_resamples: int = 200, level: float = 0.95,
                           rng: np.random.Generator | int, gamma_l2: float = 1.0,
                           phi_l2: float = 0.01) -> dict[str, LcIntervals]:
    """Per model: percentile bootstrap CIs of the LC win rate and of raw - LC, resampling prompt ids.

    Each resample draws as many prompts as the frame has, with replacement; a prompt drawn twice
    enters as two prompts (each with its own gamma), and the length scale is recomputed. On the
    resampled rows: raw = mean preference of the model's rows, LC = lc_win_rate of the refit, and
    gap = raw - LC. Only the fitted rows enter (scored, both lengths known). A model with no rows in
    a resample is skipped there; NaN intervals for a model never present.
    """
    check_bootstrap_args(n_resamples, level)
    _check_penalties(gamma_l2, phi_l2)
    rows = _encode(frame)
    if len(rows.prompts) == 0:
        return {}
    raw, lc = _bootstrap_draws(rows, n_resamples, rng, gamma_l2, phi_l2)
    lc_cis, gap_cis = percentile_cis(lc, rows.models, level), percentile_cis(raw - lc, rows.models, level)
    return {model: LcIntervals(lc_win_rate_ci=lc_cis[model], gap_ci=gap_cis[model]) for model in lc_cis}


def _bootstrap_draws(rows: _Rows, n_resamples: int, rng: np.random.Generator | int, gamma_l2: float,
                     phi_l2: float) -> tuple[np.ndarray, np.ndarray]:
    """(raw, lc): (n_resamples, n_models) raw and LC win rates on the same prompt resamples."""
    n_models, n_prompts = len(rows.models), len(rows.prompts)
    theta, phi, gamma, _, _ = _fit_rows(rows.model_idx, rows.prompt_idx, rows.diff, rows.target,
                                        n_models, n_prompts, gamma_l2, phi_l2)
    order = np.argsort(rows.prompt_idx, kind="stable")
    counts = np.bincount(rows.prompt_idx, minlength=n_prompts)
    starts = np.cumsum(counts) - counts
    raw, lc = np.full((n_resamples, n_models), np.nan), np.full((n_resamples, n_models), np.nan)
    for b, draw in enumerate(resample_indices(n_prompts, n_resamples, rng)):
        sizes = counts[draw]
        new_prompt = np.repeat(np.arange(n_prompts), sizes)
        picked = order[np.arange(sizes.sum()) + np.repeat(starts[draw] - (np.cumsum(sizes) - sizes), sizes)]
        m = rows.model_idx[picked]
        init = np.concatenate([theta, phi, gamma[draw]])
        th, _, ga, _, _ = _fit_rows(m, new_prompt, rows.diff[picked], rows.target[picked], n_models, n_prompts,
                                    gamma_l2, phi_l2, init=init)
        lc[b] = _mean_rate_per_model(th, ga, m, new_prompt, n_models, n_prompts)
        n_rows = np.bincount(m, minlength=n_models)
        raw[b] = np.where(n_rows > 0, np.bincount(m, rows.target[picked], n_models) / np.maximum(n_rows, 1), np.nan)
    return raw, lc


def _encode(frame: pd.DataFrame) -> _Rows:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"judgments frame lacks columns {missing}: length control needs {list(REQUIRED_COLUMNS)}")
    target = frame["preference"].to_numpy(dtype=np.float64)
    bad = ~np.isnan(target) & ~((target >= 0.0) & (target <= 1.0))
    if bad.any():
        raise ValueError(f"preference must be in [0, 1] or NaN (unscored); got {target[bad][:3].tolist()}")
    length_model = frame["length_model"].to_numpy(dtype=np.float64)
    length_baseline = frame["length_baseline"].to_numpy(dtype=np.float64)
    keep = ~np.isnan(target) & np.isfinite(length_model) & np.isfinite(length_baseline)
    kept = frame.loc[keep]
    if kept["model"].isna().any() or kept["prompt_id"].isna().any():
        raise ValueError("model and prompt_id must not be missing in scored rows")
    model_idx, models = pd.factorize(kept["model"].astype(str), sort=True)
    prompt_idx, prompts = pd.factorize(kept["prompt_id"].astype(str), sort=True)
    return _Rows(models=np.asarray(models), prompts=np.asarray(prompts), model_idx=model_idx.astype(np.intp),
                 prompt_idx=prompt_idx.astype(np.intp), diff=(length_model - length_baseline)[keep],
                 target=target[keep])


def _length_scale(diff: np.ndarray) -> float:
    std = float(np.std(diff)) if diff.size else 0.0
    return std if np.isfinite(std) and std > 0.0 else 1.0


def _fit_rows(model_idx: np.ndarray, prompt_idx: np.ndarray, diff: np.ndarray, target: np.ndarray,
              n_models: int, n_prompts: int, gamma_l2: float, phi_l2: float, init: np.ndarray | None = None):
    """(theta, phi, gamma, length scale, converged) minimising the penalised soft-label cross-entropy."""
    scale = _length_scale(diff)
    if target.size == 0:
        return np.zeros(n_models), np.zeros(n_models), np.zeros(n_prompts), scale, True
    tanh_z = np.tanh(diff / scale)
    start = np.zeros(2 * n_models + n_prompts) if init is None else init
    args = (model_idx, prompt_idx, tanh_z, target, n_models, n_prompts, gamma_l2, phi_l2)
    result = minimize(_objective, start, args=args, jac=True, method="L-BFGS-B",
                      options={"maxiter": 2000, "ftol": 1e-10, "gtol": 1e-6})
    params = result.x
    return (params[:n_models], params[n_models:2 * n_models], params[2 * n_models:], scale, bool(result.success))


def _objective(params: np.ndarray, model_idx: np.ndarray, prompt_idx: np.ndarray, tanh_z: np.ndarray,
               target: np.ndarray, n_models: int, n_prompts: int, gamma_l2: float, phi_l2: float):
    """Penalised cross-entropy sum_r [softplus(eta_r) - y_r * eta_r] + ridge terms, and its gradient."""
    theta, phi, gamma = params[:n_models], params[n_models:2 * n_models], params[2 * n_models:]
    eta = theta[model_idx] + phi[model_idx] * tanh_z + gamma[prompt_idx]
    loss = np.sum(np.logaddexp(0.0, eta) - target * eta) + 0.5 * gamma_l2 * gamma @ gamma + 0.5 * phi_l2 * phi @ phi
    residual = expit(eta) - target
    grad = np.concatenate([
        np.bincount(model_idx, residual, n_models),
        np.bincount(model_idx, residual * tanh_z, n_models) + phi_l2 * phi,
        np.bincount(prompt_idx, residual, n_prompts) + gamma_l2 * gamma,
    ])
    return float(loss), grad


def _mean_rate_per_model(theta: np.ndarray, gamma: np.ndarray, model_idx: np.ndarray, prompt_idx: np.ndarray,
                         n_models: int, n_prompts: int) -> np.ndarray:
    """Per model, mean of sigmoid(theta_m + gamma_i) over its distinct prompts; NaN for a model with none."""
    pairs = np.unique(model_idx * n_prompts + prompt_idx)
    m, i = pairs // n_prompts, pairs % n_prompts
    totals = np.bincount(m, expit(theta[m] + gamma[i]), n_models)
    counts = np.bincount(m, minlength=n_models)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def _check_penalties(gamma_l2: float, phi_l2: float) -> None:
    if not gamma_l2 > 0.0:
        raise ValueError(f"gamma_l2 must be > 0 (it fixes the level shared by theta and gamma), got {gamma_l2}")
    if not phi_l2 >= 0.0:
        raise ValueError(f"phi_l2 must be >= 0, got {phi_l2}")
