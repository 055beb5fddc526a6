"""`dpo-eval report offline_run LOOP_OUTPUT_DIR`: the loop's rounds in results.json, plots, tables and the
per-round section, and both runs on one KL-vs-quality plot.

One tiny two-round loop (tests/loop/loop_setup.py: rso pairs, so several pairs share a prompt) and the tiny
offline run (tiny_run.py), reported once for the module with the rule judge "the longer output wins" (the
samples and judge stages only: seconds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from loop_beside_offline import report_loop_beside_offline
from tiny_run import JUDGE_DIR, RULE_JUDGE

from dpo_eval.evaluation.loop_rounds import (
    SAME_JUDGE,
    agreement_skip_reason,
    checkpoint_round,
    round_ends,
    write_pair_sides,
)
from dpo_eval.judge.outputs import read_outputs
from dpo_eval.reports.html import render_html
from dpo_eval.reports.markdown import render_markdown
from dpo_eval.reports.plots import kl_quality_figure, training_curves_figure
from dpo_eval.reports.tables import Tables

SETTINGS = {"n_samples": 2, "max_new_tokens": 8, "bootstrap_resamples": 200, "lc_resamples": 5,
            "show_progress": False, "render": False, "stages": ("samples", "judge")}


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """(results dir, loop OUTPUT_DIR, report config): the offline run and the loop, reported together."""
    return report_loop_beside_offline(
        tmp_path_factory, "loop_report",
        lambda settings: settings.update(pairs="rso", samples_per_prompt=6,
                                         rso={"accept": 4, "beta": 1.0, "ranking": "first_round"}), **SETTINGS)


def results_of(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_loop_checkpoints_carry_their_round_and_the_run_its_round_ends(reported):
    folder, out, _ = reported
    results = results_of(folder)
    loop_rows = [(c["step"], c["round"]) for c in results["checkpoints"] if c["run"] == "loop"]
    assert loop_rows == [(0, None), (1, 1), (2, 1), (3, 2), (4, 2)]  # max_steps 2 per round, global steps
    assert all("round" not in c for c in results["checkpoints"] if c["run"] == "offline")
    runs = {r["name"]: r for r in results["runs"]}
    assert "loop" not in runs["offline"]
    assert runs["loop"]["loop"]["round_ends"] == [2, 4]
    assert [(r["first_step"], r["last_step"]) for r in runs["loop"]["loop"]["rounds"]] == [(1, 2), (3, 4)]
    assert "round" not in {p["metric"] for p in results["training_curves"]["loop"]}  # a coordinate, not a curve


def test_the_rounds_counts_are_loop_json_s_and_the_sources_the_pairs(reported):
    folder, out, _ = reported
    rounds = {r["name"]: r for r in results_of(folder)["runs"]}["loop"]["loop"]["rounds"]
    recorded = json.loads((out / "loop.json").read_text())["rounds"]
    assert [r["counts"] for r in rounds] == [r["counts"] for r in recorded]
    assert all(r["label_sources"] == ["rule:loop_rules:good_minus_bad"] for r in rounds)


def wilson(p: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's 95% score interval of a share p out of n, written out."""
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


def test_agreement_is_the_judges_preference_for_the_loops_chosen_response(reported):
    """The rule judge prefers the longer output in both orders: its preference is 1, 0 or 1/2 (equal length)."""
    folder, out, _ = reported
    rounds = {r["name"]: r for r in results_of(folder)["runs"]}["loop"]["loop"]["rounds"]
    for entry in rounds:
        pairs = jsonl(out / f"round-{entry['round']}" / "pairs" / "pairs.jsonl")
        longer = [np.sign(len(p["chosen"]) - len(p["rejected"])) for p in pairs]
        agree, disagree = sum(s > 0 for s in longer), sum(s < 0 for s in longer)
        found = entry["agreement"]
        assert (found["n_pairs"], found["n_agree"], found["n_disagree"], found["n_ties"], found["n_unscored"]) == (
            len(pairs), agree, disagree, sum(s == 0 for s in longer), 0)
        assert len(pairs) > len({p["prompt_id"] for p in pairs})  # rso: prompts share pairs (clustered SE)
        assert found["agreement"] == pytest.approx(agree / (agree + disagree))
        decisive = [(s > 0, p["prompt_id"]) for s, p in zip(longer, pairs) if s != 0]
        per_prompt: dict[str, list[int]] = {}
        for ok, prompt in decisive:
            per_prompt.setdefault(prompt, []).append(int(ok))
        rate, n, k = agree / len(decisive), len(decisive), len(per_prompt)
        se = math.sqrt(k / (k - 1) * sum((sum(v) - rate * len(v)) ** 2 for v in per_prompt.values())) / n
        # Wilson's interval at the design-effect size n / max(1, se^2 / (p (1 - p) / (n - 1))); each prompt once
        # when every decisive pair agrees (or none)
        n_eff = n / max(1.0, se ** 2 / (rate * (1 - rate) / (n - 1))) if 0 < rate < 1 else k
        assert found["se"] == pytest.approx(se) and found["ci"] == pytest.approx(wilson(rate, n_eff))
        assert found["n_prompts"] == k and entry["agreement_reason"] == ""


