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


@pytest.fixture(scope="module")
def served(tiny):
    """A vLLM-shaped stand-in (tests/engine/fake_vllm.py) for the reference and each checkpoint of the tiny run."""
    import sys
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
    from fake_vllm import FakeVllm

    folders = {"ref": tiny["init"], **{f"checkpoint-{s}": str(tiny["run"] / f"checkpoint-{s}") for s in (2, 4)}}
    servers = {name: FakeVllm(AutoModelForCausalLM.from_pretrained(path).eval(), root=path)
               for name, path in folders.items()}
    yield servers
    for server in servers.values():
        server.close()


def _served_report(tiny, out, python, *flags, cache=None):
    args = ["report", str(tiny["run"]), "--out", str(out), "--cache-dir", str(cache or tiny["cache"]), *FAST, "--stages",
            "score,unseen", "--no-render", *flags]
    if flags:
        args += ["--logprob-backend", "vllm", "--vllm-python", python]
    return CliRunner().invoke(main, args)


def _frames(out, kind: str) -> dict:
    """policy fingerprint -> (key parts, table) of each stored artifact of kind (score or unseen)."""
    import json

    import pandas as pd

    keys = [(json.loads((d / "key.json").read_text())["parts"], d) for d in (out / "store" / kind).iterdir()]
    return {parts["policy"]: (parts, pd.read_parquet(next(d.glob("*.parquet")))) for parts, d in keys}


def test_report_asks_the_servers_the_user_runs_and_equals_the_engine(tiny, served, tmp_path):
    urls = ["--vllm-ref-url", served["ref"].url, "--vllm-url", f"checkpoint-2={served['checkpoint-2'].url}",
            "--vllm-url", f"run/4={served['checkpoint-4'].url}"]  # folder name; RUN/STEP
    python = fake_vllm_python(tmp_path)  # none is started: every model has its server
    engine = _served_report(tiny, tmp_path / "engine", python)
    assert engine.exit_code == 0, engine.output
    result = _served_report(tiny, tmp_path / "vllm", python, *urls)
    assert result.exit_code == 0, result.output
    assert all(server.requests for server in served.values())
    columns = {"score": ("policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp"),
               "unseen": ("policy_logp", "ref_logp")}  # unseen: the reference's samples (the same seed in both)
    for kind, names in columns.items():
        engine_frames, vllm_frames = _frames(tmp_path / "engine", kind), _frames(tmp_path / "vllm", kind)
        assert engine_frames.keys() == vllm_frames.keys() and len(vllm_frames) == 3  # the reference, 2 checkpoints
        for fingerprint, (parts, frame) in vllm_frames.items():
            expected = engine_frames[fingerprint][1]
            assert len(frame) == len(expected) > 0
            for column in names:
                assert frame[column].to_numpy() == pytest.approx(expected[column].to_numpy(), abs=1e-4), column
            # the user's servers (URL and the version each reports) are in the key; the engine's keys have none
            assert set(parts["vllm_servers"].values()) <= {f"vllm0.32.0 at {s.url}" for s in served.values()}
            assert "vllm_servers" not in engine_frames[fingerprint][0]


@pytest.mark.parametrize(("flags", "message"), [
    (("--vllm-url", "checkpoint-9=http://127.0.0.1:9/v1"), "no checkpoint 'checkpoint-9' in this report; name one "
                                                             "of run/checkpoint-2, run/checkpoint-4"),
    (("--vllm-url", "checkpoint-2"), "give each checkpoint once as CHECKPOINT=URL"),
])
def test_a_vllm_url_naming_no_checkpoint_is_one_line_exit_2(tiny, tmp_path, flags, message):
    result = _served_report(tiny, tmp_path / "o", fake_vllm_python(tmp_path), *flags)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert message in result.output


def test_a_server_of_another_model_is_refused_before_any_work(tiny, served, tmp_path):
    result = _served_report(tiny, tmp_path / "o", fake_vllm_python(tmp_path), "--vllm-url",
                            f"checkpoint-2={served['checkpoint-4'].url}")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"--vllm-url {served['checkpoint-4'].url} serves model (from {tiny['run'] / 'checkpoint-4'}), not " \
        in result.output
    assert not (tmp_path / "o" / "store" / "score").exists()


def test_report_server_urls_need_the_vllm_backend(tiny, tmp_path):
    args = ["report", str(tiny["run"]), "--out", str(tmp_path / "o"), *FAST, "--vllm-ref-url", "http://h:1/v1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--vllm-url/--vllm-ref-url apply to --logprob-backend vllm" in result.output


@pytest.mark.parametrize("fault", ["dies", "other_token"])
def test_a_user_server_that_fails_mid_report_is_refused_never_replaced(tiny, served, tmp_path, monkeypatch, fault):
    """A checkpoint's server that dies (retried, then refused) or answers for other tokens (asked again, then
    refused): one line, exit 2, and no score of that checkpoint stored (nothing from another backend)."""
    import json

    import dpo_eval.engine.vllm_backend as backend
    from dpo_eval.models import identify_model

    monkeypatch.setattr(backend, "BACKOFF_SECONDS", 0.01)
    fake = served["checkpoint-2"]
    if fault == "dies":
        fake.fail_after = len(fake.requests)
    else:
        fake.wrong_replies = 10**6
    try:
        result = _served_report(tiny, tmp_path / "o", fake_vllm_python(tmp_path), "--vllm-ref-url",
                                served["ref"].url, "--vllm-url", f"checkpoint-2={fake.url}", "--vllm-url",
                                f"checkpoint-4={served['checkpoint-4'].url}", cache=tmp_path / "cache")
    finally:
        fake.fail_after, fake.wrong_replies = None, 0
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert ("failed mid-run" if fault == "dies" else "other tokens than asked") in line and fake.url in line
    stored = [json.loads(key.read_text())["parts"]["policy"] for key in (tmp_path / "o").glob("store/score/*/key.json")]
    assert identify_model(fake.root, cache_dir=tmp_path / "cache").fingerprint not in stored


def test_a_checkpoint_name_of_several_runs_must_name_its_run():
    from types import SimpleNamespace as NS

    from dpo_eval.errors import UserError
    from dpo_eval.evaluation.vllm_urls import _checkpoint_fingerprint

    def run(name, fingerprint):
        ref = NS(path=f"/sft-{name}")
        rows = (NS(label="0", path=ref.path, final_path=None, is_reference=True, identity=NS(fingerprint="ref")),
                NS(label="200", path=f"/runs/{name}/checkpoint-200", final_path=None, is_reference=False,
                   identity=NS(fingerprint=fingerprint)))
        return NS(run=NS(name=name), reference=ref, rows=rows)

    runs = [run("a", "fa"), run("b", "fb")]
    for name, fingerprint in (("a/checkpoint-200", "fa"), ("b/200", "fb"), ("/runs/b/checkpoint-200", "fb")):
        assert _checkpoint_fingerprint(f"{name}=http://h/v1", runs) == fingerprint
    with pytest.raises(UserError, match="'checkpoint-200' names checkpoints of several runs; write it as RUN/NAME"):
        _checkpoint_fingerprint("checkpoint-200=http://h/v1", runs)
    with pytest.raises(UserError, match="no checkpoint '0'"):  # the reference's row: --vllm-ref-url
        _checkpoint_fingerprint("0=http://h/v1", runs)
