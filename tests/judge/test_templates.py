"""Judge templates: one-pass substitution of the three fields, and stable template hashes."""

from __future__ import annotations

import hashlib

import pytest

from dpo_eval.errors import UserError
from dpo_eval.judge.templates import BUILTIN, JudgeTemplate, load_template


def test_field_names_inside_the_data_are_never_substituted():
    template = JudgeTemplate("t", "I: {instruction}\nA: {output_a}\nB: {output_b}")
    rendered = template.render("Explain {output_b}", "model says {output_b} and {instruction}", "BASELINE {output_a}")
    assert rendered == ("I: Explain {output_b}\nA: model says {output_b} and {instruction}\n"
                        "B: BASELINE {output_a}")


def test_literal_braces_in_the_template_and_data_stay_as_written():
    template = JudgeTemplate("t", 'Reply as JSON {"winner": "A"} or {{B}}; {other}\n{instruction}|{output_a}|{output_b}')
    rendered = template.render("a {b} c", "{", "}")
    assert rendered == 'Reply as JSON {"winner": "A"} or {{B}}; {other}\na {b} c|{|}'


def test_backslashes_in_the_data_are_kept_verbatim():
    template = JudgeTemplate("t", "{instruction}|{output_a}|{output_b}")
    assert template.render(r"\1 \g<0>", "\\", r"\n") == r"\1 \g<0>|\|\n"


# pinned: judgment caches are keyed by these; a change here invalidates every stored verdict
BUILTIN_SHA256 = {"pairwise": "43cea44504915b6036892e38cba8392f56372760da0f26ec2000b547139ecabf",
                  "pairwise-harmless": "8eac50ad902cfcf6c40de2e8dd11e2d6e7177c1c2cdd95e0a61aac8ed6af0304"}


def test_builtin_template_hashes_are_pinned():
    assert set(BUILTIN) == set(BUILTIN_SHA256)
    for name, text in BUILTIN.items():
        assert load_template(name).sha256 == hashlib.sha256(text.encode()).hexdigest() == BUILTIN_SHA256[name]


def test_template_file_must_use_every_field(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("{instruction} {output_a}")
    with pytest.raises(UserError, match=r"t.txt: the template lacks \{output_b\}"):
        load_template(str(path))
