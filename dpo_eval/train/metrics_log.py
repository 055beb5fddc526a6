"""Per-step training metrics with TRL's names, summed over pairs and reduced across ranks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dpo_eval.engine.distributed import DistContext

SUMMED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
          "logps/chosen", "logps/rejected")


@dataclass
class StepMetrics:
    """Sums over the pairs of one optimizer step (this rank); `learning_rate`, `grad_norm` set after."""

    sums: dict = field(default_factory=lambda: dict.fromkeys(SUMMED, 0.0))
    n: int = 0
    learning_rate: float = 0.0
    grad_norm: float = 0.0

    def add(self, out, logps) -> None:
        chosen, rejected = out.chosen_rewards.detach().float(), out.rejected_rewards.detach().float()
        values = {"loss": out.losses.detach().float(), "rewards/chosen": chosen, "rewards/rejected": rejected,
                  "rewards/accuracies": (chosen > rejected).float(), "rewards/margins": chosen - rejected,
                  "logps/chosen": logps.policy_chosen.detach().float(),
                  "logps/rejected": logps.policy_rejected.detach().float()}
        for name, value in values.items():
            self.sums[name] += float(value.sum())
        self.n += len(out.losses)


def reduce_metrics(metrics: StepMetrics, ctx: DistContext) -> dict:
    """Means over every rank's pairs, plus learning_rate and grad_norm."""
    totals = torch.tensor([metrics.sums[k] for k in SUMMED] + [metrics.n], dtype=torch.float64)
    if ctx.is_distributed:
        on_gpu = torch.distributed.get_backend() == "nccl"
        reduced = totals.cuda() if on_gpu else totals
        torch.distributed.all_reduce(reduced)
        totals = reduced.cpu()
    n = float(totals[-1])
    record = {name: float(totals[i]) / n for i, name in enumerate(SUMMED)}
    record.update(learning_rate=metrics.learning_rate, grad_norm=metrics.grad_norm)
    return record
