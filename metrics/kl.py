"""KL(pi || pi_ref) of a policy from its own samples, with standard errors clustered by prompt.

For samples y ~ pi(.|x) with sequence log-probs log pi(y|x) (policy) and log pi_ref(y|x)
(reference), let r = log pi_ref(y|x) - log pi(y|x) = -logratio. Schulman's estimators
(http://joschu.net/blog/kl-approx.html) of KL(pi || pi_ref) = E_pi[-r]:

    k1 = -r = logratio                 unbiased, high variance, can be negative
    k2 = r^2 / 2                       biased (exact only to second order), low variance, >= 0
    k3 = (e^r - 1) - r                 unbiased (E_pi[e^r] = 1 where pi_ref's support is within pi's), >= 0

All three use the sequence log-ratio of each sample: they estimate the sequence-level KL
E_x KL(pi(.|x) || pi_ref(.|x)). k3 is heavy-tailed when pi_ref gives a sample much more mass than pi
does (e^r grows fast; it is inf past r ~ 709).

Analytic (Rao-Blackwellised): given per sample a = sum_t KL(pi(.|ctx_t) || pi_ref(.|ctx_t)) along the
sampled sequence (full next-token distributions, computed by an engine pass), E_pi[a] is the same
sequence KL with far less variance: only the choice of contexts is random.

Per token: each sample's total divided by its token count, averaged like the totals; and the
ratio of means sum(total) / sum(tokens) over all samples. These are sequence totals spread over the
length, not token-level estimators (k2 and k3 of the sequence log-ratio, not sums of per-token ones).

Standard errors. Samples of one prompt are not independent (they share x), so every figure is a
mean over prompts of per-prompt means, each prompt weighted equally, and its SE is that of a mean of
P independent prompt means m_g:

    mean = (1/P) sum_g m_g,          se = sqrt( sum_g (m_g - mean)^2 / (P (P - 1)) )

The ratio of means R = sum_g T_g / sum_g N_g (T_g, N_g: prompt g's summed totals and tokens) has
the cluster-robust linearised (delta-method) SE

    se(R) = sqrt( P / (P - 1) * sum_g (T_g - R N_g)^2 ) / sum_g N_g.

`iid_se` is the SE if every sample were independent (sample SD / sqrt(n)), for comparison only.
SEs are NaN with fewer than 2 prompts; every figure is NaN for no samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

NAN = float("nan")


@dataclass(frozen=True)
class KLEstimate:
    """One estimator of KL(pi || pi_ref) (nats) from policy samples, with prompt-clustered SEs."""

    name: str
    """"k1", "k2", "k3" (Schulman) or "analytic" (Rao-Blackwellised, from full distributions)."""
    mean: float
    """Sequence KL: mean over prompts of the per-prompt mean of the per-sample estimate."""
    se: float
    """Cluster-robust SE of `mean`: SD of the prompt means / sqrt(n_prompts)."""
    iid_se: float
    """SE of the plain sample mean if samples were independent (SD / sqrt(n_samples)); comparison only."""
    per_token_mean: float
    """Mean over prompts of the per-prompt mean of (per-sample estimate / its token count)."""
    per_token_se: float
    """Cluster-robust SE of `per_token_mean`."""
    per_token_ratio: float
    """Ratio of means: sum of the per-sample estimates / sum of token counts, over all samples."""
    per_token_ratio_se: float
    """Cluster-robust linearised SE of `per_token_ratio`."""
    n_samples: int
    """Samples used."""
    n_prompts: int
    """Distinct prompt ids (clusters)."""


@dataclass(frozen=True)
class KLSummary:
    """All estimates of KL(pi || pi_ref) from one set of policy samples."""

    k1: KLEstimate
    """logratio: unbiased, high variance."""
    k2: KLEstimate
    """logratio^2 / 2: biased, low variance."""
    k3: KLEstimate
    """(e^r - 1) - r with r = -logratio: unbiased, non-negative."""
    analytic: KLEstimate | None
    """From per-sample analytic KL sums; None when they were not given."""


@dataclass(frozen=True)
class LogRatioStats:
    """Mean log pi(y|x) - log pi_ref(y|x) over a fixed set of responses (not samples of pi)."""

    mean: float
    """Mean over prompts of per-prompt mean sequence log-ratios (nats)."""
    se: float
    """Cluster-robust SE of `mean`."""
    per_token_mean: float
    """The same with each log-ratio divided by its response's token count."""
    per_token_se: float
    """Cluster-robust SE of `per_token_mean`."""


