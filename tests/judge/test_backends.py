"""Judge backends: the OpenAI-compatible judge's cache identity, label probabilities, gold answers."""

from __future__ import annotations

import math

import pytest

from dpo_eval.judge.backends import OpenAIJudge, label_probability, server_identity
from dpo_eval.judge.judging import Comparison, Judging
from dpo_eval.judge.store import JudgmentStore
from dpo_eval.judge.templates import load_template


def fake_reply(content: str, top: dict[str, float] | None = None) -> dict:
    """A chat-completions reply; `top` = the first token's top log-probs."""
    choice = {"message": {"content": content}}
    if top is not None:
        choice["logprobs"] = {"content": [{"top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()]}]}
    return {"choices": [choice]}


def openai_judge(base_url: str, calls: list[str]) -> OpenAIJudge:
    """An OpenAIJudge whose transport is replaced by a recorder answering "A" (no network)."""
    judge = OpenAIJudge("same-name", base_url, load_template("pairwise"), api_key_env=None)
    judge.client.chat = lambda body: calls.append(base_url) or fake_reply("A", {"A": -0.1, "B": -2.5})
    return judge


def test_cache_is_keyed_by_server_as_well_as_model_name(tmp_path):
    template = load_template("pairwise")
    comparison = Comparison("m", "1", "q", "x", "y")
    calls: list[str] = []
    store = JudgmentStore(tmp_path / "cache.sqlite")
    for url in ("http://host-one:8000/v1", "http://host-two:8000/v1"):
        records = Judging(openai_judge(url, calls), template, store, "probability").run([comparison],
                                                                                       show_progress=False)
        assert records[0]["preference"] is not None and records[0]["judge"]["base_url"] == url
    assert calls == ["http://host-one:8000/v1", "http://host-two:8000/v1"]  # the second server was asked
    assert len(store) == 2
    # the same server spelled with a trailing slash or an upper-case host reuses the stored verdict
    for url in ("http://host-one:8000/v1/", "HTTP://Host-One:8000/v1"):
        Judging(openai_judge(url, calls), template, store, "probability").run([comparison], show_progress=False)
    assert len(calls) == 2 and len(store) == 2
    store.close()


def test_judge_config_records_the_normalised_server_without_credentials():
    judge = openai_judge("https://user:secret@API.example.com/v1/", [])
    assert judge.config["base_url"] == "https://api.example.com/v1"
    assert "secret" not in str(judge.config)


@pytest.mark.parametrize("url, expected", [
    ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
    ("HTTP://LocalHost:8000/v1", "http://localhost:8000/v1"),
    ("  https://api.openai.com/v1  ", "https://api.openai.com/v1"),
    ("http://[::1]:8000/v1/", "http://[::1]:8000/v1"),
    ("http://localhost:8001/v1", "http://localhost:8001/v1"),
])
def test_server_identity(url, expected):
    assert server_identity(url) == expected


def sigmoid_by_hand(a: float, b: float) -> float:
    """exp(a) / (exp(a) + exp(b)) rewritten as 1 / (1 + exp(b - a)): finite for any finite a, b."""
    return 1.0 / (1.0 + math.exp(b - a))


@pytest.mark.parametrize("a, b", [(-800.0, -801.0), (-801.0, -800.0), (-1e4, -1e4 - 3), (-0.1, -2.5), (-2.0, -2.0)])
def test_label_probability_is_stable_for_tiny_probabilities(a, b):
    verdict = label_probability({"A": a, " B": b, "C": -0.01}, "A")
    assert verdict.is_scored and verdict.preference_a == pytest.approx(sigmoid_by_hand(a, b), rel=1e-12)


def test_label_probability_edge_cases():
    assert label_probability({"A": -800.0, "B": -801.0}, "A").preference_a == pytest.approx(1 / (1 + math.exp(-1)))
    assert label_probability({"A": -math.inf, "B": -3.0}, "B").preference_a == 0.0
    missing = label_probability({"A": -0.01, "C": -5.0}, "A")
    assert missing.preference_a is None and "['B'] not among" in missing.reason and missing.raw == "A"
    none = label_probability({"A": -math.inf, "B": -math.inf}, "")
    assert none.preference_a is None and "no probability" in none.reason
    junk = label_probability({"A": None, "B": -1.0}, "")
    assert junk.preference_a is None and "non-numeric" in junk.reason


def test_openai_probability_mode_survives_underflowing_logprobs(tmp_path):
    template = load_template("pairwise")
    judge = OpenAIJudge("m", "http://h/v1", template, api_key_env=None)
    judge.client.chat = lambda body: fake_reply("A", {"A": -800.0, "B": -801.0})
    store = JudgmentStore(tmp_path / "c.sqlite")
    records = Judging(judge, template, store, "probability").run([Comparison("m", "1", "q", "x", "y")],
                                                                 show_progress=False)
    store.close()
    p_a = sigmoid_by_hand(-800.0, -801.0)
    assert records[0]["preference"] == pytest.approx(p_a if records[0]["model_position"] == ["A"] else 1 - p_a)
