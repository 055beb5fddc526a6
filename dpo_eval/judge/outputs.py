"""Generations files for `dpo-eval judge`: one output per prompt id, every bad row named by file and row.

Rows: `prompt_id`, `prompt` (a string, or chat messages as `generate` stores them) or `instruction`,
`output`, optional `model` (default: the file's stem) and `sample_index` (the lowest is judged).
Row numbers count the file's records from 1 (for jsonl: its non-blank lines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from dpo_eval.data.formats import read_records
from dpo_eval.data.prompts import prompt_field, prompt_text
from dpo_eval.errors import UserError


@dataclass(frozen=True)
class Output:
    """The output judged for one prompt id."""

    prompt: str
    text: str
    row: int
    """1-based row of the file it came from (for error messages)."""


def _sample_index(value: object, where: str) -> int:
    """sample_index as an int (missing or null: 0); an integral float (csv/parquet) is accepted."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: sample_index must be an integer, got {value!r}; fix it or drop the field")
    return value


def read_outputs(path: str) -> tuple[str, dict[str, Output]]:
    """The model name (the first row's `model`, else the file's stem) and prompt_id -> Output, in the
    file's order of prompt ids; with several samples per prompt the lowest sample_index is used."""
    records = read_records(path)
    if not records:
        raise UserError(f"{path}: no rows; give a generations file with prompt_id, prompt and output per row")
    chosen: dict[str, tuple[int, Output]] = {}
    for row_number, row in enumerate(records, start=1):
        where = f"{path}: row {row_number}"
        if row.get("prompt_id") is None or not isinstance(row.get("output"), str):
            raise UserError(f"{where}: needs prompt_id, prompt (or instruction) and output strings; "
                            "add the missing field")
        prompt = prompt_text(prompt_field(row, where))
        prompt_id, sample = str(row["prompt_id"]), _sample_index(row.get("sample_index"), where)
        if prompt_id in chosen and chosen[prompt_id][1].prompt != prompt:
            raise UserError(f"{where}: prompt_id {prompt_id!r} has a different prompt than row "
                            f"{chosen[prompt_id][1].row}; give each prompt its own prompt_id")
        if prompt_id not in chosen or sample < chosen[prompt_id][0]:
            chosen[prompt_id] = (sample, Output(prompt, row["output"], row_number))
    name = str(records[0].get("model") or Path(path).stem)
    return name, {prompt_id: output for prompt_id, (_, output) in chosen.items()}


def check_same_prompts(candidates_path: str, candidates: dict[str, Output], baseline_path: str,
                       baseline: dict[str, Output]) -> list[str]:
    """The prompt ids both files hold (in the candidates' order); each must carry the same prompt."""
    shared = [prompt_id for prompt_id in candidates if prompt_id in baseline]
    if not shared:
        raise UserError(f"--candidates {candidates_path} and --baseline {baseline_path} share no prompt_id; "
                        "judge outputs generated from the same prompts")
    for prompt_id in shared:
        mine, theirs = candidates[prompt_id], baseline[prompt_id]
        if mine.prompt.strip() != theirs.prompt.strip():
            raise UserError(f"prompt_id {prompt_id!r} has different prompts in {candidates_path} (row {mine.row}) and "
                            f"{baseline_path} (row {theirs.row}); judge outputs generated from the same prompts")
    return shared
