"""Training options: LoRA adapters, top-N layers, gradient checkpointing, live reference, special-token mask."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import save_tiny_model, write_synthetic_preferences
from safetensors.torch import load_file

from dpo_eval.cli import main
from dpo_eval.errors import UserError
from dpo_eval.train.config import load_config
from dpo_eval.train.prepare import prepare_data
from dpo_eval.train.recipe import DPORecipe, train
from dpo_eval.train.schedule import global_batches


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    return {"model": save_tiny_model(root / "init", seed=3),
            "train": write_synthetic_preferences(root / "train.jsonl", n=16, seed=5), "root": root}


def settings(base, out, **overrides):
    values = dict(policy=base["model"], data=base["train"], output_dir=str(out), learning_rate=1e-3,
                  lr_schedule="constant", show_progress=False, cache_dir=str(base["root"] / "cache"),
                  max_length=None, batch_size=4, max_steps=2)
    values.update(overrides)
    return load_config(None, (), **values)


def first_step_gradients(config) -> dict:
    recipe = DPORecipe(config)
    recipe.setup()
    recipe.train_step(global_batches(16, 4, config.seed, 0)[0], 0)  # move away from the reference
    recipe.accumulate_gradients(global_batches(16, 4, config.seed, 0)[1])
    return {n: p.grad.clone() for n, p in recipe.module.named_parameters() if p.grad is not None}


def test_lora_checkpoint_is_an_adapter_that_score_loads(base, tmp_path):
    train(settings(base, tmp_path / "run", lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}))
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "adapter_config.json").exists() and not (checkpoint / "model.safetensors").exists()
    adapter = load_file(checkpoint / "adapter_model.safetensors")
    assert any("lora_B" in k and float(v.abs().max()) > 0 for k, v in adapter.items())  # B moved off zero
    result = CliRunner().invoke(main, ["score", "--policy", str(checkpoint), "--ref", base["model"],
                                       "--data", base["train"], "--out", str(tmp_path / "s"),
                                       "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["policy"]["kind"] == "peft" and summary["rewards"]["n_ties"] < 16


def test_train_top_layers_changes_only_those(base, tmp_path):
    train(settings(base, tmp_path / "run", train_top_layers=1))
    before = load_file(Path(base["model"]) / "model.safetensors")
    after = load_file(tmp_path / "run" / "checkpoint-2" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.1.") or k == "model.norm.weight" for k in changed)


def count_checkpointed_layer_calls(config) -> int:
    """How often layer 0 ran through transformers' checkpoint function in one accumulation."""
    recipe = DPORecipe(config)
    recipe.setup()
    layer, calls = recipe.module.model.layers[0], []
    original = getattr(layer, "_gradient_checkpointing_func", None)
    if original is not None:
        layer._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or original(*a, **k)
    recipe.accumulate_gradients(global_batches(16, 4, config.seed, 0)[0])
    return len(calls)


def test_gradient_checkpointing_is_active_and_gives_the_same_gradients(base, tmp_path):
    assert count_checkpointed_layer_calls(settings(base, tmp_path / "x")) == 0
    assert count_checkpointed_layer_calls(settings(base, tmp_path / "y", gradient_checkpointing=True)) == 1
    plain = first_step_gradients(settings(base, tmp_path / "a"))
    checkpointed = first_step_gradients(settings(base, tmp_path / "b", gradient_checkpointing=True))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_live_reference_matches_precomputed(base, tmp_path):
    cached = first_step_gradients(settings(base, tmp_path / "a"))
    live = first_step_gradients(settings(base, tmp_path / "b", keep_ref_live=True))
    for name in cached:
        torch.testing.assert_close(live[name], cached[name], atol=1e-6, rtol=1e-4)


