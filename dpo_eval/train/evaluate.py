"""Held-out evaluation during training: loss and reward metrics under TRL's eval_ names."""

from __future__ import annotations

import numpy as np
import torch

from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.distributed import DistContext
from dpo_eval.engine.runner import compute_batch, compute_pair_logps
from dpo_eval.train.config import TrainConfig
from dpo_eval.train.losses import PairLogps, compute_loss


def _eval_reference(model_data, device) -> np.ndarray | None:
    if model_data.ref_model is not None:
        return np.array(compute_batch(model_data.ref_model, [[p] for p in model_data.eval], model_data.pad_id,
                                      model_data.exclude_ids))[:, :2]
    return model_data.ref_eval


def evaluate_policy(model: torch.nn.Module, data, config: TrainConfig, ctx: DistContext) -> dict:
    """Score data.eval with the current policy; returns eval_loss, eval_rewards/*, eval_logps/*."""
    device = next(model.parameters()).device
    rows = compute_pair_logps(model, data.eval, pad_id=data.pad_id, token_budget=default_token_budget(device),
                              ctx=ctx, show_progress=False, exclude_ids=data.exclude_ids)
    policy = torch.tensor([rows[p.content_key()] for p in data.eval], dtype=torch.float64)
    ref = _eval_reference(data, device)
    ref_t = None if ref is None else torch.tensor(ref, dtype=torch.float64)
    logps = PairLogps(policy[:, 0], policy[:, 1], None if ref_t is None else ref_t[:, 0],
                      None if ref_t is None else ref_t[:, 1], policy[:, 2], policy[:, 3])
    out = compute_loss(config.loss, logps, {"beta": config.beta, **config.loss_params}, config.nll_coef)
    chosen, rejected = out.chosen_rewards, out.rejected_rewards
    return {"eval_loss": float(out.losses.mean()), "eval_rewards/chosen": float(chosen.mean()),
            "eval_rewards/rejected": float(rejected.mean()),
            "eval_rewards/accuracies": float((chosen > rejected).double().mean()),
            "eval_rewards/margins": float((chosen - rejected).mean()),
            "eval_logps/chosen": float(policy[:, 0].mean()), "eval_logps/rejected": float(policy[:, 1].mean())}
