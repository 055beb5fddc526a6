"""A small client for OpenAI-compatible chat-completions (and completions) servers (OpenAI, vLLM,
llama.cpp, TGI ...).

Retries transient failures (429, 5xx, timeouts, dropped connections, malformed replies) with
exponential backoff and jitter; the API key is read from the environment variable named by
api_key_env at call time and is never stored or written.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class TransientError(Exception):
    """A failure worth retrying."""


class RequestFailed(Exception):
    """A request that failed for good (refused, or still failing after every retry)."""


@dataclass
class ChatClient:
    base_url: str
    api_key_env: str | None = None
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 0.5
    _sleep: object = field(default=time.sleep, repr=False)

    def _post(self, body: dict, path: str = "/chat/completions", reply_key: str = "message") -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.base_url.rstrip("/") + path,
                                         data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:200].decode(errors="replace")
            if err.code in RETRYABLE_STATUS:
                raise TransientError(f"http {err.code}: {detail}") from None
            raise RequestFailed(f"request refused: http {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            raise TransientError(f"{type(err).__name__}: {err}") from None
        try:
            reply = json.loads(payload)
            reply["choices"][0][reply_key]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TransientError(f"malformed reply: {payload[:200]!r}") from None
        return reply

    def chat(self, body: dict) -> dict:
        """POST /chat/completions with retries; raises RequestFailed with the reason when it gives up."""
        return self._with_retries(body, "/chat/completions", "message")

    def complete(self, body: dict) -> dict:
        """POST /completions (a raw prompt: text or token ids) with retries, like chat()."""
        return self._with_retries(body, "/completions", "text")

    def _with_retries(self, body: dict, path: str, reply_key: str) -> dict:
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(body, path, reply_key)
            except TransientError as err:
                last = str(err)
            if attempt < self.max_retries:
                self._sleep(self.backoff * 2**attempt * (1 + random.random()))
        raise RequestFailed(f"failed after {self.max_retries + 1} attempts: {last}")
