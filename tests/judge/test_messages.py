"""Error messages of `judge` and `winrate`: every flag they name exists; bad rows name file and row."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from dpo_eval.cli import main
from dpo_eval.errors import UserError
from dpo_eval.judge.outputs import read_outputs

ROOT = Path(__file__).resolve().parents[2]
JUDGE_SOURCES = [*sorted((ROOT / "dpo_eval" / "judge").glob("*.py")), ROOT / "dpo_eval" / "cli" / "judge.py"]
WINRATE_SOURCES = [ROOT / "dpo_eval" / "judge" / name for name in ("table.py", "winrate.py")]
WINRATE_SOURCES.append(ROOT / "dpo_eval" / "cli" / "winrate.py")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def flags_in_user_errors(path: Path) -> set[str]:
    """Every --flag written in the text of a `UserError(...)` raised in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserError":
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    found |= set(FLAG.findall(part.value))
    return found


def help_flags(command: str) -> set[str]:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    return set(FLAG.findall(result.output))


def test_judge_errors_name_only_flags_that_judge_has():
    named = set().union(*(flags_in_user_errors(p) for p in JUDGE_SOURCES))
    assert {"--judge", "--mode", "--template", "--candidates"} <= named  # the scan finds them
    # --allow-pickle: models.py's refusal of pickled weights, reached through local:PATH judges
    assert named | {"--allow-pickle"} <= help_flags("judge")


def test_winrate_errors_name_only_flags_that_winrate_has():
    named = set().union(*(flags_in_user_errors(p) for p in WINRATE_SOURCES))
    assert named <= help_flags("winrate")


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_read_outputs_takes_the_lowest_sample_and_names_rows_in_file_order(tmp_path):
    rows = [{"prompt_id": "p1", "prompt": "q1", "output": "late", "sample_index": 1, "model": "ckpt"},
            {"prompt_id": "p2", "prompt": "q2", "output": "only"},
            {"prompt_id": "p1", "prompt": "q1", "output": "first", "sample_index": 0}]
    name, outputs = read_outputs(write_rows(tmp_path / "c.jsonl", rows))
    assert name == "ckpt" and list(outputs) == ["p1", "p2"]
    assert (outputs["p1"].text, outputs["p1"].row) == ("first", 3) and outputs["p2"].row == 2


@pytest.mark.parametrize("rows, message", [
    # rows are numbered as in the file, not after sorting by sample_index
    ([{"prompt_id": "a", "prompt": "q", "output": "x", "sample_index": 1}, {"prompt_id": "b", "prompt": "q"}],
     r"c\.jsonl: row 2: needs prompt_id, prompt \(or instruction\) and output"),
    ([{"prompt_id": "a", "prompt": "q", "output": "x", "sample_index": "first"}],
     r"c\.jsonl: row 1: sample_index must be an integer"),
    ([{"prompt_id": "a", "prompt": "q", "output": "x"}, {"prompt_id": "a", "prompt": "other", "output": "y"}],
     r"c\.jsonl: row 2: prompt_id 'a' has a different prompt than row 1"),
    ([], r"c\.jsonl: no rows"),
])
def test_bad_generation_rows_name_file_and_row(tmp_path, rows, message):
    with pytest.raises(UserError, match=message):
        read_outputs(write_rows(tmp_path / "c.jsonl", rows))


def test_judge_command_refuses_mismatched_prompts_naming_both_files_and_rows(tmp_path):
    candidates = write_rows(tmp_path / "c.jsonl", [{"prompt_id": "0", "prompt": "q0", "output": "x"},
                                                   {"prompt_id": "1", "prompt": "q1", "output": "x"}])
    baseline = write_rows(tmp_path / "b.jsonl", [{"prompt_id": "1", "prompt": "other", "output": "y"}])
    result = CliRunner().invoke(main, ["judge", "--candidates", candidates, "--baseline", baseline,
                                       "--judge", "rule:nowhere:f", "--out", str(tmp_path / "j"), "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "prompt_id '1' has different prompts in" in result.output
    assert "c.jsonl (row 2)" in result.output and "b.jsonl (row 1)" in result.output


@pytest.mark.parametrize("args, message", [
    (["--judge", "rule:no_such_module:f"], "--judge rule:no_such_module:f: cannot import"),
    (["--judge", "nonsense"], "--judge 'nonsense': use openai:MODEL"),
    (["--judge", "rule:nowhere:f", "--template", "no-such-template"], "--template 'no-such-template' is neither"),
])
def test_judge_command_errors_name_the_flag(tmp_path, args, message):
    rows = [{"prompt_id": "0", "prompt": "q", "output": "x"}]
    common = ["judge", "--candidates", write_rows(tmp_path / "c.jsonl", rows),
              "--baseline", write_rows(tmp_path / "b.jsonl", rows), "--out", str(tmp_path / "j"), "--no-progress"]
    result = CliRunner().invoke(main, [*common, *args])
    assert result.exit_code == 2 and message in result.output, result.output
