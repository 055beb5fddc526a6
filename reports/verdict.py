"""'rewards/chosen is negative and falling: is my run broken?', answered per run from its own saved numbers.

DPO's loss depends only on the margin r_chosen - r_rejected. Both log-probabilities commonly fall while
the margin grows (likelihood displacement, Razin et al. 2024; the 3D properties of Yan et al. 2024), so a
negative, falling rewards/chosen is by itself no sign of a broken run. What decides it here:

    learning      at the run's last checkpoint, reward accuracy's 95% CI above 0.5 and the margin's
                  (mean ± 1.96 SE) above 0, both clustered by prompt; not learning when either CI lies at or
                  below its line (accuracy <= 0.5 or margin <= 0); undetermined when a CI straddles it
    quality       the win rate against the reference's samples, length-controlled when saved (else raw): its
                  CI above 0.5 (better), below (worse), or straddling 0.5 (not distinguishable); unknown
                  without a judge
    past its peak the saved past_peak flag of the run

    broken   not learning, or quality worse than the reference
    look     learning undetermined, or learning but quality unknown, not distinguishable, or past its peak
    ok       learning and quality better than the reference, not past its peak

Only saved numbers are compared (with 0, 0.5 and each other); nothing is computed but mean ± 1.96 SE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dpo_eval.metrics.findings import Z95
from dpo_eval.reports import view
from dpo_eval.reports.view import fmt, fmt_pm, fmt_rate

HEADLINES = {
    "ok": "Not broken: the model separates chosen from rejected and its samples beat the reference's.",
    "look": "Probably not broken, but look closer:",
    "broken": "Likely broken:",
}
NOT_LEARNING = ("the model does not prefer the chosen responses (reward accuracy's 95% CI at or below 50%, "
                "or the margin's at or below 0)")
UNDETERMINED = ("the held-out pairs cannot tell whether the model prefers the chosen responses (reward "
                "accuracy's 95% CI includes 50% or the margin's includes 0)")
NO_CI = ("reward accuracy has no saved CI (results.json of an older dpo-eval): rerun `dpo-eval report` to tell "
         "whether the model prefers the chosen responses")
BACKGROUND = ("DPO's loss only sees the margin between chosen and rejected rewards. Both log-probabilities "
              "usually fall during training (likelihood displacement, Razin et al. 2024; Yan et al. 2024), "
              "so a negative, falling rewards/chosen is common in healthy runs. What matters is whether the "
              "margin grows and whether the model's own samples get better.")


@dataclass(frozen=True)
class RunVerdict:
    """The answer for one run, at its last trained checkpoint."""

    run: str
    step: int
    verdict: str
    """"ok", "look" or "broken" (see the module docstring)."""
    headline: str
    facts: list[str] = field(default_factory=list)
    """Sentences with this run's numbers, in reading order."""


def run_verdicts(results: dict) -> list[RunVerdict]:
    """One RunVerdict per run that has a trained checkpoint with rewards."""
    out = []
    for run in view.run_names(results):
        trained = [c for c in view.run_checkpoints(results, run, trained_only=True) if c.get("rewards")]
        if trained:
            out.append(_verdict(results, run, trained[0], trained[-1]))
    return out


