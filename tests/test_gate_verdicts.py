"""The gate's verdicts a CI can trust (issue 16, items 6-12): exit codes that tell a failed check from bad
input and from a bug, step 0 on a run dir, baselines made otherwise refused, findings never computed,
the gate's own results folder, overridable finding thresholds, and Markdown that cannot inject markup."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from subprocesses import run_together  # noqa: E402
from tiny_run import copy_run, trained_once  # noqa: E402

from dpo_eval.cli import main  # noqa: E402
from dpo_eval.errors import UserError  # noqa: E402
from dpo_eval.evaluation.assemble import JUDGE_MISSING  # noqa: E402
from dpo_eval.evaluation.config import ReportConfig, load_thresholds  # noqa: E402
from dpo_eval.gate.file import load_gate_file, parse_check  # noqa: E402
from dpo_eval.gate.run import GateConfig, needed_steps, report_config  # noqa: E402
from dpo_eval.metrics import findings  # noqa: E402
from dpo_eval.metrics import gate as g  # noqa: E402
from dpo_eval.metrics.gate_baseline import incomparable_fields  # noqa: E402
from dpo_eval.model_settings import ModelLoading  # noqa: E402
from dpo_eval.reports.gate_summary import escape_markdown, format_markdown  # noqa: E402
from dpo_eval.reports.junit import render_junit  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FAST_REPORT = ("report:\n  n_samples: 2\n  max_new_tokens: 8\n  bootstrap_resamples: 200\n  lc_resamples: 5\n"
               "  render: false\n")


@pytest.fixture(scope="module")
def example(real_results) -> Path:
    """The real report of two tiny runs with the rule judge (tests/report/real_results.py)."""
    return real_results.judged / "results.json"


@pytest.fixture(scope="module")
def unjudged(real_results) -> Path:
    return real_results.unjudged / "results.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


def write_config(folder: Path, *entries: str, extra: str = "", name: str = "gate.yaml") -> Path:
    path = folder / name
    path.write_text("checks:\n" + "".join(f"  - {e}\n" for e in entries) + extra)
    return path


CLI = "import sys; from dpo_eval.cli import main; main(sys.argv[1:], prog_name='dpo-eval')"
BROKEN_CLI = ("import sys; import dpo_eval.gate.run as gate\n"
              "def boom(*args, **kwargs):\n    raise RuntimeError('boom: a bug')\n"
              "gate.evaluate_checks = boom\n" + CLI)
"""The CLI with a bug planted where the checks are evaluated."""


def cli_process(code: str, *args: str) -> list[str]:
    """A `python -c CODE gate ARGS` command line, never appending to CI's own step summary."""
    return ["env", "-u", "GITHUB_STEP_SUMMARY", "OMP_NUM_THREADS=1", sys.executable, "-c", code, "gate", *args]


def invoke(*args: str):
    return CliRunner(env={"GITHUB_STEP_SUMMARY": None}).invoke(main, list(args), catch_exceptions=False)


def evaluate(results: dict, *entries, baseline: dict | None = None, caveat: str = "") -> list[g.CheckResult]:
    return g.evaluate_checks([parse_check(e) for e in entries], results, baseline, caveat)


# ---------------------------------------------------------------------------------------------- 6 exit codes


def test_each_exit_code_as_a_subprocess(example, tmp_path):
    """0 pass, 1 a check failed, 2 bad input, 3 an internal error: one line, the traceback in a file."""
    passing = write_config(tmp_path, "checkpoints[final].rewards.n >= 0")
    failing = write_config(tmp_path, "checkpoints[final].rewards.n < 0", name="failing.yaml")
    bad = write_config(tmp_path, "checkpoints[final].rewards.n >= x", name="bad.yaml")
    passed, failed, done, crashed = run_together(
        *(cli_process(CLI, str(example), "--config", str(config)) for config in (passing, failing, bad)),
        cli_process(BROKEN_CLI, str(example), "--config", str(passing)))
    assert (passed.returncode, failed.returncode) == (0, 1), (passed.stderr, failed.stderr)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert crashed.returncode == 3, crashed.stderr
    lines = crashed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in crashed.stderr and crashed.stdout == ""
    assert "internal error (RuntimeError: boom: a bug)" in lines[0]
    written = Path(re.search(r"traceback written to (\S+):", lines[0])[1])
    text = written.read_text()
    assert text.startswith("Traceback") and "RuntimeError: boom: a bug" in text and "def boom" not in lines[0]
    written.unlink()


