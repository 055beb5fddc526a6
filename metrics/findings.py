"""Findings: named diagnoses of a DPO run with the numbers behind them and what to try next.

Each `check_*` function takes plain numbers (computed by dpo_eval.metrics.drift, .length, the win-rate,
KL and over-optimisation modules) and a `Thresholds`, and returns a `Finding` or None. None of them
imports another metrics module, so any caller can use them.

Codes, when each fires, and its severity. Every finding fires on an effect its 95% CI supports, never on a
point estimate past a threshold (Z95 SEs; a figure without an SE or CI does not fire); SEs are clustered
by prompt or paired as the figures' own (metrics.drift, .length, .winrate, .overoptimization):

- likelihood_displacement: the share of pairs whose chosen log-prob fell, by its clustered Wilson CI's
  low end, is above displacement_share. high.
- drastic_drop: the rejected responses fall (per token, the CI's upper end <= -min_drop_per_token) and
  |mean Δ rejected| >= drastic_drop_ratio * |mean Δ chosen| (sums) by both paired contrasts' lower
  bounds (an intersection-union test; check_drastic_drop). warning.
- degradation: chosen and rejected both falling (slopes on step < 0, last mean Δ/token <=
  -min_drop_per_token) while the margin grows (slope > 0), each by its CI: per-pair OLS slopes on step
  (the reference as step 0) over the pairs every checkpoint scored, clustered by prompt
  (metrics.drift.pair_slopes). high. Run-level, at the last checkpoint.
- dispersion: |mean Δ/token of responses in no pair - that of chosen| - Z95 SE > dispersion_gap_per_token
  (SE of the gap: the two means' clustered SEs combined as independent; they share prompts and move
  together there, so the SE errs wide). warning.
- dispersion_entropy: |relative change of mean next-token entropy| - Z95 SE > entropy_relative_change
  (SE: the delta method for the ratio of the two estimated means, paired over prompts). warning.
- length_inflation: the prompt-paired ratio of mean lengths, by its 95% CI's low end, is above
  length_ratio and the prompt-paired test's p < length_alpha (Wilcoxon signed-rank on per-prompt mean
  lengths, checkpoint - reference, over shared prompts). high if the per-prompt rise in the share hitting
  max_new_tokens is, by its CI, above truncation_increase too, else warning.
- lc_gap: the gap raw - LC win rate's CI (paired bootstrap over prompts) lies wholly beyond ±lc_gap;
  titled by direction (helped / held back by longer / shorter answers: the gap's sign and the
  checkpoint's length against the reference's). Helped: high; held back (the raw rate understates the
  checkpoint): info.
- over_optimisation: the over-optimisation module flagged the checkpoint as past its peak (its drop
  beat k SEs of the paired per-prompt differences plus past_peak_tolerance; one-sided after picking the
  peak as the maximum). high if the drop's bound (drop - k SE) reaches over_optimisation_drop, else warning.
- kl_budget: KL > kl_warn_fraction * kl_budget. high when the CI's low end is above the budget; info
  otherwise (nearly spent, or past the budget with a CI that reaches it).

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
Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile: the half-width of a 95% interval in SEs."""


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
    """Fall from the peak (in the over-optimisation metric's units) that the drop's one-sided bound (drop -
    past_peak_k SE) must reach for an over-optimisation finding to be high."""
    past_peak_k: float = 2.0
    """The past-peak test: the drop from the best checkpoint must exceed past_peak_k SEs of the drop (paired)."""
    past_peak_tolerance: float = 0.0
    """The past-peak test: the drop's one-sided bound (drop - past_peak_k SE) must exceed this (quality units)."""
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
    """Fires when the share's 95% CI (clustered Wilson) lies wholly above t.displacement_share: a share past it
    whose CI still reaches it is not shown to be. high."""
    limit = t.displacement_share
    if not ci[0] > limit:  # a NaN bound compares False: no CI, no finding
        return None
    return Finding(
        code="likelihood_displacement", severity="high", title="Likelihood displacement",
        message=(f"The chosen response lost probability against the reference on {share:.0%} of {n} "
                 "held-out pairs "
                 f"(95% CI {ci[0]:.0%} to {ci[1]:.0%}; mean Δ log π chosen {mean_chosen_delta:+.2f} nats), "
                 f"above the {limit:.0%} threshold."),
        advice=("Add an NLL term on the chosen responses (DPOP / RPO), raise β, or filter pairs whose "
                "chosen and rejected responses are near-identical (Razin et al. 2024)."),
        numbers={"share": share, "ci_low": ci[0], "ci_high": ci[1], "n": float(n),
                 "mean_chosen_delta": mean_chosen_delta},
        threshold=limit, step=step)


