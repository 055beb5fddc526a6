"""`dpo-eval report OUTPUT_DIR` on an `online: true` loop (OAIF): OUTPUT_DIR reads as the online run dir, its
one loop entry sums the steps' counts, and its checkpoints carry no round.

Before: the online loop wrote no report view, so the report refused OUTPUT_DIR ("no checkpoints found").
"""

from __future__ import annotations

import json

import pytest
from loop_beside_offline import report_loop_beside_offline

from dpo_eval.evaluation.loop_rounds import ONLINE_NO_PAIRS
from dpo_eval.reports.markdown import render_markdown
from dpo_eval.reports.rounds import round_rows

MAX_STEPS = 3


def online(settings: dict) -> None:
    settings["online"] = True
    settings["train"].update(max_steps=MAX_STEPS, batch_size=2)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """(results.json, OUTPUT_DIR): a 3-step online loop reported beside the tiny offline run."""
    folder, out, _ = report_loop_beside_offline(
        tmp_path_factory, "online_report", online, n_samples=2, max_new_tokens=8, bootstrap_resamples=200,
        lc_resamples=5, show_progress=False, render=False, stages=("samples", "judge"))
    return json.loads((folder / "results.json").read_text()), out


def test_output_dir_reads_as_the_online_run_with_no_rounds(reported):
    results, out = reported
    steps = [c["step"] for c in results["checkpoints"] if c["run"] == "loop"]
    assert steps == list(range(MAX_STEPS + 1))  # the reference row, then every step's checkpoint
    assert all("round" not in c for c in results["checkpoints"])  # no round column anywhere
    assert {p.name for p in out.glob("checkpoint-*")} == {f"checkpoint-{s}" for s in range(1, MAX_STEPS + 1)}
    assert all(p.is_symlink() for p in out.glob("checkpoint-*"))  # links into OUTPUT_DIR/online/


def test_the_loop_entry_sums_the_steps_counts(reported):
    results, out = reported
    loop = {r["name"]: r for r in results["runs"]}["loop"]["loop"]
    assert loop["online"] is True and loop["round_ends"] == [] and loop["pairs"] is None
    steps = [json.loads(p.read_text()) for p in sorted((out / "online" / "steps").glob("step-*.json"))]
    assert len(steps) == MAX_STEPS
    (entry,) = loop["rounds"]
    expected = {k: sum(s[k] for s in steps) for k in ("prompts", "pairs", "ties", "unscored")}
    assert {k: entry["counts"][k] for k in expected} == expected
    assert entry["counts"]["samples"] == 2 * expected["prompts"]  # two samples per prompt of each step
    assert expected["prompts"] == MAX_STEPS * 2  # batch_size 2 prompts per step
    assert (entry["first_step"], entry["last_step"]) == (1, MAX_STEPS)


def test_agreement_is_null_with_the_online_reason_though_a_judge_was_given(reported):
    results, _ = reported
    (entry,) = {r["name"]: r for r in results["runs"]}["loop"]["loop"]["rounds"]
    assert entry["agreement"] is None and entry["agreement_reason"] == ONLINE_NO_PAIRS


def test_the_section_names_the_run_online(reported):
    results, _ = reported
    (row,) = round_rows({r["name"]: r for r in results["runs"]}["loop"])
    assert row[:2] == ["online", f"1–{MAX_STEPS}"]
    page = render_markdown(results)
    assert "## Loop rounds" in page and "online (OAIF" in page
    assert "| run | step | round |" not in page  # no round column for an online loop
