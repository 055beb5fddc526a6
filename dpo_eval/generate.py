"""`dpo-eval generate`: N samples per prompt, each with its token count and its sequence log-prob
under the policy and the reference (what the KL estimators need).

Backends: transformers (batched, left-padded; float32 on CPU, bf16 on CUDA) and any
OpenAI-compatible server (e.g. vLLM's, for scale: its own tensor-parallel and memory options
apply when you start it). Log-probs of the sampled token ids are computed by the engine; the
server backend re-tokenizes the returned text (and keeps the server's own sum as server_logp). Finished prompts are
appended to OUT/samples.jsonl as they complete, so a killed run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dpo_eval.data.formats import read_records
from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import LogpCache, numerics_tag, resolve_cache_dir
from dpo_eval.engine.runner import score_with_cache
from dpo_eval.errors import UserError
from dpo_eval.jsonio import write_json, write_jsonl
from dpo_eval.models import identify_model, load_model, load_tokenizer, resolve_device, resolve_dtype
from dpo_eval.openai_client import ChatClient, RequestFailed
from dpo_eval.tokenization import TokenizedPair, padding_id


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

    def validate(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise UserError("--n, --max-new-tokens and --batch-size must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError("--temperature must be >= 0 and --top-p in (0, 1]")


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str | list  # a string, or chat messages


def read_prompts(path: str, limit: int | None = None) -> list[Prompt]:
    """Rows with `prompt` (string or messages) or `instruction`, and `prompt_id` or `id` (default: row number)."""
    prompts = []
    for index, row in enumerate(read_records(path)):
        text = row.get("prompt", row.get("instruction"))
        if not (isinstance(text, str) and text.strip()) and not (isinstance(text, list) and text):
            raise UserError(f"{path}: row {index + 1}: needs a non-empty 'prompt' (string or messages) or 'instruction'")
        prompts.append(Prompt(str(row.get("prompt_id", row.get("id", index))), text))
    return prompts[:limit] if limit else prompts


def prompt_ids(tokenizer, prompt: Prompt, template: str) -> list[int]:
    """Token ids the model continues: the chat template with a generation prompt, or plain text."""
    use_chat = template == "chat" or (template == "auto" and bool(getattr(tokenizer, "chat_template", None)))
    if use_chat:
        messages = prompt.text if isinstance(prompt.text, list) else [{"role": "user", "content": prompt.text}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if isinstance(prompt.text, list):
        raise UserError(f"prompt {prompt.id!r} holds chat messages but --template plain was asked")
    return list(tokenizer(prompt.text)["input_ids"])


def _cut(tokenizer, ids: list[int], stop: tuple[str, ...]) -> tuple[list[int], str, str]:
    """Trim a sample at EOS/padding or the first stop string; returns (ids, text, finish_reason)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    reason = "length"
    for i, token in enumerate(ids):
        if token == eos or (token == pad and pad != eos):
            ids, reason = ids[: i + 1] if token == eos else ids[:i], "eos"
            break
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for s in stop:
        if s in text:
            text, reason = text[: text.index(s)], "stop"
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids, text, reason


def _batch_seed(seed: int, prompt_ids_in_batch: list[str]) -> int:
    digest = hashlib.sha256(json.dumps([seed, prompt_ids_in_batch]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@torch.inference_mode()
def sample_batch(model, tokenizer, batch: list[tuple[Prompt, list[int]]], config: GenerateConfig) -> list[dict]:
    """Generate config.n samples for each prompt of a batch (left-padded)."""
    width = max(len(ids) for _, ids in batch)
    pad = padding_id(tokenizer)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids in batch])
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in batch])
    device = next(model.parameters()).device
    torch.manual_seed(_batch_seed(config.seed, [p.id for p, _ in batch]))
    sampling = {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p} \
        if config.temperature > 0 else {"do_sample": False}
    repeat = lambda t: t.repeat_interleave(config.n, dim=0).to(device)  # noqa: E731  (n samples, prompt-major)
    out = model.generate(input_ids=repeat(input_ids), attention_mask=repeat(attention),
                         max_new_tokens=config.max_new_tokens, pad_token_id=pad,
                         eos_token_id=tokenizer.eos_token_id, **sampling)
    rows = []
    for k, generated in enumerate(out[:, width:].tolist()):
        prompt, ids = batch[k // config.n]
        sample_ids, text, reason = _cut(tokenizer, generated, config.stop)
        rows.append({"prompt_id": prompt.id, "sample_index": k % config.n, "prompt": prompt.text, "output": text,
                     "n_tokens": len(sample_ids), "finish_reason": reason,
                     "_prompt_ids": ids, "_sample_ids": sample_ids})
    return rows


def _done_prompts(path: Path, n: int) -> set[str]:
    """Prompts with all n samples already stored. What a killed run left half-written (a torn
    line, a prompt with fewer than n samples) is removed from the file so it is sampled again."""
    if not path.exists():
        return set()
    rows: list[tuple[str, str]] = []
    for line in path.read_text().splitlines():
        try:
            rows.append((json.loads(line)["prompt_id"], line))
        except (ValueError, KeyError):
            break
    counts: dict[str, int] = {}
    for prompt_id, _ in rows:
        counts[prompt_id] = counts.get(prompt_id, 0) + 1
    done = {prompt_id for prompt_id, count in counts.items() if count >= n}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(line + "\n" for prompt_id, line in rows if prompt_id in done))
    os.replace(tmp, path)
    return done


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def _sequence_logps(identity, load, rows: list[dict], device, dtype, cache_root: Path, desc: str) -> list[float]:
    """Σ log-prob of each sample's tokens under one model (cached; load() only if something is missing)."""
    pairs = [TokenizedPair(str(i), "", tuple(r["_prompt_ids"]), tuple(r["_sample_ids"]) or (0,), ())
             for i, r in enumerate(rows)]
    cache = LogpCache(cache_root, identity.fingerprint, numerics_tag(device, dtype))
    result = score_with_cache(load, pairs, cache, pad_id=0, token_budget=default_token_budget(device), desc=desc)
    return [float(v) if r["_sample_ids"] else 0.0 for v, r in zip(result.chosen_logp, rows)]