@dataclass(frozen=True)
class OffPolicyLogRatios:
    """Policy-vs-reference log-ratios on preference data: OFF-POLICY quantities, NOT a KL.

    The responses were written by someone else, not sampled from pi, so these means estimate no
    divergence: they can be negative and large without pi drifting far. They show where the policy
    moved its mass (DPO typically pushes the rejected log-ratio down faster than it lifts the chosen).
    """

    n: int
    """Pairs used."""
    n_prompts: int
    """Distinct prompt ids (each pair its own when none were given)."""
    chosen: LogRatioStats
    """Log-ratios of the chosen responses."""
    rejected: LogRatioStats
    """Log-ratios of the rejected responses."""


def schulman_estimates(logratio: ArrayLike) -> dict[str, np.ndarray]:
    """Per-sample k1, k2, k3 from sequence log-ratios log pi(y|x) - log pi_ref(y|x), shape (n,)."""
    lr = np.asarray(logratio, dtype=np.float64)
    r = -lr
    with np.errstate(over="ignore"):
        k3 = np.expm1(r) - r
    return {"k1": lr, "k2": 0.5 * lr * lr, "k3": k3}


def kl_from_samples(prompt_id: ArrayLike, policy_logp: ArrayLike, ref_logp: ArrayLike, n_tokens: ArrayLike,
                    analytic_kl: ArrayLike | None = None) -> KLSummary:
    """k1, k2, k3 (and analytic) estimates of KL(pi || pi_ref) from n samples of the policy.

    All arrays are (n,): prompt_id the prompt (cluster) of each sample; policy_logp, ref_logp the
    sequence sums of log-probs of the sampled tokens; n_tokens the sampled tokens counted in those
    sums (> 0); analytic_kl optionally the per-sample sum of per-token analytic KLs. Inputs are not
    modified.
    """
    codes, n_prompts = _clusters(prompt_id)
    policy = _floats(policy_logp, "policy_logp", codes.size)
    ref = _floats(ref_logp, "ref_logp", codes.size)
    tokens = _tokens(n_tokens, "n_tokens", codes.size)
    per_sample = schulman_estimates(policy - ref)
    if analytic_kl is not None:
        per_sample["analytic"] = _floats(analytic_kl, "analytic_kl", codes.size)
    estimates = {name: _estimate(name, values, tokens, codes, n_prompts) for name, values in per_sample.items()}
    return KLSummary(k1=estimates["k1"], k2=estimates["k2"], k3=estimates["k3"], analytic=estimates.get("analytic"))


def offpolicy_logratios(policy_chosen: ArrayLike, ref_chosen: ArrayLike, policy_rejected: ArrayLike,
                        ref_rejected: ArrayLike, chosen_tokens: ArrayLike, rejected_tokens: ArrayLike,
                        prompt_id: ArrayLike | None = None) -> OffPolicyLogRatios:
    """Mean log-ratios log pi - log pi_ref on the chosen and on the rejected responses of n pairs.

    Arrays are (n,) sequence log-prob sums and token counts, one entry per pair (the columns of
    pairs.parquet). prompt_id clusters pairs that share a prompt; None makes each pair its own.
    These are off-policy figures, not KL estimates (see OffPolicyLogRatios).
    """
    n = np.asarray(policy_chosen).size
    codes, n_prompts = _clusters(np.arange(n) if prompt_id is None else prompt_id)
    stats = {}
    for side, policy, ref, tokens in (("chosen", policy_chosen, ref_chosen, chosen_tokens),
                                      ("rejected", policy_rejected, ref_rejected, rejected_tokens)):
        lr = _floats(policy, f"policy_{side}", codes.size) - _floats(ref, f"ref_{side}", codes.size)
        count = _tokens(tokens, f"{side}_tokens", codes.size)
        mean, se = cluster_mean(lr, codes, n_prompts)
        per_token_mean, per_token_se = cluster_mean(lr / count, codes, n_prompts)
        stats[side] = LogRatioStats(mean, se, per_token_mean, per_token_se)
    return OffPolicyLogRatios(n=codes.size, n_prompts=n_prompts, chosen=stats["chosen"], rejected=stats["rejected"])


