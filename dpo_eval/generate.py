"""`dpo-eval generate`: N samples per prompt, each with its token count and its sequence log-prob
under the policy and the reference (what the KL estimators need).

Backends: transformers (batched, left-padded, each sample drawn with its own generator seeded
by (seed, prompt_id, sample_index): see dpo_eval.sampling; float32 on CPU, bf16 on CUDA) and any
OpenAI-compatible server (e.g. vLLM's, for scale: its own tensor-parallel and memory options
apply when you start it). A server is asked for exactly the context that is scored: chat
messages when the prompt is rendered with a chat template, else `/completions` with the prompt's
token ids. Log-probs of the sampled token ids are computed by the engine; the server backend
re-tokenizes the returned text (and keeps the server's own sum as server_logp). Finished prompts
are appended to OUT/samples.partial.jsonl as they complete, so a killed run continues where it
stopped; OUT/samples.settings.json (see dpo_eval.generate_settings) keeps a rerun with other
settings from mixing its samples with these.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from dpo_eval.data.formats import read_records
from dpo_eval.data.prompts import prompt_field, prompt_id_field
from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import LogpCache, numerics_tag, resolve_cache_dir
from dpo_eval.engine.runner import score_with_cache
from dpo_eval.errors import UserError
from dpo_eval.generate_settings import check_or_record_settings, sampling_settings
from dpo_eval.jsonio import write_json, write_jsonl, write_text_atomic
from dpo_eval.logprob_settings import LogprobSettings
from dpo_eval.models import identify_model, load_model, load_tokenizer, resolve_device, resolve_dtype
from dpo_eval.openai_client import ChatClient, RequestFailed
from dpo_eval.sampling import sample_seed, sample_sequences
from dpo_eval.tokenization import TokenizedPair, as_messages, chat_ids, padding_id


@dataclass(frozen=True)
class GenerateConfig:
    model: str
    prompts: str
    out: str
    n: int = 4
    ref: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0
    template: str = "auto"  # auto | chat | plain
    split: str | None = None  # of a Hub dataset (or saved DatasetDict) given as prompts
    subset: str | None = None  # a Hub dataset's config
    batch_size: int = 8
    limit: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: str | None = None
    show_progress: bool = True
    base_url: str | None = None  # sample from an OpenAI-compatible server (e.g. vLLM) instead
    served_model: str | None = None  # the model name the server knows (default: model)
    api_key_env: str | None = None
    timeout: float = 300.0
    retries: int = 5
    concurrency: int = 4
    vllm: bool = False  # start a vLLM server for this run (vllm_python, vllm_args pass through)
    vllm_python: str | None = None
    vllm_args: tuple[str, ...] = ()
    trust_remote_code: bool = False  # allow model code from the model dir
    allow_pickle: bool = False  # allow pickled .bin weights
    logprobs: LogprobSettings = field(default_factory=LogprobSettings)  # the samples' log-probs: engine or vLLM

    @property
    def model_flags(self) -> dict:
        """The loading flags every model of this run is identified and loaded with."""
        return {"trust_remote_code": self.trust_remote_code, "allow_pickle": self.allow_pickle}

    def validate(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1 or self.concurrency < 1:
            raise UserError("--n, --max-new-tokens, --batch-size and --concurrency must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError("--temperature must be >= 0 and --top-p in (0, 1]")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1 (got {self.limit}); leave it out for every prompt")
        if self.vllm and self.base_url:
            raise UserError("--vllm starts its own server: pass either --vllm or --base-url, not both")


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str | list  # a string, or chat messages


def read_prompts(path: str, limit: int | None = None, split: str | None = None,
                 subset: str | None = None) -> list[Prompt]:
    """Rows with `prompt` (string or messages), `instruction` or Arena-Hard `turns`, and an id (`prompt_id`, `id`,
    `question_id` or `uid`; default: row number). ``path`` may be a Hub dataset (its "test" or only split)."""
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(read_records(path, split, subset)):
        text = prompt_field(row, f"{path}: row {index + 1}")
        prompt_id = prompt_id_field(row, index)
        if prompt_id in seen:
            raise UserError(f"{path}: row {index + 1}: prompt_id {prompt_id!r} repeats row {seen[prompt_id]}; "
                            "give every prompt its own prompt_id")
        seen[prompt_id] = index + 1
        prompts.append(Prompt(prompt_id, text))
    return prompts[:limit] if limit else prompts


def uses_chat(tokenizer, template: str) -> bool:
    """Whether prompts are rendered with the chat template (--template chat, or auto and one exists)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_template:
        raise UserError("--template chat: the tokenizer of --model has no chat template; use --template plain")
    return template == "chat" or (template == "auto" and has_template)


