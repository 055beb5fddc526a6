"""results.json from the store's artifacts: every figure made by a `dpo_eval.metrics` function.

Per row (a checkpoint, or a run's reference at step 0): reward accuracy and margins of the held-out pairs
(metrics.rewards), KL estimates along its own samples (metrics.kl: k1/k2/k3 and the analytic pass),
off-policy log-ratios on the pairs, lengths against the reference's samples (metrics.length), drift on
the pairs and dispersion to unseen responses and prompt entropy (metrics.drift), and with a judge the win
rate against the reference's samples (metrics.winrate) and the quality the KL-vs-quality fit uses:

    quality = win rate - 0.5,   se clustered by prompt (metrics.quality.quality_from_preferences)   (LLM or rule judge)
    quality = mean over prompts of (accuracy - reference's accuracy),  se = std / sqrt(n prompts)   (gold)

where a prompt's accuracy is the share of its samples that contain the gold answer (judge.gold). Each
judged row also gets a per-prompt quality table (quality/{run}/{label}: its mean scored preference - 0.5,
or its accuracy - the reference's). Then per run the drift findings, the past-peak check (its drop's SE
paired over those per-prompt qualities), and over all rows the KL-vs-quality fit and the recommended
checkpoint (metrics.overoptimization). A quality SE that is 0 or undefined is null for that row only;
a statistic that cannot be made is null with its reason in `missing`, never an exception.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dpo_eval.evaluation import frames, loop_rounds, trainers
from dpo_eval.evaluation.config import VLLM_CANNOT
from dpo_eval.evaluation.discover import curves_frame
from dpo_eval.evaluation.plan import Plan, Row, RunPlan
from dpo_eval.evaluation.steps import KL_SAMPLES
from dpo_eval.jsonio import atomic_path, finite_or_null, write_json
from dpo_eval.metrics import drift, findings, kl, length, overoptimization, rewards, winrate
from dpo_eval.metrics.quality import quality_from_preferences
from dpo_eval.reports.schema import RESULTS_SCHEMA_VERSION, schema_errors
from dpo_eval.reports.tables import table_name

JUDGE_MISSING = {"what": "win rates, LC win rates, quality-vs-KL fit and the recommended checkpoint",
                 "why": "no judge was given",
                 "flag": "--judge openai:MODEL (or --judge local:PATH, --judge gold:ANSWERS)"}
NO_JUDGE_REASON = "no judge: quality needs --judge"
STAGE_FIGURES = {"score": "reward accuracy and margins, off-policy log-ratios, pair drift and its findings",
                 "samples": "KL estimates, length figures and their findings",
                 "kl": "analytic KL (k1/k2/k3 come from the samples)",
                 "entropy": "prompt entropy change", "unseen": "dispersion to responses in no pair",
                 "judge": JUDGE_MISSING["what"]}
"""What is null in results.json when a stage did not run (`missing`'s what; the gate matches its words)."""
GOLD_MISSING = {"what": "gold-answer accuracy", "why": "no gold answers were given; quality is the judge's win "
                "rate against the reference minus 0.5", "flag": "--judge gold:ANSWERS"}


def plain(value: object) -> object:
    """Dataclasses, numpy scalars and tuples as JSON-ready dicts, Python numbers and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _se(values: np.ndarray) -> float | None:
    """std (ddof 1) / sqrt(n); None when it is not a positive finite number."""
    se = float(np.std(values, ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")
    return se if math.isfinite(se) and se > 0 else None


# ---------------------------------------------------------------------------------------------- quality


def judge_quality(judgments: pd.DataFrame) -> dict:
    """Win rate - 0.5 over the scored preferences of one checkpoint, its SE clustered by prompt
    (metrics.quality.quality_from_preferences: a prompt's judgments are not independent)."""
    if not judgments["preference"].notna().any():
        return {"source": "judge win rate - 0.5", "value": None, "se": None}
    found = quality_from_preferences(judgments["preference"], judgments["prompt_id"])
    se = found.se if math.isfinite(found.se) and found.se > 0 else None
    return {"source": "judge win rate - 0.5", "value": found.value, "se": se}


def judge_prompt_quality(judgments: pd.DataFrame) -> pd.Series:
    """Per prompt id: the mean of its scored preferences - 0.5 (prompts with none scored left out)."""
    scored = judgments[judgments["preference"].notna()]
    return (scored["preference"].astype(np.float64).groupby(scored["prompt_id"].astype(str)).mean() - 0.5).rename(
        "quality")


def gold_accuracy(samples: pd.DataFrame, answers: dict[str, list[str]]) -> pd.Series:
    """Per prompt id: the share of its samples containing the gold answer (prompts with an answer only)."""
    from dpo_eval.judge.gold import contains_answer

    known = samples[samples["prompt"].isin(answers)]
    correct = [contains_answer(o, answers[p]) for o, p in zip(known["output"], known["prompt"])]
    return pd.Series(correct, index=known.index, dtype=float).groupby(known["prompt_id"]).mean()


def gold_prompt_quality(samples: pd.DataFrame, ref_samples: pd.DataFrame, answers: dict[str, list[str]]) -> pd.Series:
    """Per prompt id both have: accuracy - the reference's accuracy."""
    diff = (gold_accuracy(samples, answers) - gold_accuracy(ref_samples, answers)).dropna()
    return diff.set_axis(diff.index.astype(str)).rename("quality")


def gold_quality(samples: pd.DataFrame, ref_samples: pd.DataFrame, answers: dict[str, list[str]]) -> dict:
    """Mean over prompts of accuracy - the reference's accuracy, and its SE."""
    return _gold_figure(gold_prompt_quality(samples, ref_samples, answers))


def _gold_figure(per_prompt: pd.Series) -> dict:
    diff = per_prompt.to_numpy(np.float64)
    return {"source": "gold accuracy - reference's", "value": float(diff.mean()) if diff.size else None,
            "se": _se(diff)}


def prompt_quality_table(per_prompt: pd.Series) -> pd.DataFrame:
    """The quality/{run}/{label} table: prompt_id, quality (the per-prompt figure the past-peak test pairs)."""
    return pd.DataFrame({"prompt_id": per_prompt.index.astype(str), "quality": per_prompt.to_numpy(np.float64)})


# ---------------------------------------------------------------------------------------------- one row


def _dispersion(unseen: pd.DataFrame | None, entropy: pd.DataFrame | None,
                ref_entropy: pd.DataFrame | None) -> drift.Dispersion | None:
    """Δ log π of the reference's samples and of other prompts' responses; prompt entropy vs the reference.

    Δ's SEs are clustered by the prompt each response was scored under. A part whose stage (unseen,
    entropy) did not run is None; None when neither ran.
    """
    if unseen is None and (entropy is None or ref_entropy is None):
        return None
    found = {}
    for source in ("reference_samples", "other_prompts"):
        part = unseen[unseen["source"] == source] if unseen is not None else ()
        found[source] = (drift.response_drift(part["policy_logp"], part["ref_logp"], part["n_tokens"],
                                              part["prompt_id"]) if len(part) else None)
    change = None
    if entropy is not None and ref_entropy is not None:
        paired = entropy.merge(ref_entropy, on="prompt_id", suffixes=("", "_ref"))
        change = drift.entropy_change(paired["last"], paired["last_ref"])
    return drift.Dispersion(reference_samples=found["reference_samples"], other_prompts=found["other_prompts"],
                            entropy=change)


def _kl(samples: pd.DataFrame | None, has_analytic: bool) -> kl.KLSummary | None:
    """k1/k2/k3 (and analytic when the kl stage ran) over the non-empty untempered samples (the row's
    ``kl_samples``: draws of π itself, so each is an estimate of KL(π‖π_ref)); None when every sample is
    empty or the samples stage did not run."""
    if samples is None:
        return None
    kept = samples[samples["n_tokens"] > 0]
    if kept.empty:
        return None
    return kl.kl_from_samples(kept["prompt_id"], kept["policy_logp"], kept["ref_logp"], kept["n_tokens"],
                              kept["analytic_kl"] if has_analytic else None)


def _winrate(rate: winrate.ModelWinRate | None) -> dict | None:
    if rate is None:
        return None
    return {"n": rate.n, "n_unscored": rate.n_unscored, "win_rate": rate.win_rate,
            "win_rate_ci": list(rate.win_rate_ci), "lc_win_rate": rate.lc_win_rate,
            "lc_win_rate_ci": None if rate.lc_win_rate_ci is None else list(rate.lc_win_rate_ci),
            "lc_gap_ci": None if rate.lc_gap_ci is None else list(rate.lc_gap_ci),
            "position_bias_rate": rate.position_bias_rate, "discrete_win_rate": rate.discrete_win_rate}


def _row_findings(row: Row, comparison, gap, summary: kl.KLSummary | None,
                  thresholds: findings.Thresholds) -> list[findings.Finding]:
    """Length and KL-budget findings of a trained checkpoint (none for the reference row)."""
    if row.is_reference:
        return []
    found = [] if comparison is None else length.length_findings(comparison, gap, thresholds, row.step)
    estimate = None if summary is None else (summary.analytic or summary.k3)
    if estimate is not None and math.isfinite(estimate.mean):
        ci = (estimate.mean - 1.96 * estimate.se, estimate.mean + 1.96 * estimate.se)
        budget = findings.check_kl_budget(estimate.mean, ci if math.isfinite(estimate.se) else None, thresholds,
                                          row.step)
        found += [budget] if budget else []
    return found


def _lengths(samples, ref_samples, pairs, rate):
    """(comparison, LC gap, the `length` figures); all None without samples (the samples stage not run)."""
    if samples is None or ref_samples is None:
        return None, None, None
    comparison = length.compare_lengths(samples, ref_samples)
    has_lc = rate is not None and rate.lc_win_rate is not None and math.isfinite(rate.lc_win_rate)
    gap = length.lc_gap(rate.win_rate, rate.win_rate_ci, rate.lc_win_rate, rate.lc_win_rate_ci, rate.lc_gap_ci,
                        comparison.mean_tokens_ratio) if has_lc else None
    by_length = None if pairs is None else length.pair_reward_length(pairs)
    return comparison, gap, {**plain(comparison), "pair_reward_length": plain(by_length), "lc_gap": plain(gap)}


def _offpolicy(pairs: pd.DataFrame | None) -> kl.OffPolicyLogRatios | None:
    """Off-policy log-ratios on the pairs, SEs clustered by prompt (pairs sharing a prompt_key)."""
    if pairs is None:
        return None
    return kl.offpolicy_logratios(pairs["policy_chosen_logp"], pairs["ref_chosen_logp"], pairs["policy_rejected_logp"],
                                  pairs["ref_rejected_logp"], pairs["chosen_tokens"], pairs["rejected_tokens"],
                                  prompt_id=pairs["prompt_key"])


def checkpoint_result(row: Row, data: dict, rate: winrate.ModelWinRate | None,
                      quality: dict | None) -> tuple[dict, drift.CheckpointDrift | None]:
    """One checkpoints[] object of results.json and its drift state (for the run's findings).

    data: the row's frames: pairs, samples, unseen, entropy, and the run's ref_samples, ref_entropy (None
    where their stage did not run: the figures made from them are null, their findings not checked), and
    has_analytic (whether the kl stage ran), thresholds (when findings fire). Drift needs the pairs (score):
    without them it is None.
    """
    pairs, samples = data["pairs"], data["samples"]
    summary = _kl(data["kl_samples"], data["has_analytic"])
    comparison, gap, length_figures = _lengths(samples, data["ref_samples"], pairs, rate)
    state = None if pairs is None else drift.CheckpointDrift(
        row.step, drift.pair_drift(pairs, pairs["prompt_key"]),
        _dispersion(data["unseen"], data["entropy"], data["ref_entropy"]))
    found = _row_findings(row, comparison, gap, summary, data["thresholds"])
    return {
        "run": row.run, "step": row.step, "label": row.label, "path": row.path, "final_path": row.final_path,
        "fingerprint": row.identity.fingerprint, "is_reference": row.is_reference,
        "rewards": None if pairs is None else plain(rewards.summarize_rewards(pairs)), "winrate": _winrate(rate),
        "quality": quality, "kl": plain(summary), "offpolicy": plain(_offpolicy(pairs)), "length": length_figures,
        "drift": plain(state),
        "findings": [{**plain(f), "run": row.run} for f in found],
    }, state


# ---------------------------------------------------------------------------------------------- one run


def _run_rates(plan: Plan, rp: RunPlan, paths, seed: int) -> tuple[dict, dict]:
    """Per label: ModelWinRate and the judgments frame (empty without a judge).

    Each row's summary is made from its own judgments alone (its own LC fit, bootstraps seeded by the
    run seed and its label), so a checkpoint's figures do not depend on which other rows are reported.
    """
    judged = {row.label: frames.judgments_frame(paths.get("judge", rp.run.name, row.label), row.label)
              for row in rp.rows if paths.get("judge", rp.run.name, row.label) is not None}
    rates = {}
    for label, frame in judged.items():
        summary = winrate.summarize_win_rates(frame.drop(columns="baseline"), seed=seed,
                                              n_resamples=plan.config.bootstrap_resamples,
                                              lc_resamples=plan.config.lc_resamples)
        rates.update({label: summary[label]} if label in summary else {})
    return rates, judged


def _quality(plan: Plan, label: str, judged: dict, samples, ref_samples, answers) -> tuple[dict | None,
                                                                                      pd.DataFrame | None]:
    """The checkpoint's quality figure and its per-prompt table (None, None without judgments)."""
    if label not in judged:
        return None, None
    if answers is not None:
        per_prompt = gold_prompt_quality(samples, ref_samples, answers)
        return _gold_figure(per_prompt), prompt_quality_table(per_prompt)
    return judge_quality(judged[label]), prompt_quality_table(judge_prompt_quality(judged[label]))


def _row_frames(plan: Plan, paths, run: str, label: str) -> dict:
    """A row's frames for checkpoint_result: None for an artifact whose stage did not run.

    samples: those at the user's sampling (win rate, quality, lengths: what the judge sees); kl_samples: the
    untempered ones (KL estimates) with each one's analytic KL where the kl stage ran; one frame when the
    user's sampling is untempered (one artifact). The user's samples carry no analytic KL otherwise.
    """
    def read(kind: str, reader):
        folder = paths.get(kind, run, label)
        return None if folder is None else reader(folder)

    kl_dir = paths.get("kl", run, label)
    kl_samples = read(KL_SAMPLES, lambda folder: frames.samples_frame(folder, kl_dir))
    is_shared = paths.get("samples", run, label) == paths.get(KL_SAMPLES, run, label)
    return {"pairs": read("score", lambda folder: frames.pairs_frame(folder, plan.pairs)),
            "samples": kl_samples if is_shared else read("samples", lambda folder: frames.samples_frame(folder, None)),
            "kl_samples": kl_samples,
            "unseen": read("unseen", frames.unseen_frame), "entropy": read("entropy", frames.entropy_frame),
            "has_analytic": kl_dir is not None}


def run_results(plan: Plan, rp: RunPlan, paths, ref_label: str, tables: dict) -> list[dict]:
    """The checkpoints[] objects of one run, its drift findings placed on their checkpoints."""
    name = rp.run.name
    ref = _row_frames(plan, paths, name, ref_label)  # its samples (the user's) and entropy (no kl pass)
    ref_samples = ref["samples"]
    rates, judged = _run_rates(plan, rp, paths, plan.config.seed)
    answers = _gold_answers(plan)
    results, states = [], []
    for row in rp.rows:
        data = {**_row_frames(plan, paths, name, row.label), "ref_samples": ref_samples,
                "ref_entropy": ref["entropy"], "thresholds": plan.config.thresholds}
        quality, per_prompt = _quality(plan, row.label, judged, data["samples"], ref_samples, answers)
        result, state = checkpoint_result(row, data, rates.get(row.label), quality)
        if per_prompt is not None:
            tables[table_name("quality", name, row.label)] = per_prompt
        results.append(result)
        states += [] if row.is_reference or state is None else [state]
        for kind in ("pairs", "samples"):
            if data[kind] is not None:
                tables[table_name(kind, name, row.label)] = data[kind]
    if ref_samples is not None:
        tables.setdefault(table_name("samples"), ref_samples)
    by_step = {r["step"]: r for r in results}
    for found in drift.drift_findings(states, plan.config.thresholds):
        by_step[found.step]["findings"].append({**plain(found), "run": name})
    return results


def _gold_answers(plan: Plan) -> dict[str, list[str]] | None:
    if not plan.is_judged or not plan.config.judge.startswith("gold:"):
        return None
    from dpo_eval.judge.gold import read_gold_answers

    return read_gold_answers(plan.config.judge.partition(":")[2])


# ---------------------------------------------------------------------------------------------- document


FIT_ESTIMATORS = ("analytic", "k3")
"""KL estimates the fit may use, preferred first: the analytic pass, else k3 (unbiased, never negative)."""


def _kl_mean(checkpoint: dict, estimator: str) -> float | None:
    estimate = (checkpoint["kl"] or {}).get(estimator)
    return estimate.get("mean") if isinstance(estimate, dict) else None


def fit_estimator(checkpoints: list[dict]) -> str:
    """The one KL estimate every point of the fit uses: of FIT_ESTIMATORS, the one that the most checkpoints
    with a quality have (the first on a tie); checkpoints without it are left out of the fit."""
    rated = [c for c in checkpoints if (c["quality"] or {}).get("value") is not None]
    counts = [sum(_kl_mean(c, name) is not None for c in rated) for name in FIT_ESTIMATORS]
    return FIT_ESTIMATORS[counts.index(max(counts))]


def quality_frame(checkpoints: list[dict], estimator: str = "analytic") -> pd.DataFrame:
    """run, step, kl (the ``estimator`` mean), quality, quality_se, implicit_reward: one row per checkpoint with a
    quality and that KL. quality_se and implicit_reward are per row, NaN where that row has none (an SE of 0 or
    undefined, or no score stage): never dropped for the whole frame."""
    rows = []
    for c in checkpoints:
        value = (c["quality"] or {}).get("value")
        estimate = (c["kl"] or {}).get(estimator)
        if value is None or estimate is None or estimate.get("mean") is None:
            continue
        rows.append({"run": c["run"], "step": c["step"], "kl": estimate["mean"], "quality": value,
                     "quality_se": c["quality"].get("se"), "implicit_reward": (c["rewards"] or {}).get("mean_margin")})
    frame = pd.DataFrame(rows, columns=["run", "step", "kl", "quality", "quality_se", "implicit_reward"])
    for column in ("kl", "quality", "quality_se", "implicit_reward"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    return frame


def prompt_quality_frame(checkpoints: list[dict], tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """run, step, prompt_id, quality: the quality/{run}/{label} tables of the checkpoints with a quality."""
    parts = [tables[name].assign(run=c["run"], step=c["step"]) for c in checkpoints
             if (c["quality"] or {}).get("value") is not None
             and (name := table_name("quality", c["run"], c["label"])) in tables]
    columns = list(overoptimization.PROMPT_COLUMNS)
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


FIT_WHAT = "the quality-vs-KL fit"
RECOMMENDED_WHAT = "the recommended checkpoint (quality-vs-KL fit)"
CANNOT_FLAG = "none: these inputs do not allow it (see why); more checkpoints or prompts may"


def fit_results(checkpoints: list[dict], has_judge: bool, no_judge_reason: str = NO_JUDGE_REASON,
                tables: dict[str, pd.DataFrame] | None = None,
                missing: list[dict] | None = None,
                thresholds: findings.Thresholds = findings.Thresholds()) -> tuple[dict, dict, dict | None]:
    """fits, past_peak, recommended; over-optimisation findings are added to the last checkpoints.

    Never raises on the statistics: one that cannot be made is null (fits' kl_quality, a run's past_peak
    entry, recommended) and a {what, why, flag} entry is appended to ``missing`` (when given), as is one
    for the rows without a quality SE. ``tables`` holds the per-prompt quality tables
    (table_name("quality", run, label)) that pair the past-peak test; without it the test is unpaired.
    ``thresholds``: when the over-optimisation finding fires.
    """
    if not has_judge:
        return {"kl_quality": None, "reason": no_judge_reason}, {}, None
    notes = [] if missing is None else missing
    estimator = fit_estimator(checkpoints)
    frame = quality_frame(checkpoints, estimator)
    if frame.empty:
        reason = "no checkpoint has both a quality and a KL figure"
        notes.append({"what": FIT_WHAT, "why": reason, "flag": "--stages with samples and judge"})
        return {"kl_quality": None, "reason": reason}, {}, None
    notes += _rows_without_se(frame)
    fit = _fail_soft(notes, FIT_WHAT, lambda: overoptimization.fit_kl_quality(frame))
    fits = {"kl_quality": plain(fit), "reason": "" if fit else notes[-1]["why"], "kl_estimator": estimator}
    by_step = _one_row_per_step(checkpoints, estimator, notes)  # the past-peak test and the recommendation
    step_frame = quality_frame(by_step, estimator)
    prompts = None if tables is None else _fail_soft(notes, "per-prompt qualities (past-peak fit test)",
                                                     lambda: prompt_quality_frame(by_step, tables))
    past = {str(run): plain(_run_past_peak(notes, str(run), rows, prompts, thresholds))
            for run, rows in step_frame.groupby("run", sort=True)}
    recommended = _fail_soft(notes, RECOMMENDED_WHAT,
                             lambda: overoptimization.recommend_checkpoint(step_frame, fit=fit))
    _place_over_optimisation(by_step, past, thresholds)
    return fits, past, plain(recommended)


def _one_row_per_step(checkpoints: list[dict], estimator: str, notes: list[dict]) -> list[dict]:
    """The checkpoints the step-keyed statistics (past-peak test, recommendation) use: where a run has one step
    twice with a quality and KL (a final model saved at a checkpoint's step with other weights), the later
    row, the final model, and a `missing` entry naming the row left out of those two (the fit keeps both)."""
    last = {(c["run"], c["step"]): c for c in checkpoints if _has_fit_inputs(c, estimator)}
    kept = []
    for c in checkpoints:
        standing = last.get((c["run"], c["step"]))
        if standing is not None and standing is not c and _has_fit_inputs(c, estimator):
            notes.append({"what": f"checkpoint {c['label']} of run {c['run']} in the past-peak test and the "
                                  "recommendation",
                          "why": f"step {c['step']} is also the step of {standing['label']} (other weights): the "
                                 f"later row, {standing['label']}, stands for the step there; both are in the "
                                 "fit and the tables",
                          "flag": "none: the two rows are different weights at one training step"})
            continue
        kept.append(c)
    return kept


def _has_fit_inputs(checkpoint: dict, estimator: str) -> bool:
    return ((checkpoint["quality"] or {}).get("value") is not None
            and ((checkpoint["kl"] or {}).get(estimator) or {}).get("mean") is not None)


def _run_past_peak(notes: list[dict], run: str, rows: pd.DataFrame, prompts: pd.DataFrame | None,
                   thresholds: findings.Thresholds):
    """One run's PastPeak (paired over its per-prompt qualities when given), or None with its reason in notes;
    a run it could not test (no SE for the drop) is named in notes too."""
    mine = None if prompts is None else prompts[prompts["run"] == run]
    what = f"the past-peak check of run {run} (fit results)"
    found = _fail_soft(notes, what, lambda: overoptimization.detect_past_peak(
        rows, mine, k=thresholds.past_peak_k, tolerance=thresholds.past_peak_tolerance)[run])
    if found is not None and found.se_method == "none":
        notes.append({"what": what, "why": found.reason,
                      "flag": "more prompts or samples per prompt (--max-prompts, --n-samples)"})
    return found


def _fail_soft(missing: list[dict], what: str, compute):
    """compute(), or None with {what, why, flag} appended to ``missing`` when it raises: after the model work
    no statistic may take the report down."""
    try:
        return compute()
    except Exception as error:  # a figure that cannot be made is null with its reason
        expected = isinstance(error, ValueError | ArithmeticError | np.linalg.LinAlgError)
        why = str(error) if expected else f"{type(error).__name__}: {error} (a dpo-eval bug: please report it)"
        missing.append({"what": what, "why": why, "flag": CANNOT_FLAG})
        return None


def _rows_without_se(frame: pd.DataFrame) -> list[dict]:
    """A `missing` entry per run naming the rows whose quality has no SE (0 or undefined)."""
    lacking = frame[~(np.isfinite(frame["quality_se"]) & (frame["quality_se"] > 0))]
    return [{"what": f"the quality SE of run {run} step(s) {rows['step'].tolist()}",
             "why": "it is 0 or undefined (every scored preference or per-prompt difference alike, or fewer than "
                    "2): those rows are left out of the weighted quality-vs-KL fit, never weighted as exact",
             "flag": "more prompts or samples per prompt (--max-prompts, --n-samples)"}
            for run, rows in lacking.groupby("run", sort=True)]


def _place_over_optimisation(checkpoints: list[dict], past: dict, thresholds: findings.Thresholds) -> None:
    """The over-optimisation finding of each run past its peak, on its last tested checkpoint."""
    for run, p in past.items():
        if p is None:
            continue
        found = findings.check_over_optimisation(
            p["is_past_peak"], p["peak_step"], p["peak_quality"], p["last_quality"], frame_source(checkpoints),
            thresholds, p["last_step"], drop=p["drop"], drop_se=p["drop_se"], drop_threshold=p["threshold"],
            se_method=p["se_method"])
        target = next((c for c in checkpoints if c["run"] == run and c["step"] == p["last_step"]), None)
        if found and target is not None:
            target["findings"].append({**plain(found), "run": run})


def frame_source(checkpoints: list[dict]) -> str:
    return next((c["quality"]["source"] for c in checkpoints if c["quality"]), "quality")


def _stage_not_run(plan: Plan, stage: str) -> str:
    if plan.config.logprob_backend == "vllm" and stage in VLLM_CANNOT:
        return (f"the {stage} stage needs whole next-token distributions, which --logprob-backend vllm "
                "cannot give (vLLM returns the log-probs of the tokens asked only)")
    return f"the {stage} stage was not run (--stages {','.join(plan.config.stages or ())})"


def _stage_flag(plan: Plan, stage: str) -> str:
    if plan.config.logprob_backend == "vllm" and stage in VLLM_CANNOT:
        return "--logprob-backend engine (one device, or torchrun for data parallel)"
    return f"--stages with {stage} (or no --stages: every stage)"


def _missing(plan: Plan) -> list[dict]:
    missing = [{"what": STAGE_FIGURES[stage], "why": _stage_not_run(plan, stage), "flag": _stage_flag(plan, stage)}
               for stage in STAGE_FIGURES if stage not in plan.stages]
    if plan.judge is None and "judge" in plan.stages:
        missing.append(JUDGE_MISSING)
    elif plan.is_judged and not plan.config.judge.startswith("gold:"):
        missing.append(GOLD_MISSING)
    for rp in plan.runs:
        for row in (r for r in rp.rows if not r.has_known_step):
            missing.append({"what": f"the training step of {rp.run.name}/{row.label}",
                            "why": f"no step recorded; shown as step {row.step}, after the run's previous row",
                            "flag": "none: keep trainer_state.json (global_step) in the checkpoint folder"})
    return missing


def _curves(plan: Plan) -> dict:
    curves = {}
    for rp in plan.runs:
        logs = plan.logs[rp.run.name]
        curves[rp.run.name] = plain(curves_frame(logs).to_dict("records"))
    return curves


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name, package in (("dpo_eval", "dpo-eval"), ("torch", "torch"), ("transformers", "transformers")):
        try:
            found[name] = version(package)
        except PackageNotFoundError:
            found[name] = None
    return found


def _provenance(plan: Plan) -> dict:
    c, first = plan.config, plan.runs[0]
    prompts_path = plan.inputs.prompts.path
    return {
        "versions": _versions(), "beta": {rp.run.name: rp.beta for rp in plan.runs},
        "seeds": {"sampling": c.seed, "bootstrap": c.seed, "judge": c.seed},
        "judge": plan.judge if plan.is_judged else None, "stages": list(plan.stages),
        "data": {"pairs": {"path": plan.inputs.pairs.path, "source": plan.inputs.pairs.source,
                           "sha256": plan.pairs_sha256, "n": len(plan.pairs)},
                 "prompts": {"path": prompts_path, "source": plan.inputs.prompts.source,
                             "sha256": plan.prompts_sha256, "n": plan.n_prompts}},
        "reference": {**first.ref_identity.to_dict(), "source": first.reference.source,
                      "runs": {rp.run.name: {**rp.ref_identity.to_dict(), "source": rp.reference.source}
                               for rp in plan.runs}},
        "sampling": {"n_samples": c.n_samples, "max_new_tokens": c.max_new_tokens, "temperature": c.temperature,
                     "top_p": c.top_p, "template": c.template, "max_prompts": c.max_prompts},
        "samples": plan.samples_provenance,
        "tokenization": {rp.run.name: dataclasses.asdict(rp.tokenization) for rp in plan.runs},
        "numerics": plan.numerics, "thresholds": dataclasses.asdict(c.thresholds), "warnings": list(plan.warnings),
    }


def _run_entry(rp: RunPlan) -> dict:
    """A run: its trainer as its files tell it (name, version, loss, beta, each with its source), the beta
    the report used, and the reference it resolved (path and how it was chosen)."""
    info = trainers.identify_trainer(rp.run)
    return {"name": rp.run.name, "path": str(rp.run.path), "trainer": info.name,
            "loss": info.loss.value if info.loss else None, "beta": rp.beta, "steps": [row.step for row in rp.rows],
            "trained_with": info.to_dict(),
            "reference": {"path": rp.reference.path, "source": rp.reference.source}}


def assemble(plan: Plan, paths, ref_label: str) -> tuple[dict, dict[str, pd.DataFrame]]:
    """The results document (timings and files filled in by write_results) and its tables by name."""
    tables: dict[str, pd.DataFrame] = {}
    checkpoints = [c for rp in plan.runs for c in run_results(plan, rp, paths, ref_label, tables)]
    no_judge = NO_JUDGE_REASON if plan.judge is None else f"{_stage_not_run(plan, 'judge')}: quality needs it"
    missing = _missing(plan)
    fits, past, recommended = fit_results(checkpoints, plan.is_judged, no_judge, tables, missing,
                                          plan.config.thresholds)
    all_findings = sorted((f for c in checkpoints for f in c["findings"]),
                          key=lambda f: (-findings.SEVERITIES.index(f["severity"]), f["run"], f["step"] or 0))
    runs = [_run_entry(rp) for rp in plan.runs]
    loops = {rp.run.name: (rp.run, record) for rp in plan.runs if (record := loop_rounds.read_loop(rp.run))}
    loop_rounds.add_loop_figures(runs, checkpoints, loops, plan.judge, lambda run, r: paths.get(
        loop_rounds.AGREEMENT, run, loop_rounds.round_label(r)))
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "generated_at": "", "provenance": _provenance(plan),
        "runs": runs, "checkpoints": checkpoints, "fits": fits,
        "past_peak": past, "recommended": recommended, "findings": all_findings,
        "training_curves": _curves(plan), "missing": missing, "files": {}, "timings": {},
    }, tables


def _table_file(name: str, taken: set[str]) -> str:
    """tables/<name with unsafe characters as _>.parquet, unique among ``taken``."""
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name.replace("/", "--"))
    candidate, n = f"tables/{stem}.parquet", 1
    while candidate in taken:
        n += 1
        candidate = f"tables/{stem}-{n}.parquet"
    taken.add(candidate)
    return candidate


def write_results(out: Path, document: dict, tables: dict[str, pd.DataFrame], timings: dict[str, float]) -> dict:
    """Write the tables and then results.json (each atomically); the document must validate."""
    files, taken = {}, set()
    for name, frame in tables.items():
        relative = files[name] = _table_file(name, taken)
        with atomic_path(out / relative) as tmp:
            frame.to_parquet(tmp, index=False)
    final = finite_or_null({**document, "files": files, "timings": {k: round(v, 3) for k, v in timings.items()},
                            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    errors = schema_errors(final)
    if errors:
        raise RuntimeError(f"results.json would not validate (a dpo-eval bug): {errors[:3]}")
    write_json(out / "results.json", final)
    return final