def cluster_mean(values: np.ndarray, codes: np.ndarray, n_clusters: int) -> tuple[float, float]:
    """(mean of cluster means, its SE sqrt(sum_g (m_g - mean)^2 / (P (P - 1)))); codes in [0, n_clusters)."""
    if n_clusters == 0:
        return NAN, NAN
    means = np.bincount(codes, values, n_clusters) / np.bincount(codes, minlength=n_clusters)
    mean = float(means.mean())
    se = float(means.std(ddof=1) / np.sqrt(n_clusters)) if n_clusters > 1 else NAN
    return mean, se


def cluster_ratio(numerator: np.ndarray, denominator: np.ndarray, codes: np.ndarray,
                  n_clusters: int) -> tuple[float, float]:
    """(sum num / sum den, its cluster-robust SE sqrt(P/(P-1) sum_g (T_g - R N_g)^2) / sum_g N_g)."""
    if n_clusters == 0:
        return NAN, NAN
    totals = np.bincount(codes, numerator, n_clusters)
    sizes = np.bincount(codes, denominator, n_clusters)
    ratio = float(totals.sum() / sizes.sum())
    if n_clusters < 2:
        return ratio, NAN
    residual = totals - ratio * sizes
    return ratio, float(np.sqrt(n_clusters / (n_clusters - 1) * np.sum(residual ** 2)) / sizes.sum())


def _estimate(name: str, values: np.ndarray, tokens: np.ndarray, codes: np.ndarray, n_prompts: int) -> KLEstimate:
    mean, se = cluster_mean(values, codes, n_prompts)
    per_token_mean, per_token_se = cluster_mean(values / tokens, codes, n_prompts)
    ratio, ratio_se = cluster_ratio(values, tokens, codes, n_prompts)
    iid_se = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else NAN
    return KLEstimate(name=name, mean=mean, se=se, iid_se=iid_se, per_token_mean=per_token_mean,
                      per_token_se=per_token_se, per_token_ratio=ratio, per_token_ratio_se=ratio_se,
                      n_samples=int(values.size), n_prompts=n_prompts)


def _clusters(prompt_id: ArrayLike) -> tuple[np.ndarray, int]:
    array = np.asarray(prompt_id, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"prompt_id must be 1-D, got shape {array.shape}")
    ids = pd.Series(array)
    if ids.isna().any():
        raise ValueError(f"prompt_id is missing at sample {int(np.flatnonzero(ids.isna())[0])}: give every sample its prompt")
    codes, uniques = pd.factorize(ids.astype(str), sort=True)
    return codes.astype(np.intp), len(uniques)


def _floats(values: ArrayLike, name: str, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({n},) like prompt_id")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} is not finite at sample {int(np.flatnonzero(bad)[0])}: drop or recompute that sample")
    return array


def _tokens(values: ArrayLike, name: str, n: int) -> np.ndarray:
    tokens = _floats(values, name, n)
    bad = tokens <= 0
    if bad.any():
        raise ValueError(f"{name} must be > 0, got {tokens[bad][0]} at sample {int(np.flatnonzero(bad)[0])}: "
                         "drop empty responses")
    return tokens
