"""`dpo-eval gate` as CI runs it: exit codes through a subprocess, JUnit XML parsed, the GitHub step summary,
a baseline regression, null figures, and a gate on a run dir / checkpoint that runs the report first."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from real_results import RUNS, copy_results  # noqa: E402
from tiny_run import trained_once  # noqa: E402

from dpo_eval.cli import main  # noqa: E402
from dpo_eval.evaluation.assemble import JUDGE_MISSING  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def example(real_results, tmp_path_factory) -> Path:
    """results.json of the real report on two tiny runs (tests/report/real_results.py), judged."""
    return copy_results(real_results.judged, tmp_path_factory.mktemp("gate_cli") / "results") / "results.json"


@pytest.fixture(scope="module")
def unjudged(real_results, tmp_path_factory) -> Path:
    return copy_results(real_results.unjudged, tmp_path_factory.mktemp("gate_cli_unjudged") / "results") / "results.json"


def last_per_run(results: dict) -> dict[str, dict]:
    last: dict[str, dict] = {}
    for c in results["checkpoints"]:
        if c["run"] not in last or c["step"] > last[c["run"]]["step"]:
            last[c["run"]] = c
    return last


def write_config(folder: Path, *entries: str, report: str = "") -> Path:
    path = folder / "gate.yaml"
    path.write_text("checks:\n" + "".join(f"  - {e}\n" for e in entries) + report)
    return path


def run_gate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}  # never CI's own
    environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "dpo_eval.cli", "gate", *args], capture_output=True, text=True,
                          cwd=REPO, env=environment, timeout=300)


def invoke(*args: str):
    return CliRunner(env={"GITHUB_STEP_SUMMARY": None}).invoke(main, ["gate", *args], catch_exceptions=False)


# ---------------------------------------------------------------------------------------------- exit codes


def test_exit_0_when_every_check_passes(example, tmp_path):
    results = json.loads(example.read_text())
    lowest = min(c["rewards"]["accuracy"] for c in last_per_run(results).values())
    config = write_config(tmp_path, f"checkpoints[final].rewards.accuracy >= {lowest}",
                          "checkpoints[final].kl.analytic.mean|kl.k1.mean <= 100")
    done = run_gate(str(example.parent), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "gate passed: 4 of 4 checks passed"
    assert "Traceback" not in done.stderr


def test_exit_1_with_junit_xml_and_the_github_step_summary(example, tmp_path):
    results = json.loads(example.read_text())
    last = last_per_run(results)
    ratios = [c["length"]["mean_tokens_ratio"] for c in last.values()]
    between = sum(ratios) / 2  # one run's final length ratio above it, one below
    lowest = min(c["rewards"]["accuracy"] for c in last.values())  # every run passes
    config = write_config(tmp_path, f"checkpoints[final].rewards.accuracy >= {lowest}",
                          f"checkpoints[final].length.mean_tokens_ratio <= {between}",
                          "findings: none of severity high")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    junit = tmp_path / "reports" / "gate.xml"
    done = run_gate(str(example), "--config", str(config), "--junit", str(junit),
                    env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 1, done.stderr
    expected_fail = {f"checkpoints[final].length.mean_tokens_ratio <= {between} @ {run}/{c['label']}":
                     c["length"]["mean_tokens_ratio"] for run, c in last.items()
                     if c["length"]["mean_tokens_ratio"] > between}
    n_high = sum(f["severity"] == "high" for f in results["findings"])
    assert expected_fail and n_high > 0
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 2 + 2 + 1 and suite.get("tests") == "5"
    assert suite.get("failures") == str(len(expected_fail) + 1)
    failures = {case.get("name"): case.find("failure") for case in cases if case.find("failure") is not None}
    assert set(failures) == {*expected_fail, "findings: none of severity high"}
    for name, value in expected_fail.items():
        assert failures[name].get("message") == f"value {value:.6g} does not satisfy <= {between:.6g}"
    assert failures["findings: none of severity high"].get("message") == f"value {n_high} does not satisfy == 0"
    text = summary.read_text()
    n_passed = 5 - len(expected_fail) - 1
    assert text.startswith(f"earlier step\n### dpo-eval gate FAILED: {n_passed} of 5 checks passed")
    assert text.count("| ❌ |") == 5 - n_passed and text.count("| ✅ |") == n_passed
    assert f"gate FAILED: {n_passed} of 5 checks passed" in done.stdout


@pytest.mark.parametrize(("entry", "expected"), [
    ("checkpoints[final].rewards.acuracy >= 0.65",
     "check 1 (checkpoints[final].rewards.acuracy >= 0.65): unknown figure 'rewards.acuracy': unknown key "
     "'acuracy' after 'rewards'; allowed: n, accuracy, accuracy_ties_half, n_ties, mean_margin"),
    ("checkpoints[final].rewards.accuracy =< 0.65",
     "check 1 (checkpoints[final].rewards.accuracy =< 0.65): unknown operator '=<'; allowed: >=, <=, >, <, ==, !="),
])
def test_exit_2_names_the_key_and_lists_the_allowed_ones(example, tmp_path, entry, expected):
    done = run_gate(str(example), "--config", str(write_config(tmp_path, entry)))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("{results}", "--config", "{config}", "--judge", "openai:x"), "--judge applies only when the target is a run dir"),
    (("{tmp}/nowhere", "--config", "{config}"), "does not exist"),
    (("{results}", "--config", "{tmp}/none.yaml"), "does not exist: pass a gate.yaml"),
    (("{results}", "--config", "{config}", "--baseline", "{tmp}/gate.yaml"), "--baseline"),
    (("{results}", "--config", "{regression}"), "compares with a baseline: pass --baseline OLD.json"),
])
def test_other_input_errors_exit_2(example, tmp_path, args, message):
    config = write_config(tmp_path, "checkpoints[final].rewards.accuracy >= 0.5")
    regression = tmp_path / "regression.yaml"
    regression.write_text("checks:\n  - regression: checkpoints[final].rewards.accuracy may not drop by more than 0\n")
    names = {"results": str(example), "config": str(config), "tmp": str(tmp_path), "regression": str(regression)}
    result = invoke(*(a.format(**names) for a in args))
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_config_is_a_usage_error(example):
    assert invoke(str(example)).exit_code == 2


# ---------------------------------------------------------------------------------------------- figures


def test_null_figure_fails_with_the_missing_reason(unjudged, tmp_path):
    config = write_config(tmp_path, "checkpoints[final].winrate.win_rate_ci[0] >= 0.5")
    junit = tmp_path / "gate.xml"
    result = invoke(str(unjudged), "--config", str(config), "--junit", str(junit))
    assert result.exit_code == 1
    assert result.output.count(f"missing: {JUDGE_MISSING['why']} (flag: {JUDGE_MISSING['flag']})") == 2
    for case in ET.parse(junit).getroot().iter("testcase"):
        message = case.find("failure").get("message")
        assert message.startswith("value missing, threshold >= 0.5: missing: no judge was given")


def narrow_accuracy_cis(document: dict) -> dict:
    """Each final checkpoint's accuracy with a CI of +- 0.01 around it (as on many held-out pairs)."""
    for c in last_per_run(document).values():
        rewards = c["rewards"]
        rewards["accuracy_ci_low"], rewards["accuracy_ci_high"] = rewards["accuracy"] - 0.01, rewards["accuracy"] + 0.01
    return document


