"""The KL-vs-quality fit over every judged row, each run's past-peak test and the recommended checkpoint
(metrics.overoptimization), and the over-optimisation findings they fire.

The fit uses one KL estimate for all its points (fit_estimator: the analytic pass, else k3) and weights each
row by its quality SE (rows without one are left out of the weighted fit and named in `missing`). The
past-peak test pairs its drop's SE over the per-prompt quality tables (evaluation.quality) and, like the
recommendation, keeps one row per training step. A statistic that cannot be made is null with its reason
in `missing`, never an exception.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dpo_eval.evaluation.jsonready import plain
from dpo_eval.metrics import findings, overoptimization
from dpo_eval.reports.tables import table_name

NO_JUDGE_REASON = "no judge: quality needs --judge"


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


def quality_frame(checkpoints: list[dict], estimator: str = "analytic", needs_kl: bool = True) -> pd.DataFrame:
    """run, step, kl (the ``estimator`` mean), quality, quality_se, implicit_reward: one row per checkpoint with a
    quality and (with needs_kl; else NaN where missing) that KL. quality_se and implicit_reward are per row, NaN
    where that row has none (an SE of 0 or undefined, or no score stage): never dropped for the whole frame."""
    rows = []
    for c in checkpoints:
        value = (c["quality"] or {}).get("value")
        kl_mean = _kl_mean(c, estimator)
        if value is None or (kl_mean is None and needs_kl):
            continue
        rows.append({"run": c["run"], "step": c["step"], "kl": kl_mean, "quality": value,
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
    by_step = _one_row_per_step(checkpoints, notes)  # the past-peak test and the recommendation
    step_frame = quality_frame(by_step, estimator)
    prompts = None if tables is None else _fail_soft(notes, "per-prompt qualities (past-peak fit test)",
                                                     lambda: prompt_quality_frame(by_step, tables))
    # the past-peak test uses no KL: its rows are every judged checkpoint, whichever KL estimate the fit took
    # over all runs (a run's test never depends on the other runs in the report)
    past = {str(run): plain(_run_past_peak(notes, str(run), rows, prompts, thresholds))
            for run, rows in quality_frame(by_step, estimator, needs_kl=False).groupby("run", sort=True)}
    recommended = _fail_soft(notes, RECOMMENDED_WHAT,
                             lambda: overoptimization.recommend_checkpoint(step_frame, fit=fit))
    _place_over_optimisation(by_step, past, thresholds)
    return fits, past, plain(recommended)


def _one_row_per_step(checkpoints: list[dict], notes: list[dict]) -> list[dict]:
    """The checkpoints the step-keyed statistics (past-peak test, recommendation) use: where a run has one step
    twice with a quality (a final model saved at a checkpoint's step with other weights), the later row, the
    final model, and a `missing` entry naming the row left out of those two (the fit keeps both)."""
    last = {(c["run"], c["step"]): c for c in checkpoints if _is_rated(c)}
    kept = []
    for c in checkpoints:
        standing = last.get((c["run"], c["step"]))
        if standing is not None and standing is not c and _is_rated(c):
            notes.append({"what": f"checkpoint {c['label']} of run {c['run']} in the past-peak test and the "
                                  "recommendation",
                          "why": f"step {c['step']} is also the step of {standing['label']} (other weights): the "
                                 f"later row, {standing['label']}, stands for the step there; both are in the "
                                 "fit and the tables",
                          "flag": "none: the two rows are different weights at one training step"})
            continue
        kept.append(c)
    return kept


def _is_rated(checkpoint: dict) -> bool:
    return (checkpoint["quality"] or {}).get("value") is not None


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
