"""A real local HTTP proxy that injects faults in front of a real OpenAI-compatible server.

Faults cycle through a fixed schedule by request number: 429, 500, a delay past the client's
timeout, a dropped connection, a 200 with garbage, then a faithful forward. `injected` counts each
fault actually served (by schedule name); forwarded request bodies are recorded so tests can check
that nothing is asked twice. With `hold_after=N`, every forward after the first N waits until
`released` is set (`holding` is set when the first one waits): a test can kill a client at a known
point instead of racing the clock.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCHEDULE = ("429", "500", "delay", "drop", "garbage", "forward")
FAULTS = tuple(kind for kind in SCHEDULE if kind != "forward")


class FaultProxy:
    def __init__(self, upstream: str, schedule=SCHEDULE, delay: float = 3.0, hold_after: int | None = None):
        self.upstream, self.schedule, self.delay = upstream.rstrip("/"), schedule, delay
        self.count = 0
        self.hold_after, self.n_forwards = hold_after, 0
        self.holding, self.released = threading.Event(), threading.Event()
        self.injected: Counter[str] = Counter()  # fault kind -> how many requests got it
        self.forwarded: list[dict] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    fault = proxy.schedule[proxy.count % len(proxy.schedule)]
                    proxy.count += 1
                proxy.handle(self, fault, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, handler, fault: str, body: bytes) -> None:
        if fault != "forward":
            with self.lock:
                self.injected[fault] += 1
        if fault in ("429", "500"):
            handler.send_response(int(fault))
            handler.end_headers()
            handler.wfile.write(b'{"error": "injected"}')
        elif fault == "delay":
            time.sleep(self.delay)
            handler.close_connection = True
        elif fault == "drop":
            handler.close_connection = True
            handler.connection.close()
        elif fault == "garbage":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b"\x00not json at all{")
        else:
            self.forward(handler, body)

    def forward(self, handler, body: bytes) -> None:
        with self.lock:
            self.n_forwards += 1
            is_held = self.hold_after is not None and self.n_forwards > self.hold_after
        if is_held:
            self.holding.set()
            self.released.wait()
        request = urllib.request.Request(self.upstream + handler.path.removeprefix("/v1"), data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = response.read()
        with self.lock:
            self.forwarded.append(json.loads(body))
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client was killed while its request was held
            pass

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()


def fault_kind(message: str) -> str:
    """Which injected fault a ChatClient TransientError message reports (named as in SCHEDULE)."""
    if message.startswith("http 429"):
        return "429"
    if message.startswith("http 500"):
        return "500"
    if message.startswith("malformed reply"):
        return "garbage"
    if "timed out" in message:
        return "delay"
    return "drop"


def record_client_faults(client) -> Counter:
    """Wrap a ChatClient's single-attempt `_post` so every transient failure it sees is counted by kind."""
    from dpo_eval.openai_client import TransientError

    seen: Counter[str] = Counter()
    post = client._post

    def recording_post(*args, **kwargs) -> dict:
        try:
            return post(*args, **kwargs)
        except TransientError as err:
            seen[fault_kind(str(err))] += 1
            raise

    client._post = recording_post
    return seen
