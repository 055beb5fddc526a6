"""Judge backends: an OpenAI-compatible server and a Python rule (gold answers: gold.py; local model: local.py).

Each backend answers one rendered prompt with a Verdict: preference for the output shown as A,
its raw output, and, when it could not score, the reason. Failures never become ties or losses.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from dpo_eval.errors import UserError
from dpo_eval.judge.store import Verdict
from dpo_eval.judge.templates import LABELS, JudgeTemplate
from dpo_eval.openai_client import ChatClient, RequestFailed

_VERDICT = re.compile(r"^\W*(?:response|output|answer)?\W*\(?\s*([AB])\b", re.IGNORECASE)


def parse_verdict(text: str) -> Verdict:
    """'A' / 'B' (optionally 'Response A', '(B)', 'A.') at the start of the answer; else unscored."""
    match = _VERDICT.match(text.strip())
    if not match:
        return Verdict(None, text, "unparseable: no leading A or B in the judge's answer")
    return Verdict(1.0 if match.group(1).upper() == "A" else 0.0, text)


def preference_from_logprobs(logp_a: float, logp_b: float) -> float | None:
    """P(A) normalised over the two labels, exp(a) / (exp(a) + exp(b)) = sigmoid(a - b), computed
    without exponentiating either log-prob (no 0/0 at -800); None when neither label has mass."""
    if math.isnan(logp_a) or math.isnan(logp_b) or logp_a == logp_b == -math.inf:
        return None
    if logp_a == logp_b:  # both finite and equal, or both +inf
        return 0.5
    d = logp_a - logp_b
    return 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))


def label_probability(top_logprobs: dict[str, float], raw: str) -> Verdict:
    """P(A) normalised over the two labels from the first token's top log-probs ("A", " a" ... count
    as A; the first spelling listed wins). A label absent from the top log-probs leaves it unscored."""
    found: dict[str, float] = {}
    for token, logprob in top_logprobs.items():
        label = token.strip().upper()
        if label in LABELS and label not in found:
            found[label] = logprob
    if len(found) < 2:
        return Verdict(None, raw, f"unparseable: labels {sorted(set(LABELS) - set(found))} not among the "
                                  "first token's top log-probs")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in found.values()):
        return Verdict(None, raw, f"unparseable: non-numeric label log-probs {found}")
    preference = preference_from_logprobs(float(found["A"]), float(found["B"]))
    if preference is None:
        return Verdict(None, raw, f"unparseable: label log-probs {found} give no probability")
    return Verdict(preference, raw)


def server_identity(base_url: str) -> str:
    """The server a base URL names, for cache keys and records: scheme and host lower-cased, no
    credentials (user:password@), no trailing slash; "http://H:8000/v1/" -> "http://h:8000/v1"."""
    parts = urlsplit(base_url.strip())
    try:
        host, port = parts.hostname or "", parts.port
    except ValueError:  # an unparseable port: the client will report the URL; key by its text
        return base_url.strip().rstrip("/")
    host = f"[{host}]" if ":" in host else host
    host += f":{port}" if port else ""
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), parts.query, "")).rstrip("/")


@dataclass
class OpenAIJudge:
    """A judge behind any OpenAI-compatible chat-completions server (see dpo_eval.openai_client)."""

    model: str
    base_url: str
    template: JudgeTemplate
    api_key_env: str | None = None
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 0.5
    max_tokens: int = 8

    def __post_init__(self) -> None:
        self.client = ChatClient(self.base_url, self.api_key_env, self.timeout, self.max_retries, self.backoff)

    @property
    def config(self) -> dict:
        """What identifies its verdicts (part of every cache key): the server and the model served there."""
        return {"backend": "openai", "base_url": server_identity(self.base_url), "model": self.model,
                "temperature": 0.0, "max_tokens": self.max_tokens}

    def judge(self, instruction: str, output_a: str, output_b: str, mode: str) -> Verdict:
        prompt = self.template.render(instruction, output_a, output_b)
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.0,
                "max_tokens": 1 if mode == "probability" else self.max_tokens}
        if mode == "probability":
            body.update(logprobs=True, top_logprobs=20)
        try:
            reply = self.client.chat(body)
        except RequestFailed as err:
            return Verdict(None, str(err), str(err))
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
            raise UserError(f"--judge rule:{self.spec}: cannot import {self.spec!r}; give module:function importable "
                            "from the Python path (e.g. set PYTHONPATH)") from None

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
