"""Implicit rewards of DPO-family models and their summary on preference pairs.

r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))            (Rafailov et al., 2023, DPO)
Reference-free: r(x, y) = beta * log pi(y|x)
"avg" normalisation divides each log-prob by the response's token count
(SimPO, Meng et al., 2024: r = beta / |y| * log pi(y|x)).

Uncertainty follows the sampling design: held-out pairs that share a prompt are one cluster. The
accuracy's 95% interval is `drift.cluster_wilson_interval` of the wins (Wilson's at the design-effect
sample size; exactly Wilson's when every pair has its own prompt); the margin's SE is the
cluster-robust SE of the pair mean, sqrt(P/(P-1) sum_g (T_g - m n_g)^2) / n (`kl.cluster_ratio`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from dpo_eval.metrics.drift import cluster_wilson_interval, prompt_codes
from dpo_eval.metrics.kl import cluster_ratio

NORMS = ("sum", "avg")


def implicit_rewards(policy_logp: np.ndarray, ref_logp: np.ndarray | None, tokens: np.ndarray,
                     beta: float, norm: str = "sum") -> np.ndarray:
    """beta * (log pi - log pi_ref) per response, each term divided by tokens when norm is "avg".

    ref_logp None means reference-free. Arrays are (n,).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    policy = np.asarray(policy_logp, dtype=np.float64)
    ref = np.zeros_like(policy) if ref_logp is None else np.asarray(ref_logp, dtype=np.float64)
    if policy.shape != ref.shape:
        raise ValueError(f"policy {policy.shape} and reference {ref.shape} log-probs differ in shape")
    diff = policy - ref
    if norm == "avg":
        diff = diff / np.asarray(tokens, dtype=np.float64)
    return beta * diff


@dataclass(frozen=True)
class RewardAccuracy:
    """How often the chosen response out-rewards the rejected one.

    accuracy: wins / n (a tie is not a win); accuracy_ties_half: (wins + ties / 2) / n;
    n_ties: pairs whose |margin| <= tie_tolerance; accuracy_ci_low/high: the accuracy's 95% interval and
    margin_se the mean margin's SE, both clustered by prompt over n_prompts prompts (module docstring).
    """

    n: int
    accuracy: float
    accuracy_ties_half: float
    n_ties: int
    mean_margin: float
    mean_reward_chosen: float
    mean_reward_rejected: float
    n_prompts: int
    accuracy_ci_low: float
    accuracy_ci_high: float
    margin_se: float


def reward_accuracy(reward_chosen: np.ndarray, reward_rejected: np.ndarray,
                    tie_tolerance: float = 0.0, prompt_id: ArrayLike | None = None) -> RewardAccuracy:
    """Accuracy and means of rewards for n pairs; NaN figures when n is 0.

    prompt_id: (n,) each pair's prompt (pairs sharing one are a cluster); None: each pair its own prompt.
    """
    chosen = np.asarray(reward_chosen, dtype=np.float64)
    rejected = np.asarray(reward_rejected, dtype=np.float64)
    n = len(chosen)
    if n == 0:
        nan = float("nan")
        return RewardAccuracy(0, nan, nan, 0, nan, nan, nan, 0, nan, nan, nan)
    margin = chosen - rejected
    ties = np.abs(margin) <= tie_tolerance
    wins = (margin > 0) & ~ties
    codes, n_prompts = prompt_codes(prompt_id, n)
    ci_low, ci_high = cluster_wilson_interval(wins, codes)
    return RewardAccuracy(
        n=n,
        accuracy=float(wins.mean()),
        accuracy_ties_half=float((wins.sum() + 0.5 * ties.sum()) / n),
        n_ties=int(ties.sum()),
        mean_margin=float(margin.mean()),
        mean_reward_chosen=float(chosen.mean()),
        mean_reward_rejected=float(rejected.mean()),
        n_prompts=n_prompts,
        accuracy_ci_low=ci_low,
        accuracy_ci_high=ci_high,
        margin_se=cluster_ratio(margin, np.ones(n), codes, n_prompts)[1],
    )


def summarize_rewards(pairs: pd.DataFrame, tie_tolerance: float = 0.0) -> dict:
    """Overall and per-subset reward accuracy of a frame with reward_chosen, reward_rejected, subset, and
    optionally prompt_key (pairs sharing one are a cluster; without it each pair is its own prompt)."""
    def accuracy(frame: pd.DataFrame) -> RewardAccuracy:
        prompts = frame["prompt_key"] if "prompt_key" in frame.columns else None
        return reward_accuracy(frame["reward_chosen"], frame["reward_rejected"], tie_tolerance, prompts)

    overall = accuracy(pairs)
    per_subset = {str(name): asdict(accuracy(group)) for name, group in pairs.groupby("subset", sort=True)}
    return {**asdict(overall), "tie_tolerance": tie_tolerance, "per_subset": per_subset}
