"""Preference-optimisation losses, one small pure function each.

Every paired loss takes a `PairLogps` (summed response log-probs of a batch of pairs) plus its
hyperparameters, and returns a `LossOutput` with the per-pair loss (batch,) and the detached
implicit rewards the method logs. Notation used in the docstrings, all (batch,):

    pc, pr   policy log pi(y_chosen|x), log pi(y_rejected|x)   (summed over response tokens)
    rc, rr   reference log pi_ref(y_chosen|x), log pi_ref(y_rejected|x)
    nc, nr   response token counts of chosen and rejected
    h        (pc - rc) - (pr - rr)                              (the DPO log-ratio margin)
    ls       log sigmoid

Losses are reduced by the caller (usually `.mean()`), as TRL does. `compute_loss` dispatches by
name through the `LOSSES` registry; KTO works on unpaired sequences and is called directly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from dpo_eval.train.loss_base import REFERENCE_FREE, LossOutput, PairLogps, _logratios, _require_positive
from dpo_eval.train.losses_family import FAMILY_LOSSES

__all__ = [
    "LOSSES", "REFERENCE_FREE", "LossOutput", "PairLogps", "compute_loss", "cpo_loss", "dpo_loss",
    "dpop_loss", "hinge_loss", "ipo_loss", "kto_kl_estimate", "kto_loss", "nll_term", "orpo_loss",
    "rdpo_loss", "simpo_loss",
]


# ---------------------------------------------------------------------------------------------- helpers


def _require_smoothing(value: float) -> None:
    if not 0.0 <= value < 0.5:
        raise ValueError(f"label_smoothing is the assumed label-flip probability and must lie in [0, 0.5), "
                         f"got {value}")


def _smoothed_logsigmoid_loss(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-(1 - eps) * ls(logits) - eps * ls(-logits), (batch,): a logistic loss with flipped-label noise eps."""
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2 (Maechler 2012; TRL's ORPO does the same)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


# ------------------------------------------------------------------------------- reference-based losses


def dpo_loss(logps: PairLogps, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOutput:
    """Sigmoid DPO; conservative DPO (cDPO) when label_smoothing > 0.

    DPO, Rafailov et al. 2023, "Direct Preference Optimization" (arXiv:2305.18290), eq. 7;
    cDPO, Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO".

        h    = (pc - rc) - (pr - rr)
        loss = -(1 - eps) * ls(beta * h) - eps * ls(-beta * h)
        rewards: beta * (pc - rc), beta * (pr - rr)

    TRL 1.16's "sigmoid" ignores label_smoothing (its "aot" loss on one pair equals cDPO).
    """
    _require_positive("beta", beta)
    _require_smoothing(label_smoothing)
    chosen, rejected = _logratios(logps, "dpo_loss")
    losses = _smoothed_logsigmoid_loss(beta * (chosen - rejected), label_smoothing)
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


def ipo_loss(logps: PairLogps, beta: float = 0.1) -> LossOutput:
    """IPO, Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences" (arXiv:2310.12036), eq. 17, with beta the paper's tau.

        h_avg = (pc - rc) / nc - (pr - rr) / nr
        loss  = (h_avg - 1 / (2 * beta)) ** 2
        rewards: beta * (pc - rc), beta * (pr - rr)      (un-normalised, as TRL logs them)

    Like TRL 1.16, each log-ratio is divided by its response's token count; the paper writes
    sequence log-ratios, but TRL says the IPO authors confirmed their results used this form.
    """
    _require_positive("beta", beta)
    chosen, rejected = _logratios(logps, "ipo_loss")
    margin = chosen / logps.chosen_tokens - rejected / logps.rejected_tokens
    losses = (margin - 1 / (2 * beta)) ** 2
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


def hinge_loss(logps: PairLogps, beta: float = 0.1) -> LossOutput:
    """SLiC hinge loss, Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human
    Feedback" (arXiv:2305.10425), on the DPO log-ratio margin as in TRL's "hinge".

        loss = relu(1 - beta * h),  h = (pc - rc) - (pr - rr)
        rewards: beta * (pc - rc), beta * (pr - rr)
    """
    _require_positive("beta", beta)
    chosen, rejected = _logratios(logps, "hinge_loss")
    losses = torch.relu(1 - beta * (chosen - rejected))
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


def rdpo_loss(logps: PairLogps, beta: float = 0.1, alpha: float = 0.0) -> LossOutput:
    """R-DPO (length-regularised DPO), Park et al. 2024, "Disentangling Length from Quality in
    Direct Preference Optimization" (arXiv:2403.19159).

        loss = -ls(beta * h + alpha * (nc - nr)),  h = (pc - rc) - (pr - rr)
        rewards: beta * (pc - rc), beta * (pr - rr)

    The paper regularises the RL objective with -alpha * |y|, so the implied reward is
    beta * log(pi / pi_ref) + alpha * |y| and the length margin enters with a plus sign: with
    alpha > 0 a pair whose chosen response is longer already has part of its margin, so it gets
    less gradient (the length preference is explained by length, not learnt). alpha = 0 is DPO.
    """
    _require_positive("beta", beta)
    chosen, rejected = _logratios(logps, "rdpo_loss")
    length_margin = logps.chosen_tokens - logps.rejected_tokens
    losses = -F.logsigmoid(beta * (chosen - rejected) + alpha * length_margin)
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


def dpop_loss(logps: PairLogps, beta: float = 0.1, lambda_: float = 50.0) -> LossOutput:
    """DPO-Positive (DPOP), Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference
    Optimisation with DPO-Positive" (arXiv:2402.13228).

        loss = -ls(beta * (h - lambda_ * relu(rc - pc))),  h = (pc - rc) - (pr - rr)
        rewards: beta * (pc - rc), beta * (pr - rr)

    The penalty is active only when the policy's chosen log-prob falls below the reference's.
    """
    _require_positive("beta", beta)
    if lambda_ < 0:
        raise ValueError(f"lambda_ must be >= 0 (the paper uses 50), got {lambda_}")
    chosen, rejected = _logratios(logps, "dpop_loss")
    penalty = torch.relu(-chosen)  # relu(rc - pc)
    losses = -F.logsigmoid(beta * (chosen - rejected - lambda_ * penalty))
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


# --------------------------------------------------------------------------------- reference-free losses


def nll_term(logps: PairLogps) -> torch.Tensor:
    """Mean token NLL of the chosen response, (batch,): -pc / nc.

    The trainer may add coef * this to any loss (the Llama-3 recipe used coef 0.2).
    """
    return -logps.policy_chosen / logps.chosen_tokens


def simpo_loss(logps: PairLogps, beta: float = 2.0, gamma: float = 1.0, label_smoothing: float = 0.0) -> LossOutput:
    """SimPO, Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free
    Reward" (arXiv:2405.14734), eq. 6; reference-free (ref log-probs are ignored).

        logits = beta * (pc / nc - pr / nr) - gamma
        loss   = -(1 - eps) * ls(logits) - eps * ls(-logits)
        rewards: beta * pc / nc, beta * pr / nr

    gamma is the target reward margin itself, the same quantity as TRL CPOConfig's `simpo_gamma`
    (TRL computes beta * (avg_c - avg_r - simpo_gamma / beta)). The SimPO authors' code takes
    `gamma_beta_ratio` instead: gamma = beta * gamma_beta_ratio. The defaults, beta 2.0 and gamma 1.0
    (gamma / beta = 0.5), are the authors' recipe (paper: beta 2.0-2.5); gamma does not follow a beta
    set in the config, so set both.
    """
    _require_positive("beta", beta)
    _require_smoothing(label_smoothing)
    chosen = beta * logps.policy_chosen / logps.chosen_tokens
    rejected = beta * logps.policy_rejected / logps.rejected_tokens
    losses = _smoothed_logsigmoid_loss(chosen - rejected - gamma, label_smoothing)
    return LossOutput(losses, chosen.detach(), rejected.detach())


def orpo_loss(logps: PairLogps, beta: float = 0.1) -> LossOutput:
    """ORPO, Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"
    (arXiv:2403.07691), eqs. 4-7, with beta the paper's lambda; reference-free.

        ac, ar   = pc / nc, pr / nr                       (mean token log-probs)
        log_odds = (ac - ar) - (log(1 - exp(ac)) - log(1 - exp(ar)))
        loss     = -ac - beta * ls(log_odds)               (chosen NLL + odds-ratio term)
        rewards: beta * ac, beta * ar

    The odds-ratio term and rewards equal TRL's `ORPOTrainer.odds_ratio_loss`. TRL's NLL is the
    cross-entropy of the chosen prompt *and* response, token-averaged over the whole batch; here it
    is the per-pair mean over response tokens, so a pair's loss does not depend on its batch.
    """
    _require_positive("beta", beta)
    chosen = logps.policy_chosen / logps.chosen_tokens
    rejected = logps.policy_rejected / logps.rejected_tokens
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    losses = -chosen - beta * F.logsigmoid(log_odds)
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


def cpo_loss(logps: PairLogps, beta: float = 0.1, label_smoothing: float = 0.0, bc_coef: float = 1.0) -> LossOutput:
    """CPO, Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM
    Performance in Machine Translation" (arXiv:2401.08417), eq. 3 plus the NLL (BC) regulariser.

        logits = beta * (pc - pr)
        loss   = -(1 - eps) * ls(logits) - eps * ls(-logits) + bc_coef * (-pc / nc)
        rewards: beta * pc, beta * pr

    bc_coef is TRL CPOConfig's `cpo_alpha`. The preference term equals TRL's `CPOTrainer.cpo_loss`
    (loss_type="sigmoid"); TRL's NLL is token-averaged over the whole batch's chosen responses,
    here it is each pair's mean token NLL (equal when all chosen responses have the same length).
    """
    _require_positive("beta", beta)
    _require_smoothing(label_smoothing)
    chosen = beta * logps.policy_chosen
    rejected = beta * logps.policy_rejected
    losses = _smoothed_logsigmoid_loss(chosen - rejected, label_smoothing) + bc_coef * nll_term(logps)
    return LossOutput(losses, chosen.detach(), rejected.detach())


# ----------------------------------------------------------------------------------- KTO (unpaired data)


def kto_kl_estimate(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor,
                    mean_across_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """KTO's reference point z0, a detached scalar (Ethayarajh et al. 2024, eq. 7; TRL's KTOTrainer):

        z0 = max(0, (1/R) * sum_r mean_{i in B_r} (policy_kl_i - ref_kl_i))

    policy_kl_logps, ref_kl_logps (n,) are the summed log-probs of this rank's *mismatched* pairs
    (prompt i with the completion of another item of the micro-batch); B_r is the current
    micro-batch of data-parallel rank r and R the number of ranks. `mean_across_ranks` averages a
    detached scalar over the ranks (an all-reduce: `dpo_eval.train.kto.mean_across_ranks`); None
    means one process (R = 1). The clamp comes after the average, as in TRL
    (`gather_for_metrics(kl).mean().clamp(min=0)`). Every rank's micro-batch has the same size, so
    z0 is the mean over the union of the ranks' micro-batches. It is not averaged over gradient
    accumulation steps: each accumulation micro-step has its own z0.
    """
    if policy_kl_logps.ndim != 1 or policy_kl_logps.shape != ref_kl_logps.shape:
        raise ValueError(f"policy_kl_logps {tuple(policy_kl_logps.shape)} and ref_kl_logps "
                         f"{tuple(ref_kl_logps.shape)} must both be (n,)")
    local = (policy_kl_logps - ref_kl_logps).mean().detach()
    averaged = mean_across_ranks(local) if mean_across_ranks is not None else local
    return averaged.detach().clamp(min=0)


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, is_desirable: torch.Tensor,
             kl_estimate: torch.Tensor, beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> LossOutput:
    """KTO, Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"
    (arXiv:2402.01306), eq. 7, for unpaired sequences.

        r    = policy_logps - ref_logps                         (n,)
        z0   = kl_estimate, detached and clamped at >= 0        (scalar; see kto_kl_estimate)
        loss = w_d * (1 - sigmoid(beta * (r - z0)))   where is_desirable
               w_u * (1 - sigmoid(beta * (z0 - r)))   elsewhere
        rewards: beta * r, split into desirable (chosen) and undesirable (rejected) items

    Args: policy_logps, ref_logps (n,) float summed log-probs; is_desirable (n,) bool.
    losses keeps the input order, (n,); the reward tensors may be empty.
    """
    _require_positive("beta", beta)
    for name, weight in (("desirable_weight", desirable_weight), ("undesirable_weight", undesirable_weight)):
        if not weight >= 0:
            raise ValueError(f"{name} must be >= 0, got {weight}")
    if policy_logps.ndim != 1 or policy_logps.shape != ref_logps.shape or is_desirable.shape != policy_logps.shape:
        raise ValueError(f"policy_logps {tuple(policy_logps.shape)}, ref_logps {tuple(ref_logps.shape)} and "
                         f"is_desirable {tuple(is_desirable.shape)} must all be (n,)")
    if is_desirable.dtype != torch.bool:
        raise ValueError(f"is_desirable must be a bool tensor, got {is_desirable.dtype}: use labels.bool()")
    if kl_estimate.numel() != 1:
        raise ValueError(f"kl_estimate must be a scalar tensor, got shape {tuple(kl_estimate.shape)}")
    z0 = kl_estimate.detach().reshape(()).clamp(min=0)
    logratios = policy_logps - ref_logps
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (logratios - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratios)))
    rewards = (beta * logratios).detach()
    losses = torch.where(is_desirable, desirable, undesirable)
    return LossOutput(losses, rewards[is_desirable], rewards[~is_desirable])


# ----------------------------------------------------------------------------------- registry, dispatch

LOSSES: dict[str, Callable[..., LossOutput]] = {
    "dpo": dpo_loss, "ipo": ipo_loss, "hinge": hinge_loss, "rdpo": rdpo_loss,
    "simpo": simpo_loss, "orpo": orpo_loss, "cpo": cpo_loss, "dpop": dpop_loss,
    **FAMILY_LOSSES,  # f-DPO, LD-DPO, SPPO and Rainbow-PO (losses_family.py)
}


def compute_loss(name: str, logps: PairLogps, params: dict, nll_coef: float = 0.0) -> LossOutput:
    """Run the paired loss `name` with hyperparameters `params`, plus nll_coef * nll_term(logps).

    Raises ValueError for an unknown loss, an unknown or missing parameter, a negative nll_coef,
    or reference-free log-probs given to a reference-based loss. For KTO call `kto_loss`.
    """
    if name not in LOSSES:
        hint = " (KTO takes unpaired data: call kto_loss)" if name == "kto" else ""
        raise ValueError(f"unknown loss {name!r}{hint}: choose one of {sorted(LOSSES)}")
    signature = inspect.signature(LOSSES[name])
    valid = list(signature.parameters)[1:]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"loss {name!r} has no parameter(s) {unknown}: valid parameters are {valid}")
    missing = [p for p in valid if signature.parameters[p].default is inspect.Parameter.empty and p not in params]
    if missing:
        raise ValueError(f"loss {name!r} needs parameter(s) {missing}: valid parameters are {valid}")
    if nll_coef < 0:
        raise ValueError(f"nll_coef must be >= 0, got {nll_coef}")
    output = LOSSES[name](logps, **params)
    if nll_coef:
        output = replace(output, losses=output.losses + nll_coef * nll_term(logps))
    return output

