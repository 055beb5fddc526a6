"""Findings: named diagnoses of a DPO run with the numbers behind them and what to try next.

Each `check_*` function takes plain numbers (computed by dpo_eval.metrics.drift, .length, the win-rate,
KL and over-optimisation modules) and a `Thresholds`, and returns a `Finding` or None. None of them
imports another metrics module, so any caller can use them.

Codes, when each fires, and its severity:

- likelihood_displacement: share of pairs whose chosen log-prob fell > displacement_share.
  high if the Wilson CI's low end is above it too, else warning.
- drastic_drop: mean Δ/token of rejected <= -min_drop_per_token and
  |mean Δ rejected| >= drastic_drop_ratio * |mean Δ chosen| (sums). warning.
- degradation: chosen and rejected both falling (slopes on step < 0, last mean Δ/token <=
  -min_drop_per_token) while the margin grows (slope > 0). high.
- dispersion: |mean Δ/token of responses in no pair - that of chosen| > dispersion_gap_per_token. warning.
- dispersion_entropy: |relative change of mean next-token entropy| > entropy_relative_change. warning.
- length_inflation: mean token ratio > length_ratio and the prompt-paired test's p < length_alpha
  (Wilcoxon signed-rank on per-prompt mean lengths, checkpoint - reference, over shared prompts).
  high if the share hitting max_new_tokens also rose by > truncation_increase, else warning.
- lc_gap: |raw - LC win rate| > lc_gap and the gap's CI (paired bootstrap over prompts) excludes 0;
  titled by direction (helped / held back by longer / shorter answers: the gap's sign and the
  checkpoint's length against the reference's). Helped: high if the whole CI is above lc_gap, else
  warning; held back (the raw rate understates the checkpoint): info.
- over_optimisation: the over-optimisation module flagged the checkpoint as past its peak (its drop
  beat k SEs of the paired per-prompt differences; one-sided after picking the peak as the maximum).
  high if it fell from the peak by >= over_optimisation_drop, else warning.
- kl_budget: KL > kl_warn_fraction * kl_budget. info up to the budget, warning above it,
  high if the CI's low end is above it.

Papers: Razin et al. 2024 (likelihood displacement), Yan et al. 2024 (3D properties: drastic drop,
degradation, dispersion), Park et al. 2024 (length), Dubois et al. 2024 (LC win rate), Gao et al.
2023 (over-optimisation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

SEVERITIES = ("info", "warning", "high")


@dataclass(frozen=True)
class Finding:
    """One diagnosis, ready to print: a title, a sentence with the numbers, and a sentence of advice."""

    code: str
    """Stable machine name, e.g. "likelihood_displacement"."""
    severity: str
    """One of SEVERITIES: "info", "warning" or "high"."""
    title: str
    """A few words for a heading."""
    message: str
    """What was measured, with the numbers."""
    advice: str
    """What to try."""
    numbers: dict[str, float] = field(default_factory=dict)
    """The figures the decision used, by name."""
    threshold: float = float("nan")
    """The threshold the main figure was compared with."""
    step: int | None = None
    """Training step of the checkpoint it concerns; None for a run-level or unplaced finding."""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass(frozen=True)
class Thresholds:
    """When each finding fires. Defaults are starting points, not laws: override them from your own runs."""

    displacement_share: float = 0.5
    """Share of held-out pairs whose chosen log-prob fell below the reference's (Razin et al. 2024)."""
    drastic_drop_ratio: float = 3.0
    """|mean Δ log π rejected| / |mean Δ log π chosen| (sums) from which a drop is drastic."""
    min_drop_per_token: float = 0.01
    """Nats per token: a mean Δ log π per token must fall at least this far to count as falling."""
    dispersion_gap_per_token: float = 0.05
    """Nats per token: |mean Δ/token of responses in no pair - that of the chosen responses|."""
    entropy_relative_change: float = 0.2
    """|mean policy entropy / mean reference entropy - 1| on prompts."""
    length_ratio: float = 1.2
    """Checkpoint / reference mean length in tokens."""
    length_alpha: float = 0.05
    """Significance level of the prompt-paired (Wilcoxon signed-rank) test that the lengths differ."""
    truncation_increase: float = 0.1
    """Rise (checkpoint - reference) in the share of samples hitting max_new_tokens that makes length high."""
    lc_gap: float = 0.05
    """Raw win rate - length-controlled win rate (fractions, 0.05 = 5 points)."""
    over_optimisation_drop: float = 0.05
    """Fall from the peak (in the over-optimisation metric's units) that makes an over-optimisation high."""
    past_peak_k: float = 2.0
    """The past-peak test: the drop from the best checkpoint must exceed past_peak_k SEs of the drop (paired)."""
    past_peak_tolerance: float = 0.0
    """The past-peak test: and exceed this (in the quality's units) too."""
    kl_budget: float = 10.0
    """KL(policy || reference) in nats per sequence the run may spend."""
    kl_warn_fraction: float = 0.8
    """Share of the KL budget above which an info finding says the budget is nearly spent."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"threshold {f.name} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"threshold {f.name} must be >= 0, got {value}")
        for name in ("displacement_share", "length_alpha", "kl_warn_fraction"):
            if not getattr(self, name) <= 1.0:
                value = getattr(self, name)
                raise ValueError(f"threshold {name} is a fraction: it must be in [0, 1], got {value}")

    @classmethod
    def from_dict(cls, overrides: Mapping[str, float] | None) -> Thresholds:
        """Defaults with `overrides` applied; an unknown key raises ValueError naming the allowed ones."""
        overrides = dict(overrides or {})
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise ValueError(f"unknown threshold(s) {unknown}; allowed: {allowed}")
        return cls(**overrides)


def check_likelihood_displacement(share: float, ci: tuple[float, float], n: int, mean_chosen_delta: float,
                                  t: Thresholds, step: int | None = None) -> Finding | None:
    """Fires when the share of pairs whose chosen log-prob fell exceeds t.displacement_share."""
    limit = t.displacement_share
    if not share > limit:
        return None
    severity = "high" if ci[0] > limit else "warning"
    return Finding(
        code="likelihood_displacement", severity=severity, title="Likelihood displacement",
        message=(f"The chosen response lost probability against the reference on {share:.0%} of {n} "
                 "held-out pairs "
                 f"(95% CI {ci[0]:.0%} to {ci[1]:.0%}; mean Δ log π chosen {mean_chosen_delta:+.2f} nats), "
                 f"above the {limit:.0%} threshold."),
        advice=("Add an NLL term on the chosen responses (DPOP / RPO), raise β, or filter pairs whose "
                "chosen and rejected responses are near-identical (Razin et al. 2024)."),
        numbers={"share": share, "ci_low": ci[0], "ci_high": ci[1], "n": float(n),
                 "mean_chosen_delta": mean_chosen_delta},
        threshold=limit, step=step)


def check_drastic_drop(mean_chosen_delta: float, mean_rejected_delta: float, rejected_delta_per_token: float,
                       t: Thresholds, step: int | None = None) -> Finding | None:
    """Fires when rejected falls (per token <= -min_drop_per_token) >= drastic_drop_ratio x chosen's move."""
    if not rejected_delta_per_token <= -t.min_drop_per_token:
        return None
    ratio = abs_ratio(mean_rejected_delta, mean_chosen_delta)
    if not ratio >= t.drastic_drop_ratio:
        return None
    return Finding(
        code="drastic_drop", severity="warning", title="Drastic drop of rejected responses",
        message=(f"Mean Δ log π of rejected responses is {mean_rejected_delta:+.2f} nats "
                 f"({rejected_delta_per_token:+.3f} per token), {ratio:.1f}x the size of the chosen's "
                 f"{mean_chosen_delta:+.2f}: the margin grows mostly by pushing rejected responses down."),
        advice=("The loss is being met by suppressing rejected responses: raise β, add an NLL term "
                "(DPOP / RPO), or use on-policy / regularised variants (Yan et al. 2024)."),
        numbers={"ratio": ratio, "mean_chosen_delta": mean_chosen_delta,
                 "mean_rejected_delta": mean_rejected_delta,
                 "rejected_delta_per_token": rejected_delta_per_token},
        threshold=t.drastic_drop_ratio, step=step)


