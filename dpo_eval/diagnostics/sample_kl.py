"""Analytic KL(policy || reference) along the samples of a `dpo-eval generate` output directory.

Rebuilds each sample's context exactly as generate did (`prompt_ids(tokenizer, prompt, template)`
with the template recorded in samples.settings.json) and runs dpo_eval.engine.kl.analytic_kl on
(prompt ids, the sample's token_ids). Per sample it returns kl = sum_t KL(pi(.|ctx_t) || pi_ref(.|ctx_t))
and the sampled tokens' log-probs under both models, so k1 = policy_logp - ref_logp can be checked
against the log-probs generate stored.

The samples must be the policy's own (generate_summary.json's model fingerprint is checked):
along another model's samples, the mean of kl is no estimate of KL(pi || pi_ref).
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_eval.engine.batching import default_token_budget
from dpo_eval.engine.cache import resolve_cache_dir
from dpo_eval.engine.kl import SampleKL, analytic_kl
from dpo_eval.errors import UserError
from dpo_eval.generate import Prompt, prompt_ids
from dpo_eval.generate_settings import SETTINGS_FILE
from dpo_eval.models import identify_model, load_model, load_tokenizer, resolve_device, resolve_dtype
from dpo_eval.tokenization import padding_id


def read_samples(samples_path: str | Path) -> list[dict]:
    """Rows of samples.jsonl; each needs prompt_id, prompt and token_ids (errors name file and row)."""
    path = Path(samples_path)
    if not path.is_file():
        raise UserError(f"{path}: no such samples file; give the samples.jsonl that `dpo-eval generate` wrote")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"{path}: row {number} is not JSON; regenerate the file with `dpo-eval generate`") from None
        missing = [k for k in ("prompt_id", "prompt", "token_ids") if k not in row]
        if missing:
            raise UserError(f"{path}: row {number} lacks {missing}; regenerate the file with `dpo-eval generate`")
        rows.append(row)
    return rows


def recorded_template(samples_path: str | Path) -> str:
    """The --template generate used, from samples.settings.json beside the samples ("auto" if absent)."""
    record = Path(samples_path).with_name(SETTINGS_FILE)
    if not record.is_file():
        return "auto"
    try:
        return str(json.loads(record.read_text())["settings"]["template"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{record} is unreadable: pass template= explicitly, or regenerate the samples") from None


def _check_policy(samples_path: Path, fingerprint: str) -> None:
    summary = samples_path.with_name("generate_summary.json")
    if not summary.is_file():
        return
    try:
        stored = json.loads(summary.read_text())["model"]["fingerprint"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{summary} is unreadable, so the model that drew {samples_path.name} is unknown: "
                        "regenerate the samples with `dpo-eval generate`") from None
    if stored and stored != fingerprint:
        raise UserError(f"{samples_path} holds samples of another model (weights {stored[:12]}) than the policy "
                        f"given (weights {fingerprint[:12]}): give the policy that generated them")


def samples_kl(policy: str, ref: str, samples_path: str | Path, *, template: str | None = None,
               device: str = "auto", dtype: str = "auto", cache_dir: str | None = None,
               token_budget: int | None = None) -> list[SampleKL]:
    """Analytic KL and both log-probs of every sample in samples.jsonl, in file order.

    template: how prompts were rendered ("chat" / "plain" / "auto"); default: what generate recorded.
    """
    path = Path(samples_path)
    rows = read_samples(path)
    cache_root = resolve_cache_dir(cache_dir)
    _check_policy(path, identify_model(policy, cache_dir=cache_root).fingerprint)
    tokenizer = load_tokenizer(policy, cache_dir=cache_root)
    rendering = template or recorded_template(path)
    contexts: dict[tuple[str, str], list[int]] = {}
    sequences = []
    for row in rows:
        key = (str(row["prompt_id"]), json.dumps(row["prompt"]))
        if key not in contexts:
            contexts[key] = prompt_ids(tokenizer, Prompt(key[0], row["prompt"]), rendering)
        sequences.append((contexts[key], [int(t) for t in row["token_ids"]]))
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    models = [load_model(p, device=torch_device, dtype=torch_dtype, cache_dir=cache_root).model for p in (policy, ref)]
    return analytic_kl(models[0], models[1], sequences, pad_id=padding_id(tokenizer),
                       token_budget=token_budget or default_token_budget(torch_device))