def prompt_ids(tokenizer, prompt: Prompt, template: str) -> list[int]:
    """Token ids the model continues: the chat template with a generation prompt, or plain text."""
    if uses_chat(tokenizer, template):
        return chat_ids(tokenizer, as_messages(prompt.text), add_generation_prompt=True)
    if isinstance(prompt.text, list):
        why = "--template plain was asked" if template == "plain" else "the tokenizer of --model has no chat template"
        raise UserError(f"prompt {prompt.id!r} holds chat messages but {why}: give plain-text prompts, "
                        "or a --model whose tokenizer has a chat template")
    return list(tokenizer(prompt.text)["input_ids"])


def _cut(tokenizer, ids: list[int], stop: tuple[str, ...]) -> tuple[list[int], str, str]:
    """Finish a sample: (ids, text, finish_reason); an EOS id ends it, a stop string cuts its text."""
    reason = "eos" if ids and ids[-1] == tokenizer.eos_token_id else "length"
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for s in stop:
        if s in text:
            text, reason = text[: text.index(s)], "stop"
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids, text, reason


def _prompt_seed(seed: int, prompt_id: str) -> int:
    """The seed a server gets for a prompt's n samples (31 bits: what servers accept)."""
    digest = hashlib.sha256(json.dumps([seed, [prompt_id]]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & (2**31 - 1)


def sample_batch(model, tokenizer, batch: list[tuple[Prompt, list[int]]], config: GenerateConfig) -> list[dict]:
    """config.n samples of each prompt of a batch; sample i of prompt p drawn with sample_seed(seed, p, i),
    so it is the same whatever else shares the batch (greedy: one sequence per prompt, repeated n times)."""
    distinct = 1 if config.temperature == 0 else config.n
    jobs = [(prompt, ids, index) for prompt, ids in batch for index in range(distinct)]
    generated = sample_sequences(
        model, [ids for _, ids, _ in jobs], [sample_seed(config.seed, p.id, i) for p, _, i in jobs],
        temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
        eos_ids={tokenizer.eos_token_id} - {None}, pad_id=padding_id(tokenizer))
    rows = []
    for k, new_ids in enumerate(generated):
        prompt, ids, _ = jobs[k]
        sample_ids, text, reason = _cut(tokenizer, new_ids, config.stop)
        for index in range(config.n) if distinct == 1 else [k % config.n]:
            rows.append({"prompt_id": prompt.id, "sample_index": index, "prompt": prompt.text, "output": text,
                         "n_tokens": len(sample_ids), "finish_reason": reason,
                         "_prompt_ids": ids, "_sample_ids": sample_ids})
    return rows


def _done_prompts(path: Path, n: int, expected: dict[str, list[int]]) -> set[str]:
    """Prompts with all n samples already stored for the prompt token ids `expected` now holds. What a
    killed run left half-written (a torn line, a prompt with fewer than n samples) and samples of a
    prompt whose text (or rendering) changed are removed from the file, so they are sampled again."""
    if not path.exists():
        return set()
    rows: list[tuple[dict, str]] = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            row["prompt_id"]
        except (ValueError, KeyError, TypeError):
            break
        rows.append((row, line))
    is_current = lambda r: r["prompt_id"] not in expected or r.get("_prompt_ids") == expected[r["prompt_id"]]  # noqa: E731
    counts: dict[str, int] = {}
    for row, _ in rows:
        if is_current(row):
            counts[row["prompt_id"]] = counts.get(row["prompt_id"], 0) + 1
    done = {prompt_id for prompt_id, count in counts.items() if count >= n}
    write_text_atomic(path, "".join(line + "\n" for row, line in rows if row["prompt_id"] in done and is_current(row)))
    return done


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def _sequence_logps(identity, load, rows: list[dict], device, dtype, cache_root: Path, desc: str,
                    show_progress: bool = True, logprobs: LogprobSettings = LogprobSettings()) -> list[float]:
    """Σ log-prob of each sample's tokens under one model (cached; load() only if something is missing);
    under --logprob-backend vllm, from a vLLM server for the model (``engine.vllm_backend``)."""
    if logprobs.is_vllm:
        from dpo_eval.engine.vllm_backend import vllm_stats

        sequences = [(tuple(r["_prompt_ids"]), tuple(r["_sample_ids"]) or (0,)) for r in rows]
        role = "reference" if desc.startswith("reference") else "policy"
        stats = vllm_stats(identity, sequences, cache_root, logprobs, role, show_progress)
        return [float(v) if r["_sample_ids"] else 0.0 for v, r in zip(stats.logp_sum, rows)]
    pairs = [TokenizedPair(str(i), "", tuple(r["_prompt_ids"]), tuple(r["_sample_ids"]) or (0,), ())
             for i, r in enumerate(rows)]
    cache = LogpCache(cache_root, identity.fingerprint, numerics_tag(device, dtype))
    result = score_with_cache(load, pairs, cache, pad_id=0, token_budget=default_token_budget(device), desc=desc,
                              show_progress=show_progress)
    return [float(v) if r["_sample_ids"] else 0.0 for v, r in zip(result.chosen_logp, rows)]


VLLM_PLAIN_SAMPLER = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                      "frequency_penalty": 0.0}
"""Sent with every request to a vLLM server dpo-eval starts: a request's own values win over the server's
defaults, which vLLM (0.8 on) takes from the model's generation_config.json (top-k, min-p, repetition
penalty). So its samples are drawn from temperature and top-p alone, as the in-process sampler's are, on
one server whatever the sampling (no restart with other options)."""


def _server_request(config: GenerateConfig, prompt: Prompt, ids: list[int], is_chat: bool) -> dict:
    """A chat request with the prompt's messages, or a completions request with its exact token ids; to a
    vLLM server dpo-eval started, with VLLM_PLAIN_SAMPLER."""
    body = {"model": config.served_model or config.model, "n": config.n, "temperature": config.temperature,
            "top_p": config.top_p, "max_tokens": config.max_new_tokens, "seed": _prompt_seed(config.seed, prompt.id)}
    if config.vllm:
        body.update(VLLM_PLAIN_SAMPLER)
    if is_chat:
        messages = prompt.text if isinstance(prompt.text, list) else [{"role": "user", "content": prompt.text}]
        body.update(messages=messages, logprobs=True)
    else:
        body.update(prompt=ids, logprobs=1)
    if config.stop:
        body["stop"] = list(config.stop)
    return body


def _choice_text_and_logp(choice: dict, is_chat: bool) -> tuple[str, float]:
    """The sample's text and the server's Σ log-prob of its tokens, from a chat or completions choice."""
    if is_chat:
        text = choice["message"].get("content") or ""
        logps = [t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or []]
    else:
        text = choice.get("text") or ""
        logps = (choice.get("logprobs") or {}).get("token_logprobs") or []
    return text, float(sum(v for v in logps if v is not None))


def _server_samples(client: ChatClient, tokenizer, item: tuple[Prompt, list[int]], config: GenerateConfig,
                    is_chat: bool) -> list[dict]:
    """n samples of one prompt from the server; token ids re-tokenized from the returned text."""
    prompt, ids = item
    body = _server_request(config, prompt, ids, is_chat)
    reply = client.chat(body) if is_chat else client.complete(body)
    rows = []
    for index, choice in enumerate(reply["choices"]):
        text, server_logp = _choice_text_and_logp(choice, is_chat)
        sample_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ended = choice.get("finish_reason") == "stop"
        stopped = ended and config.stop and choice.get("stop_reason") not in (None, tokenizer.eos_token_id)
        if ended and not stopped and tokenizer.eos_token_id is not None:
            sample_ids.append(tokenizer.eos_token_id)
        rows.append({"prompt_id": prompt.id, "sample_index": index, "prompt": prompt.text, "output": text,
                     "n_tokens": len(sample_ids), "finish_reason": "length" if not ended else
                     ("stop" if stopped else "eos"), "server_logp": server_logp,
                     "_prompt_ids": ids, "_sample_ids": sample_ids})
    return rows


def _sample_from_server(config: GenerateConfig, todo: list, tokenizer, partial: Path, bar) -> None:
    client = ChatClient(config.base_url, config.api_key_env, config.timeout, config.retries)
    is_chat = uses_chat(tokenizer, config.template)
    failed = []

    def one(item):
        try:
            return _server_samples(client, tokenizer, item, config, is_chat)
        except RequestFailed as err:
            failed.append(f"{item[0].id}: {err}")
            return []

    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        for rows in pool.map(one, todo):
            _append(partial, rows)
            bar.update(len(rows))
    if failed:
        raise UserError(f"{len(failed)} prompt(s) failed on the server after retries (first: {failed[0]}); "
                        "rerun the same command to retry only those")


def _sample_all(config: GenerateConfig, todo: list, tokenizer, load, partial: Path) -> None:
    """Stage 1: sample every (prompt, ids) of todo, appending to the partial file as batches finish."""
    bar = tqdm(total=len(todo) * config.n, desc="sampling (server)" if config.base_url else "sampling",
               unit="sample", file=sys.stderr, disable=not config.show_progress)
    if config.base_url:
        _sample_from_server(config, todo, tokenizer, partial, bar)
    else:
        model = load()
        for start in range(0, len(todo), config.batch_size):
            rows = sample_batch(model, tokenizer, todo[start: start + config.batch_size], config)
            _append(partial, rows)
            bar.update(len(rows))
    bar.close()


def _sample_missing(config: GenerateConfig, prompts: list[Prompt], tokenizer, load, policy, partial: Path) -> None:
    """Sample the prompts not finished in the partial file (with --vllm: on a server started for them;
    under --logprob-backend vllm that server is kept for the samples' log-probs, ``vllm_server.SERVERS``)."""
    expected = {p.id: prompt_ids(tokenizer, p, config.template) for p in prompts}
    done = _done_prompts(partial, config.n, expected)
    todo = [(p, expected[p.id]) for p in prompts if p.id not in done]
    if not todo:
        return
    if config.vllm and config.logprobs.is_vllm:
        from dpo_eval.vllm_server import SERVED_NAME, SERVERS

        url = SERVERS.url_for(policy.fingerprint, policy.resolved, config.vllm_python, config.vllm_args)
        _sample_all(dataclasses.replace(config, base_url=url, served_model=SERVED_NAME), todo, tokenizer, load, partial)
    elif config.vllm:
        from dpo_eval.vllm_server import vllm_server

        with vllm_server(policy.resolved, "policy", config.vllm_python, config.vllm_args) as url:
            _sample_all(dataclasses.replace(config, base_url=url, served_model="policy"), todo, tokenizer, load, partial)
    else:
        _sample_all(config, todo, tokenizer, load, partial)


def generate(config: GenerateConfig) -> list[dict]:
    """Sample, then score every sample under the policy and the reference; write OUT/samples.jsonl."""
    config.validate()
    cache_root = resolve_cache_dir(config.cache_dir)
    prompts = read_prompts(config.prompts, config.limit, config.split, config.subset)
    tokenizer = load_tokenizer(config.model, cache_dir=cache_root, **config.model_flags)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    partial = out / "samples.partial.jsonl"
    policy_id = identify_model(config.model, cache_dir=cache_root, **config.model_flags)
    ref_id = identify_model(config.ref, cache_dir=cache_root, **config.model_flags) if config.ref else None
    fingerprint = check_or_record_settings(
        out, partial, sampling_settings(config, policy_id.fingerprint, numerics_tag(device, dtype)))

    @functools.cache
    def load_policy() -> torch.nn.Module:  # loaded once, for sampling and for scoring its samples
        return load_model(config.model, device=device, dtype=dtype, cache_dir=cache_root, **config.model_flags).model

    _sample_missing(config, prompts, tokenizer, load_policy, policy_id, partial)
    order = {p.id: i for i, p in enumerate(prompts)}
    rows = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
    rows = sorted((r for r in rows if r["prompt_id"] in order), key=lambda r: (order[r["prompt_id"]], r["sample_index"]))
    policy = _sequence_logps(policy_id, load_policy, rows, device, dtype, cache_root, "policy log-probs",
                             config.show_progress, config.logprobs)
    load_policy.cache_clear()
    ref = None if ref_id is None else _sequence_logps(
        ref_id, lambda: load_model(config.ref, device=device, dtype=dtype, cache_dir=cache_root,
                                   **config.model_flags).model,
        rows, device, dtype, cache_root, "reference log-probs", config.show_progress, config.logprobs)
    samples = []
    for i, row in enumerate(rows):
        clean = {k: v for k, v in row.items() if not k.startswith("_")}
        samples.append({"model": config.model, **clean, "token_ids": row["_sample_ids"], "policy_logp": policy[i],
                        "ref_logp": ref[i] if ref else None, "seed": config.seed,
                        "temperature": config.temperature, "top_p": config.top_p})
    write_jsonl(out / "samples.jsonl", samples)
    write_json(out / "generate_summary.json", {
        "schema_version": 1, "model": policy_id.to_dict(), "reference": ref_id.to_dict() if ref_id else None,
        "n_prompts": len(prompts), "n_samples": len(samples), "n_per_prompt": config.n,
        "sampling": {"temperature": config.temperature, "top_p": config.top_p, "seed": config.seed,
                     "max_new_tokens": config.max_new_tokens, "stop": list(config.stop)},
        "finish_reasons": {r: sum(s["finish_reason"] == r for s in samples) for r in ("eos", "length", "stop")},
        "settings_fingerprint": fingerprint})
    return samples