def _verdict(results: dict, run: str, first: dict, last: dict) -> RunVerdict:
    facts = [_chosen_fact(first, last), _margin_fact(last)]
    displacement = _displacement_fact(last)
    facts += [displacement] if displacement else []
    quality, quality_state = _quality_fact(results, last)
    facts.append(quality)
    past = view.dig(results, "past_peak", run)
    is_past = bool(view.dig(past, "is_past_peak"))
    if is_past:
        facts.append(_past_peak_fact(past))
    high = [f for f in view.run_findings(results, run) if f.get("severity") == "high"]
    if high:
        titles = ", ".join(dict.fromkeys(f.get("title", f.get("code", "")) for f in high))
        facts.append(f"{len(high)} high-severity finding(s) for this run (see Findings): {titles}.")
    learning = _learning_state(last)
    if learning == "not learning" or quality_state == "worse":
        verdict = "broken"
        why = [NOT_LEARNING] if learning == "not learning" else []
        why += ["its samples lose to the reference's"] if quality_state == "worse" else []
    elif learning == "learning" and quality_state == "better" and not is_past:
        verdict, why = "ok", []
    else:
        verdict = "look"
        why = {"undetermined": [UNDETERMINED], "no CI": [NO_CI], "learning": []}[learning]
        why += {"unknown": ["no judge measured whether the samples got better"],
               "tied": ["the samples are not distinguishable from the reference's"],
               "better": []}[quality_state]
        why += ["quality fell after its peak: pick an earlier checkpoint"] if is_past else []
    headline = HEADLINES[verdict] + ("" if verdict == "ok" else " " + "; ".join(why) + ".")
    return RunVerdict(run=run, step=last["step"], verdict=verdict, headline=headline, facts=facts)


def _learning_state(ckpt: dict) -> str:
    """"learning", "not learning", "undetermined" or "no CI" (module docstring), from the saved CIs."""
    rewards = ckpt.get("rewards") or {}
    low, high = (view.number(rewards.get(k)) for k in ("accuracy_ci_low", "accuracy_ci_high"))
    margin, se = view.number(rewards.get("mean_margin")), view.number(rewards.get("margin_se"))
    if low is None or high is None or margin is None or se is None:
        return "no CI"
    margin_low, margin_high = margin - Z95 * se, margin + Z95 * se
    if high <= 0.5 or margin_high <= 0:
        return "not learning"
    return "learning" if low > 0.5 and margin_low > 0 else "undetermined"


def _chosen_fact(first: dict, last: dict) -> str:
    now = view.number(view.dig(last, "rewards", "mean_reward_chosen"))
    before = view.number(view.dig(first, "rewards", "mean_reward_chosen"))
    if now is None:
        return "The chosen responses' mean implicit reward was not saved."
    sign = "negative" if now < 0 else "not negative"
    trend = ""
    if before is not None and first is not last:
        trend = f", {'falling' if now < before else 'not falling'} from {before:+.3f} at step {first['step']}"
    return (f"Mean implicit reward of the chosen responses at step {last['step']} is {now:+.3f} "
            f"({sign}{trend}).")


def _margin_fact(ckpt: dict) -> str:
    rewards = ckpt.get("rewards") or {}
    return (f"The margin r_chosen - r_rejected is {view.margin_text(rewards)} (± SE) and the chosen "
            f"response out-rewards the rejected one on {view.reward_accuracy_text(rewards)} of "
            f"{rewards.get('n', 0)} held-out pairs (95% CI in brackets, clustered by prompt).")


def _displacement_fact(ckpt: dict) -> str | None:
    drift = view.pair_drift(ckpt)
    if drift is None:
        return None
    chosen, _ = view.delta(ckpt, "chosen", "total")
    rejected, _ = view.delta(ckpt, "rejected", "total")
    rate = {"share": drift.get("displacement_share"), "share_ci": drift.get("displacement_ci")}
    text = (f"The chosen log-probability fell below the reference's on {fmt_rate(rate, 'share')} of pairs "
            "(95% CI in brackets); "
            f"mean Δ log π is {fmt(chosen, '+.2f')} nats for chosen and {fmt(rejected, '+.2f')} for rejected")
    if chosen is not None and rejected is not None and rejected < chosen <= 0:
        text += ": the margin grows because rejected responses fall faster"
    return text + "."


