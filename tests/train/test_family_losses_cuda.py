"""On CUDA (skipped without a GPU): the family losses train in bfloat16 autocast, and the LD-DPO split of
the training forward agrees with float32 on the CPU."""

from __future__ import annotations

import pytest
import torch
from conftest import random_pairs, tiny_llama
from test_family_training import RAINBOW_BEST, base, settings  # noqa: F401 (fixture)

from dpo_eval.engine.packing import pack_rows
from dpo_eval.train.family_inputs import packed_logps_with_tails
from dpo_eval.train.recipe import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("loss, params, data", [("ld_dpo", {"alpha": 0.3}, "train"), ("rainbow", RAINBOW_BEST, "train"),
                                                ("sppo", {}, "sppo"), ("npo", {"retain_coef": 1.0}, "train"),
                                                ("fdpo", {"divergence": "js_divergence"}, "train")])
def test_cuda_bf16_training_learns(base, tmp_path, loss, params, data):  # noqa: F811
    config = settings(base, tmp_path / loss, loss=loss, loss_params=params, data=base[data], device="cuda")
    evals = [h for h in train(config) if "eval_rewards/accuracies" in h]
    assert evals[-1]["eval_rewards/accuracies"] >= 0.75


def test_bf16_tails_match_float32_cpu():
    model = tiny_llama()
    pairs = random_pairs(6, model.config.vocab_size, seed=4)
    batch = pack_rows([pairs[:3], pairs[3:]], pad_id=0)
    with torch.no_grad():
        cpu = packed_logps_with_tails(model, batch)
        model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu = packed_logps_with_tails(model, batch.to(torch.device("cuda")))
    torch.testing.assert_close(gpu[1].cpu(), cpu[1])
    for ours, reference in ((gpu[0], cpu[0]), (gpu[2], cpu[2])):  # bf16 matmuls: ~1e-2 relative per token
        torch.testing.assert_close(ours.float().cpu(), reference, rtol=0.05, atol=0.5)
