"""N responses to one prompt with the prompt's keys and values computed once (inference only).

The 4D-mask packing of ``dpo_eval.engine.multi`` lays a group out as one row [prompt | y1 .. yN]:
the prompt runs once, but every response token attends over a row of P + sum(L_k) keys, and a long
group makes attention quadratic in N. Here the prompt's key/value cache is reused instead:

    stage 1   each prompt of a batch once, right-padded, keeping its keys and values;
              the hidden state at its last token predicts every response's first token
    stage 2   each response as its own row, all but its last token (which predicts nothing), over
              a copy of its prompt's cache rows; position ids continue at P, so the row computes
              exactly what the response would alone after its prompt

Tokens run: P + sum(L_k - 1) per group, against N * (P + L) when each candidate is its own
sequence; each response token attends over at most P + L keys, as it would alone. Budget: stage 1
takes groups while groups * longest prompt <= token_budget; stage 2 takes responses while
rows * (longest prompt + longest row) <= token_budget (the keys and values a chunk holds, as much
as scoring those responses separately would), at least one of each per pass.

Used where every layer attends to the whole context (no sliding window, no recurrent state) and
the cache has the layered layout (transformers >= 4.56); otherwise ``multi`` uses its 4D mask.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from dpo_eval.engine.logprobs import _decoder_and_head, output_head, token_logps

FULL_ATTENTION = "full_attention"


def supports_prefix_cache(model: torch.nn.Module) -> bool:
    """True when the model's cache can be reused across responses as this module does."""
    try:
        from transformers.cache_utils import DynamicCache
    except ImportError:
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(config, "is_encoder_decoder", False) or not hasattr(DynamicCache(), "layers"):
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(kind != FULL_ATTENTION for kind in layer_types):
        return False
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        return False
    decoder, _ = _decoder_and_head(model)
    return _cache_argument(decoder) is not None


def _cache_argument(decoder: torch.nn.Module) -> str | None:
    parameters = inspect.signature(decoder.forward).parameters
    for name in ("cache", "past_key_values"):  # renamed in transformers 5
        if name in parameters:
            return name
    return None


def _right_pad(rows: Sequence[Sequence[int]], width: int, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _cache_rows(cache, index: torch.Tensor):
    """A new cache holding rows `index` of every layer (rows may repeat); `cache` is left as it is."""
    from transformers.cache_utils import DynamicCache

    rows = DynamicCache()
    for layer_index, layer in enumerate(cache.layers):
        rows.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), layer_index)
    return rows


def _prompt_pass(decoder, prompts: Sequence[Sequence[int]], pad_id: int, device):
    """Stage 1: (cache, prompt key mask (G, Pp), hidden state at each prompt's last token (G, H))."""
    width = max(len(p) for p in prompts)
    ids, mask = _right_pad(prompts, width, pad_id, device)
    positions = torch.arange(width, device=device).expand(len(prompts), -1)
    name = _cache_argument(decoder)
    out = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    last = torch.tensor([len(p) - 1 for p in prompts], device=device)
    hidden = out.last_hidden_state[torch.arange(len(prompts), device=device), last]
    return getattr(out, name), mask, hidden


def _response_pass(decoder, cache, prompt_mask: torch.Tensor, prompt_lengths: torch.Tensor,
                   owners: torch.Tensor, inputs: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Stage 2: last-layer hidden states (R, W, H) of each row's input tokens after its prompt."""
    device = prompt_mask.device
    width = max(len(x) for x in inputs)
    ids, mask = _right_pad(inputs, width, pad_id, device)
    positions = prompt_lengths[owners][:, None] + torch.arange(width, device=device)[None]
    attention = torch.cat([prompt_mask.index_select(0, owners), mask], dim=1)
    name = _cache_argument(decoder)
    out = decoder(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True,
                  **{name: _cache_rows(cache, owners)})
    return out.last_hidden_state


def _chunks(lengths: Sequence[int], prompt_width: int, token_budget: int) -> list[list[int]]:
    """Row indices (longest first) in chunks with rows * (prompt_width + longest) <= token_budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks: list[list[int]] = []
    for i in order:
        if chunks and (len(chunks[-1]) + 1) * (prompt_width + lengths[chunks[-1][0]]) <= token_budget:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def _batch_stats(model, prompts, responses, owners_of_rows, pad_id: int, token_budget: int):
    """Per row (a response): (sum, sum of squares, tokens) of its per-token log-probs, tensors (R,)."""
    decoder, _ = _decoder_and_head(model)
    head, transform = output_head(model)
    device = next(model.parameters()).device
    cache, prompt_mask, last = _prompt_pass(decoder, prompts, pad_id, device)
    prompt_lengths = prompt_mask.sum(dim=1)
    owners = torch.tensor(owners_of_rows, device=device)
    hidden = [last.index_select(0, owners)]  # each response's first token
    targets = [torch.tensor([r[0] for r in responses], dtype=torch.long, device=device)]
    rows = [torch.arange(len(responses), device=device)]
    inputs = [r[:-1] for r in responses]
    for chunk in _chunks([len(x) for x in inputs], prompt_mask.shape[1], token_budget):
        if not inputs[chunk[0]]:  # longest first: the rest of this chunk has nothing to run either
            break
        out = _response_pass(decoder, cache, prompt_mask, prompt_lengths, owners[chunk],
                             [inputs[i] for i in chunk], pad_id)
        for slot, i in enumerate(chunk):
            n = len(inputs[i])
            hidden.append(out[slot, :n])
            targets.append(torch.tensor(responses[i][1:], dtype=torch.long, device=device))
            rows.append(torch.full((n,), i, device=device))
    per_token = token_logps(torch.cat(hidden), torch.cat(targets), head, transform, head.weight.shape[0])
    row = torch.cat(rows)
    zeros = torch.zeros(len(responses), dtype=torch.float32, device=device)
    return (zeros.index_add(0, row, per_token), zeros.index_add(0, row, per_token * per_token),
            torch.bincount(row, minlength=len(responses)))


def plan_prompt_batches(groups: Sequence, token_budget: int) -> list[list[int]]:
    """Group indices, by prompt length, in batches within token_budget (at least one group each).

    A batch holds groups while groups * longest prompt <= token_budget (stage 1's padded tokens) and
    the sum of packed lengths (P + sum L_k) <= token_budget (the response hidden states it keeps).
    """
    batches: list[list[int]] = []
    prompt_width = tokens = 0
    for i in sorted(range(len(groups)), key=lambda i: len(groups[i].prompt_ids)):
        p, packed = len(groups[i].prompt_ids), groups[i].packed_length
        if batches and (len(batches[-1]) + 1) * max(prompt_width, p) <= token_budget and tokens + packed <= token_budget:
            batches[-1].append(i)
            prompt_width, tokens = max(prompt_width, p), tokens + packed
        else:
            batches.append([i])
            prompt_width, tokens = p, packed
    return batches


def group_batch_stats(model, groups, pad_id: int, token_budget: int) -> list[list[tuple[float, float, int, int]]]:
    """For a batch of groups: per group, per response, (sum, sum of squares, tokens, 0)."""
    prompts = [g.prompt_ids for g in groups]
    responses = [r for g in groups for r in g.responses]
    owners = [slot for slot, g in enumerate(groups) for _ in g.responses]
    sums, squares, counts = (x.double().cpu().numpy() for x in
                             _batch_stats(model, prompts, responses, owners, pad_id, token_budget))
    out, row = [], 0
    for g in groups:
        out.append([(float(sums[row + k]), float(squares[row + k]), int(counts[row + k]), 0)
                    for k in range(len(g.responses))])
        row += len(g.responses)
    return out
