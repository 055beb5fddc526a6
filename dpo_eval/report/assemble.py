"""results.json from the store's artifacts: every figure made by a `dpo_eval.metrics` function.

Per row (a checkpoint, or a run's reference at step 0): reward accuracy and margins of the held-out pairs
(metrics.rewards), KL estimates along its own samples (metrics.kl: k1/k2/k3 and the analytic pass),
off-policy log-ratios on the pairs, lengths against the reference's samples (metrics.length), drift on
the pairs and dispersion to unseen responses and prompt entropy (metrics.drift), and with a judge the win
rate against the reference's samples (metrics.winrate) and the quality the KL-vs-quality fit uses:

    quality = win rate - 0.5,   se = std(preferences, ddof=1) / sqrt(n scored)          (LLM or rule judge)
    quality = mean over prompts of (accuracy - reference's accuracy),  se = std / sqrt(n prompts)   (gold)

where a prompt's accuracy is the share of its samples that contain the gold answer (judge.gold). Then
per run the drift findings, the past-peak check, and over all rows the KL-vs-quality fit and the
recommended checkpoint (metrics.overoptimization).
"""

from __future__ import annotations

import dataclasses
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dpo_eval.jsonio import atomic_path, finite_or_null, write_json
from dpo_eval.metrics import drift, findings, kl, length, overoptimization, rewards, training_curves, winrate
from dpo_eval.report import frames
from dpo_eval.report.plan import Plan, Row, RunPlan
from dpo_eval.report.steps import KL_SAMPLES
from dpo_eval.reports.schema import RESULTS_SCHEMA_VERSION, schema_errors
from dpo_eval.reports.tables import table_name

THRESHOLDS = findings.Thresholds()
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
    """Win rate - 0.5 and its SE over the scored preferences of one checkpoint."""
    scored = judgments["preference"].to_numpy(np.float64)
    scored = scored[~np.isnan(scored)]
    value = float(scored.mean()) - 0.5 if scored.size else None
    return {"source": "judge win rate - 0.5", "value": value, "se": _se(scored)}


def gold_accuracy(samples: pd.DataFrame, answers: dict[str, list[str]]) -> pd.Series:
    """Per prompt id: the share of its samples containing the gold answer (prompts with an answer only)."""
    from dpo_eval.judge.gold import contains_answer

    known = samples[samples["prompt"].isin(answers)]
    correct = [contains_answer(o, answers[p]) for o, p in zip(known["output"], known["prompt"])]
    return pd.Series(correct, index=known.index, dtype=float).groupby(known["prompt_id"]).mean()


def gold_quality(samples: pd.DataFrame, ref_samples: pd.DataFrame, answers: dict[str, list[str]]) -> dict:
    """Mean over prompts of accuracy - the reference's accuracy, and its SE."""
    mine, theirs = gold_accuracy(samples, answers), gold_accuracy(ref_samples, answers)
    diff = (mine - theirs).dropna().to_numpy(np.float64)
    return {"source": "gold accuracy - reference's", "value": float(diff.mean()) if diff.size else None,
            "se": _se(diff)}


# ---------------------------------------------------------------------------------------------- one row


def _dispersion(unseen: pd.DataFrame | None, entropy: pd.DataFrame | None,
                ref_entropy: pd.DataFrame | None) -> drift.Dispersion | None:
    """Δ log π of the reference's samples and of other prompts' responses; prompt entropy vs the reference.

    A part whose stage (unseen, entropy) did not run is None; None when neither ran.
    """
    if unseen is None and (entropy is None or ref_entropy is None):
        return None
    found = {}
    for source in ("reference_samples", "other_prompts"):
        part = unseen[unseen["source"] == source] if unseen is not None else ()
        found[source] = (drift.response_drift(part["policy_logp"], part["ref_logp"], part["n_tokens"])
                         if len(part) else None)
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
            "position_bias_rate": rate.position_bias_rate, "discrete_win_rate": rate.discrete_win_rate}


def _row_findings(row: Row, comparison, gap, summary: kl.KLSummary | None) -> list[findings.Finding]:
    """Length and KL-budget findings of a trained checkpoint (none for the reference row)."""
    if row.is_reference:
        return []
    found = [] if comparison is None else length.length_findings(comparison, gap, THRESHOLDS, row.step)
    estimate = None if summary is None else (summary.analytic or summary.k3)
    if estimate is not None and math.isfinite(estimate.mean):
        ci = (estimate.mean - 1.96 * estimate.se, estimate.mean + 1.96 * estimate.se)
        budget = findings.check_kl_budget(estimate.mean, ci if math.isfinite(estimate.se) else None, THRESHOLDS,
                                          row.step)
        found += [budget] if budget else []
    return found


