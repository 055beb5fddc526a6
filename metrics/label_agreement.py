"""How often a judge agrees with the labels a preference pair was formed from (a loop's training pairs).

Each pair has the judge's preference for its chosen response over its rejected one, p in [0, 1] (the
report's judge, both orders in verdict mode), or NaN when the judge could not score it. A pair is

    agreeing      p > 1/2   (the judge prefers the loop's chosen response)
    disagreeing   p < 1/2
    a tie         p = 1/2   (equal, or two orders that disagree): counted apart, never as disagreement
    unscored      NaN: counted apart

Over the D decisive pairs (agreeing or disagreeing), agreement = A / D. Several pairs can share a
prompt (rso, max_random), so the SE is clustered by prompt, as metrics.kl.cluster_ratio: with A_p the
agreeing and D_p the decisive pairs of prompt p, over the P prompts with a decisive pair,

    se = sqrt(P / (P - 1) * sum_p (A_p - agreement * D_p)^2) / D

and the 95% CI is `drift.cluster_wilson_interval` of the decisive pairs' agreement: Wilson's interval
at the design-effect sample size D / max(1, se^2 / (agreement (1 - agreement) / (D - 1))) (each prompt
counted once when every decisive pair agrees, or none does), as the report's other clustered shares. The
SE is NaN with fewer than two such prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from dpo_eval.metrics.drift import cluster_wilson_interval
from dpo_eval.metrics.kl import cluster_ratio

NAN = float("nan")


@dataclass(frozen=True)
class LabelAgreement:
    """A judge's agreement with the labels of a set of pairs (module docstring)."""

    n_pairs: int
    n_agree: int
    n_disagree: int
    n_ties: int
    n_unscored: int
    n_prompts: int
    """Prompts with at least one decisive pair (the clusters of the SE)."""
    agreement: float
    """n_agree / (n_agree + n_disagree); NaN without a decisive pair."""
    se: float
    """Clustered by prompt; NaN with fewer than two prompts."""
    ci: tuple[float, float]
    """Wilson's interval at the clustered effective size (module docstring); (NaN, NaN) without a decisive pair."""


def label_agreement(preference: ArrayLike, prompt_id: ArrayLike, level: float = 0.95) -> LabelAgreement:
    """Agreement of the judge's preferences (n,) for each pair's chosen response (NaN: unscored) with the
    pairs' labels, its SE clustered by the pairs' prompt ids (n,) (module docstring). Inputs are not changed."""
    values = np.asarray(preference, dtype=np.float64)
    prompts = np.asarray(prompt_id, dtype=object)
    if values.ndim != 1 or values.shape != prompts.shape:
        raise ValueError(f"preference and prompt_id must be 1-D of one length, got {values.shape} and {prompts.shape}")
    scored = ~np.isnan(values)
    if ((values[scored] < 0) | (values[scored] > 1)).any():
        raise ValueError("preference must lie in [0, 1] (NaN for an unscored pair)")
    agree, disagree = scored & (values > 0.5), scored & (values < 0.5)
    decisive = agree | disagree
    codes, uniques = pd.factorize(pd.Series(prompts[decisive]).astype(str), sort=True)
    rate, se = cluster_ratio(agree[decisive].astype(np.float64), np.ones(int(decisive.sum())), codes, len(uniques))
    ci = cluster_wilson_interval(agree[decisive], codes, level)
    return LabelAgreement(n_pairs=int(values.size), n_agree=int(agree.sum()), n_disagree=int(disagree.sum()),
                          n_ties=int((scored & (values == 0.5)).sum()), n_unscored=int((~scored).sum()),
                          n_prompts=len(uniques), agreement=rate, se=se, ci=ci)
