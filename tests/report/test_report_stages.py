"""`dpo-eval report --stages`: only the stages asked for (and what they need) run; the figures of the others
are null (never zero), `missing` says why, results.json validates and renders, and the store keys of the
stages run are the full report's (a partial report reuses them and computes nothing)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE, trained_once

from dpo_eval.cli import main
from dpo_eval.errors import UserError
from dpo_eval.evaluation.config import STAGES, ReportConfig, resolve_stages
from dpo_eval.gate.run import FIT_STAGES, figure_stages
from dpo_eval.reports.render import render
from dpo_eval.reports.schema import schema_errors

REPO = Path(__file__).resolve().parents[2]


def test_resolve_stages_adds_what_each_stage_needs_in_run_order():
    assert resolve_stages(None) == STAGES
    assert resolve_stages(("score",)) == ("score",)
    assert resolve_stages(("entropy",)) == ("entropy",)
    assert resolve_stages(("judge", "score")) == ("score", "samples", "judge")
    assert resolve_stages(("kl",)) == ("samples", "kl")
    assert resolve_stages(("unseen", "kl")) == ("samples", "kl", "unseen")
    for bad, message in ((("score", "sampels"), "unknown stage 'sampels'"), ((), "no stage given")):
        with pytest.raises(UserError, match=message) as caught:
            ReportConfig(run_dirs=("run",), stages=bad).validate()
        assert "allowed: score, samples, kl, entropy, unseen, judge" in str(caught.value)


def test_unknown_stage_is_one_line_exit_2_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dpo_eval.cli", "report", str(tmp_path), "--stages", "score,judges"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "--stages: unknown stage 'judges'; allowed: score, samples, kl, entropy, unseen, judge" in lines[0]


# ---------------------------------------------------------------------------------------------- on a run


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The full report (rule judge) of the tiny run; partial reports are then made into the same --out."""
    paths = trained_once(tmp_path_factory)
    out = tmp_path_factory.mktemp("stages") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(JUDGE_DIR))
        result = report(paths, out)
    assert result.exit_code == 0, result.output
    return {"paths": paths, "out": out, "results": json.loads((out / "results.json").read_text())}


def report(paths: dict, out: Path, *more: str):
    """The tiny run's report with lc_gap: 0 (the gap fires when its CI excludes 0: on 12 prompts a CI wholly past
    the default 0.05 is rare), so the stage tests see an lc_gap finding."""
    thresholds = out.parent / "thresholds.yaml"
    thresholds.write_text("lc_gap: 0.0\n")
    return CliRunner().invoke(main, ["report", str(paths["run"]), "--judge", RULE_JUDGE, "--out", str(out),
                                     "--cache-dir", str(paths["cache"]), "--no-render", "--thresholds",
                                     str(thresholds), *FAST, *more], catch_exceptions=False)


def leaves(node: object, path: tuple = ()) -> dict[tuple, float]:
    """Every number under node by its key path (bools and strings are not figures)."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in leaves(child, (*path, key)).items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in leaves(child, (*path, i)).items()}
    is_number = isinstance(node, int | float) and not isinstance(node, bool)
    return {path: node} if is_number and math.isfinite(node) else {}


def value_at(node: object, path: tuple) -> object:
    for key in path:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return None
        if node is None:
            return None
    return node


FIGURE_SECTIONS = ("rewards", "winrate", "quality", "kl", "offpolicy", "length", "drift")


@pytest.mark.parametrize("asked", [("score",), ("kl",), ("entropy", "unseen"), ("judge",), ("score", "kl", "judge")])
def test_partial_report_has_exactly_the_figures_of_its_stages(full, asked, monkeypatch):
    """A checkpoint figure is the full report's number when the stages it needs (dpo_eval.gate.run.FIGURE_STAGES)
    ran, and null otherwise; top-scope figures are the full report's when the fit's stages ran."""
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    ran = resolve_stages(asked)
    result = report(full["paths"], full["out"], "--stages", ",".join(asked))
    assert result.exit_code == 0, result.output
    results = json.loads((full["out"] / "results.json").read_text())
    ledger = json.loads((full["out"] / "store" / "last_run.json").read_text())
    assert ledger["computed"] == {}  # the stages run have the full report's store keys
    assert set(ledger["reused"]) == {"prompts", *ran}
    assert schema_errors(results) == [] and results["provenance"]["stages"] == list(ran)
    n_checked = 0
    for mine, theirs in zip(results["checkpoints"], full["results"]["checkpoints"], strict=True):
        for path, value in leaves({k: theirs[k] for k in FIGURE_SECTIONS}).items():
            needed = resolve_stages(figure_stages(path))
            got = value_at(mine, path)
            assert got == (value if set(needed) <= set(ran) else None), (mine["label"], path, needed, ran)
            n_checked += 1
    assert n_checked > 100
    if set(FIT_STAGES) <= set(ran):
        assert {k: results[k] for k in ("fits", "past_peak", "recommended")} == \
            {k: full["results"][k] for k in ("fits", "past_peak", "recommended")}
    not_run = [s for s in STAGES if s not in ran]
    said = [m for m in results["missing"] if m["why"].startswith("the ")]
    assert [m["why"] for m in said] == [f"the {s} stage was not run (--stages {','.join(asked)})" for s in not_run]
    assert all(m["flag"] == f"--stages with {s} (or no --stages: every stage)" for m, s in zip(said, not_run))
    render(full["out"])  # raises on a renderer fault
    html = (full["out"] / "report.html").read_text(encoding="utf-8")
    assert "<html" in html and (full["out"] / "report.md").read_text(encoding="utf-8").strip()


FINDING_STAGES = {"likelihood_displacement": ("score",), "drastic_drop": ("score",), "degradation": ("score",),
                  "dispersion": ("score", "unseen"), "dispersion_entropy": ("score", "entropy"),
                  "length_inflation": ("samples",), "lc_gap": ("judge",)}
"""What each finding is computed from (metrics.drift, metrics.length); the tiny run raises lc_gap and dispersion."""


@pytest.mark.parametrize("asked", [("score",), ("score", "unseen"), ("judge",)])
def test_findings_of_a_partial_report_are_the_full_reports_that_its_stages_can_see(full, asked, monkeypatch):
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    ran = set(resolve_stages(asked))
    assert report(full["paths"], full["out"], "--stages", ",".join(asked)).exit_code == 0
    results = json.loads((full["out"] / "results.json").read_text())
    key = lambda f: (f["code"], f["run"], f["step"], f["title"], json.dumps(f["numbers"]))  # noqa: E731
    assert {"lc_gap", "dispersion"} <= {f["code"] for f in full["results"]["findings"]}  # not a vacuous test
    expected = {key(f) for f in full["results"]["findings"] if set(resolve_stages(FINDING_STAGES[f["code"]])) <= ran}
    assert {key(f) for f in results["findings"]} == expected
    assert sorted(f["code"] for c in results["checkpoints"] for f in c["findings"]) == \
        sorted(f["code"] for f in results["findings"])


def test_a_score_only_report_says_why_the_fit_is_missing_and_writes_only_pair_tables(full, monkeypatch):
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    assert report(full["paths"], full["out"], "--stages", "score").exit_code == 0
    results = json.loads((full["out"] / "results.json").read_text())
    assert results["fits"] == {"kl_quality": None, "reason": "the judge stage was not run (--stages score): "
                                                             "quality needs it"}
    assert results["recommended"] is None and results["provenance"]["judge"] is None
    assert results["files"] and all(name.startswith("pairs/") for name in results["files"])
