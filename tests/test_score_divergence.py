"""`dpo-eval score --divergence`: f-DPO implicit rewards beta * f'(pi/pi_ref), written out by hand here."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import save_tiny_model, write_text_pairs

from dpo_eval.cli import main
from dpo_eval.train.losses_family import DIVERGENCES


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_div")
    return {"policy": save_tiny_model(root / "policy", seed=1), "ref": save_tiny_model(root / "ref", seed=2),
            "data": write_text_pairs(root / "pairs.jsonl", n=8), "root": root}


def run(setup, out, *extra):
    args = ["score", "--policy", setup["policy"], "--ref", setup["ref"], "--data", setup["data"], "--out", str(out),
            "--cache-dir", str(setup["root"] / "cache"), "--no-progress", "--beta", "0.5", *extra]
    return CliRunner().invoke(main, args)


F_PRIME = {  # f'(u) - f'(1) of the f-DPO paper's Table 1, as functions of log u
    "forward_kl": lambda lu: 1 - math.exp(-lu),
    "js_divergence": lambda lu: math.log(2 * math.exp(lu) / (1 + math.exp(lu))),
    "alpha_divergence": lambda lu: (1 - math.exp(-0.3 * lu)) / 0.3,
}


@pytest.mark.parametrize("divergence", sorted(F_PRIME))
def test_rewards_are_beta_f_prime_of_the_log_ratio(setup, tmp_path, divergence):
    result = run(setup, tmp_path / "out", "--divergence", divergence, "--divergence-alpha", "0.3")
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for side in ("chosen", "rejected"):
        log_u = frame[f"policy_{side}_logp"] - frame[f"ref_{side}_logp"]
        expected = [0.5 * F_PRIME[divergence](v) for v in log_u]
        np.testing.assert_allclose(frame[f"reward_{side}"], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(frame["margin"], frame["reward_chosen"] - frame["reward_rejected"], rtol=1e-12)
    assert summary["divergence"] == {"name": divergence, "alpha": 0.3}
    assert summary["rewards"]["accuracy"] == pytest.approx(float(np.mean(frame["margin"] > 0)))


def test_reverse_kl_is_the_default_and_dpos_reward(setup, tmp_path):
    assert run(setup, tmp_path / "out").exit_code == 0
    frame = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    np.testing.assert_allclose(frame["reward_chosen"], 0.5 * (frame["policy_chosen_logp"] - frame["ref_chosen_logp"]))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["divergence"]["name"] == "reverse_kl"


@pytest.mark.parametrize("extra, message", [
    (("--divergence", "forward_kl", "--norm", "avg"), "needs a reference and --norm sum"),
    (("--divergence", "alpha_divergence", "--divergence-alpha", "1.0"), "--divergence-alpha must lie in (0, 1)"),
])
def test_bad_combinations_exit_2(setup, tmp_path, extra, message):
    result = run(setup, tmp_path / "out", *extra)
    assert result.exit_code == 2 and message in result.output


def test_cli_choices_are_the_losses_divergences():
    option = next(p for p in main.commands["score"].params if p.name == "divergence")
    assert tuple(option.type.choices) == DIVERGENCES
