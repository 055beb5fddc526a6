"""The gold-answer judge: an output is correct when it contains the gold answer as whole tokens.

Matching (`contains_answer`), after Unicode NFKC normalisation and case folding:

| text                 | tokens              | why                                             |
|----------------------|---------------------|-------------------------------------------------|
| "It is 14."          | 14                  | "4" does not match: numbers match whole         |
| "4." / "(4)" / "$4"  | 4                   | surrounding punctuation is not part of a token  |
| "4.0" / "4.50"       | 4 / 4.5             | numbers compare by value (trailing zeros off)   |
| "4,000" / "1,234,567"| 4000 / 1234567      | comma thousands separators (groups of 3 digits) |
| "-4" / "−4" / "5-4"  | -4 / -4 / 5 4       | a minus not after a letter or digit is a sign   |
| "New-York city"      | new york city       | words are runs of letters/digits/underscore     |
| "x4" / "H2O" / "4x"  | x4 / h2o / 4x       | letters glued to digits make one word           |

An output is correct when the gold answer's token sequence occurs contiguously in the output's,
anywhere (start, middle or end): "New York" matches "I'd say new york." but "York" does not
match "Yorkshire". Not equivalent: number words and digits ("four" vs "4"), decimal commas
("4,5" is the two numbers 4 and 5), units or scientific notation. Like any "contains" verifier, an
output listing several candidates counts as correct if one of them is the gold answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from dpo_eval.data.formats import read_records
from dpo_eval.data.prompts import prompt_field, prompt_text
from dpo_eval.errors import UserError
from dpo_eval.judge.store import Verdict

MATCHER = "whole-tokens-v1"  # part of the judge config (cache key): a new matcher never reuses old verdicts

_TOKEN = re.compile(r"(?P<number>(?<!\w)-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w))|(?P<word>\w+)")


def _canonical_number(text: str) -> str:
    """'4,000' -> '4000', '4.50' -> '4.5', '4.0' -> '4', '-0' -> '0'."""
    value = Decimal(text.replace(",", ""))
    return "0" if value == 0 else format(value.normalize(), "f")


def answer_tokens(text: str) -> list[str]:
    """The text as canonical number and word tokens (see the module docstring's table)."""
    text = unicodedata.normalize("NFKC", text).replace("\u2212", "-").casefold()
    return [_canonical_number(m.group("number")) if m.group("number") else m.group("word")
            for m in _TOKEN.finditer(text)]


def contains_answer(output: str, gold_tokens: list[str]) -> bool:
    """Whether `gold_tokens` occur contiguously among the output's tokens."""
    tokens, n = answer_tokens(output), len(gold_tokens)
    return n > 0 and any(tokens[i:i + n] == gold_tokens for i in range(len(tokens) - n + 1))


def read_gold_answers(path: str) -> dict[str, list[str]]:
    """prompt -> gold answer tokens, from rows with `prompt` (or `instruction`) and `answer`."""
    answers: dict[str, list[str]] = {}
    first_row: dict[str, int] = {}
    for index, row in enumerate(read_records(path)):
        where = f"{path}: row {index + 1}"
        answer = row.get("answer")
        if answer is None:
            raise UserError(f"{where}: needs an 'answer' (and a 'prompt' or 'instruction'); add the missing field")
        prompt = prompt_text(prompt_field(row, where))  # chat prompts in the same text form the judge sees
        tokens = answer_tokens(str(answer))
        if not tokens:
            raise UserError(f"{where}: answer {answer!r} has no word or number to look for; give a real answer")
        if prompt in answers and answers[prompt] != tokens:
            raise UserError(f"{where}: answer {answer!r} contradicts row {first_row[prompt]} for the same prompt; "
                            "keep one answer per prompt")
        answers[prompt] = tokens
        first_row.setdefault(prompt, index + 1)
    return answers


@dataclass
class GoldJudge:
    """Verifiable tasks: gold answers (rows with `prompt` or `instruction`, and `answer`) checked by a
    verifier: an output is correct when it contains the gold answer as whole tokens (`contains_answer`).
    Correct beats incorrect; two correct or two incorrect outputs tie. A prompt without a gold
    answer is unscored."""

    path: str

    def __post_init__(self) -> None:
        self.answers = read_gold_answers(self.path)
        self.digest = hashlib.sha256(json.dumps(sorted(self.answers.items())).encode()).hexdigest()

    @property
    def config(self) -> dict:
        return {"backend": "gold", "answers_sha256": self.digest, "matcher": MATCHER}

    def judge(self, instruction: str, output_a: str, output_b: str, mode: str) -> Verdict:
        gold = self.answers.get(instruction)
        if gold is None:
            return Verdict(None, "", "unparseable: no gold answer for this prompt")
        a, b = (contains_answer(o, gold) for o in (output_a, output_b))
        return Verdict(0.5 if a == b else float(a), f"A correct: {a}, B correct: {b}")