def _quality_fact(results: dict, ckpt: dict) -> tuple[str, str]:
    """(sentence, state), state "better", "worse", "tied" or "unknown": on the LC win rate when saved."""
    rate = ckpt.get("winrate") or {}
    raw, lc = _rate_state(rate, "win_rate"), _rate_state(rate, "lc_win_rate")
    if raw is None and lc is None:
        flag = view.missing_flag(results, "--judge") or "--judge"
        return (f"Quality on samples is unknown: no judge compared this checkpoint's samples with the "
                f"reference's (add {flag}).", "unknown")
    state = (lc or raw)[1]
    meaning = {"better": "better than the reference", "worse": "worse than the reference",
               "tied": "not distinguishable from the reference"}[state]
    basis = "length-controlled" if lc else "raw"
    text = f"On its own samples it wins {(raw or lc)[0]} of comparisons with the reference's"
    if raw and lc:
        text += f" ({lc[0]} length-controlled)"
    return f"{text}: {meaning} ({basis} win rate's 95% CI against 50%).", state


def _rate_state(rate: dict, name: str) -> tuple[str, str] | None:
    """("62.0% [55.0%, 69.0%]", state) of a saved win rate and its CI, or None when either is missing."""
    ci = rate.get(f"{name}_ci")
    low, high = view.number(view.dig(ci, 0)), view.number(view.dig(ci, 1))
    if view.number(rate.get(name)) is None or low is None or high is None:
        return None
    state = "better" if low > 0.5 else "worse" if high < 0.5 else "tied"
    return fmt_rate(rate, name), state


def _past_peak_fact(past: dict) -> str:
    """The run's saved past-peak figures in words (not metrics' reason, which names the run by its folder)."""
    return (f"Past its peak: quality {fmt(past.get('peak_quality'), '+.3g')} at step {past.get('peak_step')} "
            f"(the best) fell to {fmt(past.get('last_quality'), '+.3g')} at step {past.get('last_step')}, a drop "
            f"of {fmt(past.get('drop'), '.2g')} against the noise threshold {fmt(past.get('threshold'), '.2g')}.")


def recommendation(results: dict) -> str | None:
    """The recommended checkpoint in one sentence: which, why, and its figures; None when none is saved.

    "Why" follows metrics.overoptimization.recommend_checkpoint's rule: nearest the fitted quality-vs-KL peak
    among the checkpoints tied with the best quality (rule "fitted_peak"), else the best measured quality
    (an extrapolated peak is never used, though the reason mentions it)."""
    rec = results.get("recommended")
    if not rec:
        return None
    ckpt = next((c for c in results.get("checkpoints", [])
                 if c["run"] == rec["run"] and c["step"] == rec["step"]), {})
    estimator = view.kl_estimator(results)
    kl = view.dig(ckpt, "kl", estimator) or {}
    figures = [f"KL {fmt_pm(kl.get('mean', rec.get('kl')), kl.get('se'))} nats"]
    rate = ckpt.get("winrate") or {}
    for name, label in (("lc_win_rate", "length-controlled win rate"), ("win_rate", "win rate")):
        if view.number(rate.get(name)) is not None:
            figures.append(f"{label} against the reference {fmt_rate(rate, name)}")
            break
    source = view.dig(ckpt, "quality", "source")
    source = f"quality ({source.replace(' - ', ' − ')})" if source else "quality"
    figures.append(f"{source} {fmt_pm(rec.get('quality'), rec.get('quality_se'), signed=True)}")
    return (f"Use {view.checkpoint_name(results, rec['run'], rec['step'])}: {_why(results, rec)} "
            f"({'; '.join(figures)}).")


def _why(results: dict, rec: dict) -> str:
    fit = view.dig(results, "fits", "kl_quality") or {}
    best = fit.get("best")
    peak = view.number(view.dig(fit, best, "peak_kl")) if isinstance(best, str) else None
    if peak is not None and rec.get("rule") == "fitted_peak":
        form = view.FORM_NAMES.get(best, str(best))
        return (f"of the checkpoints whose quality is within one SE of the best, its KL is nearest the peak of "
                f"the fitted {form} curve of quality against KL (KL {fmt(peak, '.2g')})")
    return "it has the best measured quality of the evaluated checkpoints"
