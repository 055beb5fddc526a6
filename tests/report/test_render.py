"""`dpo-eval render`: report.html and report.md from the results dirs of a real `dpo-eval report` on two tiny runs
(tests/report/real_results.py, made once per session), and the page's number formatting."""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from expected_text import expected_pm, expected_rate
from real_results import HOSTILE_IMG, HOSTILE_SCRIPT, copy_results

from dpo_eval.cli import main
from dpo_eval.evaluation.assemble import JUDGE_MISSING
from dpo_eval.reports import plots
from dpo_eval.reports.markdown import checkpoint_rows
from dpo_eval.reports.render import render
from dpo_eval.reports.schema import RESULTS_SCHEMA_VERSION, schema_errors
from dpo_eval.reports.tables import load_tables
from dpo_eval.reports.verdict import run_verdicts
from dpo_eval.reports.view import fmt_pm, fmt_rate

ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "section", "h1", "h2", "h3", "h4",
                "p", "div", "span", "strong", "ul", "li", "table", "thead", "tbody", "tr", "th", "td",
                "figure", "img", "figcaption", "pre"}
SEVERITY_RANK = {"high": 0, "warning": 1, "info": 2}


class Page(HTMLParser):
    """Every start tag with its attributes, and the text of each table row's cells."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def read_reports(folder: Path) -> tuple[dict, str, str]:
    return (json.loads((folder / "results.json").read_text()), (folder / "report.html").read_text(),
            (folder / "report.md").read_text())


def rendered(folder: Path) -> tuple[dict, str, str]:
    render(folder)
    return read_reports(folder)


def copy_with(folder: Path, tmp_path: Path, change) -> Path:
    """A copy of a results dir whose results.json was passed through change(document)."""
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    document = json.loads((target / "results.json").read_text())
    change(document)
    (target / "results.json").write_text(json.dumps(document))
    return target


@pytest.fixture(scope="module")
def example_dir(real_results, tmp_path_factory) -> Path:
    """A copy of the judged results dir of the real report."""
    return copy_results(real_results.judged, tmp_path_factory.mktemp("example") / "results")


@pytest.fixture(scope="module")
def report(example_dir) -> tuple[dict, str, str]:
    """(results, report.html, report.md) of the judged example, rendered once for the module."""
    paths = render(example_dir)
    assert paths == [example_dir / "report.html", example_dir / "report.md"]
    return read_reports(example_dir)


@pytest.fixture(scope="module")
def altered(example_dir, tmp_path_factory) -> tuple[str, str, tuple[dict, str, str]]:
    """The example with its findings saved least severe first and one table deleted, rendered."""
    folder = copy_with(example_dir, tmp_path_factory.mktemp("altered"), lambda d: d["findings"].reverse())
    name, relative = sorted(json.loads((folder / "results.json").read_text())["files"].items())[0]
    (folder / relative).unlink()
    return name, relative, rendered(folder)


def test_render_writes_both_reports_and_no_temporary_file(example_dir, report):
    assert all((example_dir / name).stat().st_size > 0 for name in ("report.html", "report.md"))
    assert not [p.name for p in example_dir.iterdir() if ".tmp" in p.name]


def test_html_has_a_table_row_for_every_checkpoint_with_its_saved_numbers(report):
    results, page, _ = report
    rows = Page(page).rows
    for ckpt in results["checkpoints"]:
        mine = [r for r in rows
                if len(r) >= 4 and r[0] == ckpt["run"] and r[1].split(" ")[0] == str(ckpt["step"])]
        assert len(mine) == 3, (ckpt["run"], ckpt["step"])  # key figures, pairs and samples tables
        key_row, pairs_row, samples_row = mine
        assert pairs_row[2] == str(ckpt["rewards"]["n"])
        rewards, reference = ckpt["rewards"], ckpt["is_reference"]
        accuracy = expected_rate(rewards["accuracy"], [rewards["accuracy_ci_low"], rewards["accuracy_ci_high"]])
        margin = (f"{rewards['mean_margin']:+.3g}" if not rewards["margin_se"] else  # the reference: all 0, SE 0
                  expected_pm(rewards["mean_margin"], rewards["margin_se"], signed=True))
        assert pairs_row[3] == accuracy and pairs_row[4] == margin
        # rewards against itself: margin 0 on every pair, not "0% accuracy"
        assert key_row[2] == ("— (reference)" if reference else f"{accuracy} of {rewards['n']}")
        assert key_row[3] == ("— (reference)" if reference else margin)
        kl = ckpt["kl"]["analytic"]
        assert key_row[4] == samples_row[2] == (expected_pm(kl["mean"], kl["se"]) if kl["se"] else f"{kl['mean']:.3g}")
        rate = ckpt["winrate"]
        if rate is not None:
            assert key_row[6] == expected_rate(rate["win_rate"], rate["win_rate_ci"])
            assert key_row[7] == expected_rate(rate["lc_win_rate"], rate["lc_win_rate_ci"])


def test_recommended_checkpoint_leads_the_page_in_one_sentence_then_the_key_figures(report):
    results, page, _ = report
    rec = results["recommended"]
    anchors = ("recommended", "key-figures", "findings", "is-my-run-broken", "plots")
    order = [page.index(f'id="{anchor}"') for anchor in anchors]
    assert order == sorted(order)
    box = page[order[0]:order[1]]
    sentence = re.search(r"<strong>(.*?)</strong>", box).group(1)
    assert sentence.startswith(html.escape(f"Use {rec['run']} at step {rec['step']}: "))
    assert sentence.count(". ") == 0 and sentence.endswith(").")  # one sentence
    ckpt = next(c for c in results["checkpoints"] if (c["run"], c["step"]) == (rec["run"], rec["step"]))
    kl, rate = ckpt["kl"]["analytic"], ckpt["winrate"]
    assert f"KL {expected_pm(kl['mean'], kl['se'])} nats" in sentence
    assert html.escape(expected_rate(rate["lc_win_rate"], rate["lc_win_rate_ci"])) in sentence
    quality = expected_pm(rec["quality"], rec["quality_se"])
    assert html.escape(quality if quality.startswith("-") else "+" + quality) in sentence
    star = [r for r in Page(page).rows if r and r[0] == rec["run"] and r[1] == f"{rec['step']} ★"]
    assert len(star) == 3


def test_no_internal_name_reaches_the_page(report, example_dir, tmp_path):
    """Fit form names, "Run <folder>", snake_case keys of findings and columns are put in words; a report of
    one run named "run" never says "Run run"."""
    results, page, report_md = report
    text = re.sub(r"<[^>]+>", " ", page.split('id="provenance"')[0])  # provenance is the saved record, as is
    for leak in ("bon peak", "rl peak", "fitted bon", "fitted rl", "Run lr-1e-2", "max_new_tokens", "finish_reason",
                 "reward_chosen", "policy_chosen_logp", "chosen_delta_per_token", "displacement_share"):
        assert leak not in text and leak not in report_md, leak
    one_run = copy_with(example_dir, tmp_path, lambda d: d.update(
        runs=[dict(d["runs"][0], name="run")],
        checkpoints=[dict(c, run="run") for c in d["checkpoints"] if c["run"] == d["runs"][0]["name"]],
        findings=[dict(f, run="run") for f in d["findings"] if f["run"] == d["runs"][0]["name"]],
        recommended=dict(d["recommended"], run="run"), past_peak={}))
    _, single, single_md = rendered(one_run)
    assert "Run run" not in single and "run run" not in single.lower() and "run run" not in single_md.lower()
    assert f"Use step {results['recommended']['step']}: " in single


def test_findings_are_shown_most_severe_first_whatever_the_saved_order(altered):
    results, page, report_md = altered[2]
    assert results["findings"][0]["severity"] == "info"  # saved least severe first
    shown = re.findall(r'<span class="badge sev-(\w+)">', page)
    assert len(shown) == len(results["findings"]) and len(set(shown)) >= 2  # the order is tested across severities
    assert [SEVERITY_RANK[s] for s in shown] == sorted(SEVERITY_RANK[s] for s in shown)
    md_marks = re.findall(r"^- (\*\*HIGH\*\*|\*\*warning\*\*|info) ", report_md, flags=re.M)
    assert md_marks == [{"high": "**HIGH**", "warning": "**warning**", "info": "info"}[s] for s in shown]
    for finding in results["findings"]:
        assert html.escape(finding["advice"], quote=True) in page
        assert html.escape(finding["message"], quote=True) in page


def test_page_references_no_external_resource(report):
    _, page, _ = report
    tags = Page(page).tags
    for tag, attrs in tags:
        for name in ("src", "href", "action", "srcset", "poster"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:image/png;base64,"), (tag, name, value[:60])
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "url(" not in page and "@import" not in page
    assert sum(tag == "img" for tag, _ in tags) == len(plots.PLOTS)


def test_hostile_text_is_escaped_never_markup(report):
    _, page, report_md = report
    for hostile in (HOSTILE_SCRIPT, HOSTILE_IMG):
        assert hostile not in page
        assert html.escape(hostile, quote=True) in page
        assert hostile not in report_md
    tags = Page(page).tags
    assert {tag for tag, _ in tags} <= ALLOWED_TAGS
    assert not [(tag, name) for tag, attrs in tags for name in attrs if name.lower().startswith("on")]
    assert "<script" not in page.lower()


def test_without_a_judge_the_page_says_what_is_missing_and_which_flag_adds_it(real_results, tmp_path):
    folder = copy_results(real_results.unjudged, tmp_path / "results")
    result = CliRunner().invoke(main, ["render", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(folder / "report.html"), str(folder / "report.md")]
    results, page, report_md = read_reports(folder)
    assert results["recommended"] is None and JUDGE_MISSING in results["missing"]
    missing = page[page.index('id="missing"'):]
    assert html.escape(JUDGE_MISSING["flag"], quote=True) in missing
    assert html.escape(JUDGE_MISSING["what"], quote=True) in missing
    assert "No checkpoint is recommended" in page
    assert "Quality on samples is unknown" in page and html.escape(JUDGE_MISSING["flag"], quote=True) in page
    assert JUDGE_MISSING["flag"] in report_md and "**Recommended checkpoint:** none" in report_md
    assert 'id="plot-kl_quality"' not in page and 'id="plot-winrates"' not in page
    assert "plot not drawn (no data): Quality against KL" in page


def test_markdown_has_one_table_row_per_checkpoint(report):
    results, _, report_md = report
    lines = [line for line in report_md.splitlines() if line.startswith("| ")]
    header, body = lines[0], lines[1:]
    assert len(body) == len(results["checkpoints"])
    n_cells = header.count(" | ") + 1
    for line, ckpt in zip(body, results["checkpoints"]):
        cells = [c.strip() for c in line.strip("| ").split(" | ")]
        assert len(cells) == n_cells
        assert cells[0] == ckpt["run"] and cells[1].split(" ")[0] == str(ckpt["step"])
        rewards = ckpt["rewards"]
        assert cells[2] == ("—" if ckpt["is_reference"] else expected_rate(
            rewards["accuracy"], [rewards["accuracy_ci_low"], rewards["accuracy_ci_high"]]))
        rate = ckpt["winrate"]
        assert cells[7] == ("n/a" if rate is None else expected_rate(rate["win_rate"], rate["win_rate_ci"]))


def test_worst_examples_show_the_rows_picked_by_saved_columns(example_dir, report):
    results, page, _ = report
    tables = load_tables(example_dir, results["files"])
    last = [c for c in results["checkpoints"] if c["run"] == results["runs"][-1]["name"]][-1]
    pairs, samples = tables.get("pairs", last), tables.get("samples", last)
    lowest_chosen = pairs.loc[pairs["reward_chosen"].idxmin()]
    assert f"Biggest chosen drop (lowest chosen reward): pair {lowest_chosen['id']}" in page
    assert html.escape(lowest_chosen["prompt"], quote=True) in page
    longest = samples.loc[samples["n_tokens"].idxmax()]
    assert html.escape(longest["output"][:200], quote=True) in page


def test_verdict_follows_margin_quality_and_peak():
    """ok: the accuracy CI above 50% and the margin's (± 1.96 SE) above 0, LC CI above 0.5, not past peak;
    broken: a margin or accuracy CI at or below its line, or the LC CI below 0.5; look when a CI straddles."""
    def doc(margin, accuracy, lc_ci, past, accuracy_ci=None, margin_se=0.1):
        low, high = accuracy_ci or (accuracy - 0.05, accuracy + 0.05)
        ckpts = [{"run": "r", "step": s, "label": str(s), "is_reference": s == 0,
                  "rewards": {"n": 10, "accuracy": accuracy, "mean_margin": margin if s else 0.0,
                              "mean_reward_chosen": -0.1 * s, "accuracy_ci_low": low, "accuracy_ci_high": high,
                              "margin_se": margin_se},
                  "winrate": None if lc_ci is None else {
                      "win_rate": 0.6, "win_rate_ci": [0.55, 0.65], "lc_win_rate": sum(lc_ci) / 2,
                      "lc_win_rate_ci": lc_ci}}
                 for s in (0, 1, 2)]
        return {"runs": [{"name": "r", "steps": [0, 1, 2]}], "checkpoints": ckpts, "findings": [],
                "past_peak": {"r": {"is_past_peak": past, "reason": "x"}}, "missing": []}

    assert run_verdicts(doc(0.5, 0.9, [0.52, 0.6], False))[0].verdict == "ok"
    assert run_verdicts(doc(0.5, 0.9, [0.52, 0.6], True))[0].verdict == "look"
    assert run_verdicts(doc(0.5, 0.9, [0.45, 0.6], False))[0].verdict == "look"  # LC straddles 0.5
    assert run_verdicts(doc(0.5, 0.9, None, False))[0].verdict == "look"  # no judge
    assert run_verdicts(doc(0.5, 0.9, [0.3, 0.45], False))[0].verdict == "broken"
    assert run_verdicts(doc(-0.1, 0.9, [0.52, 0.6], False, margin_se=0.01))[0].verdict == "broken"
    assert run_verdicts(doc(-0.1, 0.9, [0.52, 0.6], False, margin_se=0.1))[0].verdict == "look"  # CI includes 0
    assert run_verdicts(doc(0.5, 0.5, [0.52, 0.6], False))[0].verdict == "look"  # CI [45%, 55%]: straddles
    assert run_verdicts(doc(0.5, 0.45, [0.52, 0.6], False))[0].verdict == "broken"  # CI [40%, 50%]: <= 50%
    # point estimates past their lines but CIs straddling them: not a verdict of learning, nor of broken
    straddles = run_verdicts(doc(0.5, 0.7, [0.52, 0.6], False, accuracy_ci=(0.45, 0.88)))[0]
    assert straddles.verdict == "look" and "cannot tell whether the model prefers" in straddles.headline
    assert run_verdicts(doc(0.15, 0.9, [0.52, 0.6], False, margin_se=0.1))[0].verdict == "look"  # 0.15 - 0.196 < 0
    assert run_verdicts(doc(0.2, 0.9, [0.52, 0.6], False, margin_se=0.1))[0].verdict == "ok"  # 0.2 - 0.196 > 0
    old = doc(0.5, 0.9, [0.52, 0.6], False)
    for ckpt in old["checkpoints"]:  # results.json written before the CIs were saved
        del ckpt["rewards"]["accuracy_ci_low"]
    assert "no saved CI" in run_verdicts(old)[0].headline and run_verdicts(old)[0].verdict == "look"
    facts = " ".join(run_verdicts(doc(0.5, 0.9, [0.52, 0.6], False))[0].facts)
    assert "-0.200 (negative, falling from -0.100 at step 1)" in facts


def test_every_plot_draws_a_png_and_none_without_its_data(example_dir):
    results = json.loads((example_dir / "results.json").read_text())
    tables = load_tables(example_dir, results["files"])
    empty = {**results, "checkpoints": [], "runs": [], "training_curves": {}, "fits": {"kl_quality": None}}
    for key, _, _, function in plots.PLOTS:
        assert function(results, tables)[:8] == b"\x89PNG\r\n\x1a\n", key
        assert function(empty, load_tables(example_dir, {})) is None, key


def test_a_missing_table_is_noted_not_fatal(altered):
    name, relative, (_, page, _) = altered
    assert html.escape(f"table {name}: {relative} is missing from the results dir", quote=True) in page


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(schema_version=99), f"schema_version 99 but this dpo-eval renders version {RESULTS_SCHEMA_VERSION}"),
    (lambda d: d.pop("checkpoints"), "'checkpoints' is a required property"),
    (lambda d: d["checkpoints"][0].update(step="ten"), "checkpoints/0/step: 'ten' is not of type 'integer'"),
])
def test_render_refuses_a_results_file_that_is_not_this_schema(example_dir, tmp_path, change, expected):
    folder = copy_with(example_dir, tmp_path, change)
    with pytest.raises(ValueError, match=re.escape(expected)):
        render(folder)
    result = CliRunner().invoke(main, ["render", str(folder)])
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(error_lines) == 1 and expected in error_lines[0] and "Traceback" not in result.output


def test_cli_names_a_folder_without_results(tmp_path):
    result = CliRunner().invoke(main, ["render", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path} has no results.json" in result.output


def minimal_results() -> dict:
    """A valid results document where every figure is null: one checkpoint, no judge, no tables."""
    ckpt = {"run": "r", "step": 10, "label": "10", "path": "/r/checkpoint-10", "fingerprint": "f",
            "rewards": None, "winrate": None, "quality": None, "kl": None, "offpolicy": None, "length": None,
            "drift": None, "findings": []}
    return {"schema_version": RESULTS_SCHEMA_VERSION, "generated_at": "2025-01-01T00:00:00Z",
            "provenance": {"versions": {}, "beta": 0.1, "seeds": {}, "judge": None, "data": {},
                           "reference": {}},
            "runs": [{"name": "r", "path": "/r", "steps": [10]}], "checkpoints": [ckpt],
            "fits": {"kl_quality": None, "reason": "no judge"}, "past_peak": {}, "recommended": None,
            "findings": [], "training_curves": {}, "missing": [], "files": {}, "timings": {}}


def test_a_results_file_of_nulls_renders_with_every_figure_not_available(tmp_path):
    document = minimal_results()
    assert schema_errors(document) == []
    (tmp_path / "results.json").write_text(json.dumps(document))
    _, page, report_md = rendered(tmp_path)
    for notice in ("No plot has data.", "No finding fired.", "No checkpoint is recommended: no judge."):
        assert notice in page
    rows = [r for r in Page(page).rows if r and r[0] == "r"]
    assert len(rows) == 3 and all(cell == "n/a" for row in rows for cell in row[3:-1])
    assert "| r | 10 | n/a | n/a | n/a | n/a | n/a | n/a | n/a |" in report_md


def test_the_kl_column_names_the_estimator_the_fit_used(example_dir, tmp_path):
    document = json.loads((example_dir / "results.json").read_text())
    assert document["fits"]["kl_estimator"] == "analytic"
    document["fits"]["kl_estimator"] = "k3"
    assert schema_errors(document) == []
    header, _, first, *_ = checkpoint_rows(document)
    assert "KL (k3) ± SE" in header
    ckpt = document["checkpoints"][1]
    second = checkpoint_rows(document)[3]
    assert f"| {expected_pm(ckpt['kl']['k3']['mean'], ckpt['kl']['k3']['se'])} |" in second
    document["fits"]["kl_estimator"] = "k4"
    assert schema_errors(document) == ["fits/kl_estimator: 'k4' is not one of ['analytic', 'k1', 'k2', 'k3']"]


@pytest.mark.parametrize(("value", "se", "signed", "expected"), [
    (0.04688, 0.0652, False, "0.047 ± 0.065"),  # the example
    (0.04688, 0.0996, False, "0.05 ± 0.10"),  # the SE rounds up to the next power of ten: 2 figures, 0.10
    (4567.0, 123.0, False, "4570 ± 120"),  # SE >= 10: rounded to tens
    (-0.0001, 0.05, False, "0.000 ± 0.050"),  # never "-0.000"
    (0.3, 0.0123, True, "+0.300 ± 0.012"),
    (-1.23456, 0.5, True, "-1.23 ± 0.50"),
    (0.123456, None, False, "0.123"),  # no SE: 3 significant figures
    (0.123456, 0.0, True, "+0.123"),  # a zero SE is not an exact figure
    (None, 0.1, False, "n/a"),
])
def test_a_figure_is_shown_to_the_precision_its_se_supports(value, se, signed, expected):
    assert fmt_pm(value, se, signed=signed) == expected


def test_a_rate_is_shown_to_the_precision_its_ci_supports():
    assert fmt_rate({"w": 0.3912, "w_ci": [0.213, 0.571]}, "w") == "39% [21%, 57%]"  # half-width 17.9 points
    assert fmt_rate({"w": 0.6204, "w_ci": [0.597, 0.643]}, "w") == "62.0% [59.7%, 64.3%]"  # 2.3 points
    assert fmt_rate({"w": 0.62044, "w_ci": [0.6195, 0.6214]}, "w") == "62.044% [61.950%, 62.140%]"  # 0.095 points
    assert fmt_rate({"w": 0.62, "w_ci": None}, "w") == "62.0%"
    assert fmt_rate({"w": None, "w_ci": [0.1, 0.2]}, "w") == "n/a"


def test_a_recommendation_says_the_rule_that_picked_it_never_an_unused_peak():
    from dpo_eval.reports.verdict import recommendation

    document = minimal_results()
    document["checkpoints"][0].update(kl={"analytic": {"mean": 1.23456, "se": 0.0456}}, winrate={
        "win_rate": 0.61234, "win_rate_ci": [0.55, 0.67], "lc_win_rate": None, "lc_win_rate_ci": None},
        quality={"source": "judge win rate - 0.5", "value": 0.11234, "se": 0.0304})
    document["recommended"] = {"run": "r", "step": 10, "kl": 1.23456, "quality": 0.11234, "quality_se": 0.0304,
                               "reason": "run r step 10 (...): nearest the fitted rl peak at KL 1.6 among ...",
                               "rule": "fitted_peak"}
    document["fits"] = {"kl_quality": {"best": "rl", "rl": {"peak_kl": 1.6049, "is_peak_extrapolated": False}},
                        "reason": ""}
    assert recommendation(document) == (
        "Use step 10: of the checkpoints whose quality is within one SE of the best, its KL is nearest the peak "
        "of the fitted RL curve of quality against KL (KL 1.6) (KL 1.235 ± 0.046 "
        "nats; win rate against the reference 61.2% [55.0%, 67.0%]; quality (judge win rate − 0.5) +0.112 ± 0.030).")
    # the demo's case: the best quality picked it and its reason names the extrapolated peak it did not use
    document["fits"]["kl_quality"]["rl"]["is_peak_extrapolated"] = True
    document["recommended"].update(rule="best_quality", reason=(
        "run r step 10 (...): the best observed quality among 4 checkpoints; the rl fit's peak at KL 1.6 is "
        "extrapolated (outside the fitted KL range 5.1 to 8.9), so it is not used"))
    assert ": it has the best measured quality of the evaluated checkpoints (" in recommendation(document)


def test_a_ci_wholly_on_one_side_of_its_estimate_draws_a_zero_bar_not_an_error():
    """A percentile-bootstrap CI may exclude its point estimate (few resamples, a skewed statistic): the
    win-rate plot drew a negative error bar and matplotlib raised, so report.html was not written."""
    import numpy as np

    low, high = plots._ci_bars(np.array([0.41, 0.5]), [[0.42, 0.49], [0.4, 0.6]])
    assert low == [0.0, pytest.approx(0.1)] and high == [pytest.approx(0.08), pytest.approx(0.1)]
