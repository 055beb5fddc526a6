"""On CUDA (skipped without a GPU): TDPO's sequential KL against a full-distribution computation (float32,
and under bfloat16 autocast as the trainer runs it), and its memory far below one (positions, vocab)
float32 tensor in forward + backward."""

from __future__ import annotations

import pytest
import torch
from conftest import random_pairs, tiny_llama
from test_seq_kl import brute_force, sharpened

from dpo_eval.engine.packing import pack_rows
from dpo_eval.engine.seq_kl import packed_token_kl
from dpo_eval.tokenization import TokenizedPair

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("autocast", [False, True])
def test_cuda_seq_kl_equals_brute_force(autocast):
    policy = sharpened(tiny_llama(seed=3)).cuda().train()
    ref = sharpened(tiny_llama(seed=4)).cuda()
    ref.requires_grad_(False)
    if autocast:
        ref = ref.to(torch.bfloat16)  # the trainer loads the reference in the compute dtype
    pairs = random_pairs(6, 97, seed=11, max_prompt=8, max_response=7)
    batch = pack_rows([pairs[:3], pairs[3:]], pad_id=0).to(torch.device("cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logps, _, ref_logps, seq_kl = packed_token_kl(policy, ref, batch)
    tol = 5e-2 if autocast else 1e-4
    for i, pair in enumerate(pairs):
        for j, response in enumerate((pair.chosen_ids, pair.rejected_ids)):
            kl, logp, ref_logp = brute_force(policy, ref.float(), pair.prompt_ids, response)
            assert float(seq_kl[i, j].detach()) == pytest.approx(float(kl.detach()), rel=tol, abs=tol)
            assert float(logps[i, j].detach()) == pytest.approx(float(logp.detach()), rel=tol, abs=tol)
            assert float(ref_logps[i, j]) == pytest.approx(ref_logp, rel=tol, abs=tol)


def test_cuda_seq_kl_memory_is_chunked():
    vocab, n_pairs, length = 32000, 8, 256
    policy = tiny_llama(vocab_size=vocab, seed=1).cuda().train()
    ref = tiny_llama(vocab_size=vocab, seed=2).cuda()
    ref.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    ids = lambda k: tuple(torch.randint(1, vocab, (k,), generator=g).tolist())  # noqa: E731
    pairs = [TokenizedPair(str(i), "", ids(8), ids(length), ids(length)) for i in range(n_pairs)]
    batch = pack_rows([[p] for p in pairs], pad_id=0).to(torch.device("cuda"))
    full_logits = 2 * n_pairs * length * vocab * 4  # one float32 (positions, vocab) tensor
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    logps, _, _, seq_kl = packed_token_kl(policy, ref, batch)
    (seq_kl.sum() - logps.sum()).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    print(f"peak {peak / 2**20:.0f} MiB vs one full logits tensor {full_logits / 2**20:.0f} MiB")
    assert peak < full_logits / 2
