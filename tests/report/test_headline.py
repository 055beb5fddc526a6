"""The demo's headline printer reads results.json only and shows its numbers."""

from __future__ import annotations

import json

from expected_text import expected_pm, expected_rate
from real_results import copy_results

from dpo_eval.headline import headline, main
from dpo_eval.reports import view
from dpo_eval.reports.verdict import recommendation
from dpo_eval.reports.view import fmt_pm


def test_headline_shows_the_page_recommendation_checkpoints_and_findings(real_results, tmp_path):
    results_dir = copy_results(real_results.judged, tmp_path / "results")
    doc = json.loads((results_dir / "results.json").read_text())
    text = headline(results_dir)
    assert f"report: {(results_dir / 'report.html').resolve()}" in text
    assert f"recommended: {recommendation(doc)}" in text  # the page's sentence, not metrics' reason
    trained = [c for c in doc["checkpoints"] if not c.get("is_reference")]
    for c in trained:
        kl = c["kl"][view.kl_estimator(doc)]
        rewards = c["rewards"]
        accuracy = expected_rate(rewards["accuracy"], [rewards["accuracy_ci_low"], rewards["accuracy_ci_high"]])
        margin = expected_pm(rewards["mean_margin"], rewards["margin_se"], signed=True)
        assert (f"  {c['run']} at step {c['step']}: reward acc {accuracy}, margin {margin}, "
                f"KL {fmt_pm(kl['mean'], kl['se'])} nats") in text
    assert " run run" not in text and "bon " not in text  # no internal names
    severities = [line.split("]")[0].strip(" [") for line in text.splitlines() if line.startswith("  [")]
    assert "high" in severities and severities == sorted(severities, key=["high", "warning", "info"].index)


def test_headline_usage_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "usage" in capsys.readouterr().err


def test_headline_findings_name_their_run_when_the_report_has_two(real_results, tmp_path):
    """Two runs (lr-1e-2, lr-1e-3) share step numbers: a finding's line says which run, as the page does."""
    results_dir = copy_results(real_results.judged, tmp_path / "results")
    doc = json.loads((results_dir / "results.json").read_text())
    assert len({c["run"] for c in doc["checkpoints"]}) == 2
    lines = [line for line in headline(results_dir).splitlines() if line.startswith("  [")]
    shown = view.sorted_findings(doc["findings"])[:8]
    assert shown and len(lines) == len(shown)
    for line, finding in zip(lines, shown):
        where = (f"{finding['run']} at step {finding['step']}" if finding.get("step") is not None
                 else f"the run {finding['run']}")
        assert line.startswith(f"  [{finding['severity']}] {finding['title']} ({where}): "), line
