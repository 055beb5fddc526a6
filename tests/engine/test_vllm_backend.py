"""`--logprob-backend vllm` against a server in vLLM's reply shape (tests/engine/fake_vllm.py): the sums,
the token checks, the faults, the cache key. The real vLLM process: tests/test_vllm_logprobs_real.py."""

from __future__ import annotations

import json
import stat

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import save_tiny_model, write_text_pairs
from fake_vllm import FakeVllm

from dpo_eval.cli import main
from dpo_eval.engine.vllm_backend import (
    MISMATCH_ATTEMPTS,
    TRANSPORT_RETRIES,
    TokenMismatch,
    row_from_prompt_logprobs,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("vllm_backend")
    policy, ref = save_tiny_model(root / "pol", seed=1), save_tiny_model(root / "ref", seed=2)
    servers = {f"{name}_server": FakeVllm(AutoModelForCausalLM.from_pretrained(path).eval(), root=path)
               for name, path in (("policy", policy), ("ref", ref))}
    yield {"policy": policy, "ref": ref, "data": write_text_pairs(root / "pairs.jsonl", n=12), "root": root, **servers}
    for server in servers.values():
        server.close()


def score(setup, out, *extra, cache="cache"):
    args = ["score", "--policy", setup["policy"], "--ref", setup["ref"], "--data", setup["data"], "--out", str(out),
            "--no-progress", "--cache-dir", str(setup["root"] / cache), *extra]
    return CliRunner().invoke(main, args)


def vllm_flags(setup):
    return ["--logprob-backend", "vllm", "--vllm-url", setup["policy_server"].url, "--vllm-ref-url", setup["ref_server"].url]


def test_a_row_sums_the_response_positions_only():
    entries = [None, {"5": {"logprob": -1.0}}, {"6": {"logprob": -2.0}, "9": {"logprob": -0.1}}, {"7": {"logprob": -0.5}}]
    # prompt (4, 5), response (6, 7): positions 2 and 3; a top-k entry beside the asked one is ignored
    assert row_from_prompt_logprobs(entries, (4, 5), (6, 7)) == (-2.5, 4.25, 2, 0)
    with pytest.raises(TokenMismatch, match="asked token 7, got 8"):
        row_from_prompt_logprobs(entries[:3] + [{"8": {"logprob": -0.5}}], (4, 5), (6, 7))
    with pytest.raises(TokenMismatch, match="3 prompt log-probs for 4 tokens"):
        row_from_prompt_logprobs(entries[:3], (4, 5), (6, 7))


def test_vllm_backend_equals_the_engine_and_keys_its_cache(setup, tmp_path):
    engine, vllm = tmp_path / "engine", tmp_path / "vllm"
    assert score(setup, engine).exit_code == 0
    result = score(setup, vllm, *vllm_flags(setup))
    assert result.exit_code == 0, result.output
    a, b = pd.read_parquet(engine / "pairs.parquet"), pd.read_parquet(vllm / "pairs.parquet")
    for column in ("policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp", "margin"):
        assert b[column].to_numpy() == pytest.approx(a[column].to_numpy(), abs=1e-4), column
    assert (b[["chosen_tokens", "rejected_tokens"]] == a[["chosen_tokens", "rejected_tokens"]]).all().all()
    summary = json.loads((vllm / "summary.json").read_text())
    assert summary["pairs_computed"] == json.loads((engine / "summary.json").read_text())["pairs_computed"]
    assert summary["rewards"]["accuracy"] == json.loads((engine / "summary.json").read_text())["rewards"]["accuracy"]
    assert summary["numerics"]["backend"] == "vllm" and summary["numerics"]["vllm_version"] == "0.32.0"
    # the request asked for exactly the engine's token ids: prompt + response, prompt log-probs, one new token
    body = setup["policy_server"].requests[-1]
    assert body["max_tokens"] == 1 and body["prompt_logprobs"] == 0 and all(isinstance(t, int) for t in body["prompt"][0])
    # its own cache directory, version in the key: a rerun asks nothing; another version recomputes
    assert any("vllm0.32.0" in d.name for d in (setup["root"] / "cache" / "logps").iterdir())
    asked = len(setup["policy_server"].requests)
    assert score(setup, tmp_path / "again", *vllm_flags(setup)).exit_code == 0
    assert len(setup["policy_server"].requests) == asked
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["pairs_computed"] == {"policy": 0,
                                                                                             "reference": 0}
    setup["policy_server"].version = "0.33.0"
    try:
        assert score(setup, tmp_path / "newer", *vllm_flags(setup)).exit_code == 0
    finally:
        setup["policy_server"].version = "0.32.0"
    assert len(setup["policy_server"].requests) > asked


def test_a_reply_for_another_token_is_asked_again_then_refused(setup, tmp_path):
    fake = setup["policy_server"]
    fake.wrong_replies = 1  # once: asked again, then right
    result = score(setup, tmp_path / "once", *vllm_flags(setup), cache="c_once")
    assert result.exit_code == 0, result.output
    fake.wrong_replies = 10**6
    try:
        result = score(setup, tmp_path / "always", *vllm_flags(setup), cache="c_always")
    finally:
        fake.wrong_replies = 0
    assert result.exit_code == 2 and not (tmp_path / "always" / "pairs.parquet").exists()
    line = result.output.strip().splitlines()[-1]
    assert "other tokens than asked" in line and f"{MISMATCH_ATTEMPTS} attempts" in line


def test_a_server_dying_mid_run_is_refused_not_replaced(setup, tmp_path, monkeypatch):
    import dpo_eval.engine.vllm_backend as backend

    monkeypatch.setattr(backend, "SEQUENCES_PER_REQUEST", 2)
    monkeypatch.setattr(backend, "BACKOFF_SECONDS", 0.01)
    fake = setup["policy_server"]
    fake.fail_after = fake.fail_after_seen = len(fake.requests) + 1
    try:
        result = score(setup, tmp_path / "dead", *vllm_flags(setup), cache="c_dead")
    finally:
        fake.fail_after = None
    assert result.exit_code == 2 and "failed mid-run" in result.output.strip().splitlines()[-1]
    assert f"failed after {TRANSPORT_RETRIES + 1} attempts" in result.output.strip().splitlines()[-1]
    assert len(fake.requests) - fake.fail_after_seen >= TRANSPORT_RETRIES + 1  # the failed request was asked again
    assert not (tmp_path / "dead" / "pairs.parquet").exists()


def test_vllm_that_fails_to_start_is_one_line_exit_2(setup, tmp_path):
    python = tmp_path / "python"  # reports a vLLM version, then exits at once when asked to serve
    python.write_text("#!/bin/sh\nif [ \"$1\" = -c ]; then echo 0.32.0; exit 0; fi\necho boom >&2; exit 3\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    result = score(setup, tmp_path / "o", "--logprob-backend", "vllm", "--vllm-python", str(python), cache="c_start")
    assert result.exit_code == 2, result.output
    assert "vLLM exited with code 3 before serving" in result.output.strip().splitlines()[-1]


def test_vllm_flags_without_the_vllm_backend_are_refused(setup, tmp_path):
    result = score(setup, tmp_path / "o", "--vllm-url", "http://x/v1")
    assert result.exit_code == 2 and "--logprob-backend vllm" in result.output


def test_a_vllm_url_that_is_not_a_server_is_one_line_exit_2(setup, tmp_path):
    from dpo_eval.vllm_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = score(setup, tmp_path / "o", "--logprob-backend", "vllm", "--vllm-url", url, "--vllm-ref-url",
                   setup["ref_server"].url, cache="c_nothing")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"is {url} a vLLM server?" in result.output


def test_a_server_serving_another_model_is_refused(setup, tmp_path):
    swapped = ["--logprob-backend", "vllm", "--vllm-url", setup["ref_server"].url, "--vllm-ref-url",
               setup["policy_server"].url]
    asked = len(setup["ref_server"].requests)
    result = score(setup, tmp_path / "swapped", *swapped, cache="c_swapped")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    # the reference is scored first: its server is the first found wrong
    assert f"--vllm-ref-url {setup['policy_server'].url} serves model (from {setup['policy']}), not {setup['ref']}" \
        in result.output
    assert len(setup["ref_server"].requests) == asked and not (tmp_path / "swapped" / "pairs.parquet").exists()


def test_a_server_is_recognised_by_its_served_name_or_the_same_weights_elsewhere(setup, tmp_path):
    import shutil

    fake, copy = setup["policy_server"], shutil.copytree(setup["policy"], tmp_path / "copy")
    try:
        for cache, name, root in (("c_name", setup["policy"], None), ("c_copy", "model", str(copy))):
            fake.name, fake.root = name, root
            result = score(setup, tmp_path / cache, *vllm_flags(setup), cache=cache)
            assert result.exit_code == 0, result.output
            assert fake.requests[-1]["model"] == name
    finally:
        fake.name, fake.root = "model", setup["policy"]
