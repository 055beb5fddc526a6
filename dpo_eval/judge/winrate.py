"""`dpo-eval winrate`: win rates with CIs and length control from a saved judgments table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.jsonio import finite_or_null, write_json
from dpo_eval.judge.table import read_judgments
from dpo_eval.metrics.bradley_terry import fit_bradley_terry
from dpo_eval.metrics.winrate import summarize_win_rates

SCHEMA_VERSION = 1


def winrate(judgments: str | Path, out: str | Path, *, seed: int = 0, n_resamples: int = 2000,
            lc_resamples: int = 200, level: float = 0.95) -> dict:
    """Compute per-model win rates from `judgments` and write them to `out` (JSON)."""
    frame = read_judgments(judgments)
    baselines = sorted(frame["baseline"].unique())
    results = {}
    if len(baselines) == 1:  # win rates need one common baseline; Bradley-Terry takes any comparison graph
        results = summarize_win_rates(frame.drop(columns="baseline"), seed=seed, n_resamples=n_resamples,
                                      lc_resamples=lc_resamples, level=level)
    pairs = frame.rename(columns={"model": "model_a", "baseline": "model_b"})[["model_a", "model_b", "preference"]]
    try:
        ratings = fit_bradley_terry(pairs, anchor=baselines[0], seed=seed, level=level)
    except ValueError as err:
        raise UserError(f"{judgments}: Bradley-Terry ratings: {err}") from None
    document = {
        "schema_version": SCHEMA_VERSION,
        "source": str(judgments),
        "method": {"seed": seed, "n_resamples": n_resamples, "lc_resamples": lc_resamples, "level": level,
                   "ci": "percentile bootstrap over prompts",
                   "length_control": "Dubois et al. 2024, logistic fit per model (dpo_eval.metrics.length_control)"},
        "baselines": baselines,
        "models": {name: dataclasses.asdict(result) for name, result in results.items()},
        "bradley_terry": dataclasses.asdict(ratings),
    }
    write_json(out, document)
    return finite_or_null(document)
