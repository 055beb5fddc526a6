"""Labellers that run a model: a DPO model's implicit reward, and a sequence-classification reward model.

| spec                    | score of (prompt, output)                                                   |
|-------------------------|-----------------------------------------------------------------------------|
| `implicit:POLICY[,REF]` | r = beta * (log pi(y|x) - log pi_ref(y|x)) (Rafailov et al. 2023), exactly   |
|                         | as `dpo-eval rerank` scores candidates (beta: rerank's default); REF        |
|                         | defaults to the loop's reference (`ref`, else the starting policy); with     |
|                         | `logprobs: {logprob_backend: vllm}` the log-probs come from vLLM servers     |
|                         | (`rerank --logprob-backend vllm`), stopped after each round's labels         |
| `rm:PATH`               | the first logit of AutoModelForSequenceClassification on the conversation    |
|                         | rendered with the reward model's own tokenizer and chat template (plain      |
|                         | `prompt + output` without one), in batches (as RLHFlow and OpenRLHF label)    |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dpo_eval.data.prompts import prompt_text
from dpo_eval.evaluation.store import path_sha256
from dpo_eval.logprob_settings import LogprobSettings
from dpo_eval.loop.labels import Label


@dataclass(frozen=True)
class LabelContext:
    """What model labellers load models with: the loop's reference, cache, device, dtype, template, flags."""

    reference: str
    cache_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    template: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    batch_size: int = 8
    logprobs: LogprobSettings = LogprobSettings()
    """The implicit labeller's log-prob backend (the loop's `logprobs:`)."""

    def torch_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        from dpo_eval.models import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        return device, resolve_dtype(self.dtype, device)

    @property
    def flags(self) -> dict:
        return {"trust_remote_code": self.trust_remote_code, "allow_pickle": self.allow_pickle}


def _rerank_beta() -> float:
    from dpo_eval.rerank import RerankConfig

    return RerankConfig.__dataclass_fields__["beta"].default


class ImplicitLabeller:
    """A DPO model's implicit reward as the label (dpo_eval.rerank's scoring), by the engine or vLLM."""

    def __init__(self, spec: str, context: LabelContext):
        from dpo_eval.engine.cache import resolve_cache_dir
        from dpo_eval.models import identify_model

        policy, _, ref = spec.partition(",")
        self.policy, self.ref, self.context = policy.strip(), (ref.strip() or context.reference), context
        self.beta = _rerank_beta()
        self.cache_root = resolve_cache_dir(context.cache_dir)
        self.identities = [identify_model(p, cache_dir=self.cache_root, **context.flags) for p in (self.policy, self.ref)]
        self.key = {"labeller": "implicit", "policy": self.identities[0].fingerprint,
                    "ref": self.identities[1].fingerprint, "beta": self.beta, "norm": "sum",
                    "template": context.template}
        if context.logprobs.is_vllm:  # the engine's key is as before the backend existed
            self.key["logprobs"] = {role: vllm_numerics_tag(context.logprobs, role) for role in ("policy", "reference")}
        self.source = f"implicit:{self.policy},{self.ref}"

    def label_samples(self, samples: list[dict], work: Path | None = None) -> list[Label]:
        from dpo_eval.models import load_tokenizer
        from dpo_eval.rerank import Candidate, CandidateSet

        groups: dict[str, tuple[object, list[Candidate]]] = {}
        for s in samples:
            groups.setdefault(s["prompt_id"], (s["prompt"], []))[1].append(Candidate(s["output"], s["sample_index"]))
        sets = [CandidateSet(pid, prompt, tuple(cands)) for pid, (prompt, cands) in groups.items()]
        tokenizer = load_tokenizer(self.policy, self.ref, cache_dir=self.cache_root, **self.context.flags)
        ranked = self._rank_vllm(sets, tokenizer) if self.context.logprobs.is_vllm else self._rank_engine(sets, tokenizer)
        reward = {(r.prompt_id, c.sample_index): c.reward for r in ranked for c in r.ranked}
        return [Label(reward[s["prompt_id"], s["sample_index"]], self.source) for s in samples]

    def _rank_engine(self, sets: list, tokenizer) -> list:
        from dpo_eval.models import load_model
        from dpo_eval.rerank import rerank

        device, dtype = self.context.torch_device_dtype()
        load = lambda path: load_model(path, device=device, dtype=dtype, cache_dir=self.cache_root,  # noqa: E731
                                       **self.context.flags).model
        return rerank(load(self.policy), load(self.ref), tokenizer, sets, beta=self.beta,
                      template=self.context.template)

    def _rank_vllm(self, sets: list, tokenizer) -> list:
        """rerank's ranking on vLLM's sequence log-probs (cached per model); the servers dpo-eval started are
        stopped afterwards, so the round's training gets the GPUs back."""
        from dpo_eval.engine.vllm_backend import vllm_stats
        from dpo_eval.rerank import rank_sets, tokenize_candidates
        from dpo_eval.vllm_server import SERVERS

        sequences = tokenize_candidates(sets, tokenizer, self.context.template)
        stats = lambda identity, role: vllm_stats(identity, sequences, self.cache_root,  # noqa: E731
                                                  self.context.logprobs, role, show_progress=False)
        try:
            ref = stats(self.identities[1], "reference")
            return rank_sets(sets, stats(self.identities[0], "policy"), ref, self.beta, "sum")
        finally:
            SERVERS.close()


def vllm_numerics_tag(settings: LogprobSettings, role: str) -> str:
    """What the labels of one model depend on besides its weights under vLLM: its version and options."""
    from dpo_eval.engine.vllm_backend import VllmOptions, numerics_summary

    summary = numerics_summary(settings, role)
    url = summary["vllm_url"]
    return f"vllm{summary['vllm_version']}-{VllmOptions(settings.vllm_python, settings.vllm_args, url).digest()}"


def render_for_reward_model(tokenizer, prompt: str | list, output: str) -> str:
    """The conversation as the reward model reads it: its chat template, else prompt + output."""
    if getattr(tokenizer, "chat_template", None):
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": output}], tokenize=False)
    return prompt_text(prompt) + output


class RewardModelLabeller:
    """A sequence-classification reward model's score (its first logit) as the label."""

    def __init__(self, path: str, context: LabelContext):
        self.path, self.context = path, context
        fingerprint = path_sha256(path) if Path(path).exists() else path
        self.key = {"labeller": "rm", "model": fingerprint, "batch_size": context.batch_size}
        self.source = f"rm:{path}"

    def label_samples(self, samples: list[dict], work: Path | None = None) -> list[Label]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device, dtype = self.context.torch_device_dtype()
        kwargs = {"trust_remote_code": self.context.trust_remote_code, "cache_dir": self.context.cache_dir}
        tokenizer = AutoTokenizer.from_pretrained(self.path, **kwargs)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        model = AutoModelForSequenceClassification.from_pretrained(self.path, dtype=dtype, **kwargs).to(device).eval()
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        texts = [render_for_reward_model(tokenizer, s["prompt"], s["output"]) for s in samples]
        specials = not getattr(tokenizer, "chat_template", None)  # a chat template writes its own
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.context.batch_size):
                batch = tokenizer(texts[start:start + self.context.batch_size], return_tensors="pt", padding=True,
                                  add_special_tokens=specials).to(device)
                scores += model(**batch).logits[:, 0].float().tolist()
        return [Label(float(v), self.source) for v in scores]