@dataclass(frozen=True)
class DropNoise:
    """The SEs the drastic-drop test needs, clustered by prompt (metrics.drift.PairDrift)."""

    chosen_se: float
    """SE of mean Δ_chosen (sums)."""
    rejected_se: float
    """SE of mean Δ_rejected (sums)."""
    cov: float
    """Covariance of the two means (the same pairs give both)."""
    rejected_per_token_se: float
    """SE of the mean Δ_rejected per token."""


NO_NOISE = DropNoise(*(float("nan"),) * 4)


def check_drastic_drop(mean_chosen_delta: float, mean_rejected_delta: float, rejected_delta_per_token: float,
                       t: Thresholds, step: int | None = None, *, noise: DropNoise = NO_NOISE) -> Finding | None:
    """Fires when the rejected responses fall, by their 95% CIs, drastically more than the chosen move.

    With R, C the mean Δ of rejected and chosen (sums) and a = t.drastic_drop_ratio, |R| >= a |C| with R < 0
    holds exactly when both contrasts D+ = -R - a C and D- = -R + a C are >= 0. Each is tested one-sided at
    2.5% with its paired SE, sqrt(se_R^2 + a^2 se_C^2 ± 2 a cov): the finding needs both lower bounds
    D - Z95 SE > 0 (an intersection-union test, level 2.5%), and the per-token fall's upper bound
    (mean + Z95 SE) <= -t.min_drop_per_token. A NaN SE (no noise estimate) never fires.
    """
    a = t.drastic_drop_ratio
    falls = rejected_delta_per_token + Z95 * noise.rejected_per_token_se <= -t.min_drop_per_token
    bounds = [-mean_rejected_delta - sign * a * mean_chosen_delta
              - Z95 * _sqrt_or_nan(noise.rejected_se ** 2 + a * a * noise.chosen_se ** 2 + 2 * sign * a * noise.cov)
              for sign in (1.0, -1.0)]
    if not (falls and all(bound > 0 for bound in bounds)):  # a NaN bound is not > 0: no finding
        return None
    ratio = abs_ratio(mean_rejected_delta, mean_chosen_delta)
    return Finding(
        code="drastic_drop", severity="warning", title="Drastic drop of rejected responses",
        message=(f"Mean Δ log π of rejected responses is {mean_rejected_delta:+.2f} ± {noise.rejected_se:.2f} nats "
                 f"({rejected_delta_per_token:+.3f} per token), {ratio:.1f}x the size of the chosen's "
                 f"{mean_chosen_delta:+.2f} ± {noise.chosen_se:.2f}, and at least {a:g}x by the 95% CIs of both "
                 "paired contrasts: the margin grows mostly by pushing rejected responses down."),
        advice=("The loss is being met by suppressing rejected responses: raise β, add an NLL term "
                "(DPOP / RPO), or use on-policy / regularised variants (Yan et al. 2024)."),
        numbers={"ratio": ratio, "mean_chosen_delta": mean_chosen_delta,
                 "mean_rejected_delta": mean_rejected_delta,
                 "rejected_delta_per_token": rejected_delta_per_token,
                 "contrast_low_plus": bounds[0], "contrast_low_minus": bounds[1]},
        threshold=a, step=step)


def check_degradation(chosen_slope: float, rejected_slope: float, margin_slope: float,
                      chosen_delta_per_token: float, rejected_delta_per_token: float, t: Thresholds,
                      step: int | None = None, *, slope_se: tuple[float, float, float] = (math.nan,) * 3,
                      per_token_se: tuple[float, float] = (math.nan,) * 2) -> Finding | None:
    """Fires when chosen and rejected both fall across the run while the margin grows, each by its 95% CI:
    slope + Z95 SE < 0 for chosen and rejected, margin slope - Z95 SE > 0 (slope_se: chosen, rejected,
    margin; metrics.drift.pair_slopes), and the last per-token Δs' upper ends <= -min_drop_per_token
    (per_token_se: chosen, rejected). A NaN SE never fires: suppression, not preference learning."""
    c_se, r_se, m_se = slope_se
    falling = (chosen_slope + Z95 * c_se < 0 and rejected_slope + Z95 * r_se < 0
               and chosen_delta_per_token + Z95 * per_token_se[0] <= -t.min_drop_per_token
               and rejected_delta_per_token + Z95 * per_token_se[1] <= -t.min_drop_per_token)
    if not (falling and margin_slope - Z95 * m_se > 0):
        return None
    return Finding(
        code="degradation", severity="high", title="Chosen and rejected both falling",
        message=(f"Both log-probs fall as training goes on (chosen {chosen_slope:+.3g} ± {c_se:.2g}, "
                 f"rejected {rejected_slope:+.3g} ± {r_se:.2g} nats per step, per-pair slopes clustered by prompt; "
                 f"now {chosen_delta_per_token:+.3f} and {rejected_delta_per_token:+.3f} per token) "
                 f"while the margin grows ({margin_slope:+.3g} ± {m_se:.2g} per step)."),
        advice=("The model is learning to suppress, not to prefer: stop earlier, raise β, or add an NLL "
                "term on chosen responses (DPOP / RPO) (Yan et al. 2024)."),
        numbers={"chosen_slope": chosen_slope, "rejected_slope": rejected_slope, "margin_slope": margin_slope,
                 "chosen_slope_se": c_se, "rejected_slope_se": r_se, "margin_slope_se": m_se,
                 "chosen_delta_per_token": chosen_delta_per_token,
                 "rejected_delta_per_token": rejected_delta_per_token},
        threshold=t.min_drop_per_token, step=step)


