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
    from dpo_eval.evaluation.config import ReportConfig
    from dpo_eval.evaluation.plan import Plan

    backends = [Plan.sampling.fget(type("P", (), {"config": ReportConfig(run_dirs=("r",), vllm=flag)})())["backend"]
                for flag in (False, True)]
    assert backends == ["transformers", "vllm"]


def fake_vllm_python(folder, version: str = "0.32.0") -> str:
    """A 'python' that reports a vLLM version (what dpo_eval.vllm_server.installed_version reads)."""
    python = folder / "python"
    python.write_text(f"#!/bin/sh\necho {version}\n")
    python.chmod(0o755)
    return str(python)


def test_the_vllm_backend_leaves_out_the_stages_that_need_distributions():
    from dpo_eval.evaluation.config import STAGES, ReportConfig

    assert ReportConfig(run_dirs=("r",)).run_stages == STAGES
    assert ReportConfig(run_dirs=("r",), logprob_backend="vllm").run_stages == ("score", "samples", "unseen", "judge")


def test_asking_for_kl_under_the_vllm_backend_is_one_line_naming_the_flag(tiny, tmp_path):
    args = ["report", str(tiny["run"]), "--out", str(tmp_path / "out"), *FAST, "--logprob-backend", "vllm",
            "--stages", "kl"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--stages kl needs whole next-token distributions" in result.output
    assert "--logprob-backend engine" in result.output


def test_the_vllm_version_and_options_are_in_every_store_key(tmp_path):
    from dpo_eval.evaluation.config import ReportConfig
    from dpo_eval.evaluation.plan import _numerics
    from dpo_eval.vllm_server import installed_version

    installed_version.cache_clear()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old, new = fake_vllm_python(tmp_path / "a"), fake_vllm_python(tmp_path / "b", "0.33.1")
    tag = lambda python, *args: _numerics(ReportConfig(run_dirs=("r",), logprob_backend="vllm",  # noqa: E731
                                                       vllm_python=python, vllm_args=args))
    assert tag(old).startswith("vllm0.32.0-") and tag(new).startswith("vllm0.33.1-")
    assert tag(old) != tag(old, "--tensor-parallel-size=2")
    assert _numerics(ReportConfig(run_dirs=("r",))).startswith("cpu-float32-engine")
