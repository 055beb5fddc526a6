"""online: true (OAIF): each step's pairs are the current policy's own samples, labelled; ties add no
gradient; kill -9 mid-run resumes to the uninterrupted run's weights."""

from __future__ import annotations

import json
import signal
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_llama, word_tokenizer
from loop_setup import LOOP_DIR, loop_settings, make_base, start_loop, write_loop_yaml
from safetensors.torch import load_file

from dpo_eval.generate import prompt_ids, read_prompts
from dpo_eval.loop.config import load_loop_config
from dpo_eval.loop.labels import make_labeller
from dpo_eval.loop.online import OnlineRecipe, online_train_config
from dpo_eval.loop.round import derived_seed
from dpo_eval.loop.run import LOOP_FILE, run_loop
from dpo_eval.sampling import sample_seed, sample_sequences
from dpo_eval.train import checkpoint as ckpt

sys.path.insert(0, str(LOOP_DIR.parent / "train"))
from test_recipe import assert_same_weights, wait_for_pause  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("online"))


@pytest.fixture(autouse=True)
def rules_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(LOOP_DIR))


def online_settings(base, out, **train):
    settings = loop_settings(base, out, online=True)
    settings["train"].update(max_steps=3, batch_size=2, **train)
    return settings


def test_a_steps_pairs_are_the_current_policys_samples_labelled(base, tmp_path):
    import loop_rules as rules

    config = load_loop_config(None, (), **online_settings(base, tmp_path / "out"))
    prompts = read_prompts(config.prompts)
    (tmp_path / "out" / "online").mkdir(parents=True)
    (tmp_path / "out" / "online" / "prompts_as_pairs.jsonl").write_text(
        "".join(json.dumps({"id": p.id, "prompt": p.text, "chosen": "-", "rejected": "+"}) + "\n" for p in prompts))
    recipe = OnlineRecipe(online_train_config(config, tmp_path / "out" / "online"), prompts,
                          make_labeller(config.labeller), config)
    recipe.setup()
    recipe._step, recipe._counts = 5, {"prompts": 0, "pairs": 0, "ties": 0, "unscored": 0}
    pairs = recipe._sample_pairs(np.array([2, 0]))
    # by hand: the initial model (the policy before any step), the seeds of step 5, the rule, higher chosen
    tokenizer, model = word_tokenizer(), tiny_llama(vocab_size=len(word_tokenizer()), seed=7).eval()
    expected = []
    for p in (prompts[2], prompts[0]):
        ids = prompt_ids(tokenizer, p, "auto")
        new = sample_sequences(model, [ids, ids], [sample_seed(derived_seed(3, "online", 5), p.id, j) for j in (0, 1)],
                               temperature=1.0, top_p=1.0, max_new_tokens=6, eos_ids={tokenizer.eos_token_id},
                               pad_id=tokenizer.pad_token_id)
        scores = [rules.good_minus_bad("", tokenizer.decode(y, skip_special_tokens=True)) for y in new]
        if scores[0] != scores[1]:
            chosen, rejected = (new[0], new[1]) if scores[0] > scores[1] else (new[1], new[0])
            expected.append((tuple(ids), tuple(chosen), tuple(rejected)))
    assert [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs] == expected
    assert recipe._counts["prompts"] == 2 and recipe._counts["pairs"] + recipe._counts["ties"] == 2
    recipe.cleanup()


def test_all_ties_add_no_gradient_and_are_counted(base, tmp_path):
    out = tmp_path / "ties"
    record = run_loop(load_loop_config(None, (), **{**online_settings(base, out), "labeller": "rule:loop_rules:constant"}))
    assert record["rounds"][0]["counts"] == {"prompts": 6, "samples": 12, "pairs": 0, "ties": 6, "unscored": 0}
    init = load_file(base["model"] + "/model.safetensors")
    final = load_file(out / "online" / "checkpoint-3" / "model.safetensors")
    assert_same_weights({k: init[k] for k in final}, final, atol=0)


def test_kill_9_mid_run_resumes_to_the_same_weights(base, tmp_path):
    settings = {k: v for k, v in online_settings(base, tmp_path).items() if k not in ("policy", "output_dir")}
    straight = tmp_path / "straight"
    done = start_loop(write_loop_yaml(base, straight, **settings), tmp_path)  # runs beside the victim (outputs apart)
    out = tmp_path / "killed"
    config = write_loop_yaml(base, out, **settings)
    victim = start_loop(config, tmp_path, **{ckpt.PAUSE_ENV: "2"})
    try:
        wait_for_pause(victim, ckpt.pause_marker(out / "online", 2))
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert done.wait(300) == 0, done.stderr.read()[-2000:]
    counts = json.loads((straight / LOOP_FILE).read_text())["rounds"][0]["counts"]
    assert counts["prompts"] == 6 and counts["pairs"] + counts["ties"] + counts["unscored"] == 6
    assert counts["pairs"] > 0
    init = load_file(base["model"] + "/model.safetensors")
    trained = load_file(straight / "online" / "checkpoint-3" / "model.safetensors")
    assert any(not torch.equal(init[k], trained[k]) for k in trained)

    assert not (out / LOOP_FILE).exists() or not json.loads((out / LOOP_FILE).read_text())["rounds"]
    finished = start_loop(config, tmp_path)
    assert finished.wait(300) == 0, finished.stderr.read()[-2000:]
    assert_same_weights(trained, load_file(out / "online" / "checkpoint-3" / "model.safetensors"), atol=0)
    assert json.loads((out / LOOP_FILE).read_text())["rounds"][0]["counts"] == counts


def test_online_refuses_self_and_unpaired_losses(base, tmp_path):
    from dpo_eval.errors import UserError

    with pytest.raises(UserError, match="cannot use labeller self"):
        run_loop(load_loop_config(None, (), **{**online_settings(base, tmp_path / "a"), "labeller": "self"}))
    with pytest.raises(UserError, match="loss kto takes other data"):
        run_loop(load_loop_config(None, (), **online_settings(base, tmp_path / "b", loss="kto")))
