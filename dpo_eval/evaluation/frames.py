"""Store artifacts read back as the frames the metrics take, and as the per-example tables of a report."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dpo_eval.data.pairs import PreferencePair
from dpo_eval.evaluation.steps import read_samples
from dpo_eval.evaluation.store import KEY_FILE

SAMPLE_COLUMNS = ("prompt_id", "sample_index", "prompt", "output", "n_tokens", "finish_reason", "policy_logp",
                  "ref_logp", "analytic_kl")


def as_text(value: object) -> str:
    """A prompt or response as text: strings unchanged, chat messages as 'role: content' blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n\n".join(f"{m.get('role', '')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                           for m in value)
    return json.dumps(value)


def prompt_key(prompt: object) -> str:
    """A prompt's identity for clustering pairs: sha256 of its canonical JSON (as prompts_from_pairs dedupes)."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]


def pairs_frame(score_dir: Path, pairs: tuple[PreferencePair, ...]) -> pd.DataFrame:
    """pairs.parquet of a score artifact, with each pair's prompt, chosen and rejected text (joined on id)
    and `prompt_key` (prompt_key of its prompt; "pair:ID" for a row whose pair is not known): pairs with
    one key share a prompt, the cluster of the metrics' prompt-clustered SEs."""
    frame = pd.read_parquet(Path(score_dir) / "pairs.parquet")
    text = {p.id: p for p in pairs}
    for column in ("prompt", "chosen", "rejected"):
        frame[column] = [as_text(getattr(text[i], column)) if i in text else None for i in frame["id"]]
    frame["prompt_key"] = [prompt_key(text[i].prompt) if i in text else f"pair:{i}" for i in frame["id"]]
    return frame


def samples_frame(samples_dir: Path, kl_dir: Path | None) -> pd.DataFrame:
    """One row per sample (SAMPLE_COLUMNS): text, length, finish reason, both log-probs, analytic KL (NaN
    without ``kl_dir``, which must be the KL pass made on these samples: ValueError otherwise)."""
    rows = read_samples(samples_dir)
    frame = pd.DataFrame({
        "prompt_id": [str(r["prompt_id"]) for r in rows], "sample_index": [int(r["sample_index"]) for r in rows],
        "prompt": [as_text(r["prompt"]) for r in rows], "output": [r["output"] for r in rows],
        "n_tokens": [int(r["n_tokens"]) for r in rows], "finish_reason": [r["finish_reason"] for r in rows],
        "policy_logp": [float(r["policy_logp"]) for r in rows],
        "ref_logp": [float(r["ref_logp"]) if r.get("ref_logp") is not None else np.nan for r in rows]})
    if kl_dir is None:
        frame["analytic_kl"] = np.nan
        return frame
    made_on = _key_parts(kl_dir).get("samples")
    if made_on is not None and made_on != Path(samples_dir).name:
        raise ValueError(f"the KL pass {kl_dir} was made on samples {made_on}, not on {samples_dir} (a dpo-eval bug)")
    kl = pd.read_parquet(Path(kl_dir) / "kl.parquet")[["prompt_id", "sample_index", "kl"]]
    merged = frame.merge(kl.rename(columns={"kl": "analytic_kl"}), on=["prompt_id", "sample_index"], how="left",
                         validate="one_to_one")
    return merged[list(SAMPLE_COLUMNS)]


def _key_parts(folder: Path) -> dict:
    """The key parts a store artifact was made with (its key.json), {} without one."""
    key_file = Path(folder) / KEY_FILE
    return json.loads(key_file.read_text(encoding="utf-8")).get("parts", {}) if key_file.is_file() else {}


def entropy_frame(entropy_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(entropy_dir) / "entropy.parquet")


def unseen_frame(unseen_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(unseen_dir) / "unseen.parquet")


def judgments_frame(judge_dir: Path, label: str) -> pd.DataFrame:
    """The judgments of one checkpoint, as metrics.winrate reads them, with the model named by its label."""
    from dpo_eval.judge.table import read_judgments

    frame = read_judgments(Path(judge_dir) / "judgments.jsonl")
    return frame.assign(model=label)