def check_degradation(chosen_slope: float, rejected_slope: float, margin_slope: float,
                      chosen_delta_per_token: float, rejected_delta_per_token: float, t: Thresholds,
                      step: int | None = None) -> Finding | None:
    """Fires when chosen and rejected both fall across the run (slopes per step < 0, last per-token Δs <=
    -min_drop_per_token) while the margin grows (slope > 0): suppression, not preference learning."""
    falling = (chosen_slope < 0 and rejected_slope < 0 and chosen_delta_per_token <= -t.min_drop_per_token
               and rejected_delta_per_token <= -t.min_drop_per_token)
    if not (falling and margin_slope > 0):
        return None
    return Finding(
        code="degradation", severity="high", title="Chosen and rejected both falling",
        message=(f"Both log-probs fall as training goes on (chosen {chosen_slope:+.3g}, "
                 f"rejected {rejected_slope:+.3g} nats per step; now {chosen_delta_per_token:+.3f} and "
                 f"{rejected_delta_per_token:+.3f} per token) "
                 f"while the margin grows ({margin_slope:+.3g} per step)."),
        advice=("The model is learning to suppress, not to prefer: stop earlier, raise β, or add an NLL "
                "term on chosen responses (DPOP / RPO) (Yan et al. 2024)."),
        numbers={"chosen_slope": chosen_slope, "rejected_slope": rejected_slope, "margin_slope": margin_slope,
                 "chosen_delta_per_token": chosen_delta_per_token,
                 "rejected_delta_per_token": rejected_delta_per_token},
        threshold=t.min_drop_per_token, step=step)