def test_regression_against_a_baseline_file(example, tmp_path):
    """A drop of 0.05 whose CI (both sides' SE 0.0051) lies wholly beyond 0.02 fails that run, exit 1; the bound
    in the JUnit message is baseline - 0.02 - 1.96 * sqrt(2) * 0.0051."""
    new = narrow_accuracy_cis(json.loads(example.read_text()))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(json.dumps(new))
    baseline = copy.deepcopy(new)
    last = last_per_run(baseline)
    last[RUNS[1]]["rewards"]["accuracy"] += 0.05
    last[RUNS[1]]["rewards"]["accuracy_ci_low"] += 0.05
    last[RUNS[1]]["rewards"]["accuracy_ci_high"] += 0.05
    (tmp_path / "old.json").write_text(json.dumps(baseline))
    config = write_config(tmp_path, "regression: checkpoints[final].rewards.accuracy may not drop by more than 0.02")
    junit = tmp_path / "gate.xml"
    result = invoke(str(tmp_path / "new"), "--config", str(config), "--baseline", str(tmp_path / "old.json"),
                    "--junit", str(junit))
    assert result.exit_code == 1, result.output
    now = last_per_run(new)
    failed = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert [c.get("name").rpartition(" @ ")[2] for c in failed] == [f"{RUNS[1]}/{last[RUNS[1]]['label']}"]
    se = 0.01 / 1.959963984540054
    bound = last[RUNS[1]]["rewards"]["accuracy"] - 0.02 - 1.959963984540054 * math.sqrt(2 * se ** 2)
    assert failed[0].find("failure").get("message") == (
        f"value {now[RUNS[1]]['rewards']['accuracy']:.6g} does not satisfy >= {bound:.6g}")
    same = invoke(str(example), "--config", str(config), "--baseline", str(example.parent))
    assert same.exit_code == 0, same.output
    wide = invoke(str(example), "--config", str(config), "--baseline", str(tmp_path / "old.json"))
    assert wide.exit_code == 0 and "inconclusive" in wide.output, wide.output  # the real tiny CIs are wide


