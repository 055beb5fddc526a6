"""A judge run in-process by transformers: any local causal LM (a .gguf, a checkpoint, smollm2 ...).

probability mode reads the next-token distribution after the rendered prompt (chat template with a
generation prompt) and normalises P("A") against P("B"); verdict mode generates a few tokens
greedily and parses the answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from dpo_eval.engine.cache import resolve_cache_dir
from dpo_eval.errors import UserError
from dpo_eval.judge.backends import parse_verdict, preference_from_logprobs
from dpo_eval.judge.store import Verdict
from dpo_eval.judge.templates import LABELS, JudgeTemplate
from dpo_eval.models import load_model, resolve_device, resolve_dtype
from dpo_eval.tokenization import as_messages, chat_ids, padding_id


def label_token_ids(tokenizer) -> dict[str, list[int]]:
    """Single-token spellings of each label ("A", " A"); a label with none cannot be judged."""
    ids: dict[str, list[int]] = {}
    for label in LABELS:
        found = set()
        for spelling in (label, " " + label):
            tokens = tokenizer(spelling, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1 and tokens[0] != tokenizer.unk_token_id:
                found.add(tokens[0])
        if not found:
            raise UserError(f"the judge's tokenizer has no single token for {label!r}; use --mode verdict")
        ids[label] = sorted(found)
    return ids


@dataclass
class LocalJudge:
    """A transformers causal LM judging in-process (`--judge local:PATH`); its cache identity is the
    fingerprint of its weights. trust_remote_code / allow_pickle are passed to model loading."""

    path: str
    template: JudgeTemplate
    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int = 8
    cache_dir: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        cache = resolve_cache_dir(self.cache_dir)
        device = resolve_device(self.device)
        loaded = load_model(self.path, device=device, dtype=resolve_dtype(self.dtype, device), cache_dir=cache,
                            trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle)
        if loaded.tokenizer is None:
            raise UserError(f"judge model {self.path} has no tokenizer files: save its tokenizer next to the "
                            "weights (tokenizer.save_pretrained(<model folder>))")
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.fingerprint = loaded.identity.fingerprint
        self._lock = threading.Lock()  # one forward at a time on one model

    @property
    def config(self) -> dict:
        return {"backend": "local", "fingerprint": self.fingerprint, "temperature": 0.0,
                "max_new_tokens": self.max_new_tokens}

    def _input_ids(self, prompt: str) -> torch.Tensor:
        if getattr(self.tokenizer, "chat_template", None):
            ids = chat_ids(self.tokenizer, as_messages(prompt), add_generation_prompt=True)
        else:
            ids = self.tokenizer(prompt)["input_ids"]
        return torch.tensor([ids], device=next(self.model.parameters()).device)

    def _label_preference(self, input_ids: torch.Tensor) -> Verdict:
        """P(A) = sigmoid(log P(A) - log P(B)), each label's log-prob the logsumexp over its spellings."""
        logps = torch.log_softmax(self.model(input_ids=input_ids).logits[0, -1].float(), dim=-1)
        ids = label_token_ids(self.tokenizer)
        label_logp = {label: float(torch.logsumexp(logps[ids[label]], dim=0)) for label in LABELS}
        raw = f"logP(A)={label_logp['A']:.6g} logP(B)={label_logp['B']:.6g}"
        preference = preference_from_logprobs(label_logp["A"], label_logp["B"])
        if preference is None:
            return Verdict(None, raw, "unparseable: both labels have zero probability")
        return Verdict(preference, raw)

    @torch.inference_mode()
    def judge(self, instruction: str, output_a: str, output_b: str, mode: str) -> Verdict:
        input_ids = self._input_ids(self.template.render(instruction, output_a, output_b))
        with self._lock:
            if mode == "probability":
                return self._label_preference(input_ids)
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                      max_new_tokens=self.max_new_tokens, pad_token_id=padding_id(self.tokenizer))
        text = self.tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True)
        return parse_verdict(text)
