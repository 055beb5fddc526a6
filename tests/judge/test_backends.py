"""Judge backends: the OpenAI-compatible judge's cache identity, label probabilities, gold answers."""

from __future__ import annotations

import pytest

from dpo_eval.judge.backends import OpenAIJudge, server_identity
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