def _lengths(samples, ref_samples, pairs, rate):
    """(comparison, LC gap, the `length` figures); all None without samples (the samples stage not run)."""
    if samples is None or ref_samples is None:
        return None, None, None
    comparison = length.compare_lengths(samples, ref_samples)
    has_lc = rate is not None and rate.lc_win_rate is not None and math.isfinite(rate.lc_win_rate)
    gap = length.lc_gap(rate.win_rate, rate.win_rate_ci, rate.lc_win_rate, rate.lc_win_rate_ci) if has_lc else None
    by_length = None if pairs is None else length.pair_reward_length(pairs)
    return comparison, gap, {**plain(comparison), "pair_reward_length": plain(by_length), "lc_gap": plain(gap)}


def _offpolicy(pairs: pd.DataFrame | None) -> kl.OffPolicyLogRatios | None:
    if pairs is None:
        return None
    return kl.offpolicy_logratios(pairs["policy_chosen_logp"], pairs["ref_chosen_logp"], pairs["policy_rejected_logp"],
                                  pairs["ref_rejected_logp"], pairs["chosen_tokens"], pairs["rejected_tokens"])


def checkpoint_result(row: Row, data: dict, rate: winrate.ModelWinRate | None,
                      quality: dict | None) -> tuple[dict, drift.CheckpointDrift | None]:
    """One checkpoints[] object of results.json and its drift state (for the run's findings).

    data: the row's frames: pairs, samples, unseen, entropy, and the run's ref_samples, ref_entropy (None
    where their stage did not run: the figures made from them are null, their findings not checked), and
    has_analytic (whether the kl stage ran). Drift needs the pairs (score): without them it is None.
    """
    pairs, samples = data["pairs"], data["samples"]
    summary = _kl(data["kl_samples"], data["has_analytic"])
    comparison, gap, length_figures = _lengths(samples, data["ref_samples"], pairs, rate)
    state = None if pairs is None else drift.CheckpointDrift(
        row.step, drift.pair_drift(pairs), _dispersion(data["unseen"], data["entropy"], data["ref_entropy"]))
    found = _row_findings(row, comparison, gap, summary)
    return {
        "run": row.run, "step": row.step, "label": row.label, "path": row.path,
        "fingerprint": row.identity.fingerprint, "is_reference": row.is_reference,
        "rewards": None if pairs is None else plain(rewards.summarize_rewards(pairs)), "winrate": _winrate(rate),
        "quality": quality, "kl": plain(summary), "offpolicy": plain(_offpolicy(pairs)), "length": length_figures,
        "drift": plain(state),
        "findings": [{**plain(f), "run": row.run} for f in found],
    }, state


# ---------------------------------------------------------------------------------------------- one run


def _run_rates(plan: Plan, rp: RunPlan, paths, seed: int) -> tuple[dict, dict]:
    """Per label: ModelWinRate and the judgments frame (empty without a judge)."""
    judged = {row.label: frames.judgments_frame(paths.get("judge", rp.run.name, row.label), row.label)
              for row in rp.rows if paths.get("judge", rp.run.name, row.label) is not None}
    if not judged:
        return {}, {}
    joint = pd.concat(judged.values(), ignore_index=True).drop(columns="baseline")
    rates = winrate.summarize_win_rates(joint, seed=seed, n_resamples=plan.config.bootstrap_resamples,
                                        lc_resamples=plan.config.lc_resamples)
    return rates, judged


def _quality(plan: Plan, label: str, judged: dict, samples, ref_samples, answers) -> dict | None:
    if label not in judged:
        return None
    if answers is not None:
        return gold_quality(samples, ref_samples, answers)
    return judge_quality(judged[label])


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
                "ref_entropy": ref["entropy"]}
        quality = _quality(plan, row.label, judged, data["samples"], ref_samples, answers)
        result, state = checkpoint_result(row, data, rates.get(row.label), quality)
        results.append(result)
        states += [] if row.is_reference or state is None else [state]
        for kind in ("pairs", "samples"):
            if data[kind] is not None:
                tables[table_name(kind, name, row.label)] = data[kind]
    if ref_samples is not None:
        tables.setdefault(table_name("samples"), ref_samples)
    by_step = {r["step"]: r for r in results}
    for found in drift.drift_findings(states, THRESHOLDS):
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
    """run, step, kl (the ``estimator`` mean), quality, implicit_reward (+ quality_se when every row has one)."""
    rows = []
    for c in checkpoints:
        value = (c["quality"] or {}).get("value")
        estimate = (c["kl"] or {}).get(estimator)
        if value is None or estimate is None or estimate.get("mean") is None:
            continue
        rows.append({"run": c["run"], "step": c["step"], "kl": estimate["mean"], "quality": value,
                     "quality_se": c["quality"]["se"], "implicit_reward": (c["rewards"] or {}).get("mean_margin")})
    frame = pd.DataFrame(rows, columns=["run", "step", "kl", "quality", "quality_se", "implicit_reward"])
    for optional in ("quality_se", "implicit_reward"):  # implicit_reward: None where the score stage did not run
        if frame[optional].isna().any():
            frame = frame.drop(columns=optional)
    return frame


