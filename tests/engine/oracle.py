"""The straightforward reference: one sequence at a time, full logits, log_softmax, gather."""

from __future__ import annotations

import torch


@torch.no_grad()
def sequence_logp(model, prompt_ids, response_ids) -> float:
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    logits = model(input_ids=ids).logits.float()
    logps = torch.log_softmax(logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    token_logps = logps.gather(1, targets[:, None]).squeeze(1)
    return float(token_logps[len(prompt_ids) - 1:].sum())


def pair_logps(model, pair) -> tuple[float, float]:
    return (sequence_logp(model, pair.prompt_ids, pair.chosen_ids),
            sequence_logp(model, pair.prompt_ids, pair.rejected_ids))


@torch.no_grad()
def sequence_logp_float64(model, prompt_ids, response_ids) -> float:
    """As sequence_logp, but the head and log_softmax in float64 (the float32 hidden states kept).

    On a real 49k-vocabulary model, float32 log_softmax on CPU drifts by ~1e-5 per token;
    this is the reference the engine is held to there.
    """
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    hidden = model.base_model(input_ids=ids).last_hidden_state[0, len(prompt_ids) - 1: -1]
    logits = hidden.double() @ model.get_output_embeddings().weight.double().T
    targets = ids[0, len(prompt_ids):]
    return float(torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum())