# ---------------------------------------------------------------------------------------------- run dirs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


FAST_REPORT = ("report:\n  n_samples: 2\n  max_new_tokens: 8\n  bootstrap_resamples: 200\n  lc_resamples: 5\n"
               "  render: false\n")


def forbid_model_loading(monkeypatch) -> None:
    from dpo_eval.models import load as model_load

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(model_load, "_from_pretrained", refuse)


def test_invalid_config_on_a_run_dir_loads_no_model(tiny, tmp_path, monkeypatch):
    forbid_model_loading(monkeypatch)
    config = write_config(tmp_path, "checkpoints[final].kl.k4.mean <= 10", report=FAST_REPORT)
    result = invoke(str(tiny["run"]), "--config", str(config), "--out", str(tmp_path / "out"),
                    "--cache-dir", str(tiny["cache"]), "--no-progress")
    assert result.exit_code == 2 and "unknown key 'k4' after 'kl'; allowed: k1, k2, k3, analytic" in result.output
    assert not (tmp_path / "out").exists()


def test_gate_on_a_run_dir_runs_the_report_for_the_final_checkpoint(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    config = write_config(tmp_path, "checkpoints[final].rewards.accuracy >= 0.0",
                          "checkpoints[final].kl.analytic.mean|kl.k1.mean <= 1000",
                          "checkpoints[final].winrate.win_rate >= 0.5", report=FAST_REPORT)
    args = (str(tiny["run"]), "--config", str(config), "--out", str(out), "--cache-dir", str(tiny["cache"]),
            "--no-progress", "--junit", str(tmp_path / "gate.xml"))
    first = invoke(*args)
    assert first.exit_code == 1, first.output  # no judge: the win-rate check fails, never passes
    results = json.loads((out / "results.json").read_text())
    assert [(c["label"], c["is_reference"]) for c in results["checkpoints"]] == [("0", True), ("4", False)]
    final = results["checkpoints"][-1]
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "gate.xml").getroot().iter("testcase")}
    assert cases["checkpoints[final].rewards.accuracy >= 0.0 @ run/4"].find("system-out").text == (
        f"value {final['rewards']['accuracy']:.6g}, threshold >= 0")
    kl_value = (final["kl"]["analytic"] or final["kl"]["k1"])["mean"]
    assert f"value {kl_value:.6g}," in cases["checkpoints[final].kl.analytic.mean|kl.k1.mean <= 1000 @ run/4"].find(
        "system-out").text
    message = cases["checkpoints[final].winrate.win_rate >= 0.5 @ run/4"].find("failure").get("message")
    assert "no judge was given" in message and "--judge" in message
    for kind in ("score", "samples", "kl"):
        assert any((out / "store" / kind).iterdir())
    forbid_model_loading(monkeypatch)  # the rerun finds everything in the run store
    again = invoke(*args)
    assert again.exit_code == 1 and json.loads((out / "results.json").read_text())["checkpoints"] == \
        results["checkpoints"]
    ledger = json.loads((out / "store" / "last_run.json").read_text())
    assert ledger["computed"] == {}


def test_gate_on_a_checkpoint_dir(tiny, tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path, "checkpoints[2].rewards.n == 12", report=FAST_REPORT)
    result = invoke(str(tiny["run"] / "checkpoint-2"), "--config", str(config), "--out", str(out),
                    "--cache-dir", str(tiny["cache"]), "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [c["step"] for c in results["checkpoints"]] == [0, 2]
    assert results["checkpoints"][1]["rewards"]["n"] == 12


def test_a_baseline_of_an_older_schema_version_is_refused(example, tmp_path):
    """Version 3 changed when findings fire (reports/schema.py): a version-2 baseline meant otherwise."""
    from dpo_eval.reports.schema import RESULTS_SCHEMA_VERSION

    old = json.loads(example.read_text())
    old["schema_version"] = RESULTS_SCHEMA_VERSION - 1
    (tmp_path / "old.json").write_text(json.dumps(old))
    config = write_config(tmp_path, "regression: checkpoints[final].rewards.accuracy may not drop by more than 0.02")
    result = invoke(str(example), "--config", str(config), "--baseline", str(tmp_path / "old.json"))
    assert result.exit_code == 2
    assert f"has schema_version {RESULTS_SCHEMA_VERSION - 1}" in result.output
    assert "rerun `dpo-eval report` with this version" in result.output
