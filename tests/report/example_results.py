"""A realistic results dir for the renderer's tests, built by the real metrics functions on synthetic data.

Two runs of a β sweep ("beta0.1": steps 0, 100, 200, 300; "beta0.5": steps 0, 100, 200). The low-β run
drifts: its chosen log-probs fall on most pairs (likelihood displacement), its samples grow long and hit
max_new_tokens (length inflation, an LC gap), its quality peaks at step 200 and falls at step 300 while
the margin still grows (past the peak), and its KL nears the budget (an info finding). Text holds hostile
HTML (HOSTILE_SCRIPT, HOSTILE_IMG) that a report must show as text, never run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from dpo_eval.jsonio import write_json
from dpo_eval.metrics import drift, findings, kl, length, overoptimization, rewards, training_curves, winrate
from dpo_eval.reports.schema import RESULTS_SCHEMA_VERSION
from dpo_eval.reports.tables import table_name

HOSTILE_SCRIPT = "<script>window.__pwned=1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned=2">'
RUNS = {"beta0.1": (0.1, (0, 100, 200, 300)), "beta0.5": (0.5, (0, 100, 200))}
LAST_STEP = 300
N_PAIRS, N_PROMPTS, N_SAMPLES, MAX_NEW_TOKENS = 40, 16, 4, 128
DRIFT_SCALE = {"beta0.1": 1.0, "beta0.5": 0.4}
"""How far each run moves from the reference by the last step (the low-β run moves most)."""
WIN_LOGIT = {("beta0.1", 100): 0.5, ("beta0.1", 200): 0.9, ("beta0.1", 300): 0.1,
             ("beta0.5", 100): 0.25, ("beta0.5", 200): 0.55}
"""Planted judge quality (logit of winning at equal length): the low-β run peaks at step 200."""
THRESHOLDS = findings.Thresholds(kl_budget=7.0)
WORDS = ("the answer is here and it helps you with that question because it explains each step "
         "clearly so please read on for more detail about the topic").split()
JUDGE_MISSING = {"what": "win rates, LC win rates, quality-vs-KL fit and the recommended checkpoint",
                 "why": "no judge was given", "flag": "--judge openai:MODEL (or local:PATH, gold:ANSWERS)"}


def build_example(tmp_dir: str | Path, *, with_judge: bool = True) -> Path:
    """Write results.json and its parquet tables under tmp_dir/results; return that dir."""
    out = Path(tmp_dir) / "results"
    (out / "tables").mkdir(parents=True, exist_ok=True)
    base = _base_pairs(np.random.default_rng(0))
    ref_samples = _samples(np.random.default_rng(1), "beta0.1", 0)
    files = {table_name("samples"): _write(out, "samples_reference", ref_samples)}
    checkpoints, quality_rows = [], []
    for run, (beta, steps) in RUNS.items():
        states = []
        judgments = _judgments(run, steps, ref_samples) if with_judge else None
        rates = {} if judgments is None else winrate.summarize_win_rates(judgments, seed=0, n_resamples=300,
                                                                          lc_resamples=20)
        for step in steps:
            label = str(step)
            pairs = _pairs(base, run, beta, step)
            files[table_name("pairs", run, label)] = _write(out, f"pairs_{run}_{label}", pairs)
            samples = _checkpoint_samples(run, step) if step else ref_samples
            if step:
                files[table_name("samples", run, label)] = _write(out, f"samples_{run}_{label}", samples)
            ckpt, state = _checkpoint(run, step, pairs, samples, ref_samples, rates.get(label))
            checkpoints.append(ckpt)
            states += [state] if step else []
            if ckpt["quality"] is not None:
                quality_rows.append({"run": run, "step": step, "kl": ckpt["kl"]["analytic"]["mean"],
                                     "quality": ckpt["quality"]["value"], "quality_se": ckpt["quality"]["se"],
                                     "implicit_reward": ckpt["rewards"]["mean_margin"]})
        _add_run_findings(run, checkpoints, states)
    document = _document(checkpoints, quality_rows, files, with_judge)
    write_json(out / "results.json", document)
    return out


def _document(checkpoints: list[dict], quality_rows: list[dict], files: dict, with_judge: bool) -> dict:
    """The results document around the checkpoints: fits, past peak, recommendation, sorted findings."""
    fits, past, recommended = {"kl_quality": None, "reason": "no judge: quality needs --judge"}, {}, None
    if with_judge:
        frame = pd.DataFrame(quality_rows)
        fit = overoptimization.fit_kl_quality(frame)
        fits = {"kl_quality": asdict(fit), "reason": "", "kl_estimator": "analytic"}
        past = {run: asdict(p) for run, p in overoptimization.detect_past_peak(frame).items()}
        recommended = asdict(overoptimization.recommend_checkpoint(frame, fit=fit))
        _add_over_optimisation(checkpoints, past)
    all_findings = sorted((f for c in checkpoints for f in c["findings"]),
                          key=lambda f: (-findings.SEVERITIES.index(f["severity"]), f["run"], f["step"] or 0))
    missing = [{"what": "gold-answer accuracy", "why": "no gold answers were given; quality is the judge's "
                "win rate against the reference minus 0.5", "flag": "--judge gold:ANSWERS"}]
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "generated_at": "2025-01-01T00:00:00Z",
        "provenance": _provenance(with_judge),
        "runs": [{"name": run, "path": f"/runs/{run}", "trainer": "dpo-eval", "loss": "sigmoid", "beta": beta,
                  "steps": list(steps)} for run, (beta, steps) in RUNS.items()],
        "checkpoints": checkpoints, "fits": fits, "past_peak": past, "recommended": recommended,
        "findings": all_findings, "training_curves": {"beta0.1": _training_curves()},
        "missing": missing if with_judge else [JUDGE_MISSING, *missing], "files": files,
        "timings": {"score": 12.5, "generate": 40.25, "judge": 8.0 if with_judge else 0.0, "assemble": 0.5},
    }


def _checkpoint(run: str, step: int, pairs: pd.DataFrame, samples: pd.DataFrame, ref_samples: pd.DataFrame,
                rate: winrate.ModelWinRate | None) -> tuple[dict, drift.CheckpointDrift]:
    """One checkpoint's results object (findings of its own; run-level ones are added later)."""
    progress = step / LAST_STEP * DRIFT_SCALE[run]
    pair_drift = drift.pair_drift(pairs)
    dispersion = _dispersion(np.random.default_rng(7 + step), progress) if step else None
    kl_summary = kl.kl_from_samples(samples["prompt_id"], samples["policy_logp"], samples["ref_logp"],
                                    samples["n_tokens"], samples["analytic_kl"])
    comparison = length.compare_lengths(samples, ref_samples)
    gap = None if rate is None else length.lc_gap(rate.win_rate, rate.win_rate_ci, rate.lc_win_rate,
                                                    rate.lc_win_rate_ci, rate.lc_gap_ci, comparison.mean_tokens_ratio)
    found = [] if step == 0 else length.length_findings(comparison, gap, THRESHOLDS, step)
    analytic = kl_summary.analytic
    ci = (analytic.mean - 1.96 * analytic.se, analytic.mean + 1.96 * analytic.se)
    found += [f for f in [findings.check_kl_budget(analytic.mean, ci, THRESHOLDS, step)] if f and step]
    state = drift.CheckpointDrift(step, pair_drift, dispersion)
    return {
        "run": run, "step": step, "label": str(step), "path": f"/runs/{run}/checkpoint-{step}",
        "fingerprint": f"sha256:{run}-{step:04d}", "is_reference": step == 0,
        "rewards": rewards.summarize_rewards(pairs),
        "winrate": None if rate is None else _winrate(rate),
        "quality": None if rate is None else {"source": "judge win rate - 0.5", "value": rate.win_rate - 0.5,
                                              "se": (rate.win_rate_ci[1] - rate.win_rate_ci[0]) / 3.92},
        "kl": asdict(kl_summary),
        "offpolicy": asdict(kl.offpolicy_logratios(
            pairs["policy_chosen_logp"], pairs["ref_chosen_logp"], pairs["policy_rejected_logp"],
            pairs["ref_rejected_logp"], pairs["chosen_tokens"], pairs["rejected_tokens"])),
        "length": {**asdict(comparison), "pair_reward_length": asdict(length.pair_reward_length(pairs)),
                   "lc_gap": None if gap is None else asdict(gap)},
        "drift": asdict(state),
        "findings": [{**asdict(f), "run": run} for f in found],
    }, state


