"""Batched sampling where every row has its own random generator, so a sample depends only on
(seed, prompt, sample index): not on which other rows share its batch, the batch size, or
whether the run was resumed.

HF `model.generate` draws every row from one global generator, so the same prompt gets other
samples in another batch. This loop keeps batching (left padding, attention mask, position ids
from the mask, KV cache) but draws row r's next token with `torch.multinomial(probs[r], 1,
generator=g_r)`. The distribution is HF's for `do_sample=True, top_k=0` (no top-k, as vLLM and
the OpenAI API default; HF's own default top_k=50 is *not* applied):

    scores = logits / temperature                                     (TemperatureLogitsWarper)
    sort scores ascending; c_i = cumulative softmax; drop i where c_i <= 1 - top_p,
    always keeping the most likely token                              (TopPLogitsWarper)
    next ~ softmax(scores)                                            (torch.multinomial)

temperature 0 is greedy (argmax; top_p and seeds unused). Logits are taken in float32, as HF
does. Rows of one batch are computed together, so their logits match a single-row run up to
float rounding: on CPU float32 a sample is the same in every batch layout; in bfloat16 a
near-tie token can, rarely, come out otherwise.
"""

from __future__ import annotations

import hashlib
import inspect
import json

import torch


def sample_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """The generator seed of one sample: 63 bits of sha256(json([seed, prompt_id, sample_index]))."""
    digest = hashlib.sha256(json.dumps([seed, prompt_id, sample_index]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def next_token_scores(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Temperature, then top-p (nucleus) filtering, exactly as HF's warpers; logits (batch, vocab)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (batch, vocab), got shape {tuple(logits.shape)}")
    scores = logits / temperature if temperature != 1.0 else logits
    if top_p >= 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False  # keep at least the most likely token
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))


def _choose(logits: torch.Tensor, generators: list[torch.Generator], temperature: float,
            top_p: float) -> torch.Tensor:
    """One next token per row (batch,): greedy at temperature 0, else row r drawn with generators[r]."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_scores(logits, temperature, top_p).softmax(dim=-1)
    return torch.cat([torch.multinomial(probs[r: r + 1], 1, generator=g)[0] for r, g in enumerate(generators)])


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + list(ids) for ids in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
    return input_ids, attention


@torch.inference_mode()
def sample_sequences(model, prompts: list[list[int]], seeds: list[int], *, temperature: float, top_p: float,
                     max_new_tokens: int, eos_ids: set[int], pad_id: int) -> list[list[int]]:
    """Continue each prompt (token ids) with up to max_new_tokens tokens; row r sampled with seeds[r].

    Returns each row's new token ids, ending with the EOS id when one was drawn (nothing after it).
    """
    if len(prompts) != len(seeds) or not prompts or min(len(ids) for ids in prompts) < 1:
        raise ValueError("sample_sequences needs one seed per prompt and non-empty prompts")
    device = next(model.parameters()).device
    input_ids, attention = _left_pad(prompts, pad_id, device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    parameters = inspect.signature(model.forward).parameters
    takes_positions = "position_ids" in parameters
    cache_name = "cache" if "cache" in parameters else "past_key_values"  # renamed in transformers 5
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    outputs: list[list[int]] = [[] for _ in prompts]
    is_open = [True] * len(prompts)
    past, step_ids, step_positions = None, input_ids, positions
    for _ in range(max_new_tokens):
        extra = {"position_ids": step_positions} if takes_positions else {}
        extra[cache_name] = past
        result = model(input_ids=step_ids, attention_mask=attention, use_cache=True, **extra)
        past = getattr(result, cache_name)
        tokens = _choose(result.logits[:, -1].float(), generators, temperature, top_p)
        for r, token in enumerate(tokens.tolist()):
            if is_open[r]:
                outputs[r].append(token)
                is_open[r] = token not in eos_ids
        if not any(is_open):
            break
        step_ids = tokens.masked_fill(~torch.tensor(is_open, device=device), pad_id)[:, None]
        attention = torch.cat([attention, attention.new_ones((len(prompts), 1))], dim=-1)
        step_positions = step_positions[:, -1:] + 1
    return outputs