def test_an_unwritable_junit_path_is_bad_input_not_a_bug(example, tmp_path):
    (tmp_path / "file").write_text("")
    config = write_config(tmp_path, "checkpoints[final].rewards.n >= 0")
    result = invoke("gate", str(example), "--config", str(config), "--junit", str(tmp_path / "file" / "gate.xml"))
    assert result.exit_code == 2 and "cannot write --junit" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_cli_documents_the_exit_codes():
    help_text = invoke("gate", "--help").output
    assert "0 when all pass, 1 when one fails, 2 on an input error, 3 on an" in " ".join(help_text.split())


# ---------------------------------------------------------------------------------------------- 7 step 0


def test_step_0_asks_the_report_for_no_step_it_lacks():
    def steps(*entries, has_step_0=False):
        return needed_steps(tuple(parse_check(e) for e in entries), has_step_0)

    assert steps("checkpoints[0].rewards.accuracy >= 0") == "final"
    assert steps("checkpoints[0].rewards.accuracy >= 0", "checkpoints[200].kl.k1.mean < 5") == "200"
    assert steps("checkpoints[0].rewards.accuracy >= 0", "checkpoints[final].kl.k1.mean < 5") == "final"
    assert steps("checkpoints[0].rewards.accuracy >= 0", has_step_0=True) == "0"


def test_a_step_0_check_selects_the_reference_row_on_a_run_dir_as_on_its_results(tiny, tmp_path):
    config = write_config(tmp_path, "checkpoints[0].rewards.n == 12", "checkpoints[0].rewards.accuracy >= 0",
                          extra=FAST_REPORT)
    out, junit = tmp_path / "out", tmp_path / "run.xml"
    on_run = invoke("gate", str(tiny["run"]), "--config", str(config), "--out", str(out), "--cache-dir",
                    str(tiny["cache"]), "--no-progress", "--junit", str(junit))
    assert on_run.exit_code == 0, on_run.output
    results = json.loads((out / "results.json").read_text())
    reference = [c for c in results["checkpoints"] if c["step"] == 0]
    assert [c["is_reference"] for c in reference] == [True]
    on_file = invoke("gate", str(out / "results.json"), "--config", str(config), "--junit", str(tmp_path / "f.xml"))
    assert on_file.exit_code == 0, on_file.output
    cases = [[(c.get("name"), c.find("system-out").text) for c in ET.parse(x).getroot().iter("testcase")]
             for x in (junit, tmp_path / "f.xml")]
    assert cases[0] == cases[1] and cases[0][1][0].endswith("@ run/0")
    assert cases[0][1][1] == f"value {reference[0]['rewards']['accuracy']:.6g}, threshold >= 0"


# ---------------------------------------------------------------------------------------------- 8 baselines


def provenance() -> dict:
    """The comparable part of a results.json `provenance` as assemble._provenance writes it (two runs)."""
    identity = {"path": "/models/sft", "resolved": "/models/sft", "kind": "pretrained", "fingerprint": "f" * 64,
                "attn_implementation": "sdpa"}
    return {"beta": {"b1": 0.1, "b5": 0.5}, "seeds": {"sampling": 0, "bootstrap": 0, "judge": 0},
            "judge": {"spec": "gold:answers.jsonl", "mode": "verdict", "template": "pairwise",
                      "template_sha256": "ab" * 32, "seed": 0, "answers_sha256": "cd" * 32},
            "data": {"pairs": {"path": "heldout.jsonl", "source": "--data", "sha256": "01" * 32, "n": 12},
                     "prompts": {"path": "heldout.jsonl", "source": "pairs", "sha256": "02" * 32, "n": 12}},
            "reference": {**identity, "source": "--ref", "runs": {"b1": {**identity, "source": "--ref"},
                                                                   "b5": {**identity, "source": "--ref"}}},
            "sampling": {"n_samples": 4, "max_new_tokens": 128, "temperature": 1.0, "top_p": 1.0,
                         "template": "auto", "max_prompts": None}}