def _winrate(rate: winrate.ModelWinRate) -> dict:
    return {"n": rate.n, "n_unscored": rate.n_unscored, "win_rate": rate.win_rate,
            "win_rate_ci": list(rate.win_rate_ci), "lc_win_rate": rate.lc_win_rate,
            "lc_win_rate_ci": list(rate.lc_win_rate_ci), "lc_gap_ci": list(rate.lc_gap_ci),
            "position_bias_rate": rate.position_bias_rate}


def _add_run_findings(run: str, checkpoints: list[dict], states: list[drift.CheckpointDrift]) -> None:
    """drift_findings over the run's trained checkpoints, each placed on its checkpoint."""
    by_step = {c["step"]: c for c in checkpoints if c["run"] == run}
    for found in drift.drift_findings(states, THRESHOLDS):
        by_step[found.step]["findings"].append({**asdict(found), "run": run})


def _add_over_optimisation(checkpoints: list[dict], past: dict) -> None:
    for run, p in past.items():
        found = findings.check_over_optimisation(p["is_past_peak"], p["peak_step"], p["peak_quality"],
                                                 p["last_quality"], "win rate - 0.5", THRESHOLDS,
                                                 p["last_step"])
        if found:
            target = next(c for c in checkpoints if c["run"] == run and c["step"] == p["last_step"])
            target["findings"].append({**asdict(found), "run": run})


