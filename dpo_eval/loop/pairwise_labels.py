"""Pairwise judges as labellers: `openai:NAME`, `local:PATH` and pairwise `rule:module:function`.

The existing judges (dpo_eval.judge) compare two outputs. To give each of a prompt's K samples one
score, every pair (i, j), i < j, is judged in both orders (verdict mode: position swapped), and

    c_ij = mean of the scored ones of { P(A) with i as A,  1 - P(A) with j as A }     (c_ji = 1 - c_ij)
    score_i = mean over j != i with c_ij scored of c_ij                                 (in [0, 1])

i.e. sample i's win rate against the prompt's other samples (a tie counts 1/2). A comparison unscored
in both orders is dropped and counted (`n_unscored_comparisons`); a sample with no scored comparison
is unscored. Verdicts are cached in the labels phase's work folder under the same keys as
`dpo-eval judge` (dpo_eval.judge.store), so a labelling killed midway asks only for what is new.
K(K-1) judge calls per prompt.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from dpo_eval.data.prompts import prompt_text
from dpo_eval.loop.labels import Label
from dpo_eval.openai_client import RequestFailed


class PairwiseJudgeLabeller:
    """Each sample's win rate against its prompt's other samples, by a pairwise judge (module docstring)."""

    def __init__(self, spec: str, context, judge_settings):
        from dpo_eval.judge.run import JudgeConfig, make_backend
        from dpo_eval.judge.templates import load_template

        self.template = load_template(judge_settings.template)
        config = JudgeConfig(candidates="-", baseline="-", judge=spec, out="-", template=judge_settings.template,
                             base_url=judge_settings.base_url, api_key_env=judge_settings.api_key_env,
                             cache_dir=context.cache_dir, trust_remote_code=context.trust_remote_code,
                             allow_pickle=context.allow_pickle)
        self.backend = make_backend(config, self.template)
        self.key = {"labeller": "pairwise", "judge": self.backend.config, "template_sha256": self.template.sha256,
                    "mode": "verdict"}
        self.source = spec
        self.store = None

    def _preference(self, prompt: str, a: str, b: str) -> float | None:
        """P(a better than b) as the judge gives it with a shown first; None when unscored."""
        from dpo_eval.judge.store import Verdict, comparison_key

        key = comparison_key(self.backend.config, self.template.sha256, prompt, a, b)
        verdict = self.store.get(key) if self.store is not None else None
        if verdict is None:
            try:
                verdict = self.backend.judge(prompt, a, b, "verdict")
            except RequestFailed as err:
                verdict = Verdict(None, "", f"request failed: {err}")
            if self.store is not None:
                self.store.put(key, verdict)
        return verdict.preference_a

    def _comparison(self, prompt: str, a: str, b: str) -> float | None:
        """c_ab: the mean of the scored orders (module docstring)."""
        first, second = self._preference(prompt, a, b), self._preference(prompt, b, a)
        values = [v for v in (first, None if second is None else 1.0 - second) if v is not None]
        return sum(values) / len(values) if values else None

    def label_samples(self, samples: list[dict], work: Path | None = None) -> list[Label]:
        from dpo_eval.judge.store import JudgmentStore

        self.store = JudgmentStore(work / "judge_cache.sqlite") if work is not None else None
        try:
            groups: dict[str, list[int]] = defaultdict(list)
            for index, sample in enumerate(samples):
                groups[sample["prompt_id"]].append(index)
            wins: dict[int, list[float]] = defaultdict(list)
            unscored: dict[int, int] = defaultdict(int)
            for members in groups.values():
                prompt = prompt_text(samples[members[0]]["prompt"])
                for k, i in enumerate(members):
                    for j in members[k + 1:]:
                        c = self._comparison(prompt, samples[i]["output"], samples[j]["output"])
                        if c is None:
                            unscored[i] += 1
                            unscored[j] += 1
                        else:
                            wins[i].append(c)
                            wins[j].append(1.0 - c)
        finally:
            if self.store is not None:
                self.store.close()
        return [self._label(wins[i], unscored[i]) for i in range(len(samples))]

    def _label(self, values: list[float], n_unscored: int) -> Label:
        extra = {"n_comparisons": len(values), "n_unscored_comparisons": n_unscored}
        if not values:
            return Label(None, self.source, "no comparison with another sample was scored by the judge", extra)
        return Label(sum(values) / len(values), self.source, "", extra)
