"""`dpo-eval generate --base-url`: the server samples from exactly the context that is scored.

A fake client stands in for the server (no real server needed); the completions endpoint of
the real client is checked against a small local HTTP server.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import save_tiny_model, tiny_llama, word_tokenizer

import dpo_eval.generate as gen
from dpo_eval.cli import main
from dpo_eval.openai_client import ChatClient, RequestFailed

sys.path.insert(0, str(Path(__file__).parent / "engine"))
from oracle import sequence_logp  # noqa: E402

REPLIES = ["sure here you go", "sorry i can not", "yes"]


class FakeServer:
    """Records each request; answers n choices with fixed texts, in the chat or completions shape."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def chat(self, body: dict) -> dict:
        self.calls.append(("chat", body))
        return {"choices": [{"message": {"content": REPLIES[i % 3]}, "finish_reason": "length",
                             "logprobs": {"content": [{"logprob": -0.5}] * 2}} for i in range(body["n"])]}

    def complete(self, body: dict) -> dict:
        self.calls.append(("complete", body))
        return {"choices": [{"text": REPLIES[i % 3], "finish_reason": "length",
                             "logprobs": {"token_logprobs": [-0.25, -0.5, None]}} for i in range(body["n"])]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": f"tell me about the {w}"}) + "\n"
                               for i, w in enumerate(["cat", "dog"])))
    bare = root / "bare"  # a tokenizer without a chat template
    tiny_llama(vocab_size=len(word_tokenizer()), seed=1).save_pretrained(bare)
    tok = word_tokenizer()
    tok.chat_template = None
    tok.save_pretrained(bare)
    return {"policy": save_tiny_model(root / "pol", seed=1), "bare": str(bare), "prompts": str(prompts),
            "root": root}


@pytest.fixture
def fake(monkeypatch):
    server = FakeServer()
    monkeypatch.setattr(gen, "ChatClient", lambda *args, **kwargs: server)
    return server


def invoke(setup, out, *extra, model=None, url="http://fake/v1"):
    args = ["generate", "--model", model or setup["policy"], "--prompts", setup["prompts"], "--out", str(out),
            "--base-url", url, "--n", "2", "--no-progress", "--cache-dir", str(setup["root"] / "cache"), *extra]
    return CliRunner().invoke(main, args)


def read_samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("model_key", "template"), [("policy", "plain"), ("bare", "auto"), ("bare", "plain")])
def test_plain_prompts_are_completed_from_the_scored_token_ids(setup, tmp_path, fake, model_key, template):
    from transformers import AutoModelForCausalLM

    result = invoke(setup, tmp_path / "g", "--template", template, model=setup[model_key])
    assert result.exit_code == 0, result.output
    assert [kind for kind, _ in fake.calls] == ["complete", "complete"]
    tok = word_tokenizer()
    asked = {tuple(body["prompt"]) for _, body in fake.calls}
    assert asked == {tuple(tok(f"tell me about the {w}")["input_ids"]) for w in ("cat", "dog")}
    assert all("messages" not in body and body["n"] == 2 for _, body in fake.calls)
    model = AutoModelForCausalLM.from_pretrained(setup[model_key]).eval()
    for s in read_samples(tmp_path / "g"):
        scored_context = tok(s["prompt"])["input_ids"]
        assert s["output"] in REPLIES and s["server_logp"] == -0.75
        assert s["policy_logp"] == pytest.approx(sequence_logp(model, scored_context, s["token_ids"]), abs=1e-4)


def test_chat_template_prompts_are_sent_as_messages(setup, tmp_path, fake):
    result = invoke(setup, tmp_path / "g")
    assert result.exit_code == 0, result.output
    assert [kind for kind, _ in fake.calls] == ["chat", "chat"]
    assert fake.calls[0][1]["messages"] == [{"role": "user", "content": "tell me about the cat"}]
    assert all(s["server_logp"] == -1.0 for s in read_samples(tmp_path / "g"))


def test_chat_template_without_one_is_refused_before_any_request(setup, tmp_path, fake):
    result = invoke(setup, tmp_path / "g", "--template", "chat", model=setup["bare"])
    assert result.exit_code == 2 and "--template chat" in result.output and "--template plain" in result.output
    assert fake.calls == []


def test_another_server_is_a_settings_change(setup, tmp_path, fake):
    assert invoke(setup, tmp_path / "g").exit_code == 0
    result = invoke(setup, tmp_path / "g", url="http://elsewhere/v1")
    assert result.exit_code == 2 and "--base-url: http://fake/v1 stored in" in result.output
    assert "--vllm" not in result.output.replace("--base-url/--vllm", "")


def test_vllm_and_base_url_together_are_refused(setup, tmp_path, fake):
    result = invoke(setup, tmp_path / "g", "--vllm")
    assert result.exit_code == 2 and "--vllm" in result.output and "--base-url" in result.output


def test_the_client_posts_raw_prompts_to_completions():
    seen: list[tuple[str, dict]] = []
    replies = [b"{\"choices\": [{\"message\": {}}]}", b"{\"choices\": [{\"text\": \"ok\"}]}"]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's name)
            seen.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            payload = replies[min(len(seen), 2) - 1]
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ChatClient(f"http://127.0.0.1:{server.server_port}/v1", max_retries=2, _sleep=lambda s: None)
        # the first reply lacks "text": malformed for /completions, so it is retried
        assert client.complete({"prompt": [5, 6]})["choices"][0]["text"] == "ok"
        assert seen == [("/v1/completions", {"prompt": [5, 6]})] * 2
        with pytest.raises(RequestFailed):
            ChatClient(f"http://127.0.0.1:{server.server_port}/v1", max_retries=0).chat({"messages": []})
    finally:
        server.shutdown()