@pytest.mark.parametrize("edit, named", [
    (lambda p: p["data"]["pairs"].update(sha256="00" * 32), f"data.pairs.sha256 (\"{'01' * 32}\" vs \"{'00' * 32}\")"),
    (lambda p: p["data"]["prompts"].update(sha256="11" * 32), "data.prompts.sha256 ("),
    (lambda p: p["judge"].update(spec="openai:gpt-4o"), 'judge.spec ("gold:answers.jsonl" vs "openai:gpt-4o")'),
    (lambda p: p["judge"].pop("answers_sha256"), f'judge.answers_sha256 ("{"cd" * 32}" vs not recorded)'),
    (lambda p: p.update(judge=None), "judge ({"),
    (lambda p: p["sampling"].update(temperature=0.7), "sampling.temperature (1.0 vs 0.7)"),
    (lambda p: p["sampling"].update(max_prompts=8), "sampling.max_prompts (null vs 8)"),
    (lambda p: p["beta"].update(b5=0.2), "beta[b5] (0.5 vs 0.2)"),
    (lambda p: p["reference"]["runs"]["b1"].update(fingerprint="e" * 64), f'reference[b1] ("{"f" * 64}" vs "{"e" * 64}")'),
])
def test_incomparable_fields_name_what_differs(edit, named):
    results = {"provenance": provenance()}
    assert incomparable_fields(results, {"provenance": provenance()}) == []
    baseline = {"provenance": provenance()}
    edit(baseline["provenance"])
    differ = incomparable_fields(results, baseline)
    assert len(differ) == 1 and differ[0].startswith(named), differ


def test_the_judges_seed_paths_and_a_lone_baseline_run():
    results, baseline = {"provenance": provenance()}, {"provenance": provenance()}
    baseline["provenance"]["judge"]["seed"] = 5
    baseline["provenance"]["data"]["pairs"]["path"] = "/elsewhere/heldout.jsonl"
    baseline["provenance"]["reference"]["path"] = "/elsewhere/sft"
    assert incomparable_fields(results, baseline) == []
    lone = {"provenance": provenance()}
    lone["provenance"]["beta"] = {"old": 0.5}  # a lone baseline run is every run's partner
    del lone["provenance"]["reference"]["runs"]  # an older document: the one reference of every run
    assert incomparable_fields(results, lone) == ["beta[b1 vs baseline old] (0.1 vs 0.5)"]
    two = {"provenance": provenance()}
    two["provenance"]["beta"] = {"x": 0.1, "y": 0.1}  # no partner: those runs' checks fail as unmatched
    assert incomparable_fields(results, two) == []


def test_a_baseline_made_otherwise_exits_2_unless_allowed(example, tmp_path):
    baseline = json.loads(example.read_text())
    temperature = baseline["provenance"]["sampling"]["temperature"]
    baseline["provenance"]["sampling"]["temperature"] = temperature + 0.25
    old = tmp_path / "old.json"
    old.write_text(json.dumps(baseline))
    check = "regression: checkpoints[final].rewards.accuracy may not drop by more than 0.02"
    refusing = write_config(tmp_path, check, name="refusing.yaml")
    allowed = write_config(tmp_path, check, extra="allow_incomparable: true\n")
    summary, junit = tmp_path / "summary.md", tmp_path / "gate.xml"
    refused, done = run_together(
        cli_process(CLI, str(example), "--config", str(refusing), "--baseline", str(old)),
        cli_process(CLI, str(example), "--config", str(allowed), "--baseline", str(old), "--junit", str(junit),
                    "--step-summary", str(summary)))
    assert refused.returncode == 2 and refused.stdout == "", refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and f"sampling.temperature ({json.dumps(temperature)} vs {json.dumps(temperature + 0.25)})" in refused.stderr
    assert "allow_incomparable: true" in refused.stderr
    assert done.returncode == 0, done.stderr
    outs = [c.find("system-out").text for c in ET.parse(junit).getroot().iter("testcase")]
    assert len(outs) == 2 and all("baseline not comparable (allow_incomparable: true): sampling.temperature" in o
                                  for o in outs)
    assert summary.read_text().count("baseline not comparable") == 2
    assert "note: baseline not comparable" in done.stderr


