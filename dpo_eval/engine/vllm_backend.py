"""Sequence log-probs through vLLM (``--logprob-backend vllm``): for models past one GPU.

vLLM runs tensor and pipeline parallel (``--vllm-arg=--tensor-parallel-size=8``); dpo-eval asks it for
the log-prob of every token of a sequence it already tokenized, so nothing is re-tokenized:

    POST /v1/completions {"prompt": [prompt ids + response ids, ...], "max_tokens": 1,
                          "prompt_logprobs": 0, "temperature": 0}
    choice i: prompt_logprobs[t] = {str(id_t): {"logprob": log p(id_t | ids_<t), ...}}  (t = 0: null)

The sum over response positions t = P .. P+L-1 (P prompt tokens, L response tokens) is the sequence
log-prob log pi(y | x) = sum_t log p(y_t | x, y_<t), the engine's figure; the sum of squares and the
count come from the same numbers (``SeqRow``). Each returned entry must carry the token id asked for at
its position: a reply that does not is asked again, then refused (``UserError``), never mixed with
another backend's numbers. What needs a whole next-token distribution (analytic KL, entropy, TDPO)
is not available here (``logprob_settings.refuse_with_vllm``).

Results are cached per model in a directory of their own whose name holds the backend, the vLLM
version and a digest of the vLLM options (``vllm_sequence_cache``).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from dpo_eval.engine.cache import LogpCache
from dpo_eval.engine.multi import SEQUENCE_STATS_TAG, SeqRow, SequenceStats, sequence_key
from dpo_eval.errors import UserError
from dpo_eval.logprob_settings import LogprobSettings
from dpo_eval.openai_client import ChatClient, RequestFailed

SEQUENCES_PER_REQUEST = 16
CONCURRENT_REQUESTS = 4
TRANSPORT_RETRIES, BACKOFF_SECONDS = 4, 0.5  # a failed request (dropped connection, 5xx) is retried this often
MISMATCH_ATTEMPTS = 3  # a reply naming another token than asked is asked again this often, then refused


class TokenMismatch(Exception):
    """vLLM returned a log-prob for another token than the one asked at some position."""


@dataclass(frozen=True)
class VllmOptions:
    """How to reach vLLM: a server started per model (python, args) or one already running (url)."""

    python: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None  # an OpenAI-compatible vLLM base URL (http://host:port/v1) serving this model

    def digest(self) -> str:
        """What besides the model and the vLLM version changes its numbers: its options (or its URL)."""
        text = f"url={self.url}" if self.url else "\0".join(self.args)
        return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def vllm_sequence_cache(root, fingerprint: str, version: str, options: VllmOptions) -> LogpCache:
    """The per-sequence statistics cache of one model served by vLLM: backend, version, options in its key."""
    return LogpCache(root, fingerprint, f"vllm{version}-{options.digest()}-{SEQUENCE_STATS_TAG}")


def _request_body(served: str, sequences: Sequence[tuple[tuple, tuple]]) -> dict:
    return {"model": served, "prompt": [list(p) + list(r) for p, r in sequences], "max_tokens": 1,
            "prompt_logprobs": 0, "temperature": 0.0}


def row_from_prompt_logprobs(entries: list, prompt: Sequence[int], response: Sequence[int]) -> SeqRow:
    """(sum, sum of squares, tokens, 0) of the response positions, each entry checked against the id asked."""
    ids = list(prompt) + list(response)
    if len(entries) != len(ids):
        raise TokenMismatch(f"{len(entries)} prompt log-probs for {len(ids)} tokens")
    values = []
    for position in range(len(prompt), len(ids)):
        entry = entries[position] or {}
        asked = str(ids[position])
        if asked not in entry:
            got = ", ".join(list(entry)[:3]) or "nothing"
            raise TokenMismatch(f"position {position}: asked token {asked}, got {got}")
        values.append(float(entry[asked]["logprob"]))
    logps = np.array(values, dtype=np.float64)
    return float(logps.sum()), float((logps * logps).sum()), len(values), 0


def _ask(client: ChatClient, served: str, sequences: Sequence[tuple[tuple, tuple]], url: str) -> list[SeqRow]:
    """Rows of one request's sequences: asked again on a token mismatch, then refused."""
    last = ""
    for _ in range(MISMATCH_ATTEMPTS):
        try:
            reply = client.complete(_request_body(served, sequences))
        except RequestFailed as error:
            raise UserError(f"vLLM at {url} failed mid-run ({error}); nothing else was used in its place: "
                            "rerun once it serves again (rows already computed are cached)") from None
        try:
            choices = sorted(reply["choices"], key=lambda c: c.get("index", 0))
            if len(choices) != len(sequences):
                raise TokenMismatch(f"{len(choices)} choices for {len(sequences)} prompts")
            return [row_from_prompt_logprobs(c.get("prompt_logprobs") or [], p, r)
                    for c, (p, r) in zip(choices, sequences)]
        except TokenMismatch as error:
            last = str(error)
    raise UserError(f"vLLM at {url} returned log-probs for other tokens than asked ({last}) in "
                    f"{MISMATCH_ATTEMPTS} attempts: refused; check that it serves this model with its tokenizer")


