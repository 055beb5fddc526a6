"""Peak memory stays far below a float32 (batch, seq, vocab) logits tensor on a large-vocab model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    sys.path[:0] = [{tests!r}, {root!r}]
    from conftest import random_pairs, tiny_llama
    from dpo_eval.engine.runner import compute_pair_logps
    vocab = 256_000
    model = tiny_llama(vocab_size=vocab, tie_word_embeddings=True, hidden_size=16, intermediate_size=32,
                       num_attention_heads=2, num_key_value_heads=1)
    compute_pair_logps(model, random_pairs(2, vocab, seed=9), pad_id=0, token_budget=10**6)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pairs = random_pairs(16, vocab, seed=1, max_prompt=60, max_response=60)
    compute_pair_logps(model, pairs, pad_id=0, token_budget=10**6)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    width = max(p.packed_length for p in pairs)
    print(after - before, 16 * width * vocab * 4)
""")


def test_peak_memory_is_a_fraction_of_full_logits():
    script = SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    growth, full_logits = map(int, out.stdout.split())
    assert full_logits > 1.5e9  # the tensor we must never build is large
    assert growth < full_logits / 4, f"peak grew {growth / 1e6:.0f} MB; full logits {full_logits / 1e6:.0f} MB"
