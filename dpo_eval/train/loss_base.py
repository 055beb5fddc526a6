"""What every preference loss shares: its input `PairLogps`, its output `LossOutput`, the checks
`_require_positive` and `_logratios`, and `REFERENCE_FREE` (the paired losses that need no reference
model). The losses themselves live in `dpo_eval.train.losses` (and its family modules), which all
import from here; `LOSSES` and `compute_loss` are in `dpo_eval.train.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["REFERENCE_FREE", "LossOutput", "PairLogps"]

REFERENCE_FREE: frozenset[str] = frozenset({"simpo", "orpo", "cpo"})


@dataclass(frozen=True)
class PairLogps:
    """Summed response log-probs of a batch of pairs; every tensor (batch,) float.

    Validated on construction: all tensors 1-D with the same length (extras too), both reference
    tensors given or both None, and every token count >= 1 (length-normalised losses divide by it).
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor | None  # None for reference-free losses
    ref_rejected: torch.Tensor | None
    chosen_tokens: torch.Tensor  # response token counts (float)
    rejected_tokens: torch.Tensor
    # per-pair inputs some losses need, each (batch,): see dpo_eval.train.losses_family
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.ref_chosen is None) != (self.ref_rejected is None):
            raise ValueError("PairLogps: give both ref_chosen and ref_rejected, or neither (reference-free)")
        tensors = {name: value for name, value in vars(self).items() if value is not None and name != "extras"}
        tensors.update({f"extras[{name!r}]": value for name, value in self.extras.items()})
        for name, value in tensors.items():
            if not isinstance(value, torch.Tensor) or value.ndim != 1:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"PairLogps.{name} must be a 1-D (batch,) tensor, got {shape}: "
                                 "sum the per-token log-probs over each response first")
        shapes = {name: tuple(value.shape) for name, value in tensors.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"PairLogps tensors must all have the same (batch,) shape, got {shapes}")
        for name in ("chosen_tokens", "rejected_tokens"):
            if bool((getattr(self, name) < 1).any()):
                raise ValueError(f"PairLogps.{name} has a count below 1: every response needs at least one "
                                 "token; drop empty responses before computing the loss")


@dataclass(frozen=True)
class LossOutput:
    """Per-item losses and the implicit rewards the method logs."""

    losses: torch.Tensor  # (batch,) per-pair loss (differentiable)
    chosen_rewards: torch.Tensor  # (batch,) detached implicit rewards, for logging
    rejected_rewards: torch.Tensor


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _logratios(logps: PairLogps, loss_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(pc - rc, pr - rr), each (batch,); raises when the reference log-probs are missing."""
    if logps.ref_chosen is None or logps.ref_rejected is None:
        raise ValueError(f"{loss_name} needs reference log-probs but PairLogps.ref_chosen/ref_rejected are "
                         f"None: compute them with the reference model, or use a reference-free loss "
                         f"({', '.join(sorted(REFERENCE_FREE))})")
    return logps.policy_chosen - logps.ref_chosen, logps.policy_rejected - logps.ref_rejected