def test_allow_incomparable_must_be_a_boolean(tmp_path):
    config = write_config(tmp_path, "checkpoints[final].rewards.n >= 0", extra="allow_incomparable: yes please\n")
    with pytest.raises(UserError, match="allow_incomparable: must be true or false"):
        load_gate_file(config)


# ---------------------------------------------------------------------------------------------- 9 findings


def test_findings_never_computed_fail_unless_the_check_names_what_it_covers(unjudged):
    results = json.loads(unjudged.read_text())
    got = evaluate(results, {"findings": "none of severity high"})[0]
    assert not got.passed
    judge = next(m for m in results["missing"] if m["what"] == JUDGE_MISSING["what"])  # assemble's words
    assert got.reason == f"not computed: lc_gap, over_optimisation ({judge['why']}): add {judge['flag']}"
    failure = ET.fromstring(render_junit([got]).partition("?>")[2]).find("testsuite/testcase/failure")
    assert failure.get("message") == f"value {got.value:g}, threshold == 0: {got.reason}"
    computed = [c for c in g.FINDING_NEEDS if c not in ("lc_gap", "over_optimisation")]
    clean = [c for c in computed if not any(f["code"] == c and f["severity"] == "high" for f in results["findings"])]
    covered = evaluate(results, {"findings": f"none of severity high among {', '.join(clean)}"})[0]
    assert covered.passed and covered.reason == "" and covered.figure.endswith(f"among {', '.join(clean)}")
    named = evaluate(results, {"findings": "none of severity info among lc_gap"})[0]
    assert not named.passed and named.reason.startswith("not computed: lc_gap (")


def test_a_stage_not_run_leaves_its_findings_not_computed(example):
    from dpo_eval.evaluation.assemble import STAGE_FIGURES

    results = json.loads(example.read_text())
    results["findings"] = []
    assert evaluate(results, {"findings": "none of severity high"})[0].passed
    for stage, codes in (("score", "likelihood_displacement, drastic_drop, degradation"),
                         ("samples", "length_inflation, kl_budget"), ("unseen", "dispersion"),
                         ("entropy", "dispersion_entropy"), ("judge", "lc_gap, over_optimisation")):
        edited = dict(results, missing=[{"what": STAGE_FIGURES[stage], "why": "not run", "flag": f"--stages {stage}"}])
        got = evaluate(edited, {"findings": "none of severity high"})[0]
        assert not got.passed and got.reason == f"not computed: {codes} (not run): add --stages {stage}"


def test_every_finding_code_says_what_it_needs_and_among_is_checked():
    source = (REPO / "metrics" / "findings.py").read_text()
    assert set(re.findall(r'code="(\w+)"', source)) == set(g.FINDING_NEEDS)
    with pytest.raises(ValueError, match="unknown finding 'kl'; allowed: likelihood_displacement"):
        parse_check({"findings": "none of severity high among kl"})
    assert parse_check({"findings": "none of severity warning among kl_budget, lc_gap"}).codes == ("kl_budget",
                                                                                                    "lc_gap")


# ---------------------------------------------------------------------------------------------- 10 own output


