"""Judge candidates against a baseline, prompt by prompt, with a cache and honest unscored records.

Modes:
- verdict: both orders are judged (position swap). Two agreeing verdicts give the preference;
  two that disagree give a tie (0.5) counted as position-inconsistent.
- probability: one order, chosen by a seed derived from the prompt and recorded; the preference
  is the judge's normalised probability of the label of the model's output.
A comparison the judge could not score in either order is unscored, with the reason: excluded
from win rates and counted, never a tie or a loss.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from dpo_eval.judge.store import JudgmentStore, Verdict, comparison_key
from dpo_eval.judge.templates import JudgeTemplate

MODES = ("verdict", "probability")


@dataclass(frozen=True)
class Comparison:
    model: str
    prompt_id: str
    instruction: str
    model_output: str
    baseline_output: str


def model_goes_first(prompt_id: str, seed: int) -> bool:
    """Probability mode's order for a prompt: a fixed function of (seed, prompt id)."""
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[0] % 2 == 0


def _orders(comparison: Comparison, mode: str, seed: int) -> list[bool]:
    """Which orders to judge: True = the model's output shown as A."""
    if mode == "verdict":
        return [True, False]
    return [model_goes_first(comparison.prompt_id, seed)]


class Judging:
    """Runs a backend over comparisons through the store; one instance per judge run."""

    def __init__(self, backend, template: JudgeTemplate, store: JudgmentStore, mode: str, seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.backend, self.template, self.store, self.mode, self.seed = backend, template, store, mode, seed
        self.n_judge_calls = 0
        self._count_lock = threading.Lock()

    def _ordered_verdict(self, comparison: Comparison, model_first: bool) -> Verdict:
        a, b = ((comparison.model_output, comparison.baseline_output) if model_first
                else (comparison.baseline_output, comparison.model_output))
        key = comparison_key({**self.backend.config, "mode": self.mode}, self.template.sha256,
                             comparison.instruction, a, b)
        stored = self.store.get(key)
        if stored is not None:
            return stored
        with self._count_lock:
            self.n_judge_calls += 1
        verdict = self.backend.judge(comparison.instruction, a, b, self.mode)
        if verdict.is_scored or (verdict.reason or "").startswith("unparseable"):
            self.store.put(key, verdict)  # transport failures are not stored: a rerun retries them
        return verdict

    def judge_one(self, comparison: Comparison) -> dict:
        orders = _orders(comparison, self.mode, self.seed)
        verdicts = [self._ordered_verdict(comparison, first) for first in orders]
        model_prefs = [v.preference_a if first else 1 - v.preference_a
                       for v, first in zip(verdicts, orders) if v.is_scored]
        record = {"model": comparison.model, "prompt_id": comparison.prompt_id,
                  "instruction": comparison.instruction, "model_output": comparison.model_output,
                  "baseline_output": comparison.baseline_output, "mode": self.mode,
                  "model_position": ["A" if first else "B" for first in orders],
                  "raw": [v.raw for v in verdicts], "judge": self.backend.config,
                  "template": self.template.name, "template_sha256": self.template.sha256,
                  "preference": None, "unscored_reason": None, "position_consistent": None}
        failed = [f"order {i + 1}: {v.reason}" for i, v in enumerate(verdicts) if not v.is_scored]
        if failed:
            record["unscored_reason"] = "; ".join(failed)
        elif self.mode == "verdict":
            consistent = (model_prefs[0] > 0.5) == (model_prefs[1] > 0.5) and (model_prefs[0] == 0.5) == (
                model_prefs[1] == 0.5)
            record["position_consistent"] = bool(consistent)
            record["preference"] = sum(model_prefs) / 2 if consistent else 0.5
        else:
            record["preference"] = model_prefs[0]
        return record

    def run(self, comparisons: Sequence[Comparison], concurrency: int = 4, show_progress: bool = True) -> list[dict]:
        """Judge every comparison (concurrently), in input order."""
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            results = pool.map(self.judge_one, comparisons)
            return list(tqdm(results, total=len(comparisons), desc="judging", unit="cmp", file=sys.stderr,
                             disable=not show_progress))
