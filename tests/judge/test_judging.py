"""Judging with rule judges: modes, position swap, unscored records, cache, and the judge command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dpo_eval.cli import main
from dpo_eval.judge.backends import RuleJudge, parse_verdict
from dpo_eval.judge.judging import Comparison, Judging, model_goes_first
from dpo_eval.judge.store import JudgmentStore
from dpo_eval.judge.templates import load_template

sys.path.insert(0, str(Path(__file__).parent))


def run(rule, comparisons, tmp_path, mode="verdict", seed=0):
    store = JudgmentStore(tmp_path / "cache.sqlite")
    judging = Judging(RuleJudge(f"rules:{rule}"), load_template("pairwise"), store, mode, seed)
    records = judging.run(comparisons, concurrency=2, show_progress=False)
    store.close()
    return records, judging.n_judge_calls


def cmp(pid, model_output, baseline_output, instruction="q"):
    return Comparison("m", pid, instruction, model_output, baseline_output)


def test_verdict_mode_swaps_positions_and_flags_inconsistency(tmp_path):
    records, calls = run("longer_wins", [cmp("1", "long answer", "short"), cmp("2", "x", "longer")], tmp_path)
    assert calls == 4  # both orders of both prompts
    assert [r["preference"] for r in records] == [1.0, 0.0]
    assert all(r["position_consistent"] for r in records)
    biased, _ = run("always_a", [cmp("3", "a", "b")], tmp_path)
    assert biased[0]["preference"] == 0.5 and biased[0]["position_consistent"] is False


def test_probability_mode_uses_one_seeded_order(tmp_path):
    comparisons = [cmp(str(i), "a", "b", instruction=f"q{i}") for i in range(20)]
    records, calls = run("prob_of_first", comparisons, tmp_path, mode="probability", seed=3)
    assert calls == 20
    for r in records:
        first = model_goes_first(r["prompt_id"], 3)
        assert r["model_position"] == ["A" if first else "B"]
        assert r["preference"] == pytest.approx(0.8 if first else 0.2)
    assert 0 < sum(r["model_position"] == ["A"] for r in records) < 20  # both orders occur


def test_failures_are_unscored_with_reason_never_ties(tmp_path):
    records, _ = run("broken", [cmp("1", "a", "b")], tmp_path)
    assert records[0]["preference"] is None
    assert "RuntimeError: verifier crashed" in records[0]["unscored_reason"]


def test_cache_means_a_rerun_asks_nothing(tmp_path):
    comparisons = [cmp(str(i), "yes" * i, "no") for i in range(5)]
    first, calls = run("longer_wins", comparisons, tmp_path)
    again, calls_again = run("longer_wins", comparisons, tmp_path)
    assert calls == 10 and calls_again == 0 and again == first
    store = JudgmentStore(tmp_path / "cache.sqlite")
    assert len(store) == 10  # each ordered comparison stored once
    store.close()


@pytest.mark.parametrize("text, expected", [("A", 1.0), ("B.", 0.0), (" (B) is better", 0.0),
                                            ("Response A", 1.0), ("**A**", 1.0), ("Neither", None), ("", None)])
def test_parse_verdict(text, expected):
    assert parse_verdict(text).preference_a == expected


def write_outputs(path, model, outputs):
    path.write_text("".join(json.dumps({"model": model, "prompt_id": pid, "prompt": f"2+2={gold}", "output": out})
                            + "\n" for pid, (gold, out) in outputs.items()))
    return str(path)


def test_judge_command_with_a_gold_verifier_feeds_winrate(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    candidates = write_outputs(tmp_path / "c.jsonl", "ckpt", {"p1": ("4", "it is 4"), "p2": ("4", "5"),
                                                               "p3": ("4", "4!")})
    baseline = write_outputs(tmp_path / "b.jsonl", "ref", {"p1": ("4", "3"), "p2": ("4", "4"), "p3": ("4", "4")})
    runner = CliRunner()
    result = runner.invoke(main, ["judge", "--candidates", candidates, "--baseline", baseline,
                                  "--judge", "rule:rules:gold_answer",
                                  "--out", str(tmp_path / "j"), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "j" / "judgments.jsonl").read_text().splitlines()]
    assert [r["preference"] for r in records] == [1.0, 0.0, 0.5]
    summary = json.loads((tmp_path / "j" / "judge_summary.json").read_text())
    assert summary["n"] == 3 and summary["n_unscored"] == 0 and summary["n_judge_calls"] == 6
    result = runner.invoke(main, ["winrate", str(tmp_path / "j" / "judgments.jsonl"), "--out",
                                  str(tmp_path / "w.json"), "--lc-resamples", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "w.json").read_text())["models"]["ckpt"]["win_rate"] == pytest.approx(0.5)


def test_gold_answers_checked_by_a_verifier(tmp_path):
    from dpo_eval.judge.gold import GoldJudge

    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"prompt": "Capital of France?", "answer": "Paris"}) + "\n")
    judge = GoldJudge(str(gold))
    assert judge.judge("Capital of France?", "It is paris.", "Lyon", "verdict").preference_a == 1.0
    assert judge.judge("Capital of France?", "Rome", "PARIS!", "verdict").preference_a == 0.0
    assert judge.judge("Capital of France?", "Paris", "paris", "verdict").preference_a == 0.5
    unknown = judge.judge("Other?", "a", "b", "verdict")
    assert unknown.preference_a is None and "no gold answer" in unknown.reason
