"""Bradley–Terry ratings from pairwise comparisons (Bradley & Terry, 1952).

    P(a beats b) = sigmoid(r_a - r_b)

Ratings r are on the natural-logit scale: a difference of 1 means odds of e:1. They are the
maximum-likelihood estimate with soft labels: minimise

    sum over comparisons [softplus(r_a - r_b) - p * (r_a - r_b)] + l2 / 2 * |r|^2

(p the preference in [0, 1]), with L-BFGS-B and an analytic gradient, then shift so that the anchor
model is 0. The tiny L2 (1e-6 by default) only matters where the likelihood has no finite optimum:
a model that wins (or loses) every comparison gets a large finite rating (about +-10 to 15 logits,
read it as "beyond measurement") instead of diverging. Elsewhere it moves ratings by ~1e-6.

CIs: percentile bootstrap over comparisons (rows), refitting each resample; a model not connected
to the anchor in a resample has no rating there and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit

from dpo_eval.metrics.bootstrap import check_bootstrap_args, percentile_cis, resample_indices

COLUMNS = ("model_a", "model_b", "preference")


@dataclass(frozen=True)
class BTRatings:
    """Bradley–Terry ratings of every model in a comparisons frame."""

    ratings: dict[str, float]
    """Per model: rating on the logit scale, the anchor at 0; P(a beats b) = sigmoid(r_a - r_b)."""
    ci: dict[str, tuple[float, float]]
    """Per model: percentile-bootstrap CI of its rating (the anchor's is (0, 0))."""
    anchor: str | None
    """The model fixed at rating 0; None for an empty frame without a given anchor."""
    n: int
    """Scored comparisons (preference not NaN) the ratings are fitted on."""
    n_unscored: int
    """Comparisons with preference NaN: left out."""


def fit_bradley_terry(frame: pd.DataFrame, *, anchor: str | None = None, seed: int = 0, n_resamples: int = 500,
                      level: float = 0.95, l2: float = 1e-6) -> BTRatings:
    """Fit Bradley–Terry ratings to `frame` (columns model_a, model_b, preference = P(a beats b) or NaN).

    anchor defaults to the alphabetically first model. Raises when the comparison graph is not
    connected (ratings in separate components cannot be compared). An empty frame (or one with no
    scored row) gives empty ratings.
    """
    check_bootstrap_args(n_resamples, level)
    if not l2 > 0.0:
        raise ValueError(f"l2 must be > 0 (it keeps all-win models finite), got {l2}")
    a_idx, b_idx, target, models, n_unscored = _encode(frame)
    if target.size == 0:
        return BTRatings(ratings={}, ci={}, anchor=anchor, n=0, n_unscored=n_unscored)
    anchor = str(models[0]) if anchor is None else anchor
    if anchor not in models:
        raise ValueError(f"anchor {anchor!r} has no scored comparison; models: {list(models)}")
    k_anchor = int(np.searchsorted(models, anchor))
    n_models = len(models)
    ones = np.ones(target.size)
    ratings = _fit(a_idx, b_idx, ones, target, n_models, l2, np.zeros(n_models))
    ratings = ratings - ratings[k_anchor]
    linked = _linked_to(k_anchor, a_idx, b_idx, n_models)
    if not linked.all():
        raise ValueError(f"comparisons do not link {list(models[~linked])} to anchor {anchor!r}: "
                         "add comparisons between the groups, or fit them separately")
    draws = np.full((n_resamples, n_models), np.nan)
    for b, draw in enumerate(resample_indices(target.size, n_resamples, seed)):
        weights = np.bincount(draw, minlength=target.size).astype(float)
        fitted = _fit(a_idx, b_idx, weights, target, n_models, l2, ratings)
        present = weights > 0
        reach = _linked_to(k_anchor, a_idx[present], b_idx[present], n_models)
        draws[b] = np.where(reach, fitted - fitted[k_anchor], np.nan)
    ci = percentile_cis(draws, models, level)
    return BTRatings(ratings={str(name): float(r) for name, r in zip(models, ratings)}, ci=ci, anchor=anchor,
                     n=int(target.size), n_unscored=n_unscored)


def _encode(frame: pd.DataFrame):
    """(a codes, b codes, preferences, sorted model names, n unscored) of the scored rows."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if len(frame) and missing:
        raise ValueError(f"comparisons frame lacks columns {missing}; needs {list(COLUMNS)}")
    if len(frame) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0), np.array([], dtype=object), 0
    pref = frame["preference"].to_numpy(dtype=np.float64)
    scored = ~np.isnan(pref)
    bad = scored & ~((pref >= 0.0) & (pref <= 1.0))
    if bad.any():
        raise ValueError(f"preference must be P(model_a beats model_b) in [0, 1] or NaN; got {pref[bad][:3].tolist()}")
    rows = frame.loc[scored]
    if rows["model_a"].isna().any() or rows["model_b"].isna().any():
        raise ValueError("model_a and model_b must not be missing in scored rows")
    names_a, names_b = rows["model_a"].astype(str).to_numpy(), rows["model_b"].astype(str).to_numpy()
    same = names_a == names_b
    if same.any():
        raise ValueError(f"a model compared with itself carries no information: drop rows where model_a == model_b "
                         f"(first: {names_a[same][0]!r})")
    models = np.unique(np.concatenate([names_a, names_b]))
    return (np.searchsorted(models, names_a), np.searchsorted(models, names_b), pref[scored], models,
            int((~scored).sum()))


def _fit(a_idx: np.ndarray, b_idx: np.ndarray, weights: np.ndarray, target: np.ndarray, n_models: int,
         l2: float, start: np.ndarray) -> np.ndarray:
    """Ratings minimising the weighted soft-label cross-entropy plus l2 / 2 * |r|^2 (not yet anchored)."""
    pair = a_idx * n_models + b_idx
    keys, inverse = np.unique(pair, return_inverse=True)
    count = np.bincount(inverse, weights, len(keys))
    wins = np.bincount(inverse, weights * target, len(keys))
    args = (keys // n_models, keys % n_models, count, wins, n_models, l2)
    result = minimize(_objective, start, args=args, jac=True, method="L-BFGS-B",
                      options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8})
    return result.x


def _objective(r: np.ndarray, a: np.ndarray, b: np.ndarray, count: np.ndarray, wins: np.ndarray, n_models: int,
               l2: float):
    """Per ordered pair: count * softplus(d) - wins * d with d = r_a - r_b, summed, plus the L2; and gradient."""
    d = r[a] - r[b]
    loss = np.sum(count * np.logaddexp(0.0, d) - wins * d) + 0.5 * l2 * r @ r
    g = count * expit(d) - wins
    grad = np.bincount(a, g, n_models) - np.bincount(b, g, n_models) + l2 * r
    return float(loss), grad


def _linked_to(k: int, a_idx: np.ndarray, b_idx: np.ndarray, n_models: int) -> np.ndarray:
    """Boolean per model: connected to model k by some chain of comparisons."""
    graph = coo_matrix((np.ones(a_idx.size), (a_idx, b_idx)), shape=(n_models, n_models))
    _, labels = connected_components(graph, directed=False)
    return labels == labels[k]
