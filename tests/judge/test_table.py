"""Judgments tables: ours and AlpacaEval annotation files, with clear errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from dpo_eval.errors import UserError
from dpo_eval.judge.table import read_judgments


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_our_format_with_outputs_gives_character_lengths(tmp_path):
    path = write_jsonl(tmp_path / "j.jsonl", [
        {"model": "m", "prompt_id": "p1", "preference": 1.0, "model_output": "abcd", "baseline_output": "ab"},
        {"model": "m", "prompt_id": "p2", "preference": None, "model_output": "a", "baseline_output": "abc",
         "position_consistent": False},
    ])
    frame = read_judgments(path)
    assert list(frame["length_model"]) == [4.0, 1.0] and list(frame["length_baseline"]) == [2.0, 3.0]
    assert frame["preference"].iloc[0] == 1.0 and math.isnan(frame["preference"].iloc[1])
    assert math.isnan(frame["position_consistent"].iloc[0]) and frame["position_consistent"].iloc[1] is False


def test_alpaca_eval_annotations_map_preference_1_2_to_0_1(tmp_path):
    rows = [{"instruction": "q1", "output_1": "base", "output_2": "longer out", "generator_2": "mine", "preference": 2},
            {"instruction": "q2", "output_1": "b", "output_2": "m", "generator_2": "mine", "preference": 1.5},
            {"instruction": "q3", "output_1": "b", "output_2": "m", "generator_2": "mine", "preference": None}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    frame = read_judgments(tmp_path / "a.json")
    assert list(frame["model"]) == ["mine"] * 3 and list(frame["prompt_id"]) == ["q1", "q2", "q3"]
    assert frame["preference"].tolist()[:2] == [1.0, 0.5] and math.isnan(frame["preference"].iloc[2])
    assert frame["length_model"].iloc[0] == len("longer out") and frame["length_baseline"].iloc[0] == 4


def test_alpaca_eval_legacy_draw_0_is_read_as_1_5(tmp_path):
    # alpaca_eval's pairwise_to_winrate: `series_preferences[series_preferences == 0] = 1.5` (backward compatibility)
    rows = [{"instruction": f"q{i}", "output_1": "b", "output_2": "m", "generator_2": "mine", "preference": p}
            for i, p in enumerate([0, 0.0, 1, 2, 1.5])]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    assert read_judgments(tmp_path / "a.json")["preference"].tolist() == [0.5, 0.5, 0.0, 1.0, 0.5]


@pytest.mark.parametrize("preference", [0.5, 3, -1, "2", True])
def test_alpaca_eval_preference_out_of_range_names_file_and_row(tmp_path, preference):
    rows = [{"instruction": "q0", "output_1": "b", "output_2": "m", "preference": 2},
            {"instruction": "q1", "output_1": "b", "output_2": "m", "preference": preference}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    with pytest.raises(UserError, match=r"a\.json: row 2: field 'preference' must be a number in \[1, 2\]"):
        read_judgments(tmp_path / "a.json")


def test_lengths_only_and_no_lengths(tmp_path):
    path = write_jsonl(tmp_path / "j.jsonl", [{"model": "m", "instruction": "q", "preference": 0.25,
                                               "length_model": 10, "length_baseline": 12}])
    assert read_judgments(path)[["length_model", "length_baseline"]].values.tolist() == [[10.0, 12.0]]
    bare = write_jsonl(tmp_path / "k.jsonl", [{"model": "m", "prompt_id": "q", "preference": 0.25}])
    assert "length_model" not in read_judgments(bare).columns


def test_parquet_input(tmp_path):
    pd.DataFrame({"model": ["m"], "prompt_id": ["q"], "preference": [0.7]}).to_parquet(tmp_path / "j.parquet")
    assert read_judgments(tmp_path / "j.parquet")["preference"].tolist() == [0.7]


@pytest.mark.parametrize("row, message", [
    ({"model": "m", "prompt_id": "q", "preference": 1.5}, r"j\.jsonl: row 1: field 'preference' must be a number in \[0, 1\]"),
    ({"model": "m", "prompt_id": "q", "preference": "yes"}, "field 'preference'"),
    ({"prompt_id": "q", "preference": 0.5}, "needs 'model'"),
])
def test_bad_rows(tmp_path, row, message):
    with pytest.raises(UserError, match=message):
        read_judgments(write_jsonl(tmp_path / "j.jsonl", [row]))
