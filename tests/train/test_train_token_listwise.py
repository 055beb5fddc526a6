"""TDPO and listwise DPO through the real recipe: they learn, and listwise on pairs (K = 2) is DPO."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import BAD_WORDS, GOOD_WORDS, WORDS, save_tiny_model, write_synthetic_preferences
from test_recipe import gradients_after_one_step, settings

from dpo_eval.errors import UserError
from dpo_eval.train.recipe import train

NEUTRAL = ("the", "a", "cat", "dog", "sat", "ran")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    return {"model": save_tiny_model(root / "init", seed=7),
            "train": write_synthetic_preferences(root / "train.jsonl", n=64, seed=1),
            "eval": write_synthetic_preferences(root / "eval.jsonl", n=32, seed=2), "root": root}


def write_ranked(path, n: int, seed: int) -> str:
    """Three responses per prompt, ranked good (GOOD_WORDS) > neutral > bad (BAD_WORDS), listed shuffled."""
    rng = random.Random(seed)
    words = lambda pool, k: " ".join(rng.choice(pool) for _ in range(k))  # noqa: E731
    with open(path, "w") as f:
        for i in range(n):
            scored = [(1, words(GOOD_WORDS, rng.randint(1, 4))), (2, words(NEUTRAL, rng.randint(1, 4))),
                      (3, words(BAD_WORDS, rng.randint(1, 4)))]
            rng.shuffle(scored)
            row = {"id": f"r{i}", "prompt": words(WORDS[:12], rng.randint(2, 5)) + " ",
                   "responses": [r for _, r in scored], "ranks": [k for k, _ in scored]}
            f.write(json.dumps(row) + "\n")
    return str(path)


def held_out_accuracies(history: list[dict]) -> list[float]:
    return [h["eval_rewards/accuracies"] for h in history if "eval_rewards/accuracies" in h]


@pytest.mark.parametrize("loss, params", [("tdpo1", {}), ("tdpo2", {"alpha": 0.5})])
def test_tdpo_trains_above_chance(base, tmp_path, loss, params):
    config = settings(base, tmp_path / loss, loss=loss, loss_params=params, batch_size=8, max_steps=10,
                      eval_data=base["eval"], eval_every=10)
    history = train(config)
    assert held_out_accuracies(history)[-1] >= 0.8  # the policy starts equal to the reference: 0 (all ties)
    steps = [h for h in history if "loss" in h]
    assert steps[0]["loss"] == pytest.approx(0.6931471805599453, abs=1e-5)  # KL 0, margin 0 at step 0
    manifest = json.loads((tmp_path / loss / "dpo_eval.json").read_text())
    assert manifest["loss"]["name"] == loss and manifest["reference"]["fingerprint"]


def test_listwise_trains_above_chance(base, tmp_path):
    data = write_ranked(tmp_path / "ranked.jsonl", n=48, seed=3)
    config = settings(base, tmp_path / "run", loss="listwise", data=data, batch_size=8, max_steps=10,
                      eval_data=base["eval"], eval_every=10)
    history = train(config)
    assert held_out_accuracies(history)[-1] >= 0.8
    first = next(h for h in history if "loss" in h)
    # step 0: all rewards 0, so each group's loss is log 3 + log 2 (full ranking of 3)
    assert first["loss"] == pytest.approx(float(torch.log(torch.tensor(6.0))), abs=1e-5)


def test_listwise_on_pairs_has_dpo_gradients(base, tmp_path):
    dpo = settings(base, tmp_path / "dpo", batch_size=8, loss="dpo", beta=0.5)
    listwise = settings(base, tmp_path / "lw", batch_size=8, loss="listwise", beta=0.5)
    for steps in (1, 3):
        expected, actual = gradients_after_one_step(dpo, steps), gradients_after_one_step(listwise, steps)
        assert expected.keys() == actual.keys() and expected
        scale = max(float(g.abs().max()) for g in expected.values())
        assert scale > 0
        for name in expected:
            torch.testing.assert_close(actual[name], expected[name], atol=1e-5 * scale, rtol=1e-4, msg=name)


def test_listwise_refuses_mask_special_tokens(base, tmp_path):
    with pytest.raises(UserError, match="listwise supports neither mask_special_tokens"):
        settings(base, tmp_path / "x", loss="listwise", mask_special_tokens=True)