def test_a_rerun_judges_no_pair_again(reported, tmp_path):
    from dataclasses import replace

    from dpo_eval.evaluation.pipeline import report

    folder, _, config = reported
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(JUDGE_DIR))
        again = report(replace(config, out=str(tmp_path / "again"), store=str(folder / "store")))
    assert again.ledger.n_computed() == 0
    assert len(again.ledger.reused["agreement"]) == 2
    rounds = {r["name"]: r for r in results_of(tmp_path / "again")["runs"]}["loop"]["loop"]["rounds"]
    assert [r["agreement"] for r in rounds] == [
        r["agreement"] for r in {r["name"]: r for r in results_of(folder)["runs"]}["loop"]["loop"]["rounds"]]


def test_no_agreement_when_the_labeller_is_the_judge_or_no_judge_is_given():
    record = {"config": {"labeller": "rule:rules:longer_wins"}, "rounds": []}
    assert agreement_skip_reason(record, {"spec": "rule:rules:longer_wins"}) == SAME_JUDGE
    assert agreement_skip_reason(record, None).startswith("no judge")
    assert agreement_skip_reason(record, {"spec": "rule:rules:always_a"}) is None


def test_round_of_a_step_from_the_rounds_final_checkpoints():
    record = {"rounds": [{"final_checkpoint": "/x/round-1/checkpoint-3"}, {"final_checkpoint": "/x/round-2/checkpoint-2"}]}
    ends = round_ends(record)
    assert ends == [3, 5]
    assert [checkpoint_round(s, ends) for s in (0, 1, 3, 4, 5, 6)] == [None, 1, 1, 2, 2, None]


def test_both_runs_are_on_one_kl_quality_plot(reported):
    folder, _, _ = reported
    results = results_of(folder)
    fig = kl_quality_figure(results)
    series = {c.get_label(): c.lines[0].get_xydata() for c in fig.axes[0].containers}
    estimator = results["fits"]["kl_estimator"]
    for run in ("offline", "loop"):
        expected = [(math.sqrt(max(c["kl"][estimator]["mean"], 0.0)), c["quality"]["value"])
                    for c in results["checkpoints"] if c["run"] == run and (c["quality"] or {}).get("value") is not None]
        assert len(expected) >= 2
        np.testing.assert_allclose(series[f"run {run}"], expected, rtol=1e-12)


def test_training_curves_mark_where_each_round_ends(reported):
    folder, _, _ = reported
    fig = training_curves_figure(results_of(folder))
    ax = fig.axes[0]
    marks = [(line.get_gid(), tuple(line.get_xdata())) for line in ax.lines if (line.get_gid() or "").startswith("round")]
    assert marks == [("round-end loop 1", (2, 2)), ("round-end loop 2", (4, 4))]  # none for the offline run
    assert [t.get_text() for t in ax.texts] == ["round 1", "round 2"]


def test_tables_show_both_runs_with_a_round_column_and_the_loop_its_rounds(reported):
    folder, _, _ = reported
    results = results_of(folder)
    markdown = render_markdown(results)
    table = markdown.split("## Checkpoints")[1].split("\n\n")[1].splitlines()
    assert table[0].startswith("| run | step | round | accuracy")
    rows = [[cell.strip() for cell in line.strip("|").split("|")][:3] for line in table[2:]]
    assert rows == [["offline", "0 (reference)", "—"], ["offline", "2", "—"], ["offline", "4", "—"],
                    ["loop", "0 (reference)", "—"], ["loop", "1", "1"], ["loop", "2", "1"], ["loop", "3", "2"],
                    ["loop", "4", "2"]]
    section = markdown.split("## Loop rounds")[1]
    assert f"report's judge ({RULE_JUDGE})" in section
    counts = {r["name"]: r for r in results["runs"]}["loop"]["loop"]["rounds"]
    for entry in counts:
        assert f"| {entry['round']} | {entry['first_step']}–{entry['last_step']} | {entry['counts']['prompts']} |" in section
    page = render_html(results, Tables(), [], [])
    assert page.count("<th>round</th>") == 4  # key figures, pairs, samples, and the loop-rounds table
    assert 'id="loop-rounds"' in page and "judge agreement [95% CI]" in page


def test_a_report_without_a_loop_keeps_its_columns(reported):
    folder, _, _ = reported
    results = results_of(folder)
    offline = {**results, "runs": [r for r in results["runs"] if r["name"] == "offline"],
               "checkpoints": [c for c in results["checkpoints"] if c["run"] == "offline"]}
    assert "| run | step | accuracy" in render_markdown(offline) and "## Loop rounds" not in render_markdown(offline)
    page = render_html(offline, Tables(), [], [])
    assert "<th>round</th>" not in page and "loop-rounds" not in page


def test_chat_pairs_are_judged_as_text_under_their_pair_ids(tmp_path):
    chat = [{"role": "user", "content": "hi?"}]
    pairs = [{"id": f"r1-q0-{k}", "prompt_id": "q0", "prompt": chat,
              "chosen": [{"role": "assistant", "content": f"yes {k}"}],
              "rejected": [{"role": "assistant", "content": f"no {k}"}]} for k in (0, 1)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    chosen, rejected = write_pair_sides(tmp_path / "pairs.jsonl", tmp_path / "work")
    for folder, word in ((chosen, "yes"), (rejected, "no")):
        _, outputs = read_outputs(str(folder / "samples.jsonl"))
        assert {k: v.text for k, v in outputs.items()} == {"r1-q0-0": f"{word} 0", "r1-q0-1": f"{word} 1"}
    assert jsonl(tmp_path / "work" / "pair_prompts.jsonl") == [{"pair_id": "r1-q0-0", "prompt_id": "q0"},
                                                                {"pair_id": "r1-q0-1", "prompt_id": "q0"}]
