"""Read judgments tables (ours or AlpacaEval annotation files) into the frame metrics.winrate expects.

Ours: `model`, `prompt_id` (or `instruction`), `preference` = probability the model's output
beats the baseline's in [0, 1] (0.5 tie, null = unscored), and either both outputs
(`model_output`, `baseline_output`) or their lengths (`length_model`, `length_baseline`);
optional `position_consistent` (false where the two orders disagreed) and `baseline` (the
baseline's name, default "baseline"; checkpoints judged against each other name each other here).
AlpacaEval: `instruction`, `output_1` (baseline), `output_2` (model), `generator_2` (model name),
`preference` in [1, 2] (1 = baseline preferred, 2 = model preferred, 1.5 tie, null unscored);
0 is AlpacaEval's legacy draw and, as alpaca_eval itself does, is read as 1.5.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dpo_eval.data.formats import read_records
from dpo_eval.errors import UserError

COLUMNS = ["model", "baseline", "prompt_id", "preference", "length_model", "length_baseline", "position_consistent"]


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _preference(value, where: str) -> float:
    if _is_missing(value):
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise UserError(f"{where}: field 'preference' must be a number in [0, 1] (P(model beats baseline)) or null, "
                        f"got {value!r}; fix the row or drop it")
    return float(value)


def _length(row: dict, output_key: str, length_key: str) -> float:
    if not _is_missing(row.get(length_key)):
        return float(row[length_key])
    output = row.get(output_key)
    if isinstance(output, str):
        return float(len(output))
    return math.nan


def _alpaca_preference(value, where: str) -> float:
    """AlpacaEval's preference in [1, 2] -> ours in [0, 1]; its legacy draw 0 -> 1.5 (alpaca_eval's
    `pairwise_to_winrate` does the same "for backward compatibility")."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.5
    if _is_missing(value):
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 2:
        raise UserError(f"{where}: field 'preference' must be a number in [1, 2] (AlpacaEval: 1 baseline, 2 model, "
                        f"1.5 or 0 a draw) or null, got {value!r}; fix the row or drop it")
    return float(value) - 1.0


def _alpaca_row(row: dict, where: str) -> dict:
    return {"model": str(row.get("generator_2") or "model"), "baseline": str(row.get("generator_1") or "baseline"),
            "prompt_id": str(row.get("instruction")),
            "preference": _alpaca_preference(row.get("preference"), where),
            "length_model": _length(row, "output_2", "length_model"),
            "length_baseline": _length(row, "output_1", "length_baseline"),
            "position_consistent": math.nan}


def _our_row(row: dict, where: str) -> dict:
    prompt = row.get("prompt_id", row.get("instruction"))
    if _is_missing(row.get("model")) or _is_missing(prompt):
        raise UserError(f"{where}: needs 'model' and 'prompt_id' (or 'instruction') fields; add them to every row")
    consistent = row.get("position_consistent")
    return {"model": str(row["model"]), "baseline": str(row.get("baseline") or "baseline"), "prompt_id": str(prompt),
            "preference": _preference(row.get("preference"), where),
            "length_model": _length(row, "model_output", "length_model"),
            "length_baseline": _length(row, "baseline_output", "length_baseline"),
            "position_consistent": math.nan if _is_missing(consistent) else bool(consistent)}


def read_judgments(path: str | Path) -> pd.DataFrame:
    """A judgments file as a frame with COLUMNS; lengths are NaN when neither outputs nor lengths are given."""
    records = read_records(path)
    if not records:
        raise UserError(f"{path}: no judgments in the file; give the judgments.jsonl written by `dpo-eval judge` "
                        "or an AlpacaEval annotations file")
    is_alpaca = "output_1" in records[0] and "output_2" in records[0]
    convert = _alpaca_row if is_alpaca else _our_row
    rows = [convert(r, f"{path}: row {i + 1}") for i, r in enumerate(records)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame[["length_model", "length_baseline"]].isna().all(axis=None):
        frame = frame.drop(columns=["length_model", "length_baseline"])
    return frame
