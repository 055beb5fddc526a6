"""Training config: YAML + --set overrides, typed values, validation before any model loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dpo_eval.errors import UserError
from dpo_eval.train.config import LoraSettings, _special_losses, load_config, loss_defaults
from dpo_eval.train.losses import LOSSES
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


def test_unset_beta_takes_the_loss_default_and_a_set_beta_wins():
    simpo = load_config(None, (*REQUIRED, "loss=simpo"))
    assert simpo.beta is None and simpo.loss_beta == 2.0  # not set: SimPO's own beta, not the DPO 0.1
    assert simpo.loss_settings() == {"beta": 2.0, "gamma": 1.0, "label_smoothing": 0.0}  # gamma / beta = 0.5
    explicit = load_config(None, (*REQUIRED, "loss=simpo", "beta=0.1"))
    assert explicit.beta == 0.1 and explicit.loss_beta == 0.1  # set to 0.1: distinguishable from unset
    assert explicit.loss_settings()["gamma"] == 1.0
    dpo = load_config(None, (*REQUIRED,))
    assert dpo.beta is None and dpo.loss_beta == 0.1 and dpo.loss_settings() == {"beta": 0.1, "label_smoothing": 0.0}
    with pytest.raises(UserError, match="beta must be positive"):
        load_config(None, (*REQUIRED, "loss=simpo", "beta=0"))


def docs_loss_defaults() -> dict[str, dict]:
    """docs/train.md's loss-defaults table: loss -> {beta, other defaults}, values read as YAML."""
    text = (Path(__file__).parents[2] / "docs" / "train.md").read_text()
    section = text.split("\n## Loss defaults\n", 1)[1].split("\n#", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if len(cells) == 4 else None
        if match:
            others = {k: v for pair in re.findall(r"`([^`]+)`", cells[2]) for k, v in yaml.safe_load(pair).items()}
            table[match.group(1)] = {"beta": float(cells[1]), **others}
    return table


def test_docs_loss_defaults_table_lists_every_loss_with_its_defaults():
    assert docs_loss_defaults() == {loss: loss_defaults(loss) for loss in [*LOSSES, *_special_losses()]}


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


@pytest.mark.parametrize("overrides, message", [
    (("loss=simpo", "loss_params.gama=0.5"),
     "loss_params.gama: loss 'simpo' has no parameter 'gama' (did you mean 'gamma'?); "
     "its parameters: gamma, label_smoothing"),
    (("loss_params.gama=0.5",), "loss_params.gama: loss 'dpo' has no parameter 'gama'; its parameters: label_smoothing"),
    (("loss=ipo", "loss_params.label_smoothing=0.1"), "loss 'ipo' has no parameter 'label_smoothing'; its parameters: none"),
    (("loss=kto", "loss_params.desirable_wieght=2"),
     "did you mean 'desirable_weight'?); its parameters: desirable_weight, undesirable_weight"),
    (("loss_params.beta=0.5",), "loss_params.beta: beta is a top-level setting; set beta: 0.5 instead"),
    (("loss_params.label_smoothing=0.7",), "loss_params for loss 'dpo': label_smoothing .* must lie in [0, 0.5), got 0.7"),
    (("loss=dpop", "loss_params.lambda_=-1"), "loss_params for loss 'dpop': lambda_ must be >= 0"),
    (("loss=kto", "loss_params.undesirable_weight=-1"), "loss_params for loss 'kto': undesirable_weight must be >= 0"),
    (("loss=simpo", "loss_params.gamma=abc"), "loss_params.gamma must be float, got 'abc'"),
    (("loss=simpo", "loss_params.gamma=true"), "loss_params.gamma must be float, got True"),
    (("loss=simpo", "loss_params.gamma=.nan"), "loss_params.gamma must be a finite number"),
    (("loss_params=3",), "loss_params must be a mapping"),
])
def test_bad_loss_params_are_one_line_user_errors(overrides, message):
    pattern = message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("?", r"\?")
    with pytest.raises(UserError, match=pattern) as caught:
        load_config(None, (*REQUIRED, *overrides))
    assert "\n" not in str(caught.value)


def test_loss_params_take_the_loss_signature_types(tmp_path):
    path = tmp_path / "run.yaml"  # YAML 1.1 reads 1e-3 as a string; an int is fine for a float parameter
    path.write_text("policy: m\ndata: d.jsonl\noutput_dir: o\nloss: simpo\nloss_params: {gamma: 1e-3, label_smoothing: 0}\n")
    config = load_config(path)
    assert config.loss_params == {"gamma": 0.001, "label_smoothing": 0.0}
    assert all(isinstance(v, float) for v in config.loss_params.values())
    kto = load_config(None, (*REQUIRED, "loss=kto", "loss_params.desirable_weight=1.33"))
    assert kto.loss_params == {"desirable_weight": 1.33}


def test_cli_rejects_a_misspelt_loss_param_before_loading_any_model(tmp_path):
    # policy 'nowhere' does not exist: reaching the model load would give another error
    from click.testing import CliRunner

    from dpo_eval.cli import main

    result = CliRunner().invoke(main, ["train", "--set", "policy=nowhere", "--set", "data=x.jsonl",
                                       "--set", f"output_dir={tmp_path}", "--set", "loss=simpo",
                                       "--set", "loss_params.gama=0.5"])
    assert result.exit_code == 2, result.output
    assert "loss_params.gama: loss 'simpo' has no parameter 'gama' (did you mean 'gamma'?)" in result.output
    assert "Traceback" not in result.output and "nowhere" not in result.output