def compute_vllm_rows(url: str, served: str, sequences: Sequence[tuple[tuple, tuple]], desc: str = "vLLM log-probs",
                      show_progress: bool = True, client: ChatClient | None = None,
                      on_rows: Callable[[dict[str, SeqRow]], None] | None = None) -> list[SeqRow]:
    """One row per (prompt ids, response ids) sequence, in order, from the vLLM server at url.

    on_rows receives each finished request's rows keyed by ``sequence_key`` (to cache them as they come)."""
    client = client or ChatClient(url, timeout=600.0, max_retries=TRANSPORT_RETRIES, backoff=BACKOFF_SECONDS)
    chunks = [sequences[i: i + SEQUENCES_PER_REQUEST] for i in range(0, len(sequences), SEQUENCES_PER_REQUEST)]
    bar = tqdm(total=len(sequences), unit="seq", desc=desc, file=sys.stderr, disable=not show_progress or not chunks,
               dynamic_ncols=True)
    rows: list[SeqRow] = []
    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        for chunk, chunk_rows in zip(chunks, pool.map(lambda chunk: _ask(client, served, chunk, url), chunks)):
            if on_rows:
                on_rows({sequence_key(p, r): row for (p, r), row in zip(chunk, chunk_rows)})
            rows.extend(chunk_rows)
            bar.update(len(chunk_rows))
    bar.close()
    return rows


def score_sequences_vllm(server, sequences: Sequence[tuple[tuple, tuple]], cache: LogpCache | None, *,
                         desc: str = "vLLM log-probs", show_progress: bool = True, per_item: int = 1) -> SequenceStats:
    """``engine.multi.score_sequences`` through vLLM: only what the cache lacks is asked for.

    server() returns (base URL, served model name); it is called only when something is missing, so a
    fully cached model never starts a server. n_computed counts distinct items (runs of per_item
    consecutive sequences: 2 for a pair) with a sequence computed by this call.
    """
    stored = cache.load() if cache else {}
    keys = [sequence_key(p, r) for p, r in sequences]
    missing: dict[str, tuple[tuple, tuple]] = {}
    for (prompt, response), key in zip(sequences, keys):
        if key not in stored:
            missing.setdefault(key, (tuple(prompt), tuple(response)))
    if missing:
        url, served = server()
        rows = compute_vllm_rows(url, served, list(missing.values()), desc, show_progress,
                                 on_rows=cache.append if cache else None)
        stored.update(zip(missing, rows))
    values = np.array([stored[k] for k in keys], dtype=np.float64).reshape(-1, 4)
    items = [tuple(keys[i: i + per_item]) for i in range(0, len(keys), per_item)]
    n_computed = len({item for item in items if any(key in missing for key in item)})
    return SequenceStats(values[:, 0], values[:, 1], values[:, 2].astype(np.int64), n_computed=n_computed)


def vllm_stats(identity, sequences: Sequence[tuple[tuple, tuple]], cache_root, settings: LogprobSettings, role: str,
               show_progress: bool = True, per_item: int = 1) -> SequenceStats:
    """Sequence statistics of one model (role "policy" or "reference") through vLLM, cached under its version
    (per_item: as ``score_sequences_vllm``). A server already running (--vllm-url, --vllm-ref-url) must list
    this model (``vllm_server.served_model_for``)."""
    from dpo_eval.vllm_server import SERVED_NAME, SERVERS, installed_version, served_model_for, served_version

    url = settings.vllm_ref_url if role == "reference" else settings.vllm_url
    flag = "--vllm-ref-url" if role == "reference" else "--vllm-url"
    if identity.kind == "peft" and not url:
        raise UserError(f"--logprob-backend vllm serves full models; the {role} {identity.path} is a PEFT adapter: "
                        "merge it (merge_and_unload, save_pretrained) or serve it yourself and pass its --vllm-url")
    options = VllmOptions(settings.vllm_python, tuple(settings.vllm_args), url)
    version = served_version(url) if url else installed_version(settings.vllm_python)
    cache = vllm_sequence_cache(cache_root, identity.fingerprint, version, options)

    def server() -> tuple[str, str]:
        if url:
            return url, served_model_for(url, identity, cache_root, flag)
        return SERVERS.url_for(identity.fingerprint, identity.resolved, settings.vllm_python, settings.vllm_args), SERVED_NAME

    return score_sequences_vllm(server, sequences, cache, desc=f"{role} log-probs (vLLM)", show_progress=show_progress,
                                per_item=per_item)


def numerics_summary(settings: LogprobSettings, role: str) -> dict:
    """The backend block of a summary: vLLM's version and options (what its cache key holds)."""
    from dpo_eval.vllm_server import installed_version, served_version

    url = settings.vllm_ref_url if role == "reference" else settings.vllm_url
    return {"backend": "vllm", "vllm_version": served_version(url) if url else installed_version(settings.vllm_python),
            "vllm_args": list(settings.vllm_args), "vllm_url": url}
