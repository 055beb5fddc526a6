"""The anchors' scoring method (TRL / RewardBench style), kept apart from the engine it is compared with.

B pairs are stacked as [chosen; rejected] sequences (prompt repeated), right-padded to one
length, in data order; one forward per batch; full-vocabulary log_softmax; gather; mask the
prompt and padding; sum over response tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.inference_mode()
def anchor_batch_logps(model, pairs: Sequence, pad_id: int) -> list[tuple[float, float]]:
    sequences = [p.prompt_ids + p.chosen_ids for p in pairs] + [p.prompt_ids + p.rejected_ids for p in pairs]
    prompt_lens = [len(p.prompt_ids) for p in pairs] * 2
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    loss_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, (seq, plen) in enumerate(zip(sequences, prompt_lens)):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        loss_mask[row, plen: len(seq)] = True
    logits = model(input_ids=input_ids, attention_mask=attention).logits
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = logps.gather(2, input_ids[:, 1:, None]).squeeze(2)
    sums = (token_logps * loss_mask[:, 1:]).sum(dim=1)
    n = len(pairs)
    return [(float(sums[i]), float(sums[n + i])) for i in range(n)]


def anchor_logps(model, pairs: Sequence, pad_id: int, batch_size: int = 8) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for start in range(0, len(pairs), batch_size):
        out += anchor_batch_logps(model, pairs[start: start + batch_size], pad_id)
    return out
