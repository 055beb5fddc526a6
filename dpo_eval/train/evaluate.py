"""Held-out evaluation during training: loss and reward metrics under TRL's eval_ names."""

from __future__ import annotations

import torch

from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.distributed import DistContext
from dpo_eval.engine.runner import compute_pair_logps
from dpo_eval.train.config import TrainConfig
from dpo_eval.train.losses import REFERENCE_FREE, PairLogps, compute_loss
from dpo_eval.train.losses_family import required_extras
from dpo_eval.train.losses_token import TOKEN_LOSSES


def evaluate_policy(model: torch.nn.Module, data, config: TrainConfig, ctx: DistContext) -> dict:
    """Score data.eval (pairs) with the current policy: eval_loss, eval_rewards/*, eval_logps/*.

    KTO trains on unpaired items and TDPO's loss needs token-level KLs, so their held-out figures
    are the implicit rewards beta * log(pi / pi_ref) on the eval pairs (no eval_loss). Listwise on a
    pair (K = 2) is DPO, so its eval_loss is DPO's.
    """
    device = next(model.parameters()).device
    rows = compute_pair_logps(model, data.eval, pad_id=data.pad_id, token_budget=default_token_budget(device),
                              ctx=ctx, show_progress=False, exclude_ids=data.exclude_ids)
    policy = torch.tensor([rows[p.content_key()] for p in data.eval], dtype=torch.float64)
    ref = None
    if config.loss not in REFERENCE_FREE:
        ref = [r.double() for r in data.ref_logps(data.eval, torch.device("cpu"))]
    logps = PairLogps(policy[:, 0], policy[:, 1], ref[0] if ref else None, ref[1] if ref else None,
                      policy[:, 2], policy[:, 3])
    # rewards only; so too for NPO (unpaired) and the losses that need per-pair extras (losses_family)
    is_kto = config.loss in ("kto", "npo", *TOKEN_LOSSES) or bool(required_extras(config.loss, config.loss_params))
    params = {"beta": config.loss_beta} if is_kto else {"beta": config.loss_beta, **config.loss_params}
    name = "dpo" if is_kto or config.loss == "listwise" else config.loss
    out = compute_loss(name, logps, params, 0.0 if is_kto else config.nll_coef)
    chosen, rejected = out.chosen_rewards, out.rejected_rewards
    record = {} if is_kto else {"eval_loss": float(out.losses.mean())}
    record.update({"eval_rewards/chosen": float(chosen.mean()), "eval_rewards/rejected": float(rejected.mean()),
                   "eval_rewards/accuracies": float((chosen > rejected).double().mean()),
                   "eval_rewards/margins": float((chosen - rejected).mean()),
                   "eval_logps/chosen": float(policy[:, 0].mean()), "eval_logps/rejected": float(policy[:, 1].mean())})
    return record
