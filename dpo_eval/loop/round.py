"""One round of `dpo-eval loop`: sample -> label -> pairs, each phase a content-keyed folder of ROUND/.

- samples/: prompts.jsonl (the round's slice) and `dpo-eval generate`'s samples.jsonl (K samples per
  prompt, each with its policy and reference log-probs; sample i of prompt p seeded by
  sample_seed(round_seed(seed, R), p, i), so per (round, prompt, sample)).
- labels/: labels.jsonl, one row per sample: prompt_id, sample_index, score (null: unscored),
  source, reason.
- pairs/: pairs.jsonl, a preference file `dpo-eval train` reads (id, prompt, chosen, rejected) with
  each side's sample index, score and label source; counts.json (see `pair_counts`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from dpo_eval.errors import UserError
from dpo_eval.generate import GenerateConfig, Prompt, generate
from dpo_eval.jsonio import write_json, write_jsonl
from dpo_eval.loop.config import LoopConfig
from dpo_eval.loop.labels import Labeller
from dpo_eval.metrics.loop_pairs import PromptPairs, max_min_pairs, max_random_pairs, rso_pairs


def derived_seed(*parts: object) -> int:
    """31 bits of sha256(json(parts)): a seed per (seed, round) or (seed, round, prompt)."""
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & (2**31 - 1)


def round_prompts(prompts: list[Prompt], round_index: int, per_round: int | None) -> list[Prompt]:
    """Round R (1-based) takes prompts (R-1)*P .. R*P-1, wrapping around the file; P=None: all."""
    size = per_round or len(prompts)
    if size > len(prompts):
        raise UserError(f"prompts_per_round is {size} but the prompt file has {len(prompts)} prompts; "
                        "lower prompts_per_round or give more prompts")
    start = (round_index - 1) * size
    return [prompts[(start + j) % len(prompts)] for j in range(size)]


def generate_config(config: LoopConfig, policy: str, ref: str, work: Path, round_index: int) -> GenerateConfig:
    s, train = config.sampling, config.train
    return GenerateConfig(model=policy, prompts=str(work / "prompts.jsonl"), out=str(work), n=config.samples_per_prompt,
                          ref=ref, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                          batch_size=s.batch_size,
                          seed=derived_seed(s.seed, round_index), template=train.get("template", "auto"),
                          device=train.get("device", "auto"), dtype=train.get("dtype", "auto"),
                          cache_dir=config.cache_dir, show_progress=config.show_progress,
                          trust_remote_code=train.get("trust_remote_code", False),
                          allow_pickle=train.get("allow_pickle", False))


def sample_round(settings: GenerateConfig, prompts: list[Prompt], work: Path) -> None:
    """Write the round's prompts, then sample them (generate resumes from its partial file)."""
    write_jsonl(work / "prompts.jsonl", [{"prompt_id": p.id, "prompt": p.text} for p in prompts])
    generate(replace(settings, out=str(work)))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def label_round(labeller: Labeller, spec: str, samples: list[dict], work: Path, round_index: int) -> None:
    """Label every sample; a labeller that scores none of them is a UserError (nothing committed)."""
    rows = []
    for sample, label in zip(samples, labeller.label_samples(samples, work), strict=True):
        rows.append({"prompt_id": sample["prompt_id"], "sample_index": sample["sample_index"],
                     "score": label.score, "source": label.source, "reason": label.reason, **label.extra})
    if not any(r["score"] is not None for r in rows):
        first = next((r["reason"] for r in rows if r["reason"]), "no reason given")
        raise UserError(f"round {round_index}: labeller {spec} scored none of the {len(rows)} samples "
                        f"(first reason: {first}); check the labeller against the prompts")
    write_jsonl(work / "labels.jsonl", rows)


def _prompt_pairs(config: LoopConfig, scores: list[float | None], rng: np.random.Generator) -> PromptPairs:
    if config.pairs == "max_min":
        return max_min_pairs(scores)
    if config.pairs == "max_random":
        return max_random_pairs(scores, rng)
    return rso_pairs(scores, config.rso.beta, config.rso.accept, config.rso.ranking, rng)


def pair_response(sample: dict) -> str | list[dict]:
    """A sample's output as the pairs file holds it: text, or an assistant message after a chat prompt."""
    if isinstance(sample["prompt"], list):
        return [{"role": "assistant", "content": sample["output"]}]
    return sample["output"]


def pair_round(config: LoopConfig, samples: list[dict], labels: list[dict], work: Path, round_index: int) -> dict:
    """Form the round's pairs by config.pairs; write pairs.jsonl and counts.json; returns the counts."""
    by_prompt: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for sample, label in zip(samples, labels):
        by_prompt[sample["prompt_id"]].append((sample, label))
    rows, n_ties, skipped = [], 0, 0
    for prompt_id, items in by_prompt.items():
        items.sort(key=lambda item: item[0]["sample_index"])
        rng = np.random.default_rng(derived_seed(config.sampling.seed, round_index, prompt_id))
        formed = _prompt_pairs(config, [label["score"] for _, label in items], rng)
        n_ties += formed.n_ties
        skipped += not formed.pairs
        for k, (chosen, rejected) in enumerate(formed.pairs):
            (cs, cl), (rs, rl) = items[chosen], items[rejected]
            rows.append({"id": f"r{round_index}-{prompt_id}-{k}", "prompt_id": prompt_id, "prompt": cs["prompt"],
                         "chosen": pair_response(cs), "rejected": pair_response(rs), "chosen_index": cs["sample_index"],
                         "rejected_index": rs["sample_index"], "chosen_score": cl["score"],
                         "rejected_score": rl["score"], "chosen_source": cl["source"],
                         "rejected_source": rl["source"]})
    if not rows:
        raise UserError(f"round {round_index}: no pair formed ({n_ties} tie(s), {skipped} prompt(s) without a usable "
                        f"pair); sample more per prompt (samples_per_prompt), raise the temperature, or use a "
                        "labeller that separates the samples")
    counts = pair_counts(samples, labels, rows, n_ties, skipped)
    write_jsonl(work / "pairs.jsonl", rows)
    write_json(work / "counts.json", counts)
    return counts


def pair_counts(samples: list[dict], labels: list[dict], pairs: list[dict], n_ties: int, skipped: int) -> dict:
    """prompts, samples, unscored samples, ties dropped, self-judgments without a score (dropped),
    prompts skipped (no usable pair), pairs, and
    the mean label of the chosen and of the rejected responses over the pairs."""
    return {"prompts": len({s["prompt_id"] for s in samples}), "samples": len(samples),
            "unscored": sum(label["score"] is None for label in labels), "ties": n_ties,
            "unparseable_judgments": sum(label.get("n_unparseable", 0) for label in labels),
            "skipped_prompts": skipped, "pairs": len(pairs),
            "mean_chosen_label": float(np.mean([p["chosen_score"] for p in pairs])),
            "mean_rejected_label": float(np.mean([p["rejected_score"] for p in pairs]))}
