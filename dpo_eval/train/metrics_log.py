"""Per-step training metrics with TRL's names: sums and counts over items, reduced across ranks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dpo_eval.engine.distributed import DistContext

NAMES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
         "logps/chosen", "logps/rejected")


@dataclass
class StepMetrics:
    """Sums and counts per metric over one optimizer step (this rank); lr and grad_norm set after.

    Paired losses count every metric over pairs. KTO's chosen/rejected rewards are over its
    desirable/undesirable items, and it has no accuracy or margin (a metric with count 0 is not logged).
    """

    sums: dict = field(default_factory=lambda: dict.fromkeys(NAMES, 0.0))
    counts: dict = field(default_factory=lambda: dict.fromkeys(NAMES, 0))
    learning_rate: float = 0.0
    grad_norm: float = 0.0

    def _add(self, name: str, values: torch.Tensor) -> None:
        self.sums[name] += float(values.detach().float().sum())
        self.counts[name] += values.numel()

    def add(self, out, logps) -> None:
        chosen, rejected = out.chosen_rewards.detach().float(), out.rejected_rewards.detach().float()
        self._add("loss", out.losses)
        self._add("rewards/chosen", chosen)
        self._add("rewards/rejected", rejected)
        if chosen.shape == rejected.shape == out.losses.shape:  # paired: one of each per item
            self._add("rewards/accuracies", (chosen > rejected).float())
            self._add("rewards/margins", chosen - rejected)
            self._add("logps/chosen", logps.policy_chosen)
            self._add("logps/rejected", logps.policy_rejected)


def reduce_metrics(metrics: StepMetrics, ctx: DistContext) -> dict:
    """Means over every rank's items, plus learning_rate and grad_norm."""
    totals = torch.tensor([metrics.sums[k] for k in NAMES] + [metrics.counts[k] for k in NAMES],
                          dtype=torch.float64)
    if ctx.is_distributed:
        on_gpu = torch.distributed.get_backend() == "nccl"
        reduced = totals.cuda() if on_gpu else totals
        torch.distributed.all_reduce(reduced)
        totals = reduced.cpu()
    sums, counts = totals[: len(NAMES)], totals[len(NAMES):]
    record = {name: float(sums[i] / counts[i]) for i, name in enumerate(NAMES) if counts[i] > 0}
    record.update(learning_rate=metrics.learning_rate, grad_norm=metrics.grad_norm)
    return record
