"""A checkpoint's figures are a function of its own inputs (issue 16, item 5): `dpo-eval report --steps 2`
and the full report of the tiny run give identical figures for step 2, the LC win rate and its CIs included
(the LC fit was joint over the reported checkpoints, so they differed)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE, trained_once

from dpo_eval.cli import main

FIGURES = ("rewards", "winrate", "quality", "kl", "offpolicy", "length", "drift")
OWN_FINDINGS = {"length_inflation", "lc_gap", "kl_budget"}
"""Findings made from one checkpoint's figures alone (drift findings compare steps of a run)."""


def report(paths: dict, out, *more: str) -> dict:
    result = CliRunner().invoke(main, ["report", str(paths["run"]), "--judge", RULE_JUDGE, "--out", str(out),
                                       "--cache-dir", str(paths["cache"]), "--no-render", *FAST, *more],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def trained_checkpoint(results: dict, step: int) -> dict:
    [found] = [c for c in results["checkpoints"] if c["step"] == step and not c["is_reference"]]
    return found


def test_step_2_alone_and_in_the_full_report_has_the_same_figures(tmp_path_factory, monkeypatch):
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    paths = trained_once(tmp_path_factory)
    full = report(paths, tmp_path_factory.mktemp("own_full") / "out")
    alone = report(paths, tmp_path_factory.mktemp("own_step2") / "out", "--steps", "2")
    assert {c["step"] for c in alone["checkpoints"] if not c["is_reference"]} == {2}
    assert len([c for c in full["checkpoints"] if not c["is_reference"]]) > 1  # other rows that could matter
    in_full, by_itself = trained_checkpoint(full, 2), trained_checkpoint(alone, 2)
    assert in_full["winrate"]["lc_win_rate"] is not None and in_full["winrate"]["lc_gap_ci"][0] is not None
    assert {k: by_itself[k] for k in FIGURES} == {k: in_full[k] for k in FIGURES}
    own = [f for f in in_full["findings"] if f["code"] in OWN_FINDINGS]
    assert [f for f in by_itself["findings"] if f["code"] in OWN_FINDINGS] == own
