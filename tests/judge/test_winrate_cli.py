"""`dpo-eval winrate`: a judgments file in, per-model figures out, each pinned to its formula."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from dpo_eval.cli import main


def test_winrate_command_writes_each_models_figures(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for model, p_win in (("a", 0.7), ("b", 0.4)):
        for i in range(60):
            preference = None if i < 3 else float(rng.random() < p_win)
            rows.append({"model": model, "prompt_id": f"q{i}", "preference": preference,
                         "length_model": int(rng.integers(50, 150)), "length_baseline": 100,
                         "position_consistent": bool(i % 5)})
    path = tmp_path / "judgments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "winrates.json"
    result = CliRunner().invoke(main, ["winrate", str(path), "--out", str(out), "--resamples", "200",
                                       "--lc-resamples", "20"])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["schema_version"] == 1 and document["method"]["seed"] == 0
    for model in ("a", "b"):
        prefs = np.array([r["preference"] for r in rows if r["model"] == model and r["preference"] is not None])
        figures = document["models"][model]
        assert figures["n"] == 57 and figures["n_unscored"] == 3
        assert abs(figures["win_rate"] - prefs.mean()) < 1e-12
        low, high = figures["win_rate_ci"]
        assert 0 <= low <= figures["win_rate"] <= high <= 1
        assert 0 <= figures["lc_win_rate"] <= 1
        consistent = [r["position_consistent"] for r in rows if r["model"] == model and r["preference"] is not None]
        assert abs(figures["position_bias_rate"] - consistent.count(False) / len(consistent)) < 1e-12


def test_winrate_bad_file_exits_2(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"model": "m", "prompt_id": "q", "preference": 3}) + "\n")
    result = CliRunner().invoke(main, ["winrate", str(path), "--out", str(tmp_path / "o.json")])
    assert result.exit_code == 2 and "preference" in result.output and "Traceback" not in result.output


def test_bradley_terry_across_checkpoints_judged_against_each_other(tmp_path):
    # a beats b 3 of 4 times, b beats c 3 of 4 times: BT with c anchored... here the anchor is the
    # alphabetically first baseline ("b"); r_a - r_b = log(3), r_c - r_b = -log(3) (fitted MLE, tiny L2)
    rows = [{"model": "a", "baseline": "b", "prompt_id": f"q{i}", "preference": float(i < 3)} for i in range(4)]
    rows += [{"model": "b", "baseline": "c", "prompt_id": f"q{i}", "preference": float(i < 3)} for i in range(4)]
    path = tmp_path / "j.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["winrate", str(path), "--out", str(tmp_path / "o.json"), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "o.json").read_text())
    assert document["models"] == {} and document["baselines"] == ["b", "c"]
    ratings = document["bradley_terry"]["ratings"]
    assert ratings["b"] == 0 and abs(ratings["a"] - np.log(3)) < 1e-3 and abs(ratings["c"] + np.log(3)) < 1e-3