def test_special_token_mask_drops_them_from_counts(base, tmp_path):
    recipe = DPORecipe(settings(base, tmp_path / "m", mask_special_tokens=True))
    recipe.setup()
    _, masked = recipe._micro_loss(global_batches(16, 4, 0, 0)[0])
    recipe = DPORecipe(settings(base, tmp_path / "n"))
    recipe.setup()
    _, plain = recipe._micro_loss(global_batches(16, 4, 0, 0)[0])
    # plain-text responses end with EOS, a special token: exactly one fewer token per response
    torch.testing.assert_close(masked.chosen_tokens, plain.chosen_tokens - 1)
    torch.testing.assert_close(masked.rejected_tokens, plain.rejected_tokens - 1)


def test_dropout_disabled_by_default(tmp_path):
    model = save_tiny_model(tmp_path / "drop", seed=1, attention_dropout=0.5)
    base = {"model": model, "train": write_synthetic_preferences(tmp_path / "t.jsonl", n=8, seed=1),
            "root": tmp_path}
    items = global_batches(8, 4, 0, 0)[0]
    for disable, same in ((True, True), (False, False)):
        recipe = DPORecipe(settings(base, tmp_path / f"run{disable}", disable_dropout=disable))
        recipe.setup()
        first, second = (recipe._micro_loss(items)[1].policy_chosen for _ in range(2))
        assert torch.equal(first, second) is same  # training mode: only dropout makes passes differ


def data_with_special_only_response(path, bad_row: int, field: str = "chosen") -> str:
    """16 synthetic pairs; the `field` response of row `bad_row` (1-based) is just the text "<eos>"."""
    rows = [json.loads(line) for line in open(write_synthetic_preferences(path, n=16, seed=5))]
    rows[bad_row - 1][field] = "<eos>"
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_special_token_only_response_is_refused_before_training(base, tmp_path):
    data = data_with_special_only_response(tmp_path / "bad.jsonl", bad_row=3, field="rejected")
    config = settings(base, tmp_path / "run", data=data, mask_special_tokens=True)
    with pytest.raises(UserError, match=rf"^{re.escape(data)}: row 3 \(id 's5-2'\): the rejected response is only "
                                        r"special tokens.*set skip_invalid: true") as caught:
        prepare_data(config)
    assert "\n" not in str(caught.value)
    unmasked = prepare_data(settings(base, tmp_path / "run", data=data))  # without the mask it has tokens
    assert len(unmasked.train) == 16 and unmasked.n_skipped_special == {"train": 0, "eval": 0}


def test_special_token_only_response_is_skipped_and_counted(base, tmp_path, capsys):
    # 16 pairs, batch 4, one epoch: the bad pair would be in a batch; skipped, 15 pairs make 3 steps
    data = data_with_special_only_response(tmp_path / "bad.jsonl", bad_row=5)
    run = tmp_path / "run"
    history = train(settings(base, run, data=data, mask_special_tokens=True, skip_invalid=True, max_steps=None,
                             eval_data=data, eval_every=3))
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3]
    manifest = json.loads((run / "dpo_eval.json").read_text())
    assert manifest["data"]["n_pairs"] == 15
    assert manifest["data"]["n_skipped_only_special_tokens"] == {"train": 1, "eval": 1}
    err = capsys.readouterr().err
    assert "skipped 1 train row(s) with a response made only of special tokens" in err
    assert "skipped 1 eval row(s)" in err


def test_kto_completion_of_only_special_tokens_names_its_row(base, tmp_path):
    path = tmp_path / "unpaired.jsonl"
    rows = [{"prompt": "tell me ", "completion": text, "label": i % 2 == 0}
            for i, text in enumerate(["good yes", "bad no", "<eos>", "sure"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = settings(base, tmp_path / "run", data=str(path), loss="kto", mask_special_tokens=True)
    with pytest.raises(UserError, match=r"unpaired.jsonl: row 3 \(id '2'\): the completion response is only special"):
        prepare_data(config)
    kept = prepare_data(settings(base, tmp_path / "run", data=str(path), loss="kto", mask_special_tokens=True,
                                 skip_invalid=True))
    assert [e.row for e in kept.kto_examples] == [0, 1, 3] and kept.n_skipped_special["train"] == 1
