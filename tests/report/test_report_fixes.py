"""Gaps closed in `dpo-eval report`: tokenizer files in the store keys, the fit's KL estimator named as used,
and `generate --no-progress` silent in its log-prob passes too."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_run import FAST, copy_run, trained_once

from dpo_eval.cli import main
from dpo_eval.evaluation.fits import fit_results
from dpo_eval.evaluation.plan import tokenizer_sha256
from dpo_eval.evaluation.store import LEDGER_FILE


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


def computed(out) -> dict[str, set[str]]:
    ledger = json.loads((out / "store" / LEDGER_FILE).read_text())
    return {kind: {n for entry in names for n in entry.split(", ")} for kind, names in ledger["computed"].items()}


# ---------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_sha256_is_the_digest_of_the_tokenizer_files_written_out(tiny, tmp_path):
    run = copy_run(tiny, tmp_path / "run")
    checkpoint = run / "checkpoint-4"
    names = sorted(p.name for p in checkpoint.iterdir()
                   if p.name in {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"})
    assert names == ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + hashlib.sha256((checkpoint / name).read_bytes()).hexdigest().encode()
                      + b"\0")
    cache = tmp_path / "cache"
    got = tokenizer_sha256((str(checkpoint), tiny["init"]), cache)
    assert got == digest.hexdigest()
    (checkpoint / "config.json").write_text((checkpoint / "config.json").read_text() + " ")  # not a tokenizer file
    assert tokenizer_sha256((str(checkpoint), tiny["init"]), cache) == got
    for name in names:  # no tokenizer of its own: the reference's, as load_tokenizer falls back
        (checkpoint / name).unlink()
    assert tokenizer_sha256((str(checkpoint), tiny["init"]), cache) == tokenizer_sha256((tiny["init"],), cache)


def test_editing_only_a_checkpoints_tokenizer_recomputes_what_tokenizes_with_it(tiny, tmp_path):
    """Before tokenizer files entered the keys, the edited checkpoint's old samples and scores were reused."""
    run = copy_run(tiny, tmp_path / "copy" / "run")
    out, args = tmp_path / "out", ("--cache-dir", str(tiny["cache"]), *FAST)
    assert CliRunner().invoke(main, ["report", str(run), "--out", str(out), *args]).exit_code == 0
    template = run / "checkpoint-4" / "chat_template.jinja"
    text = template.read_text()
    assert "<|assistant|> " in text
    template.write_text(text.replace("<|assistant|> ", "<|assistant|> sure "))
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    # the unseen pass tokenizes the reference's samples with the reference's tokenizer: unchanged, reused
    assert computed(out) == {kind: {"run/4"} for kind in ("score", "samples", "kl", "entropy")}


# ---------------------------------------------------------------------------------------------- kl estimator


def rated_checkpoint(step: int, quality: float, k3: float, analytic: float | None) -> dict:
    estimate = lambda mean: None if mean is None else {"mean": mean, "se": 0.01}  # noqa: E731
    return {"run": "r", "step": step, "quality": {"source": "judge win rate - 0.5", "value": quality, "se": 0.02},
            "kl": {"analytic": estimate(analytic), "k1": estimate(k3), "k3": estimate(k3)}, "findings": [],
            "rewards": {"mean_margin": 0.1 * step}}


def test_the_fit_names_the_kl_estimate_it_used():
    kls = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    qualities = 0.3 * np.sqrt(kls) - 0.05 * kls
    with_analytic = [rated_checkpoint(i + 1, q, k, k * 0.9) for i, (k, q) in enumerate(zip(kls, qualities))]
    fits, _, _ = fit_results(with_analytic, has_judge=True)
    assert fits["kl_estimator"] == "analytic" and fits["kl_quality"]["max_kl"] == pytest.approx(8.0 * 0.9)
    without = [rated_checkpoint(i + 1, q, k, None) for i, (k, q) in enumerate(zip(kls, qualities))]
    fits, _, recommended = fit_results(without, has_judge=True)
    assert fits["kl_estimator"] == "k3"  # it was "analytic" whatever the fit used
    assert fits["kl_quality"]["max_kl"] == pytest.approx(8.0)
    assert recommended["kl"] in kls.tolist()
    mixed = with_analytic[:2] + without[2:]  # one estimator for every point: the one most rows have
    fits, _, _ = fit_results(mixed, has_judge=True)
    assert fits["kl_estimator"] == "k3" and fits["kl_quality"]["max_kl"] == pytest.approx(8.0)


# ---------------------------------------------------------------------------------------------- generate


def test_generate_no_progress_shows_no_log_prob_bars(tiny, tmp_path, capfd):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": str(i), "prompt": p}) + "\n"
                               for i, p in enumerate(["tell me about the cat", "why is the dog good"])))
    cache = tmp_path / "cache"  # a fresh log-prob cache, so both passes compute (and would show a bar)
    shutil.copytree(tiny["cache"], cache, ignore=shutil.ignore_patterns("logps"))
    capfd.readouterr()
    result = CliRunner().invoke(main, ["generate", "--model", str(tiny["run"] / "checkpoint-4"), "--ref",
                                       tiny["init"], "--prompts", str(prompts), "--out", str(tmp_path / "g"),
                                       "--n", "2", "--max-new-tokens", "4", "--cache-dir", str(cache),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    captured = capfd.readouterr()
    shown = result.output + captured.err + captured.out
    assert "log-probs" not in shown, shown
    rows = [json.loads(line) for line in (tmp_path / "g" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["ref_logp"] is not None for r in rows)
