"""What made the samples of a `generate` output dir, so a rerun into the same `--out` resumes only
samples made the same way.

`OUT/samples.settings.json` is written (atomically) before the first sample: the policy's weights
fingerprint and every setting that changes a sample (n, temperature, top_p, max_new_tokens, stop,
seed, template, backend, base_url, served_model, and the local sampler's numerics: device type and
dtype, since float32 on CPU and bfloat16 on CUDA sample differently). Settings that do not change
samples (batch size, concurrency, progress, limit, the reference model) are left out: a rerun may
change them and keeps every finished sample. The reference's log-probs are recomputed (from the
engine's cache) on every run, so another `--ref` needs no new samples.

    settings_fingerprint = sha256(json.dumps(settings, sort_keys=True))
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.jsonio import write_json

SETTINGS_FILE = "samples.settings.json"
FLAGS = {"model_fingerprint": "--model", "n": "--n", "temperature": "--temperature", "top_p": "--top-p",
         "max_new_tokens": "--max-new-tokens", "stop": "--stop", "seed": "--seed", "template": "--template",
         "backend": "--base-url/--vllm", "base_url": "--base-url", "served_model": "--served-model",
         "numerics": "--device/--dtype"}


def sampling_settings(config, model_fingerprint: str, numerics: str | None = None) -> dict:
    """The settings a sample depends on (keys of FLAGS), from a GenerateConfig as the user gave it.

    numerics: the local sampler's device type and dtype (e.g. "cpu-float32"); None for a server."""
    backend = "vllm" if config.vllm else "server" if config.base_url else "transformers"
    is_server = backend == "server"
    return {"model_fingerprint": model_fingerprint, "n": config.n, "temperature": float(config.temperature),
            "top_p": float(config.top_p), "max_new_tokens": config.max_new_tokens, "stop": list(config.stop),
            "seed": config.seed, "template": config.template, "backend": backend,
            "base_url": config.base_url if is_server else None,
            "served_model": (config.served_model or config.model) if is_server else None,
            "numerics": numerics if backend == "transformers" else None}


def settings_fingerprint(settings: dict) -> str:
    """sha256 hex digest of the settings as sorted-key JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _show(key: str, value) -> str:
    if key == "model_fingerprint" and isinstance(value, str):
        return f"weights {value[:12]}"
    if isinstance(value, list):
        return json.dumps(value)
    return "none" if value is None else str(value)


def _read_stored(record: Path, partial: Path) -> dict:
    try:
        stored = json.loads(record.read_text())["settings"]
        if not isinstance(stored, dict):
            raise TypeError
        return stored
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{record} is unreadable, so the samples in {partial} cannot be checked: use another "
                        f"--out, or delete {partial} and {record} to start fresh") from None


def check_or_record_settings(out: Path, partial: Path, settings: dict) -> str:
    """Record the settings before the first sample, or check that the stored samples were made with
    the same ones; returns the settings fingerprint. Raises UserError naming each flag that differs."""
    record = out / SETTINGS_FILE
    has_samples = partial.exists() and partial.read_text().strip() != ""
    if not has_samples:
        write_json(record, {"schema_version": 1, "settings_fingerprint": settings_fingerprint(settings),
                            "settings": settings})
        return settings_fingerprint(settings)
    if not record.exists():
        raise UserError(f"{partial} holds samples but no {record} says how they were made (written by an older "
                        f"dpo-eval?): use another --out, or delete {partial} to start fresh")
    stored = _read_stored(record, partial)
    differ = [f"{FLAGS[key]}: {_show(key, stored.get(key))} stored in {record}, {_show(key, value)} asked"
              for key, value in settings.items() if stored.get(key) != value]
    if differ:
        raise UserError(f"{partial} holds samples made with other settings ({'; '.join(differ)}): use another "
                        f"--out, or delete {partial} and {record} to start fresh")
    return settings_fingerprint(settings)