def _server_samples(client: ChatClient, tokenizer, item: tuple[Prompt, list[int]], config: GenerateConfig) -> list[dict]:
    """n samples of one prompt from the server; token ids re-tokenized from the returned text."""
    prompt, ids = item
    messages = prompt.text if isinstance(prompt.text, list) else [{"role": "user", "content": prompt.text}]
    body = {"model": config.served_model or config.model, "messages": messages, "n": config.n,
            "temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_new_tokens,
            "seed": _batch_seed(config.seed, [prompt.id]), "logprobs": True}
    if config.stop:
        body["stop"] = list(config.stop)
    rows = []
    for index, choice in enumerate(client.chat(body)["choices"]):
        text = choice["message"].get("content") or ""
        sample_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ended = choice.get("finish_reason") == "stop"
        stopped = ended and config.stop and choice.get("stop_reason") not in (None, tokenizer.eos_token_id)
        if ended and not stopped and tokenizer.eos_token_id is not None:
            sample_ids.append(tokenizer.eos_token_id)
        server_logp = sum(t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or [])
        rows.append({"prompt_id": prompt.id, "sample_index": index, "prompt": prompt.text, "output": text,
                     "n_tokens": len(sample_ids), "finish_reason": "length" if not ended else
                     ("stop" if stopped else "eos"), "server_logp": server_logp,
                     "_prompt_ids": ids, "_sample_ids": sample_ids})
    return rows


def _sample_from_server(config: GenerateConfig, todo: list, tokenizer, partial: Path, bar) -> None:
    client = ChatClient(config.base_url, config.api_key_env, config.timeout, config.retries)
    failed = []

    def one(item):
        try:
            return _server_samples(client, tokenizer, item, config)
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


def _sample_all(config: GenerateConfig, prompts: list[Prompt], tokenizer, load, partial: Path) -> None:
    """Stage 1: sample every prompt not yet in the partial file, appending as batches finish."""
    done = _done_prompts(partial, config.n)
    todo = [(p, prompt_ids(tokenizer, p, config.template)) for p in prompts if p.id not in done]
    if not todo:
        return
    if config.base_url:
        bar = tqdm(total=len(todo) * config.n, desc="sampling (server)", unit="sample", file=sys.stderr,
                   disable=not config.show_progress)
        _sample_from_server(config, todo, tokenizer, partial, bar)
        bar.close()
        return
    model = load()
    bar = tqdm(total=len(todo) * config.n, desc="sampling", unit="sample", file=sys.stderr,
               disable=not config.show_progress)
    for start in range(0, len(todo), config.batch_size):
        rows = sample_batch(model, tokenizer, todo[start: start + config.batch_size], config)
        _append(partial, rows)
        bar.update(len(rows))
    bar.close()


def generate(config: GenerateConfig) -> list[dict]:
    """Sample, then score every sample under the policy and the reference; write OUT/samples.jsonl."""
    config.validate()
    if config.vllm and not config.base_url:
        from dpo_eval.vllm_server import vllm_server

        model_dir = identify_model(config.model, cache_dir=resolve_cache_dir(config.cache_dir)).resolved
        with vllm_server(model_dir, "policy", config.vllm_python, config.vllm_args) as url:
            return generate(dataclasses.replace(config, base_url=url, served_model="policy"))
    cache_root = resolve_cache_dir(config.cache_dir)
    tokenizer = load_tokenizer(config.model, cache_dir=cache_root)
    prompts = read_prompts(config.prompts, config.limit)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    partial = out / "samples.partial.jsonl"
    policy_id = identify_model(config.model, cache_dir=cache_root)
    ref_id = identify_model(config.ref, cache_dir=cache_root) if config.ref else None

    @functools.cache
    def load_policy() -> torch.nn.Module:  # loaded once, for sampling and for scoring its samples
        return load_model(config.model, device=device, dtype=dtype, cache_dir=cache_root).model

    _sample_all(config, prompts, tokenizer, load_policy, partial)
    rows = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
    wanted = {p.id for p in prompts}
    rows = [r for r in rows if r["prompt_id"] in wanted]
    policy = _sequence_logps(policy_id, load_policy, rows, device, dtype, cache_root, "policy log-probs")
    load_policy.cache_clear()
    ref = None if ref_id is None else _sequence_logps(
        ref_id, lambda: load_model(config.ref, device=device, dtype=dtype, cache_dir=cache_root).model,
        rows, device, dtype, cache_root, "reference log-probs")
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
        "finish_reasons": {r: sum(s["finish_reason"] == r for s in samples) for r in ("eos", "length", "stop")}})
    return samples