def _base_pairs(rng: np.random.Generator) -> pd.DataFrame:
    prompts = [_sentence(rng, 6, 14) + "?" for _ in range(N_PAIRS)]
    prompts[0] = f"Explain this page: {HOSTILE_SCRIPT} and {HOSTILE_IMG} & tell me if 2 < 3."
    chosen_tokens = rng.integers(8, 60, N_PAIRS)
    rejected_tokens = rng.integers(8, 60, N_PAIRS)
    return pd.DataFrame({
        "id": [f"p{i}" for i in range(N_PAIRS)], "subset": ["helpful", "harmless"] * (N_PAIRS // 2),
        "prompt": prompts, "chosen": [_sentence(rng, int(n), int(n)) for n in chosen_tokens],
        "rejected": [_sentence(rng, int(n), int(n)) for n in rejected_tokens],
        "ref_chosen_logp": -1.3 * chosen_tokens + rng.normal(0, 2, N_PAIRS),
        "ref_rejected_logp": -1.4 * rejected_tokens + rng.normal(0, 2, N_PAIRS),
        "chosen_tokens": chosen_tokens, "rejected_tokens": rejected_tokens})


def _pairs(base: pd.DataFrame, run: str, beta: float, step: int) -> pd.DataFrame:
    """Δ per token: chosen falls a little, rejected much faster; pair 0 ends confidently wrong."""
    rng = np.random.default_rng(100 + step)
    progress = step / LAST_STEP * DRIFT_SCALE[run]
    tc, tr = base["chosen_tokens"].to_numpy(float), base["rejected_tokens"].to_numpy(float)
    dc = (-0.05 + rng.normal(0, 0.04, N_PAIRS)) * progress * tc
    dr = (-0.25 + rng.normal(0, 0.05, N_PAIRS)) * progress * tr
    dc[0], dr[0] = -0.6 * progress * tc[0], 0.2 * progress * tr[0]
    frame = base.copy()
    frame["policy_chosen_logp"] = frame["ref_chosen_logp"] + dc
    frame["policy_rejected_logp"] = frame["ref_rejected_logp"] + dr
    for side, tokens in (("chosen", tc), ("rejected", tr)):
        frame[f"reward_{side}"] = rewards.implicit_rewards(frame[f"policy_{side}_logp"],
                                                           frame[f"ref_{side}_logp"], tokens, beta)
    frame["margin"] = frame["reward_chosen"] - frame["reward_rejected"]
    return frame


def _samples(rng: np.random.Generator, run: str, step: int) -> pd.DataFrame:
    """N_SAMPLES per prompt; lengths grow with drift and are cut at MAX_NEW_TOKENS; KL grows with drift."""
    progress = step / LAST_STEP * DRIFT_SCALE[run]
    prompt_rng = np.random.default_rng(5)
    prompts = [_sentence(prompt_rng, 5, 10) + "?" for _ in range(N_PROMPTS)]
    prompts[0] = f"Summarise {HOSTILE_SCRIPT}"
    n = N_PROMPTS * N_SAMPLES
    raw = rng.integers(20, 80, n) * (1.0 + 1.2 * progress)
    tokens = np.minimum(raw.astype(int), MAX_NEW_TOKENS)
    kl_target = 6.5 * progress
    logratio = kl_target * (1.0 + rng.normal(0, 0.3, n))
    outputs = [_sentence(rng, int(t), int(t)) for t in tokens]
    outputs[int(np.argmax(tokens))] = f"{HOSTILE_IMG} " + outputs[int(np.argmax(tokens))]
    policy_logp = -0.9 * tokens + rng.normal(0, 1, n)
    return pd.DataFrame({
        "prompt_id": [f"q{i // N_SAMPLES}" for i in range(n)],
        "prompt": [prompts[i // N_SAMPLES] for i in range(n)],
        "output": outputs, "n_tokens": tokens,
        "finish_reason": np.where(raw >= MAX_NEW_TOKENS, "length", "stop"),
        "policy_logp": policy_logp, "ref_logp": policy_logp - logratio,
        "analytic_kl": np.abs(kl_target * (1.0 + rng.normal(0, 0.1, n)))})


def _checkpoint_samples(run: str, step: int) -> pd.DataFrame:
    return _samples(np.random.default_rng([step, list(RUNS).index(run)]), run, step)


def _judgments(run: str, steps: tuple[int, ...], ref_samples: pd.DataFrame) -> pd.DataFrame:
    """Soft preferences vs the reference's samples: planted quality plus a judge that likes length."""
    rows = []
    for step in steps[1:]:
        rng = np.random.default_rng(1000 + step)
        samples = _checkpoint_samples(run, step)
        diff = samples["n_tokens"].to_numpy(float) - ref_samples["n_tokens"].to_numpy(float)
        logit = WIN_LOGIT[(run, step)] + 1.2 * np.tanh(diff / 40.0) + rng.normal(0, 0.3, len(diff))
        pref = 1.0 / (1.0 + np.exp(-logit))
        pref[rng.integers(0, len(pref))] = np.nan  # one unparseable verdict: unscored, not a tie
        rows.append(pd.DataFrame({"model": str(step), "prompt_id": samples["prompt_id"], "preference": pref,
                                  "length_model": samples["n_tokens"],
                                  "length_baseline": ref_samples["n_tokens"]}))
    return pd.concat(rows, ignore_index=True)


def _dispersion(rng: np.random.Generator, progress: float) -> drift.Dispersion:
    tokens = rng.integers(20, 80, N_PROMPTS)
    ref = -1.0 * tokens + rng.normal(0, 1, N_PROMPTS)
    unseen = drift.response_drift(ref - 0.3 * progress * tokens, ref, tokens)
    other = drift.response_drift(ref - 0.1 * progress * tokens, ref, tokens)
    ref_entropy = 2.0 + rng.normal(0, 0.2, N_PROMPTS)
    entropy = drift.entropy_change(ref_entropy * (1.0 - 0.35 * progress), ref_entropy)
    return drift.Dispersion(reference_samples=unseen, other_prompts=other, entropy=entropy)


def _training_curves() -> list[dict]:
    """HF log_history of the low-β run: chosen rewards negative and falling, margin rising."""
    history = []
    for step in range(10, LAST_STEP + 1, 10):
        x = step / LAST_STEP
        history.append({"step": step, "loss": 0.69 - 0.4 * x, "rewards/chosen": -0.8 * x,
                        "rewards/rejected": -3.0 * x, "rewards/margins": 2.2 * x,
                        "rewards/accuracies": 0.5 + 0.4 * x, "logps/chosen": -80 - 25 * x,
                        "logps/rejected": -90 - 90 * x, "learning_rate": 5e-7})
        if step % 100 == 0:
            history.append({"step": step, "eval_loss": 0.7 - 0.3 * x, "eval_rewards/margins": 1.8 * x})
    return training_curves.hf_log_history_frame(history).to_dict("records")


def _provenance(with_judge: bool) -> dict:
    judge = {"spec": "local:judges/tiny-judge", "mode": "probability", "template": "pairwise-v1",
             "template_sha256": "ab" * 32} if with_judge else None
    return {"versions": {"dpo_eval": "0.1.0", "python": "3.11", "torch": "2.13.0", "transformers": "4.56"},
            "beta": {run: beta for run, (beta, _) in RUNS.items()}, "seeds": {"sampling": 0, "bootstrap": 0},
            "judge": judge,
            "data": {"pairs": {"path": "heldout.jsonl", "sha256": "cd" * 32, "n": N_PAIRS},
                     "prompts": {"path": "prompts.jsonl", "sha256": "ef" * 32, "n": N_PROMPTS}},
            "reference": {"path": "/models/sft", "fingerprint": "sha256:sft"},
            "sampling": {"n_samples": N_SAMPLES, "max_new_tokens": MAX_NEW_TOKENS, "temperature": 1.0},
            "tokenization": {"chat_template": True, "max_length": 1024}}


def _sentence(rng: np.random.Generator, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(low, high + 1))))


def _write(out: Path, stem: str, frame: pd.DataFrame) -> str:
    relative = f"tables/{stem}.parquet"
    frame.to_parquet(out / relative, index=False)
    return relative
