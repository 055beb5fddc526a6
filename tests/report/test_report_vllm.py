"""`dpo-eval report --vllm`: sampling goes to `generate --vllm` with the vLLM options, and samples made
by vLLM are stored under their own key (never mixed with transformers samples)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from tiny_run import FAST, trained_once

import dpo_eval.generate
from dpo_eval.cli import main


class Sampled(Exception):
    """Raised by the stand-in generate(): the test only needs the config it was given."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


def test_vllm_sampling_reaches_generate_with_its_options(tiny, tmp_path, monkeypatch):
    seen = []

    def fake_generate(config):
        seen.append(config)
        raise Sampled

    monkeypatch.setattr(dpo_eval.generate, "generate", fake_generate)
    args = ["report", str(tiny["run"]), "--out", str(tmp_path / "out"), "--cache-dir", str(tiny["cache"]), *FAST,
            "--vllm", "--vllm-python", "/opt/vllm/bin/python", "--vllm-arg=--tensor-parallel-size=2"]
    with pytest.raises(Sampled):
        CliRunner().invoke(main, args, catch_exceptions=False)
    assert seen and seen[0].vllm and seen[0].vllm_python == "/opt/vllm/bin/python"
    assert seen[0].vllm_args == ("--tensor-parallel-size=2",)


def test_the_sampling_backend_is_part_of_the_samples_key():
    from dpo_eval.report.config import ReportConfig
    from dpo_eval.report.plan import Plan

    backends = [Plan.sampling.fget(type("P", (), {"config": ReportConfig(run_dirs=("r",), vllm=flag)})())["backend"]
                for flag in (False, True)]
    assert backends == ["transformers", "vllm"]
