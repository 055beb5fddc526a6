"""The rest of the DPO family: f-DPO, LD-DPO, SPPO, Rainbow-PO switches, and NPO; one small pure function each.

Same conventions as `dpo_eval.train.losses` (pc, pr, rc, rr, nc, nr, ls; per-item losses reduced by the
caller; rewards detached). Some losses need per-pair inputs besides the summed log-probs; they read
them from `PairLogps.extras` by these names, all (batch,):

    policy_chosen_tail, policy_rejected_tail   LD-DPO: log-prob of the tokens beyond the pair's shared
    ref_chosen_tail, ref_rejected_tail          length L = min(nc, nr) (0 for the shorter response)
    chosen_win_prob, rejected_win_prob          SPPO: estimated P(y > pi_t | x) of each response, in [0, 1]
    ref_entropy                                 Rainbow-PO contextual scaling: the reference's mean
                                                next-token entropy over the pair's response tokens,
                                                divided by log(vocabulary size), in (0, 1]

`required_extras(name, params)` says which a loss needs. `FAMILY_LOSSES` holds the paired losses
(`dpo_eval.train.losses.LOSSES` includes them); NPO learns from single negative sequences (like KTO) and is called directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dpo_eval.train.loss_base import LossOutput, PairLogps, _logratios, _require_positive

__all__ = ["DIVERGENCES", "FAMILY_LOSSES", "TAIL_KEYS", "WIN_PROB_KEYS", "f_prime", "fdpo_loss", "ld_dpo_loss", "npo_loss",
           "rainbow_loss", "required_extras", "sppo_loss"]

DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
TAIL_KEYS = ("policy_chosen_tail", "policy_rejected_tail", "ref_chosen_tail", "ref_rejected_tail")
WIN_PROB_KEYS = ("chosen_win_prob", "rejected_win_prob")
ENTROPY_KEY = "ref_entropy"
MAX_EXPONENT = 80.0  # f-DPO: largest exponent in f'(u), so exp stays finite in float32 / bf16


def _extra(logps: PairLogps, key: str, loss_name: str) -> torch.Tensor:
    if key not in logps.extras:
        raise ValueError(f"{loss_name} needs PairLogps.extras[{key!r}] (batch,): "
                         f"{_EXTRA_HINTS.get(key, 'see dpo_eval.train.losses_family')}")
    return logps.extras[key]


_EXTRA_HINTS = {
    **dict.fromkeys(TAIL_KEYS, "the log-prob beyond the shorter response's length (engine.logprobs.prefix_sums)"),
    **dict.fromkeys(WIN_PROB_KEYS, "give chosen_win_prob and rejected_win_prob columns in the data"),
    ENTROPY_KEY: "the reference's normalised response entropy (dpo_eval.train.family_inputs)",
}


def required_extras(name: str, params: dict) -> tuple[str, ...]:
    """The `PairLogps.extras` keys loss `name` needs with hyperparameters `params`."""
    if name == "ld_dpo":
        return TAIL_KEYS
    if name == "sppo":
        return WIN_PROB_KEYS
    if name == "rainbow" and params.get("contextual_scale") is not None:
        return (ENTROPY_KEY,)
    return ()


# ------------------------------------------------------------------------------------------- f-DPO


def f_prime(logratios: torch.Tensor, divergence: str = "reverse_kl", alpha: float = 0.5) -> torch.Tensor:
    """f'(u) at u = pi / pi_ref, from log u, shifted so that f'(1) = 0 (shifts cancel in f-DPO's margin).

        reverse_kl        f(u) = u log u        f'(u) = log u                 (DPO)
        forward_kl        f(u) = -log u         f'(u) = 1 - 1/u
        js_divergence     f(u) = u log u - (u + 1) log((u + 1) / 2)
                                                f'(u) = log(2u / (1 + u)) = log 2 + ls(log u)
        alpha_divergence  f(u) = (u^(1-a) - (1-a) u - a) / (a (a - 1))
                                                f'(u) = (1 - u^(-a)) / a,  0 < a < 1

    Wang et al. 2024, "Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse
    Divergence Constraints" (arXiv:2309.16240), Table 1. alpha -> 0 gives reverse KL, alpha -> 1
    forward KL.

    The exponent of forward_kl (-log u) and alpha_divergence (-a log u) is clamped at
    MAX_EXPONENT = 80 (TRL clamps the alpha-divergence one there too): exp(80) ~ 5.5e34 still fits
    float32 and bf16, where exp(89) is inf and its gradient NaN. Below the clamp (log u < -80,
    resp. -80/a) f' is constant and that response gets no gradient through it.
    """
    if divergence == "reverse_kl":
        return logratios
    if divergence == "forward_kl":
        return -torch.expm1((-logratios).clamp(max=MAX_EXPONENT))
    if divergence == "js_divergence":
        return math.log(2.0) + F.logsigmoid(logratios)
    if divergence == "alpha_divergence":
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1) for the alpha-divergence, got {alpha}: alpha -> 0 is "
                             "reverse_kl and alpha -> 1 forward_kl, choose those divergences instead")
        return -torch.expm1((-alpha * logratios).clamp(max=MAX_EXPONENT)) / alpha
    raise ValueError(f"divergence {divergence!r} is unknown: choose one of {', '.join(DIVERGENCES)}")


def fdpo_loss(logps: PairLogps, beta: float = 0.1, divergence: str = "reverse_kl", alpha: float = 0.5) -> LossOutput:
    """f-DPO, Wang et al. 2024 (arXiv:2309.16240): DPO with an f-divergence constraint in place of reverse KL.

        uc, ur = pc - rc, pr - rr                   (log pi/pi_ref of chosen and rejected)
        loss   = -ls(beta * (f'(exp uc) - f'(exp ur)))          f' from `f_prime`
        rewards: beta * f'(exp uc), beta * f'(exp ur)          (the implicit reward beta f'(pi/pi_ref))

    divergence "reverse_kl" is DPO. `alpha` is used by "alpha_divergence" only; TRL 1.16 writes the
    same loss with f_alpha_divergence_coef = 1 - alpha ((t^(c-1) - 1)/(c-1)) and logs beta * log-ratio
    rewards for every divergence.
    """
    _require_positive("beta", beta)
    chosen, rejected = _logratios(logps, "fdpo_loss")
    chosen_f, rejected_f = f_prime(chosen, divergence, alpha), f_prime(rejected, divergence, alpha)
    losses = -F.logsigmoid(beta * (chosen_f - rejected_f))
    return LossOutput(losses, (beta * chosen_f).detach(), (beta * rejected_f).detach())


# ------------------------------------------------------------------------------------------- LD-DPO


def ld_dpo_loss(logps: PairLogps, beta: float = 0.1, alpha: float = 0.5) -> LossOutput:
    """LD-DPO (length-desensitised DPO), Liu et al. 2024, "Length Desensitization in Direct Preference
    Optimization" (arXiv:2409.06411): the tokens of the longer response beyond the shorter one's
    length L = min(nc, nr) count with weight alpha, in policy and reference alike.

        p^ = p - (1 - alpha) * tail   for p in pc, pr, rc, rr   (tail: log-prob of tokens L+1 .. n)
        loss = -ls(beta * ((pc^ - rc^) - (pr^ - rr^)))
        rewards: beta * (pc^ - rc^), beta * (pr^ - rr^)

    alpha = 1 is DPO. Equals TRL 1.16's DPOTrainer with `ld_alpha` (loss and rewards).
    """
    _require_positive("beta", beta)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (1 is DPO, the paper tunes 0.1-0.9), got {alpha}")
    _logratios(logps, "ld_dpo_loss")
    tails = [_extra(logps, key, "ld_dpo_loss") for key in TAIL_KEYS]
    pc, pr, rc, rr = (base - (1 - alpha) * tail for base, tail in zip(
        (logps.policy_chosen, logps.policy_rejected, logps.ref_chosen, logps.ref_rejected), tails))
    chosen, rejected = pc - rc, pr - rr
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


# --------------------------------------------------------------------------------------------- SPPO


def sppo_loss(logps: PairLogps, beta: float = 0.1) -> LossOutput:
    """SPPO, Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment"
    (arXiv:2405.00675), the squared loss of Algorithm 1 on the two responses of a pair, eta = 1 / beta:

        Pc, Pr = chosen_win_prob, rejected_win_prob          (estimated P(y > pi_t | x), in [0, 1])
        loss   = ((pc - rc) - (Pc - 1/2) / beta) ** 2 + ((pr - rr) - (Pr - 1/2) / beta) ** 2
        rewards: beta * (pc - rc), beta * (pr - rr)

    The reference is the previous iteration's policy pi_t. With Pc = 1 and Pr = 0 this is TRL 1.16's
    "sppo_hard"; the paper estimates P with PairRM against K samples of pi_t. Like TRL we sum the two
    squared terms where the authors' code averages them: the same minimiser and, under AdamW, the same
    steps; the factor 2 shows only against gradient clipping (max_grad_norm).
    """
    _require_positive("beta", beta)
    chosen, rejected = _logratios(logps, "sppo_loss")
    win_chosen, win_rejected = (_extra(logps, key, "sppo_loss") for key in WIN_PROB_KEYS)
    for name, value in zip(WIN_PROB_KEYS, (win_chosen, win_rejected)):
        if bool(((value < 0) | (value > 1) | value.isnan()).any()):
            raise ValueError(f"sppo_loss: {name} must lie in [0, 1] (a win probability), got {value.tolist()}")
    losses = (chosen - (win_chosen - 0.5) / beta) ** 2 + (rejected - (win_rejected - 0.5) / beta) ** 2
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


# ---------------------------------------------------------------------------------------- Rainbow-PO


def rainbow_loss(logps: PairLogps, beta: float = 0.1, length_normalization: bool = False,
                 mixing_alpha: float = 1.0, mixing_margin: float = 0.0,
                 contextual_scale: float | None = None) -> LossOutput:
    """Rainbow-PO switches on the DPO loss, Zhao et al. 2025, "RainbowPO: A Unified Framework for
    Combining Improvements in Preference Optimization" (ICLR 2025, arXiv:2410.04203); the mixing and
    contextual scaling as in the authors' code (Mallows-DPO's dispersion for the latter):

        length_normalization   p -> p / n for pc, pr, rc, rr (as SimPO/TRL's "sigmoid_norm")
        mixing_alpha a, mixing_margin g
                               reference mixed with a margin policy, pi_ref^a * pi_g^(1-a), whose log-ratio
                               is the constant g:  h = (pc - pr) - a * (rc - rr) - (1 - a) * g
        contextual_scale d     (Mallows-DPO's dispersion) the logit times s = -d * log(ref_entropy)
        loss = -ls(beta * s * h), s = 1 when contextual_scale is None
        rewards: beta * (pc - rc), beta * (pr - rr)   (length-normalised when that switch is on)

    Every switch off (False, 1.0, any margin, None) is DPO. g is in the units of the (normalised)
    log-probs. The paper's best combination is length normalisation + mixing + contextual scaling
    (configs/rainbow_po.yaml).
    """
    _require_positive("beta", beta)
    if not 0.0 <= mixing_alpha <= 1.0:
        raise ValueError(f"mixing_alpha must lie in [0, 1] (1: the reference alone, no mixing), got {mixing_alpha}")
    chosen, rejected = _logratios(logps, "rainbow_loss")
    policy_margin = logps.policy_chosen - logps.policy_rejected
    ref_margin = logps.ref_chosen - logps.ref_rejected
    if length_normalization:
        chosen, rejected = chosen / logps.chosen_tokens, rejected / logps.rejected_tokens
        policy_margin = logps.policy_chosen / logps.chosen_tokens - logps.policy_rejected / logps.rejected_tokens
        ref_margin = logps.ref_chosen / logps.chosen_tokens - logps.ref_rejected / logps.rejected_tokens
    logits = policy_margin - mixing_alpha * ref_margin - (1 - mixing_alpha) * mixing_margin
    if contextual_scale is not None:
        _require_positive("contextual_scale", contextual_scale)
        entropy = _extra(logps, ENTROPY_KEY, "rainbow_loss")
        if bool(((entropy <= 0) | (entropy > 1 + 1e-4)).any()):
            raise ValueError(f"rainbow_loss: {ENTROPY_KEY} must lie in (0, 1] (entropy / log vocabulary size)")
        logits = logits * (-contextual_scale * torch.log(entropy.clamp(max=1.0)))  # rounding may pass 1
    losses = -F.logsigmoid(beta * logits)
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


# ---------------------------------------------------------------------------------- NPO (negatives)


def npo_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, is_forget: torch.Tensor,
             token_counts: torch.Tensor, beta: float = 0.1, retain_coef: float = 0.0) -> LossOutput:
    """NPO, Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic Collapse to
    Effective Unlearning" (arXiv:2404.05868); with retain_coef > 0 its NPO+RT variant (NLL on retained data).
    The objective is a sum of two expectations, each over its own set:

        r         = policy_logps - ref_logps                                  (n,)
        objective = mean_{forget} -(2 / beta) ls(-beta r)  +  retain_coef * mean_{retain} (-policy_logps / token_counts)

    The per-item losses returned are each item's share of that objective, so that their mean over the
    n items of this call (the caller's reduction) is it exactly, whatever the two counts n_f, n_r:

        losses = (n / n_f) * -(2 / beta) ls(-beta r)                  where is_forget
                 (n / n_r) * retain_coef * (-policy_logps / token_counts)  elsewhere
        rewards: beta * r, split into retain (chosen) and forget (rejected) items

    (Averaging the rows together instead would weight the retain term retain_coef * n_r / n_f.) With
    gradient accumulation each micro-batch is one call, so a step averages the per-micro-batch objectives.
    NPO is DPO with the chosen term dropped, scaled by 2 / beta: -(2/beta) ls(beta * (0 - r)).
    Args: policy_logps, ref_logps, token_counts (n,) float; is_forget (n,) bool. No TRL 1.16 counterpart.
    """
    _require_positive("beta", beta)
    if not retain_coef >= 0:
        raise ValueError(f"retain_coef must be >= 0, got {retain_coef}")
    shapes = {tuple(t.shape) for t in (policy_logps, ref_logps, is_forget, token_counts)}
    if policy_logps.ndim != 1 or len(shapes) != 1:
        raise ValueError(f"npo_loss: policy_logps, ref_logps, is_forget, token_counts must all be (n,), got {shapes}")
    if is_forget.dtype != torch.bool:
        raise ValueError(f"is_forget must be a bool tensor, got {is_forget.dtype}: use labels.bool()")
    n, n_forget = is_forget.numel(), int(is_forget.sum())
    logratios = policy_logps - ref_logps
    forget = -(2 / beta) * F.logsigmoid(-beta * logratios) * (n / max(n_forget, 1))
    retain = retain_coef * (-policy_logps / token_counts) * (n / max(n - n_forget, 1))
    rewards = (beta * logratios).detach()
    return LossOutput(torch.where(is_forget, forget, retain), rewards[~is_forget], rewards[is_forget])


FAMILY_LOSSES = {"fdpo": fdpo_loss, "ld_dpo": ld_dpo_loss, "sppo": sppo_loss, "rainbow": rainbow_loss}
