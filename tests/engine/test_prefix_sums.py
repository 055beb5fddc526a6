"""The engine's per-token output and prefix split (LD-DPO) against a one-sequence-at-a-time oracle."""

from __future__ import annotations

import torch
from conftest import random_pairs

from dpo_eval.engine.logprobs import packed_logps, packed_token_logps, prefix_sums
from dpo_eval.engine.packing import pack_rows

TOL = 1e-4


@torch.no_grad()
def oracle_token_logps(model, prompt_ids, response_ids) -> torch.Tensor:
    """Full logits of prompt + response alone, log_softmax, gather: (len(response),)."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    logps = torch.log_softmax(model(input_ids=ids).logits.float()[0, :-1], dim=-1)
    return logps.gather(1, ids[0, 1:, None]).squeeze(1)[len(prompt_ids) - 1:]


@torch.no_grad()
def test_prefix_sums_match_a_per_sequence_split(llama):
    pairs = random_pairs(7, llama.config.vocab_size, seed=11)
    rows = [pairs[:3], pairs[3:5], pairs[5:]]  # several pairs to a row, rows of different widths
    batch = pack_rows(rows, pad_id=0)
    exclude = torch.tensor([3, 5, 8, 13, 21, 34, 55])  # some response tokens drop out of sums and positions
    per_token, owner = packed_token_logps(llama, batch, exclude)
    sums, counts = packed_logps(llama, batch, exclude)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 17, (2 * len(pairs),), generator=gen)  # 0, inside, and past the end
    heads = prefix_sums(per_token, owner, lengths)
    flat = [pair for row in rows for pair in row]
    for index, pair in enumerate(flat):
        for side, response in enumerate((pair.chosen_ids, pair.rejected_ids)):
            sequence = 2 * index + side
            kept = ~torch.isin(torch.tensor(response), exclude)
            tokens = oracle_token_logps(llama, pair.prompt_ids, response)[kept]
            assert counts[index, side] == kept.sum()
            assert abs(float(sums[index, side]) - float(tokens.sum())) <= TOL
            assert abs(float(heads[sequence]) - float(tokens[: int(lengths[sequence])].sum())) <= TOL
    assert lengths.min() == 0 and bool((lengths > counts.view(-1)).any()) and bool((lengths < counts.view(-1)).any())


def test_prefix_sums_follow_owner_order_not_batch_order():
    # tokens of sequences 1 and 0 interleaved: positions count within each owner
    per_token = torch.tensor([1.0, 10.0, 2.0, 20.0, 4.0])
    owner = torch.tensor([1, 0, 1, 0, 1])
    assert prefix_sums(per_token, owner, torch.tensor([1, 2])).tolist() == [10.0, 3.0]
    assert prefix_sums(per_token, owner, torch.tensor([0, 5])).tolist() == [0.0, 7.0]
