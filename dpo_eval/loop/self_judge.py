"""The `self` labeller: the current policy judges its own samples (Yuan et al. 2024, "Self-Rewarding
Language Models", LLM-as-a-Judge with an additive 5-point rubric).

RUBRIC below was written for this project (the paper's idea, not its text): five criteria, one point
each, the judgment ending with a line `Score: N`. Each sample is judged `judge_samples` times by the
policy that wrote it (sampled with the loop's temperature, top_p and max_new_tokens; judgment j of
sample i of prompt p seeded by sample_seed(derived_seed(round seed, "self"), "p/i", j)). The label is the
mean of the parseable scores; a judgment without one (`parse_score` is None) is dropped and counted,
and a sample with no parseable judgment is unscored. Judgments are kept in labels.jsonl.
"""

from __future__ import annotations

import hashlib
import re

from dpo_eval.data.prompts import prompt_text
from dpo_eval.loop.labels import Label

RUBRIC = """Review the user's question and the response below, then score the response with an additive 5-point system:
- Add 1 point if the response is relevant to the question, even if incomplete.
- Add a 2nd point if it addresses a substantial part of the question but leaves some of it unresolved.
- Add a 3rd point if it answers the basic elements of the question correctly and usefully.
- Add a 4th point if it is clear, direct and complete, answering the question fully.
- Add a 5th point if it is impeccable: correct, concise, with nothing extraneous.

Question: {prompt}

Response: {output}

Justify your total briefly, then end with a line of the form "Score: <points>"."""
RUBRIC_SHA256 = hashlib.sha256(RUBRIC.encode()).hexdigest()

_SCORE = re.compile(r"score\s*:\s*\**\s*([0-5](?:\.\d+)?)(?!\d)", re.IGNORECASE)


def parse_score(text: str) -> float | None:
    """The last `Score: N` of a judgment, N in [0, 5]; None when there is none."""
    found = [float(m.group(1)) for m in _SCORE.finditer(text)]
    found = [v for v in found if 0 <= v <= 5]
    return found[-1] if found else None


def judge_prompt(prompt: str | list, output: str) -> str:
    return RUBRIC.format(prompt=prompt_text(prompt), output=output)


def self_label(judgments: list[str], source: str) -> Label:
    """The mean of the parseable scores of one sample's judgments; the others dropped and counted."""
    scores = [s for s in map(parse_score, judgments) if s is not None]
    extra = {"judgments": judgments, "n_unparseable": len(judgments) - len(scores)}
    if not scores:
        return Label(None, source, f"unparseable: no 'Score: N' in any of {len(judgments)} judgment(s)", extra)
    return Label(sum(scores) / len(scores), source, "", extra)


class SelfLabeller:
    """The sampling policy (each sample row's `model`) judges its own samples (module docstring)."""

    def __init__(self, context, judge_samples: int, sampling):
        self.context, self.judge_samples, self.sampling = context, judge_samples, sampling
        self.source = "self"
        self.key = {"labeller": "self", "rubric_sha256": RUBRIC_SHA256, "judge_samples": judge_samples,
                    "sampling": sampling.__dict__, "template": context.template}

    def label_samples(self, samples: list[dict], work=None) -> list[Label]:
        from dpo_eval.loop.round import derived_seed

        judgments = self.judge(samples, derived_seed(samples[0]["seed"], "self"))  # the round's sampling seed
        return [self_label(texts, self.source) for texts in judgments]

    def judge(self, samples: list[dict], seed: int) -> list[list[str]]:
        """judge_samples judgment texts per sample, from the model that wrote it."""
        from dpo_eval.engine.cache import resolve_cache_dir
        from dpo_eval.generate import GenerateConfig, Prompt, prompt_ids, sample_batch
        from dpo_eval.models import load_model, load_tokenizer

        models = {s["model"] for s in samples}
        if len(models) != 1:
            raise ValueError(f"self-judging needs samples of one policy, got {sorted(models)}")
        policy = models.pop()
        device, dtype = self.context.torch_device_dtype()
        cache_root = resolve_cache_dir(self.context.cache_dir)
        tokenizer = load_tokenizer(policy, cache_dir=cache_root, **self.context.flags)
        model = load_model(policy, device=device, dtype=dtype, cache_dir=cache_root, **self.context.flags).model
        s = self.sampling
        settings = GenerateConfig(model=policy, prompts="-", out="-", n=self.judge_samples, temperature=s.temperature,
                                  top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=seed,
                                  template=self.context.template)
        items = [Prompt(f"{row['prompt_id']}/{row['sample_index']}", judge_prompt(row["prompt"], row["output"]))
                 for row in samples]
        batch = [(p, prompt_ids(tokenizer, p, self.context.template)) for p in items]
        texts: dict[str, list[str]] = {p.id: [] for p in items}
        for start in range(0, len(batch), self.context.batch_size):
            for row in sample_batch(model, tokenizer, batch[start:start + self.context.batch_size], settings):
                texts[row["prompt_id"]].append(row["output"])
        return [texts[p.id] for p in items]
