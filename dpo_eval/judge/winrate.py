"""`dpo-eval winrate`: win rates with CIs and length control from a saved judgments table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dpo_eval.jsonio import finite_or_null, write_json
from dpo_eval.judge.table import read_judgments
from dpo_eval.metrics.winrate import summarize_win_rates

SCHEMA_VERSION = 1


def winrate(judgments: str | Path, out: str | Path, *, seed: int = 0, n_resamples: int = 2000,
            lc_resamples: int = 200, level: float = 0.95) -> dict:
    """Compute per-model win rates from `judgments` and write them to `out` (JSON)."""
    frame = read_judgments(judgments)
    results = summarize_win_rates(frame, seed=seed, n_resamples=n_resamples, lc_resamples=lc_resamples,
                                  level=level)
    document = {
        "schema_version": SCHEMA_VERSION,
        "source": str(judgments),
        "method": {"seed": seed, "n_resamples": n_resamples, "lc_resamples": lc_resamples, "level": level,
                   "ci": "percentile bootstrap over prompts",
                   "length_control": "Dubois et al. 2024, joint logistic fit (dpo_eval.metrics.length_control)"},
        "models": {name: dataclasses.asdict(result) for name, result in results.items()},
    }
    write_json(out, document)
    return finite_or_null(document)