def test_a_gate_on_a_run_dir_writes_its_own_folder_and_shares_only_the_store(tiny, tmp_path, monkeypatch):
    run = copy_run(tiny, tmp_path / "run")
    report_folder = run / ".dpo_eval"
    report_folder.mkdir()
    for name in ("results.json", "report.html"):
        (report_folder / name).write_text(f"the full report's {name}\n")
    config = write_config(tmp_path, "checkpoints[final].rewards.n == 12", extra=FAST_REPORT)
    done = invoke("gate", str(run), "--config", str(config), "--cache-dir", str(tiny["cache"]), "--no-progress")
    assert done.exit_code == 0, done.output
    for name in ("results.json", "report.html"):
        assert (report_folder / name).read_text() == f"the full report's {name}\n"
    gated = json.loads((report_folder / "gate" / "results.json").read_text())
    assert gated["checkpoints"][-1]["rewards"]["n"] == 12
    assert any((report_folder / "store" / "score").iterdir()) and not (report_folder / "gate" / "store").exists()
    from dpo_eval.models import load as model_load

    monkeypatch.setattr(model_load, "_from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    reused = invoke("report", str(run), "--stages", "score", "--steps", "final", "--cache-dir", str(tiny["cache"]),
                    "--no-render", "--no-progress")
    assert reused.exit_code == 0, reused.output
    ledger = json.loads((report_folder / "store" / "last_run.json").read_text())
    assert ledger["computed"] == {} and json.loads((report_folder / "results.json").read_text())["checkpoints"]


def test_the_gate_report_goes_to_the_gate_folder_unless_out_is_given(tmp_path):
    config = write_config(tmp_path, "checkpoints[final].rewards.accuracy >= 0.6")
    loaded = load_gate_file(config)
    own = report_config(GateConfig(target="runs/a", config=str(config)), loaded)
    assert (own.out, own.store) == (str(Path("runs/a/.dpo_eval/gate")), str(Path("runs/a/.dpo_eval/store")))
    given = report_config(GateConfig(target="runs/a", config=str(config), out="o"), loaded)
    assert (given.out, given.store) == ("o", None)


# ---------------------------------------------------------------------------------------------- 11 thresholds