def check_dispersion(unseen_delta_per_token: float, chosen_delta_per_token: float, source: str, t: Thresholds,
                     step: int | None = None) -> Finding | None:
    """Fires when responses in no pair (`source`, e.g. "reference samples") moved away from the chosen ones by
    more than t.dispersion_gap_per_token nats per token, in either direction."""
    gap = unseen_delta_per_token - chosen_delta_per_token
    if not abs(gap) > t.dispersion_gap_per_token:
        return None
    direction = "rose" if gap > 0 else "fell"
    return Finding(
        code="dispersion", severity="warning", title=f"Dispersion: {source}",
        message=(f"Log-probs of {source} changed by {unseen_delta_per_token:+.3f} nats per token against "
                 f"{chosen_delta_per_token:+.3f} for chosen responses: they {direction} by {abs(gap):.3f} "
                 f"per token relative to the chosen."),
        advice=("Mass is moving to responses the pairs never show: add an NLL / SFT term, raise β, or "
                "train on on-policy pairs (Yan et al. 2024)."),
        numbers={"unseen_delta_per_token": unseen_delta_per_token,
                 "chosen_delta_per_token": chosen_delta_per_token,
                 "gap": gap},
        threshold=t.dispersion_gap_per_token, step=step)


def check_entropy_change(policy_entropy: float, ref_entropy: float, t: Thresholds,
                         step: int | None = None) -> Finding | None:
    """Fires when |policy / reference mean next-token entropy - 1| exceeds t.entropy_relative_change."""
    relative = policy_entropy / ref_entropy - 1.0 if ref_entropy > 0 else float("nan")
    if not abs(relative) > t.entropy_relative_change:
        return None
    way = "collapsed" if relative < 0 else "spread out"
    return Finding(
        code="dispersion_entropy", severity="warning", title="Next-token entropy changed",
        message=(f"Mean next-token entropy on prompts is {policy_entropy:.3f} nats against the reference's "
                 f"{ref_entropy:.3f} ({relative:+.0%}): the policy's distribution has {way}."),
        advice="Raise β or stop earlier; check samples for repetition (collapse) or incoherence (spread).",
        numbers={"policy_entropy": policy_entropy, "ref_entropy": ref_entropy, "relative_change": relative},
        threshold=t.entropy_relative_change, step=step)