def check_dispersion(unseen_delta_per_token: float, chosen_delta_per_token: float, source: str, t: Thresholds,
                     step: int | None = None, gap_se: float = float("nan")) -> Finding | None:
    """Fires when responses in no pair (`source`, e.g. "reference samples") moved away from the chosen ones by
    more than t.dispersion_gap_per_token nats per token, in either direction, by a gap whose 95% CI
    (gap ± Z95 gap_se) lies wholly beyond it; a NaN gap_se (no SE) never fires."""
    gap = unseen_delta_per_token - chosen_delta_per_token
    if not abs(gap) - Z95 * gap_se > t.dispersion_gap_per_token:
        return None
    direction = "rose" if gap > 0 else "fell"
    return Finding(
        code="dispersion", severity="warning", title=f"Dispersion: {source}",
        message=(f"Log-probs of {source} changed by {unseen_delta_per_token:+.3f} nats per token against "
                 f"{chosen_delta_per_token:+.3f} for chosen responses: they {direction} by {abs(gap):.3f} "
                 f"per token relative to the chosen (95% CI {abs(gap) - Z95 * gap_se:.3f} to "
                 f"{abs(gap) + Z95 * gap_se:.3f})."),
        advice=("Mass is moving to responses the pairs never show: add an NLL / SFT term, raise β, or "
                "train on on-policy pairs (Yan et al. 2024)."),
        numbers={"unseen_delta_per_token": unseen_delta_per_token,
                 "chosen_delta_per_token": chosen_delta_per_token,
                 "gap": gap, "gap_se": gap_se},
        threshold=t.dispersion_gap_per_token, step=step)


def check_entropy_change(policy_entropy: float, ref_entropy: float, t: Thresholds,
                         step: int | None = None, relative_se: float = float("nan")) -> Finding | None:
    """Fires when |policy / reference mean next-token entropy - 1| exceeds t.entropy_relative_change by a 95% CI:
    relative ± Z95 relative_se (metrics.drift.EntropyChange.relative_change_se: the delta method, both means
    estimated, paired over prompts where they are) lies wholly beyond it. A NaN relative_se never fires."""
    relative = policy_entropy / ref_entropy - 1.0 if ref_entropy > 0 else float("nan")
    if not abs(relative) - Z95 * relative_se > t.entropy_relative_change:
        return None
    way = "collapsed" if relative < 0 else "spread out"
    return Finding(
        code="dispersion_entropy", severity="warning", title="Next-token entropy changed",
        message=(f"Mean next-token entropy on prompts is {policy_entropy:.3f} nats against the reference's "
                 f"{ref_entropy:.3f} ({relative:+.0%}, 95% CI {relative - Z95 * relative_se:+.0%} to "
                 f"{relative + Z95 * relative_se:+.0%}): the policy's distribution has {way}."),
        advice="Raise β or stop earlier; check samples for repetition (collapse) or incoherence (spread).",
        numbers={"policy_entropy": policy_entropy, "ref_entropy": ref_entropy, "relative_change": relative,
                 "relative_change_se": relative_se},
        threshold=t.entropy_relative_change, step=step)