def test_thresholds_files_yaml_and_json(tmp_path):
    (tmp_path / "t.yaml").write_text("kl_budget: 5\nlength_ratio: 1.5\n")
    (tmp_path / "t.json").write_text(json.dumps({"kl_budget": 5, "length_ratio": 1.5}))
    for name in ("t.yaml", "t.json"):
        assert load_thresholds(tmp_path / name) == findings.Thresholds(kl_budget=5.0, length_ratio=1.5)
    (tmp_path / "bad.yaml").write_text("kl_budgett: 5\n")
    with pytest.raises(UserError, match=r"unknown threshold\(s\) \['kl_budgett'\]; allowed: .*'kl_budget'"):
        load_thresholds(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 5\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_thresholds(tmp_path / "list.yaml")
    (tmp_path / "neg.yaml").write_text("kl_budget: -1\n")
    with pytest.raises(UserError, match="kl_budget must be >= 0"):
        load_thresholds(tmp_path / "neg.yaml")


def test_report_thresholds_flag_exits_2_on_an_unknown_name(tmp_path):
    (tmp_path / "bad.yaml").write_text("kl_budgett: 5\n")
    result = invoke("report", str(tmp_path), "--thresholds", str(tmp_path / "bad.yaml"))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "unknown threshold(s) ['kl_budgett']; allowed:" in result.output and "'kl_warn_fraction'" in result.output


def test_report_thresholds_reach_the_findings_and_the_provenance(tiny, tmp_path, monkeypatch):
    from dpo_eval.evaluation import pipeline

    class Captured(Exception):
        pass

    def capture(config: ReportConfig):
        raise Captured(config)

    monkeypatch.setattr(pipeline, "report", capture)
    (tmp_path / "t.yaml").write_text("kl_budget: 0.0\n")
    flagged = CliRunner().invoke(main, ["report", str(tiny["run"]), "--thresholds", str(tmp_path / "t.yaml")])
    assert flagged.exception.args[0].thresholds == findings.Thresholds(kl_budget=0.0)
    unflagged = CliRunner().invoke(main, ["report", str(tiny["run"])])
    assert unflagged.exception.args[0].thresholds == findings.Thresholds()
    monkeypatch.undo()
    common = dict(run_dirs=(str(tiny["run"]),), stages=("samples",), steps="final", n_samples=2, max_new_tokens=8,
                  models=ModelLoading(cache_dir=str(tiny["cache"])), show_progress=False, render=False)
    tight = pipeline.report(ReportConfig(**common, out=str(tmp_path / "tight"),
                                         thresholds=findings.Thresholds(kl_budget=0.0))).document
    default = pipeline.report(ReportConfig(**common, out=str(tmp_path / "default"))).document
    assert tight["provenance"]["thresholds"]["kl_budget"] == 0.0
    assert default["provenance"]["thresholds"] == dataclasses.asdict(findings.Thresholds())
    final = tight["checkpoints"][-1]
    kl_mean = (final["kl"]["analytic"] or final["kl"]["k3"])["mean"]
    budget = [f for f in tight["findings"] if f["code"] == "kl_budget"]
    assert kl_mean > 0 and len(budget) == 1 and budget[0]["threshold"] == 0.0
    assert not [f for f in default["findings"] if f["code"] == "kl_budget"]  # the tiny run's KL is far below 10


def test_the_gate_files_thresholds_block(example, tmp_path):
    config = write_config(tmp_path, "checkpoints[final].rewards.n >= 0", extra="thresholds:\n  kl_budget: 3\n")
    loaded = load_gate_file(config)
    assert loaded.thresholds == findings.Thresholds(kl_budget=3.0)
    assert report_config(GateConfig(target="run", config=str(config)), loaded).thresholds == loaded.thresholds
    made_with = json.loads(example.read_text())["provenance"].get("thresholds", {}).get("kl_budget")
    done = invoke("gate", str(example), "--config", str(config))
    assert done.exit_code == 2 and "thresholds: differ from those" in done.output
    assert f"kl_budget ({made_with if made_with is not None else 'not recorded'} there, 3.0 here)" in done.output
    write_config(tmp_path, "checkpoints[final].rewards.n >= 0", extra="thresholds:\n  kl_budgets: 3\n")
    with pytest.raises(UserError, match=r"thresholds: unknown threshold\(s\) \['kl_budgets'\]; allowed"):
        load_gate_file(config)
    write_config(tmp_path, "checkpoints[final].rewards.n >= 0", extra="report:\n  thresholds: {kl_budget: 3}\n")
    with pytest.raises(UserError, match="unknown report setting 'thresholds'"):
        load_gate_file(config)


# ---------------------------------------------------------------------------------------------- 12 Markdown


def test_the_step_summary_escapes_markdown_as_well_as_html(example):
    results = json.loads(example.read_text())
    for c in results["checkpoints"]:
        c["run"] = "<b>r</b>_[l](https://h/q)"
    got = evaluate(results, {"name": "![x](https://h/p)", "check": "checkpoints[final].rewards.n >= 0"})
    markdown = format_markdown(got, "out/*results*.json")
    for raw in ("![x]", "](https", "<b>", "*results*", "_[l]"):
        assert raw not in markdown
    assert "\\!\\[x\\]\\(https\\:\\/\\/h\\/p\\)" in markdown and "\\<b\\>r\\<\\/b\\>" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ✅")]
    assert len(rows) == len(got) and all(len(re.findall(r"(?<!\\)\|", line)) == 8 for line in rows)
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<img" not in html and "<a " not in html and "<b>" not in html and "![x](https://h/p)" in html


def test_escape_markdown_keeps_plain_text_and_escapes_each_mark():
    assert escape_markdown("beta0 1 run") == "beta0 1 run"
    assert escape_markdown("a|b\nc") == "a\\|b c"
    assert escape_markdown("&amp; `x` # *y*") == "\\&amp\\; \\`x\\` \\# \\*y\\*"
    assert render_junit([]).startswith("<?xml")
