"""KTO in the trainer: unpaired data, KL companions packed with each example, learning."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import save_tiny_model, word_tokenizer, write_synthetic_preferences

from dpo_eval.errors import UserError
from dpo_eval.tokenization import TokenizerSettings
from dpo_eval.train.config import load_config
from dpo_eval.train.kto import UnpairedExample, kto_pairs, kto_step_loss, load_unpaired
from dpo_eval.train.losses import kto_kl_estimate
from dpo_eval.train.recipe import train


def test_unpaired_rows_and_pairs_split_in_two(tmp_path):
    path = tmp_path / "u.jsonl"
    rows = [{"prompt": "tell me ", "completion": "good yes", "label": True},
            {"prompt": "why ", "completion": "bad no", "label": False}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = word_tokenizer()
    examples = load_unpaired(str(path), tok, TokenizerSettings())
    assert [e.is_desirable for e in examples] == [True, False]
    assert examples[0].completion_ids == tuple(tok("tell me good yes")["input_ids"][2:]) + (tok.eos_token_id,)
    pairs = write_synthetic_preferences(tmp_path / "p.jsonl", n=3, seed=0)
    split = load_unpaired(pairs, tok, TokenizerSettings())
    assert [e.is_desirable for e in split] == [True, False] * 3


def test_bad_label_is_a_user_error(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"prompt": "a ", "completion": "b", "label": "yes"}) + "\n")
    with pytest.raises(UserError, match="row 1: field 'label' must be true or false"):
        load_unpaired(str(path), word_tokenizer(), TokenizerSettings())


def test_each_example_is_packed_with_the_next_items_completion():
    examples = [UnpairedExample(str(i), (i,), (10 + i, 20 + i), i % 2 == 0) for i in range(3)]
    pairs = kto_pairs(examples, [2, 0, 1])
    assert [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs] == [
        ((2,), (12, 22), (10, 20)), ((0,), (10, 20), (11, 21)), ((1,), (11, 21), (12, 22))]


def test_kto_learns_synthetic_preferences(tmp_path):
    model = save_tiny_model(tmp_path / "init", seed=7)
    config = load_config(None, (), policy=model, data=write_synthetic_preferences(tmp_path / "t.jsonl", 64, 1),
                         eval_data=write_synthetic_preferences(tmp_path / "e.jsonl", 32, 2), eval_every=24,
                         output_dir=str(tmp_path / "run"), loss="kto", learning_rate=1e-3, batch_size=8,
                         max_steps=24, lr_schedule="constant", show_progress=False, max_length=None,
                         cache_dir=str(tmp_path / "cache"))
    history = train(config)
    steps = [h for h in history if "loss" in h]
    assert "rewards/accuracies" not in steps[0] and "rewards/chosen" in steps[0]
    assert history[-1]["eval_rewards/accuracies"] >= 0.9
    assert steps[-1]["rewards/chosen"] > steps[-1]["rewards/rejected"]


def test_z0_is_averaged_across_ranks_before_the_clamp():
    # This rank's KL log-ratios average -1; a mocked all-reduce brings another rank's mean, +3.
    other_rank_mean = torch.tensor(3.0)
    calls = []

    def mean_across_ranks(local):
        calls.append(float(local))
        return (local + other_rank_mean) / 2

    z0 = kto_kl_estimate(torch.tensor([-2.0, -4.0]), torch.tensor([-1.0, -3.0]), mean_across_ranks)
    assert calls == [-1.0]  # the local mean goes to the reduction unclamped
    assert float(z0) == pytest.approx(max(0.0, (-1.0 + 3.0) / 2))  # = 1; clamping first would give 1.5
    assert not z0.requires_grad


def test_two_gloo_processes_give_the_z0_of_the_union(tmp_path):
    # Each rank holds half of the micro-batch; the losses must be those of one process on the union,
    # written out here: z0 = max(0, mean(policy_kl - ref_kl)), loss = 1 - sigmoid(beta * (±(r - z0))).
    import kto_z0_worker as w

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, w.__file__, str(tmp_path)], env=env, timeout=300, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    two = [x for rank in (0, 1) for x in json.loads((tmp_path / f"rank{rank}.json").read_text())]

    z0 = max(0.0, sum(p - r for p, r in zip(w.POLICY_KL, w.REF_KL)) / len(w.REF_KL))
    assert z0 == 0.5
    expected = []
    for policy, ref, good in zip(w.POLICY, w.REF, w.DESIRABLE):
        margin = (policy - ref - z0) if good else (z0 - (policy - ref))
        expected.append(1 - 1 / (1 + math.exp(-w.BETA * margin)))
    assert two == pytest.approx(expected, rel=1e-12)
    logps, desirable = w.batch(slice(None))
    union = kto_step_loss(logps, desirable, {"beta": w.BETA}).losses.tolist()
    assert two == pytest.approx(union, rel=1e-12)


def test_truncated_kl_companion_keeps_a_token_that_is_not_special():
    # max_length 3 leaves 3 - 2 = 1 companion token; the companion starts with two special ids (90, 91)
    examples = [UnpairedExample("0", (1, 2), (5, 6), True), UnpairedExample("1", (3, 4), (90, 91, 7, 8), False)]
    pairs = kto_pairs(examples, [0, 1], max_length=3, special=frozenset({90, 91}))
    assert pairs[0].rejected_ids == (90, 91, 7)  # up to the first non-special token
    assert pairs[1].rejected_ids == (5,)  # the plain cut: max_length - len(prompt) = 1
    assert kto_pairs(examples, [0, 1], max_length=3)[0].rejected_ids == (90,)  # no mask: plain cut


def test_cli_kto_run_ends_with_a_summary_line(tmp_path):
    # KTO logs no rewards/accuracies: the closing line must not need it
    from click.testing import CliRunner

    from dpo_eval.cli import main

    model = save_tiny_model(tmp_path / "init", seed=7)
    data = write_synthetic_preferences(tmp_path / "t.jsonl", 8, 1)
    result = CliRunner().invoke(main, ["train", "--set", f"policy={model}", "--set", f"data={data}",
                                       "--set", f"output_dir={tmp_path / 'run'}", "--set", "loss=kto",
                                       "--set", "batch_size=4", "--set", "max_steps=1", "--set", "max_length=null",
                                       "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "show_progress=false"])
    assert result.exit_code == 0, result.output
    assert re.search(r"step 1: loss \d+\.\d{4}\n", result.output) and "reward accuracy" not in result.output
