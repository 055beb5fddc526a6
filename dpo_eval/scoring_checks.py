"""The one check of the reward settings shared by `dpo-eval score`, `rerank` and `rewardbench`.

Every scoring command computes r(x, y) = beta * v(y), where v is the summed log-ratio ("sum"), the
per-token mean ("avg"), or, reference-free only, -||per-token log-probs||_2 ("norm", as RewardBench
has it). Checks that belong to one command alone (score's --divergence, rewardbench's --compat, the
token budget, limits) stay in that command's config.
"""

from __future__ import annotations

from collections.abc import Sequence

from dpo_eval.errors import UserError
from dpo_eval.metrics.rewardbench import NORMS as SEQUENCE_NORMS  # ("sum", "avg", "norm")
from dpo_eval.metrics.rewards import NORMS as PAIR_NORMS  # ("sum", "avg"): `score`'s implicit_rewards

__all__ = ["PAIR_NORMS", "SEQUENCE_NORMS", "check_scoring"]


def check_scoring(beta: float, norm: str, is_reference_free: bool, norms: Sequence[str] = SEQUENCE_NORMS) -> None:
    """Raise a one-line UserError naming the flag and its fix unless beta > 0, norm is one of `norms`,
    and norm "norm" (-||per-token log-probs||_2) comes with no reference.

    norms: the norms the command computes (`score` passes PAIR_NORMS, which has no "norm").
    """
    if not beta > 0:
        raise UserError(f"--beta must be positive, got {beta}; give a reward scale such as --beta 0.1")
    if norm not in norms:
        raise UserError(f"--norm must be one of {', '.join(norms)}, got {norm!r}")
    if norm == "norm" and not is_reference_free:
        raise UserError("--norm norm (-||per-token log-probs||_2) is reference-free: add --ref none, "
                        "or use --norm sum or avg with a reference")
