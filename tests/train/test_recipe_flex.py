"""The trainer's packed micro-batch with the FlexAttention path: one row, no padding, and the same loss
as the dense path's best-fit rows (CPU, float32, forward only: FlexAttention has no CPU backward;
tests/engine/test_flex_cuda.py holds the gradients on CUDA)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import save_tiny_model, write_synthetic_preferences

from dpo_eval.engine import flex
from dpo_eval.engine.flex import micro_batch_rows
from dpo_eval.train.config import load_config
from dpo_eval.train.model_setup import causal_lm
from dpo_eval.train.recipe import DPORecipe


def test_micro_batch_rows_one_row_with_flex_best_fit_without():
    lengths = [5, 9, 3, 9, 4]
    assert micro_batch_rows(lengths, is_flex=True) == [[0, 1, 2, 3, 4]]
    # dense: rows 9 wide, best fit longest first: 9 | 9 | 5 + 4 | 3
    assert micro_batch_rows(lengths, is_flex=False) == [[1], [3], [0, 4], [2]]


def test_micro_loss_flex_equals_dense(tmp_path, monkeypatch):
    config = load_config(None, (), policy=save_tiny_model(tmp_path / "init", seed=3),
                         data=write_synthetic_preferences(tmp_path / "train.jsonl", n=16, seed=4),
                         output_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), batch_size=8,
                         max_length=None, show_progress=False, device="cpu")
    recipe = DPORecipe(config)
    recipe.setup()
    packed_rows = []
    original = flex.packed_last_hidden

    def recorded(model, decoder, input_ids, *args, **kwargs):
        packed_rows.append(input_ids.shape[0])
        return original(model, decoder, input_ids, *args, **kwargs)

    monkeypatch.setattr("dpo_eval.engine.logprobs.packed_last_hidden", recorded)
    items = np.arange(8)
    losses = {}
    for path in ("dense", "flex"):
        flex.set_packed_attention(causal_lm(recipe.module), path)
        with torch.no_grad():
            out, _ = recipe._micro_loss(items)
        losses[path] = out.losses
    recipe.cleanup()
    assert packed_rows[0] > 1 and packed_rows[1] == 1  # dense: best-fit rows; flex: one row
    torch.testing.assert_close(losses["flex"], losses["dense"], atol=1e-6, rtol=0)
    assert losses["flex"].shape == (8,)
