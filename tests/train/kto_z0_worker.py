"""Run under torchrun (2 gloo processes): each rank takes kto_step_loss on its half of BATCH.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/train/kto_z0_worker.py OUT_DIR

Rank r writes OUT_DIR/rank{r}.json with its per-item losses. Not a test module itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

BETA = 0.5
# Per item: policy / reference log-probs of the example itself, of its KL companion, and its label.
# Rank 0's KL log-ratios average -2, rank 1's average +3: per rank z0 would be 0 and 3, the
# union's mean is 0.5 (and clamping before averaging would give 1.5).
POLICY = [-5.0, -6.0, -4.0, -7.0, -3.0, -8.0, -5.5, -6.5]
REF = [-5.5, -5.0, -4.5, -6.0, -4.0, -7.0, -5.0, -7.5]
POLICY_KL = [-13.0, -11.0, -12.0, -12.0, -8.0, -6.0, -7.0, -7.0]
REF_KL = [-10.0, -10.0, -10.0, -10.0, -10.0, -10.0, -10.0, -10.0]
DESIRABLE = [True, False, True, False, False, True, True, False]


def batch(items: slice):
    """(PairLogps, is_desirable) of BATCH[items], in kto_step_loss's packed layout."""
    from dpo_eval.train.losses import PairLogps

    def tensor(values):
        return torch.tensor(values[items], dtype=torch.float64)

    ones = torch.ones(len(POLICY[items]), dtype=torch.float64)
    logps = PairLogps(tensor(POLICY), tensor(POLICY_KL), tensor(REF), tensor(REF_KL), ones, ones)
    return logps, torch.tensor(DESIRABLE[items])


def main(out_dir: str) -> None:
    from dpo_eval.engine.distributed import init_distributed, shutdown
    from dpo_eval.train.kto import kto_step_loss

    ctx = init_distributed()
    assert ctx.world_size == 2, "run with --nproc_per_node 2"
    half = len(POLICY) // 2
    logps, desirable = batch(slice(ctx.rank * half, (ctx.rank + 1) * half))
    out = kto_step_loss(logps, desirable, {"beta": BETA}, ctx)
    Path(out_dir, f"rank{ctx.rank}.json").write_text(json.dumps(out.losses.tolist()))
    shutdown(ctx)


if __name__ == "__main__":
    main(sys.argv[1])