def fit_results(checkpoints: list[dict], has_judge: bool,
                no_judge_reason: str = NO_JUDGE_REASON) -> tuple[dict, dict, dict | None]:
    """fits, past_peak, recommended; over-optimisation findings are added to the last checkpoints."""
    if not has_judge:
        return {"kl_quality": None, "reason": no_judge_reason}, {}, None
    estimator = fit_estimator(checkpoints)
    frame = quality_frame(checkpoints, estimator)
    if frame.empty:
        return {"kl_quality": None, "reason": "no checkpoint has both a quality and a KL figure"}, {}, None
    try:
        fit = overoptimization.fit_kl_quality(frame)
        fits = {"kl_quality": plain(fit), "reason": "", "kl_estimator": estimator}
    except ValueError as error:
        fit, fits = None, {"kl_quality": None, "reason": str(error), "kl_estimator": estimator}
    past = {run: plain(p) for run, p in overoptimization.detect_past_peak(frame).items()}
    recommended = plain(overoptimization.recommend_checkpoint(frame, fit=fit))
    for run, p in past.items():
        found = findings.check_over_optimisation(p["is_past_peak"], p["peak_step"], p["peak_quality"],
                                                 p["last_quality"], frame_source(checkpoints), THRESHOLDS,
                                                 p["last_step"])
        if found:
            target = next(c for c in checkpoints if c["run"] == run and c["step"] == p["last_step"])
            target["findings"].append({**plain(found), "run": run})
    return fits, past, recommended


def frame_source(checkpoints: list[dict]) -> str:
    return next((c["quality"]["source"] for c in checkpoints if c["quality"]), "quality")


def _stage_not_run(plan: Plan, stage: str) -> str:
    return f"the {stage} stage was not run (--stages {','.join(plan.config.stages or ())})"


def _missing(plan: Plan) -> list[dict]:
    missing = [{"what": STAGE_FIGURES[stage], "why": _stage_not_run(plan, stage),
                "flag": f"--stages with {stage} (or no --stages: every stage)"}
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
        parts = [training_curves.hf_log_history_frame(logs.log_history),
                 training_curves.llamafactory_log_frame(logs.trainer_log)]
        frame = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
        curves[rp.run.name] = [] if frame is None else plain(frame.to_dict("records"))
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
        "numerics": plan.numerics, "thresholds": dataclasses.asdict(THRESHOLDS), "warnings": list(plan.warnings),
    }


def _run_entry(rp: RunPlan) -> dict:
    manifest = rp.run.manifest or {}
    loss = manifest.get("loss") if isinstance(manifest.get("loss"), dict) else {}
    trainer = ("dpo-eval" if manifest.get("kind") == "dpo_eval.train" else
               "transformers Trainer" if rp.run.trainer_state_path else
               "LLaMA-Factory" if rp.run.trainer_log_path else "unknown")
    return {"name": rp.run.name, "path": str(rp.run.path), "trainer": trainer, "loss": loss.get("name"),
            "beta": rp.beta, "steps": [row.step for row in rp.rows]}


def assemble(plan: Plan, paths, ref_label: str) -> tuple[dict, dict[str, pd.DataFrame]]:
    """The results document (timings and files filled in by write_results) and its tables by name."""
    tables: dict[str, pd.DataFrame] = {}
    checkpoints = [c for rp in plan.runs for c in run_results(plan, rp, paths, ref_label, tables)]
    no_judge = NO_JUDGE_REASON if plan.judge is None else f"{_stage_not_run(plan, 'judge')}: quality needs it"
    fits, past, recommended = fit_results(checkpoints, plan.is_judged, no_judge)
    all_findings = sorted((f for c in checkpoints for f in c["findings"]),
                          key=lambda f: (-findings.SEVERITIES.index(f["severity"]), f["run"], f["step"] or 0))
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "generated_at": "", "provenance": _provenance(plan),
        "runs": [_run_entry(rp) for rp in plan.runs], "checkpoints": checkpoints, "fits": fits,
        "past_peak": past, "recommended": recommended, "findings": all_findings,
        "training_curves": _curves(plan), "missing": _missing(plan), "files": {}, "timings": {},
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
