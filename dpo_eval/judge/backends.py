"""Judge backends: an OpenAI-compatible server, a Python rule, a local transformers model.

Each backend answers one rendered prompt with a Verdict: preference for the output shown as A,
its raw output, and, when it could not score, the reason. Failures never become ties or losses.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from dpo_eval.errors import UserError
from dpo_eval.judge.store import Verdict
from dpo_eval.judge.templates import LABELS, JudgeTemplate

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
_VERDICT = re.compile(r"^\W*(?:response|output|answer)?\W*\(?\s*([AB])\b", re.IGNORECASE)


def parse_verdict(text: str) -> Verdict:
    """'A' / 'B' (optionally 'Response A', '(B)', 'A.') at the start of the answer; else unscored."""
    match = _VERDICT.match(text.strip())
    if not match:
        return Verdict(None, text, "unparseable: no leading A or B in the judge's answer")
    return Verdict(1.0 if match.group(1).upper() == "A" else 0.0, text)


def label_probability(top_logprobs: dict[str, float], raw: str) -> Verdict:
    """P(A) normalised over the two labels from the first token's top log-probs."""
    found: dict[str, float] = {}
    for token, logprob in top_logprobs.items():
        label = token.strip().upper()
        if label in LABELS and label not in found:
            found[label] = logprob
    if len(found) < 2:
        return Verdict(None, raw, f"unparseable: labels {sorted(set(LABELS) - set(found))} not among the "
                                  "first token's top log-probs")
    a, b = math.exp(found["A"]), math.exp(found["B"])
    return Verdict(a / (a + b), raw)


class TransientError(Exception):
    """A failure worth retrying (rate limit, server error, timeout, malformed reply)."""


@dataclass
class OpenAIJudge:
    """Any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, TGI ...).

    The API key is read from the environment variable named by api_key_env at call time and is
    never stored or written. Retries transient failures with exponential backoff and jitter.
    """

    model: str
    base_url: str
    template: JudgeTemplate
    api_key_env: str | None = None
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 0.5
    max_tokens: int = 8
    _sleep: object = field(default=time.sleep, repr=False)

    @property
    def config(self) -> dict:
        return {"backend": "openai", "model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens}

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions",
                                         data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:200].decode(errors="replace")
            if err.code in RETRYABLE_STATUS:
                raise TransientError(f"http {err.code}: {detail}") from None
            raise PermissionError(f"http {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            raise TransientError(f"{type(err).__name__}: {err}") from None
        try:
            reply = json.loads(payload)
            reply["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TransientError(f"malformed reply: {payload[:200]!r}") from None
        return reply

    def _call(self, body: dict) -> dict | Verdict:
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(body)
            except TransientError as err:
                last = str(err)
            except PermissionError as err:
                return Verdict(None, str(err), f"request refused: {err}")
            if attempt < self.max_retries:
                self._sleep(self.backoff * 2**attempt * (1 + random.random()))
        return Verdict(None, last, f"failed after {self.max_retries + 1} attempts: {last}")

    def judge(self, instruction: str, output_a: str, output_b: str, mode: str) -> Verdict:
        prompt = self.template.render(instruction, output_a, output_b)
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.0,
                "max_tokens": 1 if mode == "probability" else self.max_tokens}
        if mode == "probability":
            body.update(logprobs=True, top_logprobs=20)
        reply = self._call(body)
        if isinstance(reply, Verdict):
            return reply
        choice = reply["choices"][0]
        text = choice["message"].get("content") or ""
        if mode == "verdict":
            return parse_verdict(text)
        try:
            first = choice["logprobs"]["content"][0]["top_logprobs"]
            return label_probability({t["token"]: t["logprob"] for t in first}, text)
        except (KeyError, IndexError, TypeError):
            return Verdict(None, text, "unparseable: the server returned no top log-probs")


@dataclass
class RuleJudge:
    """A Python callable `module:function(instruction, output_a, output_b)` returning P(A better)
    in [0, 1], or "A" / "B" / "tie". For verifiable tasks (e.g. gold answers checked by a verifier)."""

    spec: str

    def __post_init__(self) -> None:
        module_name, _, function_name = self.spec.partition(":")
        try:
            self.function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError, ValueError):
            raise UserError(f"rule judge {self.spec!r}: cannot import; give module:function on the Python path") from None

    @property
    def config(self) -> dict:
        return {"backend": "rule", "function": self.spec}

    def judge(self, instruction: str, output_a: str, output_b: str, mode: str) -> Verdict:
        try:
            answer = self.function(instruction, output_a, output_b)
        except Exception as err:  # a rule's own bug must not stop the run: record it
            return Verdict(None, repr(err), f"rule raised {type(err).__name__}: {err}")
        if answer in ("A", "B", "tie"):
            return Verdict({"A": 1.0, "B": 0.0, "tie": 0.5}[answer], str(answer))
        if isinstance(answer, int | float) and not isinstance(answer, bool) and 0 <= answer <= 1:
            return Verdict(float(answer), str(answer))
        return Verdict(None, repr(answer), "unparseable: a rule must return P(A) in [0, 1], 'A', 'B' or 'tie'")