def check_length_inflation(mean_ratio: float, p_value: float, truncated_checkpoint: float,
                           truncated_reference: float, t: Thresholds,
                           step: int | None = None, n_paired_prompts: int | None = None) -> Finding | None:
    """Fires when the mean length ratio exceeds t.length_ratio and the paired test's p < t.length_alpha.

    p_value: the prompt-paired test (Wilcoxon signed-rank on per-prompt mean lengths, checkpoint minus
    reference, over the n_paired_prompts prompts both have): samples of one prompt share it and both
    models answer the same prompts, so a test over all samples as independent (Mann-Whitney) is not it.
    A NaN p (no shared prompt, or every difference 0) never fires.
    """
    if not (mean_ratio > t.length_ratio and p_value < t.length_alpha):
        return None
    rise = truncated_checkpoint - truncated_reference
    severity = "high" if rise > t.truncation_increase else "warning"
    over = "" if n_paired_prompts is None else f" over {n_paired_prompts} prompts"
    numbers = {"mean_ratio": mean_ratio, "p_value": p_value, "truncated_checkpoint": truncated_checkpoint,
               "truncated_reference": truncated_reference}
    if n_paired_prompts is not None:
        numbers["n_paired_prompts"] = float(n_paired_prompts)
    return Finding(
        code="length_inflation", severity=severity, title="Length inflation",
        message=(f"Samples are {mean_ratio:.2f}x the reference's mean length in tokens (paired by prompt, "
                 f"Wilcoxon signed-rank{over}: p = {p_value:.2g}); {truncated_checkpoint:.0%} hit "
                 f"max_new_tokens against {truncated_reference:.0%} for the reference."),
        advice=("Length-normalise the loss (SimPO / LN-DPO), add a length penalty (R-DPO, Park et al. "
                "2024), raise β, and read length-controlled win rates."),
        numbers=numbers, threshold=t.length_ratio, step=step)


def lc_gap_direction(gap: float, length_ratio: float) -> str:
    """How length moved the raw win rate: "helped by longer answers" (gap > 0, checkpoint longer than the
    reference: length_ratio > 1), "helped by shorter answers", "held back by longer answers", "held back
    by shorter answers"; "... by length" when the ratio is 1 or unknown."""
    effect = "helped" if gap > 0 else "held back"
    size = "longer answers" if length_ratio > 1 else "shorter answers" if length_ratio < 1 else "length"
    return f"{effect} by {size}"


def check_lc_gap(raw: float, raw_ci: tuple[float, float], lc: float, lc_ci: tuple[float, float],
                 gap_ci: tuple[float, float], length_ratio: float, t: Thresholds,
                 step: int | None = None) -> Finding | None:
    """Fires when |raw - LC| > t.lc_gap and gap_ci (raw - LC, paired bootstrap over prompts) excludes 0.

    length_ratio: checkpoint / reference mean length (the direction). A positive gap (length helped) is a
    warning, high when gap_ci lies wholly above t.lc_gap; a negative gap (the raw rate understates) is info.
    """
    gap = raw - lc
    excludes_zero = gap_ci[0] > 0 or gap_ci[1] < 0  # NaN bounds compare False: no CI, no finding
    if not (abs(gap) > t.lc_gap and excludes_zero):
        return None
    direction = lc_gap_direction(gap, length_ratio)
    severity = "info" if gap < 0 else "high" if gap_ci[0] > t.lc_gap else "warning"
    subject = direction.split(" by ", 1)[1]
    verb = ("add" if gap > 0 else "cost") + ("s" if subject == "length" else "")
    return Finding(
        code="lc_gap", severity=severity, title=f"Win rate {direction}",
        message=(f"Raw win rate {raw:.1%} (CI {raw_ci[0]:.1%} to {raw_ci[1]:.1%}) against length-controlled "
                 f"{lc:.1%} (CI {lc_ci[0]:.1%} to {lc_ci[1]:.1%}): {subject} {verb} {abs(gap) * 100:.1f} points "
                 f"(raw - LC: CI {gap_ci[0] * 100:.1f} to {gap_ci[1] * 100:.1f} points, paired bootstrap over "
                 f"prompts){_length_words(length_ratio)}."),
        advice=_lc_gap_advice(direction),
        numbers={"raw": raw, "raw_ci_low": raw_ci[0], "raw_ci_high": raw_ci[1], "lc": lc,
                 "lc_ci_low": lc_ci[0], "lc_ci_high": lc_ci[1], "gap": gap, "gap_ci_low": gap_ci[0],
                 "gap_ci_high": gap_ci[1], "length_ratio": length_ratio},
        threshold=t.lc_gap, step=step)


