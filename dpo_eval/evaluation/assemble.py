"""results.json from the store's artifacts: every figure made by a `dpo_eval.metrics` function.

Per row (a checkpoint, or a run's reference at step 0): reward accuracy and margins of the held-out pairs
(metrics.rewards), KL estimates along its own samples (metrics.kl: k1/k2/k3 and the analytic pass),
off-policy log-ratios on the pairs, lengths against the reference's samples (metrics.length), drift on
the pairs and dispersion to unseen responses and prompt entropy (metrics.drift), and with a judge the win
rate against the reference's samples (metrics.winrate) and the quality figure and per-prompt table
(evaluation.quality). Then per run the drift findings, and over all rows the KL-vs-quality fit, each run's
past-peak check and the recommended checkpoint (evaluation.fits). A statistic that cannot be made is null
with its reason in `missing`, never an exception. write_results writes the document and its tables.
"""
from __future__ import annotations

import dataclasses
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from dpo_eval.evaluation import frames, loop_rounds, trainers
from dpo_eval.evaluation.config import VLLM_CANNOT
from dpo_eval.evaluation.discover import curves_frame
from dpo_eval.evaluation.fits import NO_JUDGE_REASON, fit_results
from dpo_eval.evaluation.jsonready import plain
from dpo_eval.evaluation.plan import Plan, Row, RunPlan
from dpo_eval.evaluation.quality import gold_answers, row_quality
from dpo_eval.evaluation.steps import KL_SAMPLES
from dpo_eval.jsonio import atomic_path, finite_or_null, write_json
from dpo_eval.metrics import drift, findings, kl, length, rewards, winrate
from dpo_eval.reports.schema import RESULTS_SCHEMA_VERSION, schema_errors
from dpo_eval.reports.tables import table_name

JUDGE_MISSING = {"what": "win rates, LC win rates, quality-vs-KL fit and the recommended checkpoint",
                 "why": "no judge was given",
                 "flag": "--judge openai:MODEL (or --judge local:PATH, --judge gold:ANSWERS)"}
STAGE_FIGURES = {"score": "reward accuracy and margins, off-policy log-ratios, pair drift and its findings",
                 "samples": "KL estimates, length figures and their findings",
                 "kl": "analytic KL (k1/k2/k3 come from the samples)",
                 "entropy": "prompt entropy change", "unseen": "dispersion to responses in no pair",
                 "judge": JUDGE_MISSING["what"]}
"""What is null in results.json when a stage did not run (`missing`'s what; the gate matches its words)."""
GOLD_MISSING = {"what": "gold-answer accuracy", "why": "no gold answers were given; quality is the judge's win "
                "rate against the reference minus 0.5", "flag": "--judge gold:ANSWERS"}


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
    answers = gold_answers(plan.config.judge) if plan.is_judged else None
    results, states, state_pairs = [], [], []
    for row in rp.rows:
        data = {**_row_frames(plan, paths, name, row.label), "ref_samples": ref_samples,
                "ref_entropy": ref["entropy"], "thresholds": plan.config.thresholds}
        quality, per_prompt = row_quality(row.label, judged, data["samples"], ref_samples, answers)
        result, state = checkpoint_result(row, data, rates.get(row.label), quality)
        if per_prompt is not None:
            tables[table_name("quality", name, row.label)] = per_prompt
        results.append(result)
        if not row.is_reference and state is not None:
            states.append(state)
            state_pairs.append(data["pairs"])
        for kind in ("pairs", "samples"):
            if data[kind] is not None:
                tables[table_name(kind, name, row.label)] = data[kind]
    if ref_samples is not None:
        tables.setdefault(table_name("samples"), ref_samples)
    by_step = {r["step"]: r for r in results}
    for found in drift.drift_findings(states, plan.config.thresholds, state_pairs):
        by_step[found.step]["findings"].append({**plain(found), "run": name})
    return results


# ---------------------------------------------------------------------------------------------- document


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
