"""Training config: YAML + --set overrides, typed values, validation before any model loads."""

from __future__ import annotations

import pytest

from dpo_eval.errors import UserError
from dpo_eval.train.config import LoraSettings, load_config
from dpo_eval.train.schedule import global_batches, learning_rate_at, micro_batch

REQUIRED = ("policy=p", "data=d.jsonl", "output_dir=out")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("policy: m\ndata: d.jsonl\noutput_dir: o\nlearning_rate: 1e-5\nloss: ipo\n"
                    "loss_params: {}\nlora: {r: 4}\n")
    config = load_config(path, ("learning_rate=2e-4", "beta=0.5", "lora.alpha=8"))
    assert config.learning_rate == 2e-4 and isinstance(config.learning_rate, float)
    assert config.loss == "ipo" and config.beta == 0.5
    assert config.lora == LoraSettings(r=4, alpha=8)


def test_nested_loss_params(tmp_path):
    config = load_config(None, (*REQUIRED, "loss=simpo", "loss_params.gamma=0.7"))
    assert config.loss_params == {"gamma": 0.7}


@pytest.mark.parametrize("override, message", [
    ("loss=nope", "loss 'nope' is unknown"),
    ("learning_rate=abc", "learning_rate must be float"),
    ("batch_size=0", "batch_size must be positive"),
    ("colour=red", "unknown setting(s) colour"),
    ("lr_schedule=step", "lr_schedule 'step' is unknown"),
    ("eval_every=5", "eval_data is not"),
    ("justtext", "expected key=value"),
])
def test_bad_settings_are_user_errors(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, (*REQUIRED, override))


def test_missing_required_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="missing required"):
        load_config(None, ("policy=p",))
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_learning_rate_schedules():
    kw = dict(base_lr=1.0, total_steps=10, warmup_steps=2)
    assert learning_rate_at(0, schedule="cosine", **kw) == pytest.approx(0.5)  # (0+1)/2
    assert learning_rate_at(1, schedule="cosine", **kw) == pytest.approx(1.0)
    assert learning_rate_at(2, schedule="cosine", **kw) == pytest.approx(1.0)  # progress 0
    assert learning_rate_at(6, schedule="cosine", **kw) == pytest.approx(0.5)  # progress 4/8 -> cos(pi/2)=0
    assert learning_rate_at(6, schedule="linear", **kw) == pytest.approx(0.5)  # 1 - 4/8
    assert learning_rate_at(8, schedule="linear", **kw) == pytest.approx(0.25)  # 1 - 6/8
    assert learning_rate_at(9, schedule="constant", **kw) == 1.0


def test_global_batches_are_seeded_full_and_disjoint():
    batches = global_batches(10, 4, seed=3, epoch=0)
    assert len(batches) == 2 and all(len(b) == 4 for b in batches)
    assert len(set(batches[0]) | set(batches[1])) == 8
    assert [list(b) for b in batches] == [list(b) for b in global_batches(10, 4, seed=3, epoch=0)]
    assert [list(b) for b in batches] != [list(b) for b in global_batches(10, 4, seed=3, epoch=1)]


def test_micro_batches_split_the_global_batch_across_ranks():
    batch = list(range(8))  # 2 ranks x 2 micro-batches x 2 pairs
    parts = [list(micro_batch(batch, r, 2, m, 2)) for r in range(2) for m in range(2)]
    assert parts == [[0, 1], [2, 3], [4, 5], [6, 7]]
