"""`dpo-eval gate` on a run dir runs only the report stages its checks need (dpo_eval.gate.run.FIGURE_STAGES)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE, trained_once  # noqa: E402

from dpo_eval.cli import main  # noqa: E402
from dpo_eval.errors import UserError  # noqa: E402
from dpo_eval.evaluation import pipeline, steps  # noqa: E402, F401 - pipeline's builders bind their steps at import
from dpo_eval.gate.file import load_gate_file, parse_check  # noqa: E402
from dpo_eval.gate.run import FIGURE_STAGES, GateConfig, needed_stages, report_config  # noqa: E402
from dpo_eval.metrics.gate import CHECKPOINT_FIGURES, split_path  # noqa: E402


def stages(*entries) -> tuple[str, ...] | None:
    return needed_stages(tuple(parse_check(e) for e in entries))


def test_needed_stages_of_each_kind_of_check():
    assert stages("checkpoints[final].rewards.accuracy >= 0.6") == ("score",)
    assert stages("checkpoints[2].offpolicy.chosen.mean < 1", "checkpoints[final].drift.pairs.n > 0") == ("score",)
    assert stages("checkpoints[final].kl.k1.mean <= 10") == ("samples",)
    assert stages("checkpoints[final].kl.analytic.mean|kl.k1.mean <= 10") == ("samples", "kl")
    assert stages("checkpoints[final].winrate.win_rate >= 0.5") == ("samples", "judge")
    assert stages("checkpoints[final].length.mean_tokens_ratio < 2",
                  "checkpoints[final].drift.dispersion.entropy.policy_mean > 0") == ("score", "samples", "entropy")
    assert stages({"regression": "checkpoints[final].quality.value may not drop by more than 0.1"}) == (
        "samples", "judge")
    assert stages("checkpoints[all].drift.dispersion.other_prompts.per_token.mean > -5") == (
        "score", "samples", "unseen")
    assert stages("checkpoints[best].rewards.accuracy >= 0.6") == ("score", "samples", "kl", "judge")
    assert stages("recommended.kl < 5") == ("score", "samples", "kl", "judge")
    assert stages("checkpoints[final].rewards.accuracy >= 0.6", {"findings": "none of severity high"}) is None


def test_every_checkpoint_figure_has_its_stages():
    """No figure falls back to 'every stage' by having no FIGURE_STAGES prefix."""
    for figure in CHECKPOINT_FIGURES:
        keys = tuple(split_path(figure))
        assert any(keys[:n] in FIGURE_STAGES for n in range(1, len(keys) + 1)), figure


def test_the_gate_files_report_stages_win_and_are_checked(tmp_path):
    config = tmp_path / "gate.yaml"
    config.write_text("checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\n")
    assert report_config(GateConfig(target="run", config=str(config)), load_gate_file(config)).stages == ("score",)
    config.write_text("checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\nreport:\n  stages: [score, kl]\n")
    assert report_config(GateConfig(target="run", config=str(config)), load_gate_file(config)).stages == (
        "score", "kl")
    config.write_text("checks:\n  - checkpoints[final].kl.k1.mean < 9\nreport:\n  stages: [score]\n")
    with pytest.raises(UserError, match="report: stages leave out samples, which check "
                                        "'checkpoints\\[final\\].kl.k1.mean < 9' needs"):
        report_config(GateConfig(target="run", config=str(config)), load_gate_file(config))
    config.write_text("checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\nreport:\n  stages: [score, kll]\n")
    with pytest.raises(UserError, match="--stages: unknown stage 'kll'"):
        report_config(GateConfig(target="run", config=str(config)), load_gate_file(config))
    config.write_text("checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\nreport:\n  stages: score\n")
    with pytest.raises(UserError, match="report setting stages: 'score' is not a list of strings"):
        load_gate_file(config)


# ---------------------------------------------------------------------------------------------- on a run dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


FAST_REPORT = "report:\n  n_samples: 2\n  max_new_tokens: 8\n  bootstrap_resamples: 200\n  lc_resamples: 5\n"


def gate(tiny: dict, folder: Path, out: Path, *checks: str):
    config = folder / "gate.yaml"
    config.write_text("checks:\n" + "".join(f"  - {c}\n" for c in checks) + FAST_REPORT)
    return CliRunner(env={"GITHUB_STEP_SUMMARY": None}).invoke(
        main, ["gate", str(tiny["run"]), "--config", str(config), "--out", str(out), "--judge", RULE_JUDGE,
               "--cache-dir", str(tiny["cache"]), "--no-progress"], catch_exceptions=False)


def forbid(monkeypatch, *names: str) -> None:
    """The report steps named fail the test when called (steps the pipeline looks up when it runs them:
    run_score, run_samples, run_entropy, run_judge; kl and unseen need the samples)."""
    for name in names:
        def refuse(*args, name=name, **kwargs):
            raise AssertionError(f"steps.{name} was called")

        monkeypatch.setattr(steps, name, refuse)


def store_kinds(out: Path) -> set[str]:
    return {p.name for p in (out / "store").iterdir() if p.is_dir() and any(p.iterdir())}


def test_a_reward_accuracy_gate_never_samples_or_judges_and_a_full_report_reuses_its_scores(tiny, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        forbid(patch, "run_samples", "run_entropy", "run_judge")
        passed = gate(tiny, tmp_path, out, "checkpoints[final].rewards.accuracy >= 0.0")
        assert passed.exit_code == 0, passed.output
        failed = gate(tiny, tmp_path, out, "checkpoints[final].rewards.accuracy > 1.0")
        assert failed.exit_code == 1, failed.output
    assert store_kinds(out) == {"prompts", "score"}
    results = json.loads((out / "results.json").read_text())
    final = results["checkpoints"][-1]
    assert final["rewards"]["n"] == 12 and final["winrate"] is None and final["kl"] is None
    assert results["provenance"]["stages"] == ["score"]
    scored = json.loads((out / "store" / "last_run.json").read_text())
    assert set(scored["reused"]) == {"prompts", "score"} and scored["computed"] == {}  # the second gate
    full = CliRunner().invoke(main, ["report", str(tiny["run"]), "--judge", RULE_JUDGE, "--out", str(out),
                                     "--cache-dir", str(tiny["cache"]), "--steps", "final", "--no-render", *FAST],
                              catch_exceptions=False)
    assert full.exit_code == 0, full.output
    ledger = json.loads((out / "store" / "last_run.json").read_text())
    assert "score" not in ledger["computed"] and len(ledger["reused"]["score"]) == 2  # the reference and step 4
    assert {"samples", "kl", "entropy", "unseen", "judge"} <= set(ledger["computed"])
    again = json.loads((out / "results.json").read_text())["checkpoints"][-1]
    assert again["rewards"] == final["rewards"] and again["winrate"] is not None


def test_a_win_rate_gate_samples_and_judges_but_does_not_score(tiny, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    out = tmp_path / "out"
    forbid(monkeypatch, "run_score", "run_entropy")
    result = gate(tiny, tmp_path, out, "checkpoints[final].winrate.win_rate >= 0.0")
    assert result.exit_code == 0, result.output
    assert store_kinds(out) == {"prompts", "samples", "judge"}
    results = json.loads((out / "results.json").read_text())
    final = results["checkpoints"][-1]
    assert 0.0 <= final["winrate"]["win_rate"] <= 1.0 and final["rewards"] is None
    assert results["provenance"]["stages"] == ["samples", "judge"]
