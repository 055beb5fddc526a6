"""The family losses in the trainer: each learns held-out preferences on a tiny model in a few steps;
their per-pair inputs (LD-DPO tails, SPPO columns, NPO negatives) are the right ones; config checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import save_tiny_model, tiny_llama, word_tokenizer, write_synthetic_preferences

from dpo_eval.engine.distributed import DistContext
from dpo_eval.engine.packing import pack_rows
from dpo_eval.errors import UserError
from dpo_eval.tokenization import TokenizedPair, TokenizerSettings
from dpo_eval.train.config import load_config
from dpo_eval.train.family_inputs import (
    compute_entropy_batch,
    compute_tail_batch,
    load_win_probs,
    npo_examples,
    npo_pairs,
    packed_logps_with_tails,
    reference_side_rows,
)
from dpo_eval.train.kto import UnpairedExample, load_unpaired
from dpo_eval.train.recipe import train


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    train_path = write_synthetic_preferences(root / "train.jsonl", n=64, seed=1)
    rows = [json.loads(line) for line in open(train_path)]
    with open(root / "train_sppo.jsonl", "w") as f:  # SPPO: win probabilities as a judge would estimate them
        for row in rows:
            f.write(json.dumps({**row, "chosen_win_prob": 0.8, "rejected_win_prob": 0.25}) + "\n")
    return {"model": save_tiny_model(root / "init", seed=7), "train": train_path,
            "sppo": str(root / "train_sppo.jsonl"),
            "eval": write_synthetic_preferences(root / "eval.jsonl", n=32, seed=2), "root": root}


def settings(base, out, **overrides):
    values = dict(policy=base["model"], data=base["train"], output_dir=str(out), learning_rate=1e-3,
                  lr_schedule="constant", show_progress=False, cache_dir=str(base["root"] / "cache"),
                  max_length=None, batch_size=8, max_steps=12, eval_data=base["eval"], eval_every=12)
    values.update(overrides)
    return load_config(None, (), **values)


# The tiny random reference is near uniform (entropy / log V ~ 0.9986), so the dispersion d is set to make the
# contextual scale s = -d log(H) about 1; a real model's H / log V is far lower and d ~ 1 does that there.
RAINBOW_BEST = {"length_normalization": True, "mixing_alpha": 0.75, "mixing_margin": 0.5, "contextual_scale": 700.0}


@pytest.mark.parametrize("loss, params, data", [
    ("fdpo", {"divergence": "forward_kl"}, "train"),
    ("fdpo", {"divergence": "alpha_divergence", "alpha": 0.5}, "train"),
    ("ld_dpo", {"alpha": 0.3}, "train"),
    ("sppo", {}, "sppo"),
    ("rainbow", RAINBOW_BEST, "train"),
    ("npo", {"retain_coef": 1.0}, "train"),
], ids=["fdpo-forward", "fdpo-alpha", "ld_dpo", "sppo", "rainbow-best", "npo"])
def test_each_family_loss_learns_held_out_preferences(base, tmp_path, loss, params, data):
    # held-out reward accuracy: 0.5 at step 0 (policy = reference, every pair a tie); chance is 0.5
    config = settings(base, tmp_path / loss, loss=loss, loss_params=params, data=base[data])
    history = train(config)
    evals = [h for h in history if "eval_rewards/accuracies" in h]
    assert evals[-1]["step"] == 12 and evals[-1]["eval_rewards/accuracies"] >= 0.75, evals
    assert all(math.isfinite(h["loss"]) for h in history if "loss" in h)
    manifest = json.loads((tmp_path / loss / "dpo_eval.json").read_text())
    assert manifest["loss"]["name"] == loss and all(manifest["loss"][k] == v for k, v in params.items())


# ------------------------------------------------------------------------------- what the losses see


def test_tails_of_the_training_forward_and_the_side_pass_agree_with_a_split_by_hand():
    model = tiny_llama()
    pairs = [TokenizedPair("a", "s", (1, 2, 3), (4, 5, 6, 7), (8, 9)), TokenizedPair("b", "s", (5,), (6,), (7, 8, 9))]
    batch = pack_rows([pairs], pad_id=0)
    with torch.no_grad():
        sums, counts, tails = packed_logps_with_tails(model, batch)
        side = torch.tensor(compute_tail_batch(model, [pairs], pad_id=0))
        entropy = torch.tensor(compute_entropy_batch(model, [pairs], pad_id=0))
        per_token = []  # each response alone, token by token
        for pair in pairs:
            for response in (pair.chosen_ids, pair.rejected_ids):
                ids = torch.tensor([pair.prompt_ids + response])
                logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
                per_token.append(logps.gather(1, ids[0, 1:, None])[len(pair.prompt_ids) - 1:, 0])
    # pair a: L = 2, chosen tail = tokens 3-4, rejected none; pair b: L = 1, rejected tail = tokens 2-3
    expected = torch.tensor([[float(per_token[0][2:].sum()), 0.0], [0.0, float(per_token[3][1:].sum())]])
    torch.testing.assert_close(tails, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(side[:, :2].float(), expected, atol=1e-5, rtol=0)
    assert counts.tolist() == [[4, 2], [1, 3]] and side[:, 2:].tolist() == [[2, 0], [0, 2]]  # tokens past L
    assert bool(((entropy[:, :2] > 0) & (entropy[:, :2] <= 1)).all())  # normalised entropies
    assert entropy[:, 2:].tolist() == [[4, 2], [1, 3]]


@pytest.mark.parametrize("kind", ["tails", "entropy"])
def test_reference_side_rows_survive_the_cache(tmp_path, kind):
    # the cache stores two floats and two integer counts per pair: a reload must give the same rows
    import types

    from conftest import random_pairs

    model = tiny_llama()
    pairs = random_pairs(5, model.config.vocab_size, seed=8)
    data = types.SimpleNamespace(cache_root=tmp_path, ref_identity={"fingerprint": "f" * 16}, exclude_ids=None,
                                 pad_id=0, ref_model=model)
    config = types.SimpleNamespace(show_progress=False)
    args = (data, config, pairs, DistContext(), torch.device("cpu"), torch.float32, kind)
    computed = reference_side_rows(*args)
    data.ref_model = None  # a second call must not need the model: everything comes from the cache
    reloaded = reference_side_rows(*args)
    assert reloaded == computed and len(computed) == 5
    if kind == "entropy":
        assert all(0 < row[0] <= 1 and 0 < row[1] <= 1 for row in reloaded.values())


def test_win_probs_are_read_by_id_and_checked(tmp_path):
    path = tmp_path / "w.jsonl"
    rows = [{"id": "x", "chosen_win_prob": 0.9, "rejected_win_prob": 0.1}, {"chosen_win_prob": 1, "rejected_win_prob": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_win_probs(str(path), {"x", "1"}) == {"x": (0.9, 0.1), "1": (1.0, 0.0)}
    path.write_text(json.dumps({"id": "y", "chosen_win_prob": 1.5, "rejected_win_prob": 0.1}) + "\n")
    with pytest.raises(UserError, match=r"row 1 \(id 'y'\): loss sppo needs field 'chosen_win_prob'"):
        load_win_probs(str(path), {"y"})


def test_sppo_without_the_columns_stops_before_training(base, tmp_path):
    with pytest.raises(UserError, match="needs field 'chosen_win_prob'"):
        train(settings(base, tmp_path / "run", loss="sppo"))


def test_npo_keeps_negatives_and_retain_rows_only_when_weighted(tmp_path):
    examples = load_unpaired(write_synthetic_preferences(tmp_path / "p.jsonl", n=3, seed=0), word_tokenizer(),
                             TokenizerSettings())
    assert [e.is_desirable for e in npo_examples(examples, {}, "p")] == [False] * 3  # rows with `rejected`
    assert len(npo_examples(examples, {"retain_coef": 0.5}, "p")) == 6
    with pytest.raises(UserError, match="needs negatives"):
        npo_examples([e for e in examples if e.is_desirable], {}, "p")
    packed = npo_pairs([UnpairedExample("u", (1,), (2, 3), False)], [0])
    assert packed[0].rejected_ids == () and packed[0].chosen_ids == (2, 3)


def test_unpaired_negatives_train_with_npo(base, tmp_path):
    path = tmp_path / "unpaired.jsonl"
    with open(path, "w") as f:
        for line in open(base["train"]):
            row = json.loads(line)
            f.write(json.dumps({"prompt": row["prompt"], "completion": row["rejected"], "label": False}) + "\n")
    history = train(settings(base, tmp_path / "run", loss="npo", data=str(path), max_steps=8, eval_every=8))
    assert history[-1]["eval_rewards/rejected"] < 0  # the negatives' likelihood went down against the reference


@pytest.mark.parametrize("loss, params, match", [
    ("fdpo", {"divergence": "jensen"}, "divergence 'jensen' is unknown"),
    ("fdpo", {"divergance": "forward_kl"}, "did you mean 'divergence'"),
    ("ld_dpo", {"alpha": 2.0}, r"alpha must lie in \[0, 1\]"),
    ("rainbow", {"mixing_alpha": -0.1}, "mixing_alpha must lie"),
    ("rainbow", {"contextual_scale": 0.0}, "contextual_scale must be > 0"),
    ("npo", {"retain_coef": -1}, "retain_coef must be >= 0"),
])
def test_bad_loss_params_are_user_errors_before_loading(tmp_path, loss, params, match):
    with pytest.raises(UserError, match=match):
        load_config(None, (), policy="nowhere", data="x.jsonl", output_dir=str(tmp_path), loss=loss, loss_params=params)


def test_rainbow_config_file_turns_on_the_papers_three_switches(tmp_path):
    from pathlib import Path

    path = Path(__file__).parents[2] / "configs" / "rainbow_po.yaml"
    config = load_config(path, (f"output_dir={tmp_path}",), policy="sft", data="pairs.jsonl")
    params = config.loss_params
    assert config.loss == "rainbow" and params["length_normalization"] is True
    assert 0 < params["mixing_alpha"] < 1 and params["contextual_scale"] > 0  # mixing and contextual scaling on