def _length_words(length_ratio: float) -> str:
    if not math.isfinite(length_ratio):
        return ""
    return f"; samples are {length_ratio:.2f}x the reference's mean length in tokens"


def _lc_gap_advice(direction: str) -> str:
    if direction.startswith("held back"):
        return "Read the LC win rate: the judge penalises this length difference, so the raw rate understates."
    if direction.endswith("shorter answers"):
        return ("Report the LC win rate: the judge favours these shorter answers; check the samples for truncation "
                "(max_new_tokens) or a judge that rewards brevity.")
    return "Report the LC win rate; length-normalise the loss or add a length penalty (R-DPO, SimPO)."


def check_over_optimisation(is_past_peak: bool, peak_step: int, peak_value: float, value: float, metric: str,
                            t: Thresholds, step: int | None = None, *, drop: float | None = None,
                            drop_se: float | None = None, drop_threshold: float | None = None,
                            se_method: str = "") -> Finding | None:
    """Fires when the over-optimisation module flagged the checkpoint as past the peak of `metric`.

    drop (default peak_value - value), its SE and the threshold it beat come from
    metrics.overoptimization.PastPeak. The peak is the best of the run's checkpoints, picked as the
    maximum, so the test is one-sided after that selection (the drop is biased upward): the message says so.
    """
    if not is_past_peak:
        return None
    drop = peak_value - value if drop is None else drop
    severity = "high" if drop >= t.over_optimisation_drop else "warning"
    se_text = "" if drop_se is None else f" ± {drop_se:.2g}, {se_method} SE"
    beat = "" if drop_threshold is None else f", more than the {drop_threshold:.3g} the test needs"
    return Finding(
        code="over_optimisation", severity=severity, title="Past the peak",
        message=(f"{metric} peaked at {peak_value:.3g} at step {peak_step} and is {value:.3g} now "
                 f"(down {drop:.3g}{se_text}{beat}): training went past its best checkpoint. The peak is the "
                 "best of the run's checkpoints, picked as the maximum, so this is a one-sided test after "
                 "that selection and the drop is biased upward."),
        advice=f"Use the step-{peak_step} checkpoint, stop earlier, or raise β (Gao et al. 2023).",
        numbers={"peak_step": float(peak_step), "peak_value": peak_value, "value": value, "drop": drop,
                 **({"drop_se": drop_se} if drop_se is not None else {}),
                 **({"drop_threshold": drop_threshold} if drop_threshold is not None else {})},
        threshold=t.over_optimisation_drop, step=step)


def check_kl_budget(kl: float, kl_ci: tuple[float, float] | None, t: Thresholds,
                    step: int | None = None) -> Finding | None:
    """info above kl_warn_fraction of the budget, warning above it, high when the CI's low end is above it."""
    budget = t.kl_budget
    if not kl > t.kl_warn_fraction * budget:
        return None
    if kl <= budget:
        severity, state = "info", "nearly spent"
    else:
        severity = "high" if kl_ci is not None and kl_ci[0] > budget else "warning"
        state = "overspent"
    ci_text = f" (CI {kl_ci[0]:.2f} to {kl_ci[1]:.2f})" if kl_ci is not None else ""
    return Finding(
        code="kl_budget", severity=severity, title=f"KL budget {state}",
        message=(f"KL(policy || reference) is {kl:.2f} nats per sequence{ci_text} against a budget of "
                 f"{budget:.2f}."),
        advice="Raise β, lower the learning rate, or stop earlier to stay near the reference.",
        numbers={"kl": kl, "budget": budget,
                 **({"kl_ci_low": kl_ci[0], "kl_ci_high": kl_ci[1]} if kl_ci else {})},
        threshold=budget, step=step)


def abs_ratio(numerator: float, denominator: float) -> float:
    """|numerator| / |denominator|; inf when only the denominator is 0; NaN when both are."""
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return abs(numerator) / abs(denominator)
