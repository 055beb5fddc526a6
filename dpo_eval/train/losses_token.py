"""Token-level DPO (TDPO1, TDPO2): DPO plus the sequential forward KL of each response.

Zeng et al. 2024, "Token-level Direct Preference Optimization" (ICML 2024, arXiv:2404.11999),
eqs. 17-19 (TDPO1) and 20-21 (TDPO2), as in the authors' code (`tdpo_loss`). Notation, all (batch,):

    pc, pr, rc, rr, h   as in dpo_eval.train.losses (h = (pc - rc) - (pr - rr))
    kc, kr   SeqKL(x, y_c), SeqKL(x, y_r) = sum_t KL(pi_ref(.|x, y_<t) || pi_theta(.|x, y_<t)),
             the reference-first KL summed over each response's tokens (dpo_eval.engine.seq_kl)
    sg       stop-gradient (detach)

These losses need the reference's full next-token distributions, not only its sequence log-probs:
the trainer keeps the reference live and computes kc, kr with the policy's log-probs in one
chunked projection (the cost is described in dpo_eval.engine.seq_kl). With kc = kr = 0 both reduce
to DPO. TRL 1.16 has no TDPO loss: tests/train/test_losses_token.py pins hand values and
tests/train/test_losses_papers.py compares with the paper's eqs. 19-21 written out, on random inputs.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from dpo_eval.train.loss_base import LossOutput, PairLogps, _logratios, _require_positive
from dpo_eval.train.losses import nll_term

__all__ = ["TOKEN_LOSSES", "tdpo1_loss", "tdpo2_loss", "tdpo_step_loss"]


def _check_kl(logps: PairLogps, chosen_kl: torch.Tensor, rejected_kl: torch.Tensor) -> None:
    for name, value in (("chosen_kl", chosen_kl), ("rejected_kl", rejected_kl)):
        if not isinstance(value, torch.Tensor) or value.shape != logps.policy_chosen.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a (batch,) tensor like the log-probs "
                             f"{tuple(logps.policy_chosen.shape)}, got {shape}: sum the per-token KLs per response")


def _tdpo_output(logits: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, chosen_kl: torch.Tensor,
                 rejected_kl: torch.Tensor, beta: float) -> LossOutput:
    rewards_c = (beta * (chosen + chosen_kl)).detach()
    rewards_r = (beta * (rejected + rejected_kl)).detach()
    return LossOutput(-F.logsigmoid(beta * logits), rewards_c, rewards_r)


def tdpo1_loss(logps: PairLogps, chosen_kl: torch.Tensor, rejected_kl: torch.Tensor, beta: float = 0.1) -> LossOutput:
    """TDPO1 (Zeng et al. 2024, eq. 19).

        loss = -ls(beta * (h - (kr - kc)))
        rewards: beta * (pc - rc + kc), beta * (pr - rr + kr)   (the authors' code logs these)

    chosen_kl, rejected_kl: (batch,) SeqKL of each response (kc, kr), differentiable.
    """
    _require_positive("beta", beta)
    _check_kl(logps, chosen_kl, rejected_kl)
    chosen, rejected = _logratios(logps, "tdpo1_loss")
    logits = (chosen - rejected) - (rejected_kl - chosen_kl)
    return _tdpo_output(logits, chosen, rejected, chosen_kl, rejected_kl, beta)


def tdpo2_loss(logps: PairLogps, chosen_kl: torch.Tensor, rejected_kl: torch.Tensor, beta: float = 0.1,
               alpha: float = 0.5) -> LossOutput:
    """TDPO2 (Zeng et al. 2024, eqs. 20-21): the KL gap scaled by alpha, the chosen KL's gradient stopped.

        loss = -ls(beta * (h - alpha * (kr - sg(kc))))
        rewards: beta * (pc - rc + kc), beta * (pr - rr + kr)

    alpha = 0.5 is the authors' default; alpha = 1 gives TDPO1's value (not its gradient).
    """
    _require_positive("beta", beta)
    _require_positive("alpha", alpha)
    _check_kl(logps, chosen_kl, rejected_kl)
    chosen, rejected = _logratios(logps, "tdpo2_loss")
    logits = (chosen - rejected) - alpha * (rejected_kl - chosen_kl.detach())
    return _tdpo_output(logits, chosen, rejected, chosen_kl, rejected_kl, beta)


TOKEN_LOSSES = {"tdpo1": tdpo1_loss, "tdpo2": tdpo2_loss}


def tdpo_step_loss(name: str, logps: PairLogps, seq_kl: torch.Tensor, params: dict, nll_coef: float = 0.0
                   ) -> LossOutput:
    """TOKEN_LOSSES[name] on packed results: seq_kl (batch, 2), column 0 chosen, 1 rejected; plus the NLL term."""
    output = TOKEN_LOSSES[name](logps, seq_kl[:, 0], seq_kl[:, 1], **params)
    if nll_coef:
        output = replace(output, losses=output.losses + nll_coef * nll_term(logps))
    return output


def probe(name: str, beta: float, params: dict) -> None:
    """Run TOKEN_LOSSES[name] once on a one-pair dummy batch, so its value checks speak at config time."""
    one = torch.ones(1)
    TOKEN_LOSSES[name](PairLogps(-one, -one, -one, -one, one, one), 0 * one, 0 * one, beta=beta, **params)
