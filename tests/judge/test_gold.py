"""The gold-answer judge: whole-token matching of the gold answer, and its answers file."""

from __future__ import annotations

import json

import pytest

from dpo_eval.errors import UserError
from dpo_eval.judge.gold import GoldJudge, answer_tokens, contains_answer


@pytest.mark.parametrize("gold, output, expected", [
    ("4", "The answer is 14.", False),            # a number matches whole, never inside another
    ("4", "It is 41", False),
    ("4", "4", True),
    ("4", "4.", True),                             # sentence-final full stop is punctuation
    ("4", "The answer is (4).", True),
    ("4", "4 is the answer", True),                # at the start
    ("4", "the answer is 4", True),                # at the end
    ("4", "-4", False),                            # the sign is part of the number
    ("-4", "x = -4", True),
    ("-4", "x = \u22124", True),                   # Unicode minus
    ("4", "5-4", True),                            # a hyphen between digits is not a sign
    ("-4", "5-4", False),
    ("4", "4.0", True),                            # numbers compare by value
    ("4.5", "4.50 apples", True),
    ("4", "4.5", False),
    ("4000", "4,000", True),                       # thousands separators
    ("4,000", "it costs 4000 dollars", True),
    ("1234567", "1,234,567", True),
    ("4", "4,000", False),
    ("4", "answer: four", False),                  # number words are not digits (documented)
    ("four", "Answer: FOUR.", True),
    ("Paris", "It is paris.", True),               # case and punctuation
    ("Paris", "Parisian food", False),             # words match whole
    ("New York", "I'd say new  york.", True),      # multi-word, any whitespace
    ("New York", "New-York", True),
    ("New York", "new jersey or york", False),     # contiguous
    ("York", "Yorkshire", False),
    ("H2O", "water is h2o", True),
    ("2", "water is h2o", False),
    ("4", "\uff14", True),                         # full-width digit (NFKC)
])
def test_contains_answer(gold, output, expected):
    assert contains_answer(output, answer_tokens(gold)) is expected


def test_no_tokens_never_matches():
    assert contains_answer("anything", []) is False


def write_gold(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gold_judge_prefers_the_correct_output(tmp_path):
    judge = GoldJudge(write_gold(tmp_path / "gold.jsonl", [{"prompt": "2+10=?", "answer": 12},
                                                           {"instruction": "Capital?", "answer": "Paris"}]))
    assert judge.judge("2+10=?", "It is 12.", "It is 112.", "verdict").preference_a == 1.0
    assert judge.judge("2+10=?", "12,000", "12", "verdict").preference_a == 0.0
    assert judge.judge("Capital?", "Paris", "paris!", "verdict").preference_a == 0.5
    assert judge.config["matcher"] == "whole-tokens-v1"  # a changed matcher changes every cache key


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "q"}], r"gold.jsonl: row 1: needs an 'answer'"),
    ([{"answer": "4"}], r"gold.jsonl: row 1: needs a non-empty 'prompt' \(a string or chat messages\) or 'instruction'"),
    ([{"prompt": "q", "answer": "ok"}, {"prompt": "r", "answer": "?!"}], r"gold.jsonl: row 2: answer '\?!' has no word"),
    ([{"prompt": "q", "answer": "4"}, {"prompt": "q", "answer": "5"}], "row 2: answer '5' contradicts row 1"),
])
def test_bad_answer_files_name_file_and_row(tmp_path, rows, message):
    with pytest.raises(UserError, match=message):
        GoldJudge(write_gold(tmp_path / "gold.jsonl", rows))
