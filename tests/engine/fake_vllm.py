"""A stand-in for vLLM's OpenAI-compatible server, in vLLM's reply shape, computed by a transformers model.

Answers GET /version, GET /v1/models (id: the served name, root: the folder it serves) and POST /v1/completions with ``prompt_logprobs`` as vLLM does
(entry t: {str(token id): {"logprob", "rank", "decoded_token"}}, entry 0 null). Faults on demand:
``wrong_replies`` replies name token id + 1 in place of the one asked; ``fail_after`` requests, then
every request is answered 500 (a server that died behind its port).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


@torch.no_grad()
def prompt_logprobs(model, ids: list[int]) -> list:
    logits = model(input_ids=torch.tensor([ids])).logits.float()[0]
    logps = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    return [None] + [{str(t): {"logprob": float(lp), "rank": 1, "decoded_token": "x"}} for t, lp in zip(ids[1:], logps)]


class FakeVllm:
    def __init__(self, model, version: str = "0.32.0", name: str = "model", root: str | None = None):
        self.model, self.version, self.name, self.root = model, version, name, root
        self.wrong_replies = 0
        self.fail_after: int | None = None
        self.fail_after_seen = 0  # a test's note of fail_after (it is reset to None after the run)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def complete(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(body)
            if self.fail_after is not None and len(self.requests) > self.fail_after:
                return 500, {"error": "engine dead"}
            is_wrong = self.wrong_replies > 0
            self.wrong_replies -= is_wrong
            choices = []
            for index, ids in enumerate(body["prompt"]):
                entries = prompt_logprobs(self.model, ids)
                if is_wrong:
                    entries[-1] = {str(ids[-1] + 1): entries[-1][str(ids[-1])]}
                choices.append({"index": index, "text": "x", "prompt_logprobs": entries, "finish_reason": "length"})
        return 200, {"choices": choices}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                if self.path == "/version":
                    self._send(200, {"version": fake.version})
                else:
                    self._send(200, {"data": [{"id": fake.name, "root": fake.root}]})

            def do_POST(self):  # noqa: N802
                self._send(*fake.complete(json.loads(self.rfile.read(int(self.headers["Content-Length"])))))

            def log_message(self, *args):
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
