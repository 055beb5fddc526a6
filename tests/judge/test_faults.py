"""The OpenAI-compatible judge behind the real fault-injecting proxy, in front of a stub chat server.

The stub (a real local HTTP server answering every chat completion with "A" and fixed first-token
log-probs) makes the fault handling testable without vLLM: each injected fault must be seen by the
client and survived, and a comparison may end unscored only when its retries were exhausted.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fault_proxy import FAULTS, FaultProxy, record_client_faults
from kill_restart import HELD, N_PROMPTS, keys_are_unique, kill_then_rerun

from dpo_eval.judge.backends import OpenAIJudge
from dpo_eval.judge.judging import Comparison, Judging
from dpo_eval.judge.store import JudgmentStore
from dpo_eval.judge.templates import load_template

LOGP_A, LOGP_B = -0.5, -1.5
P_A = 1 / (1 + math.exp(LOGP_B - LOGP_A))  # exp(a) / (exp(a) + exp(b)), written as a sigmoid


class StubChatServer:
    """Answers POST /v1/chat/completions with content "A" and first-token top log-probs A, B, C."""

    def __init__(self):
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A"}, "logprobs": {"content": [
            {"token": "A", "logprob": LOGP_A, "top_logprobs": [{"token": "A", "logprob": LOGP_A},
                                                                {"token": "B", "logprob": LOGP_B},
                                                                {"token": "C", "logprob": -3.0}]}]}}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def upstream():
    stub = StubChatServer()
    yield stub.url
    stub.close()


def comparisons(n: int) -> list[Comparison]:
    return [Comparison("ckpt", str(i), f"What is {i} + {i}?", f"{2 * i}", f"It is {2 * i + 1}.") for i in range(n)]


def judge_through(proxy_url: str, tmp_path, n: int, concurrency: int, retries: int):
    """Probability-mode judging of n comparisons through the proxy; (records, faults the client saw)."""
    template = load_template("pairwise")
    judge = OpenAIJudge("stub", proxy_url, template, api_key_env=None, timeout=1.0, max_retries=retries, backoff=0.001)
    seen = record_client_faults(judge.client)
    store = JudgmentStore(tmp_path / "cache.sqlite")
    records = Judging(judge, template, store, "probability").run(comparisons(n), concurrency, show_progress=False)
    n_stored = len(store)
    store.close()
    return records, seen, n_stored


def expected_preference(record: dict) -> float:
    return P_A if record["model_position"] == ["A"] else 1 - P_A  # the stub always favours label A


def test_each_fault_is_seen_and_survived_one_request_at_a_time(upstream, tmp_path):
    # one worker: each comparison takes the next 6 requests, 5 faults then the forward; 5 retries suffice
    proxy = FaultProxy(upstream, delay=1.5)
    records, seen, n_stored = judge_through(proxy.url, tmp_path, n=4, concurrency=1, retries=5)
    proxy.close()
    assert proxy.injected == {kind: 4 for kind in FAULTS} and seen == proxy.injected
    assert len(proxy.forwarded) == 4 and proxy.count == 24
    for r in records:
        assert r["unscored_reason"] is None and r["preference"] == pytest.approx(expected_preference(r), abs=1e-12)
    assert n_stored == 4


def test_concurrent_faults_end_scored_or_unscored_only_when_retries_ran_out(upstream, tmp_path):
    proxy = FaultProxy(upstream, delay=1.5)
    records, seen, n_stored = judge_through(proxy.url, tmp_path, n=12, concurrency=3, retries=6)
    proxy.close()
    assert [r["prompt_id"] for r in records] == [str(i) for i in range(12)]
    assert all(proxy.injected[kind] >= 1 for kind in FAULTS)
    for kind in ("429", "500", "garbage", "drop"):  # answered at once, so the client sees exactly these
        assert seen[kind] == proxy.injected[kind], (kind, seen, proxy.injected)
    assert seen["delay"] >= proxy.injected["delay"]
    scored = [r for r in records if r["preference"] is not None]
    for r in records:
        if r["preference"] is None:
            assert r["unscored_reason"].startswith("order 1: failed after 7 attempts"), r["unscored_reason"]
        else:
            assert r["preference"] == pytest.approx(expected_preference(r), abs=1e-12)
    assert scored and len(proxy.forwarded) == len(scored) == n_stored  # transport failures are not cached


def test_exhausted_retries_are_unscored_with_the_transport_reason_and_retried_next_run(upstream, tmp_path):
    failing = FaultProxy(upstream, schedule=("500",))
    records, seen, n_stored = judge_through(failing.url, tmp_path, n=3, concurrency=2, retries=2)
    failing.close()
    assert seen == {"500": 9} and failing.injected == {"500": 9}  # 3 comparisons x 3 attempts
    for r in records:
        assert r["preference"] is None and r["unscored_reason"].startswith("order 1: failed after 3 attempts: http 500")
    assert n_stored == 0
    healthy = FaultProxy(upstream, schedule=("forward",))
    again, _, n_stored = judge_through(healthy.url, tmp_path, n=3, concurrency=2, retries=2)
    healthy.close()
    assert len(healthy.forwarded) == 3 and n_stored == 3
    assert all(r["preference"] == pytest.approx(expected_preference(r)) for r in again)


def test_killed_judge_resumes_without_loss_or_duplicates(upstream, tmp_path):
    """The real-server kill test's scenario against the stub: killed at a known point (the proxy holds
    every request after the first HELD forwards), the rerun finishes, asking only for what was missing."""
    # the stub answers at once: the other stub tests' timeout, delay and backoff (the real server's 4 s
    # timeout and 0.01 s backoff made this test 62 s, 24 delay faults and ~140 retries)
    kill = dict(delay=1.5, timeout=1.0, backoff=0.001)
    stored_before, records, summary, cache = kill_then_rerun(upstream, tmp_path, **kill)
    assert stored_before == HELD
    # The stub says "A" whichever output is first: the two orders disagree, a scored tie each time.
    assert all(r["preference"] == 0.5 for r in records), [(r["preference"], r["unscored_reason"]) for r in records]
    assert summary["n_judge_calls"] == 2 * N_PROMPTS - stored_before
    assert keys_are_unique(cache)
