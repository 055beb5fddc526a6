"""`dpo-eval loop` settings: defaults, --set (nested too), and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from click.testing import CliRunner

from dpo_eval.cli import main
from dpo_eval.errors import UserError
from dpo_eval.loop.config import LoopConfig, RsoSettings, SamplingSettings, load_loop_config

REQUIRED = {"policy": "p", "prompts": "prompts.jsonl", "labeller": "gold:answers.jsonl", "output_dir": "out"}


def test_defaults_come_from_the_dataclass_and_set_overrides_nested_keys():
    config = load_loop_config(None, (), **REQUIRED)
    assert config == LoopConfig(**REQUIRED)
    assert (config.reference, config.pairs, config.rounds, config.samples_per_prompt) == ("fixed", "max_min", 2, 4)
    assert config.sampling == SamplingSettings() and config.rso == RsoSettings()
    changed = load_loop_config(None, ("sampling.temperature=0.7", "rso.ranking=tournament", "pairs=rso",
                                      "train.learning_rate=1e-5", "train.loss=ipo", "rounds=3"), **REQUIRED)
    assert changed.sampling == SamplingSettings(temperature=0.7)
    assert changed.rso == RsoSettings(ranking="tournament")
    assert changed.train == {"learning_rate": 1e-5, "loss": "ipo"}
    assert (changed.pairs, changed.rounds) == ("rso", 3)


def test_yaml_then_set(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump({**REQUIRED, "samples_per_prompt": 8, "sampling": {"seed": 5}}))
    config = load_loop_config(path, ("samples_per_prompt=6",))
    assert config.samples_per_prompt == 6 and config.sampling.seed == 5


@pytest.mark.parametrize(("settings", "message"), [
    ({"rouds": 2}, "unknown setting(s) rouds"),
    ({"sampling": {"temp": 1.0}}, "sampling: unknown key(s) temp"),
    ({"rso": {"beta": 0.0}, "pairs": "rso"}, "rso.beta must be positive"),
    ({"rso": {"accept": 9}}, "rso.accept must be between 2 and samples_per_prompt (4)"),
    ({"rso": {"ranking": "swiss"}}, "rso.ranking 'swiss' is unknown"),
    ({"pairs": "best"}, "pairs 'best' is unknown"),
    ({"reference": "moving"}, "reference 'moving' is unknown"),
    ({"samples_per_prompt": 1}, "samples_per_prompt must be at least 2"),
    ({"prompts_per_round": 0}, "prompts_per_round must be at least 1"),
    ({"train": {"output_dir": "x"}}, "train: output_dir is set by the loop"),
    ({"train": {"lerning_rate": 1.0}}, "train: unknown setting(s) lerning_rate"),
    ({"train": {"loss": "nope"}}, "loss 'nope' is unknown"),
    ({"rounds": "two"}, "setting rounds must be int"),
    ({"judge": {"model": "x"}}, "judge: unknown key(s) model"),
    ({"logprobs": {"backend": "vllm"}}, "logprobs: unknown key(s) backend"),
    ({"logprobs": {"logprob_backend": "sglang"}}, "logprobs.logprob_backend must be one of engine, vllm, got 'sglang'"),
    ({"logprobs": {"vllm_url": "http://h/v1"}}, "logprobs.vllm_url apply to logprobs.logprob_backend vllm"),
    ({"logprobs": {"logprob_backend": "vllm", "vllm_args": 8}}, "logprobs.vllm_args must be a list of strings"),
    ({"logprobs": {"logprob_backend": "vllm"}}, "logprobs.logprob_backend vllm applies to the implicit: labeller only"),
])
def test_bad_settings_are_one_line_user_errors(settings, message):
    with pytest.raises(UserError) as caught:
        load_loop_config(None, (), **{**REQUIRED, **settings})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_logprobs_settings_mirror_the_cli_flags():
    from dpo_eval.logprob_settings import LogprobSettings

    assert load_loop_config(None, (), **REQUIRED).logprobs == LogprobSettings()
    config = load_loop_config(None, ("logprobs.logprob_backend=vllm", "logprobs.vllm_url=http://h:1/v1"),
                              **{**REQUIRED, "labeller": "implicit:dpo_model",
                                 "logprobs": {"vllm_args": ["--tensor-parallel-size=8"]}})
    assert config.logprobs == LogprobSettings("vllm", vllm_args=("--tensor-parallel-size=8",), vllm_url="http://h:1/v1")


def test_missing_required_settings():
    with pytest.raises(UserError, match="missing required setting"):
        load_loop_config(None, (), policy="p")


def test_cli_unknown_key_exits_2_with_one_line(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump({**REQUIRED, "labeler": "gold:x"}))
    result = CliRunner().invoke(main, ["loop", str(path)])
    assert result.exit_code == 2
    assert "unknown setting(s) labeler" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LoopConfig(**REQUIRED).rounds = 3


def test_the_example_config_loads_and_its_gold_answers_cover_its_prompts():
    from pathlib import Path

    from dpo_eval.data.prompts import prompt_text
    from dpo_eval.generate import read_prompts
    from dpo_eval.loop.labels import GoldLabeller

    root = Path(__file__).resolve().parents[2]
    config = load_loop_config(root / "data" / "demo" / "loop.yaml")
    labeller = GoldLabeller(str(root / config.labeller.removeprefix("gold:")))
    prompts = read_prompts(str(root / config.prompts))
    assert all(prompt_text(p.text) in labeller.judge.answers for p in prompts)
    assert config.prompts_per_round <= len(prompts)


def test_a_loop_made_before_logprobs_resumes_and_another_backend_is_refused(tmp_path):
    import json

    from dpo_eval.logprob_settings import LogprobSettings
    from dpo_eval.loop.run import LOOP_FILE, _read_loop_file

    config = load_loop_config(None, (), **{**REQUIRED, "labeller": "implicit:m", "output_dir": str(tmp_path)})
    before = {k: v for k, v in config.to_dict().items() if k != "logprobs"}  # loop.json of an older dpo-eval
    (tmp_path / LOOP_FILE).write_text(json.dumps({"schema_version": 1, "config": before, "rounds": []}))
    assert _read_loop_file(config)["config"] == config.to_dict()
    with pytest.raises(UserError, match=r"other settings \(logprobs\)"):
        _read_loop_file(dataclasses.replace(config, logprobs=LogprobSettings("vllm")))