def check_length_inflation(mean_ratio: float, p_value: float, truncated_checkpoint: float,
                           truncated_reference: float, t: Thresholds,
                           step: int | None = None, n_paired_prompts: int | None = None, *,
                           ratio_ci: tuple[float, float] = (float("nan"), float("nan")),
                           truncation_rise: tuple[float, float] = (float("nan"), float("nan"))) -> Finding | None:
    """Fires when the length ratio's 95% CI lies wholly above t.length_ratio and the paired test's p <
    t.length_alpha; high when the rise in the share of samples hitting max_new_tokens is, by its 95% CI, above
    t.truncation_increase too.

    mean_ratio, ratio_ci: the prompt-paired ratio of mean lengths over the shared prompts and its CI
    (metrics.length.LengthComparison.paired_ratio). p_value: the prompt-paired test (Wilcoxon signed-rank on
    per-prompt mean lengths, checkpoint minus reference, over the n_paired_prompts prompts both have): samples
    of one prompt share it and both models answer the same prompts. truncation_rise: (mean, SE) of the
    per-prompt rise in the truncated share, paired by prompt. A NaN p or CI never fires; a NaN rise SE is not
    high. truncated_checkpoint / truncated_reference: the shares over all samples, for the message.
    """
    if not (ratio_ci[0] > t.length_ratio and p_value < t.length_alpha):
        return None
    rise, rise_se = truncation_rise
    severity = "high" if rise - Z95 * rise_se > t.truncation_increase else "warning"
    over = "" if n_paired_prompts is None else f" over {n_paired_prompts} prompts"
    numbers = {"mean_ratio": mean_ratio, "ratio_ci_low": ratio_ci[0], "ratio_ci_high": ratio_ci[1],
               "p_value": p_value, "truncated_checkpoint": truncated_checkpoint,
               "truncated_reference": truncated_reference, "truncation_rise": rise, "truncation_rise_se": rise_se}
    if n_paired_prompts is not None:
        numbers["n_paired_prompts"] = float(n_paired_prompts)
    return Finding(
        code="length_inflation", severity=severity, title="Length inflation",
        message=(f"Samples are {mean_ratio:.2f}x the reference's mean length in tokens (95% CI {ratio_ci[0]:.2f} "
                 f"to {ratio_ci[1]:.2f}; paired by prompt, Wilcoxon signed-rank{over}: p = {p_value:.2g}); "
                 f"{truncated_checkpoint:.0%} hit max_new_tokens against {truncated_reference:.0%} for the "
                 "reference."),
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
    """Fires when gap_ci (raw - LC, paired bootstrap over prompts) lies wholly beyond ±t.lc_gap.

    length_ratio: checkpoint / reference mean length (the direction). A positive gap (length helped) is
    high; a negative gap (the raw rate understates) is info.
    """
    gap = raw - lc
    if not (gap_ci[0] > t.lc_gap or gap_ci[1] < -t.lc_gap):  # NaN bounds compare False: no CI, no finding
        return None
    direction = lc_gap_direction(gap, length_ratio)
    severity = "info" if gap < 0 else "high"
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
    # high when the drop's one-sided bound (drop - k SE) reaches over_optimisation_drop; no SE: the point
    shown = drop - (t.past_peak_k * drop_se if drop_se is not None else 0.0)
    severity = "high" if shown >= t.over_optimisation_drop else "warning"
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
    """info above kl_warn_fraction of the budget (or above the budget with a CI that reaches it, or none);
    high when the CI's low end is above the budget: over budget only when the CI says so."""
    budget = t.kl_budget
    if not kl > t.kl_warn_fraction * budget:
        return None
    if kl <= budget:
        severity, state = "info", "nearly spent"
    elif kl_ci is not None and kl_ci[0] > budget:
        severity, state = "high", "overspent"
    else:
        severity, state = "info", "reached (its CI includes the budget)" if kl_ci is not None else "reached (no CI)"
    ci_text = f" (CI {kl_ci[0]:.2f} to {kl_ci[1]:.2f})" if kl_ci is not None else ""
    return Finding(
        code="kl_budget", severity=severity, title=f"KL budget {state}",
        message=(f"KL(policy || reference) is {kl:.2f} nats per sequence{ci_text} against a budget of "
                 f"{budget:.2f}."),
        advice="Raise β, lower the learning rate, or stop earlier to stay near the reference.",
        numbers={"kl": kl, "budget": budget,
                 **({"kl_ci_low": kl_ci[0], "kl_ci_high": kl_ci[1]} if kl_ci else {})},
        threshold=budget, step=step)


def _sqrt_or_nan(variance: float) -> float:
    """sqrt of a variance; NaN for a negative one (rounding, or inconsistent inputs): no SE, no finding."""
    return math.sqrt(variance) if variance >= 0 else float("nan")


def abs_ratio(numerator: float, denominator: float) -> float:
    """|numerator| / |denominator|; inf when only the denominator is 0; NaN when both are."""
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return abs(numerator) / abs(denominator)
