"""On CUDA (skipped without a GPU): TDPO and listwise training in bfloat16 autocast learn above chance."""

from __future__ import annotations

import pytest
import torch
from test_recipe import settings
from test_train_token_listwise import base, held_out_accuracies, write_ranked  # noqa: F401 (fixture)

from dpo_eval.train.recipe import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("loss", ["tdpo2", "listwise"])
def test_cuda_bf16_training_learns(base, tmp_path, loss):  # noqa: F811
    extra = {"data": write_ranked(tmp_path / "ranked.jsonl", n=48, seed=3)} if loss == "listwise" else {}
    config = settings(base, tmp_path / loss, loss=loss, batch_size=8, max_steps=10, device="cuda",
                      eval_data=base["eval"], eval_every=10, **extra)
    assert held_out_accuracies(train(config))[-1] >= 0.8
