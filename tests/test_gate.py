"""The gate's figures, config parsing and check evaluation on the real `dpo-eval report` output of two tiny runs
(tests/report/real_results.py, made once per session).

Every expected value is read straight from results.json or computed here by a plain loop; the figure table
is held to what the metrics functions actually write, in both directions.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from real_results import NOISY_STEP, RUNS, load_results  # noqa: E402

from dpo_eval.errors import UserError  # noqa: E402
from dpo_eval.evaluation.assemble import JUDGE_MISSING  # noqa: E402
from dpo_eval.gate.file import load_gate_file, parse_check  # noqa: E402
from dpo_eval.metrics import gate as g  # noqa: E402
from dpo_eval.reports.gate_summary import format_markdown, format_table  # noqa: E402

IDENTITY = {"run", "step", "label", "path", "final_path", "fingerprint", "is_reference", "findings"}
SHORT, LONG = RUNS
"""The real results' runs: SHORT has steps 0, 2, 4; LONG also step NOISY_STEP (moved weights, far higher KL)."""


@pytest.fixture(scope="module")
def results(real_results) -> dict:
    return load_results(real_results.judged)


@pytest.fixture(scope="module")
def unjudged(real_results) -> dict:
    return load_results(real_results.unjudged)


def numeric_leaves(node: object, prefix: str = "") -> set[str]:
    """Every number's (or null's) path (ints and floats, not bools, nor the nulls of flags named is_/has_); list
    items as [i]."""
    if isinstance(node, dict):
        return set().union(*[numeric_leaves(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()
                             if not str(k).startswith(("is_", "has_"))])
    if isinstance(node, list):
        return set().union(*[numeric_leaves(v, f"{prefix}[{i}]") for i, v in enumerate(node)])
    is_number = isinstance(node, int | float) and not isinstance(node, bool)
    return {prefix} if is_number or node is None else set()


def instantiated(figures: tuple[str, ...], names: dict[str, list[str]]) -> set[str]:
    out = set()
    for figure in figures:
        variants = [figure]
        for placeholder, values in names.items():
            variants = [v.replace(placeholder, n) for v in variants for n in (values if placeholder in v else [""])]
        out |= set(variants)
    return out


# ---------------------------------------------------------------------------------------------- figures


def test_checkpoint_figures_are_exactly_the_numbers_report_writes(results):
    for checkpoint in (c for c in results["checkpoints"] if not c["is_reference"]):
        written = numeric_leaves({k: v for k, v in checkpoint.items() if k not in IDENTITY})
        subsets = list(checkpoint["rewards"]["per_subset"])
        allowed = instantiated(g.CHECKPOINT_FIGURES, {"<subset>": subsets})
        assert written == allowed, (written - allowed, allowed - written)


def test_top_figures_are_exactly_the_numbers_report_writes(results):
    written = numeric_leaves({"recommended": results["recommended"], "past_peak": results["past_peak"],
                              "fits": {"kl_quality": results["fits"]["kl_quality"]}})
    assert written == instantiated(g.TOP_FIGURES, {"<run>": list(results["past_peak"])})


def test_split_path_and_figure_errors():
    assert g.split_path("winrate.win_rate_ci[0]") == ["winrate", "win_rate_ci", 0]
    assert g.split_path("rewards.per_subset.<subset>.n") == ["rewards", "per_subset", g.WILDCARD, "n"]
    tree = g.figure_tree(g.CHECKPOINT_FIGURES)
    assert g.figure_error(["rewards", "per_subset", "helpful", "accuracy"], tree) is None
    assert "allowed: [0], [1]" in g.figure_error(["winrate", "win_rate_ci", 2], tree)
    assert "is a group" in g.figure_error(["kl", "k1"], tree)
    assert g.split_path('past_peak["beta0.1"].drop') == ["past_peak", "beta0.1", "drop"]
    assert g.join_path(["past_peak", "beta0.1", "drop"]) == 'past_peak["beta0.1"].drop'
    with pytest.raises(ValueError, match=r"cannot read .* at '\[x\]'"):
        g.split_path("winrate.win_rate_ci[x]")


# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("entry", "message"), [
    ("checkpoints[final].rewards.acuracy >= 0.6",
     "unknown key 'acuracy' after 'rewards'; allowed: n, accuracy, accuracy_ties_half"),
    ("checkpoints[final].rewards.accuracy => 0.6", "unknown operator '=>'; allowed: >=, <=, >, <, ==, !="),
    ("checkpoints[final].rewards.accuracy ge 0.6", "unknown operator 'ge'; allowed: >=, <=, >, <, ==, !="),
    ("checkpoints[last].rewards.accuracy >= 0.6", "unknown checkpoint selector 'last'; allowed: final, best, all"),
    ("rewards.accuracy >= 0.6", "write checkpoints[final].rewards.accuracy"),
    ("bogus.x >= 1", "allowed: checkpoints[SELECTOR], recommended, fits, past_peak"),
    ("checkpoints[final].kl.analytic <= 10", "'kl.analytic' is a group, not a figure; add one of: mean, se"),
    ("checkpoints[final].rewards.accuracy >= high", "threshold 'high' is not a number"),
    ("checkpoints[final].rewards.accuracy >= nan", "must be a finite number"),
    ("checkpoints[final].rewards.accuracy", "write FIGURE OPERATOR NUMBER"),
    ({"findings": "none of severity critical"}, "unknown severity 'critical'; allowed: info, warning, high"),
    ({"findings": "fewer than 2"}, "write findings: none of severity SEVERITY"),
    ({"regression": "recommended.kl may not grow by more than 1"}, "unknown direction 'grow'; allowed: drop, rise"),
    ({"regression": "recommended.kl may not rise by more than -1"}, "must be >= 0"),
    ({"check": "recommended.kl <= 1", "findings": "none of severity high"}, "give exactly one of"),
    ({"treshold": "x"}, "unknown key 'treshold'; allowed: name, check, findings, regression"),
])
def test_config_mistakes_name_the_key_and_list_the_allowed(entry, message):
    with pytest.raises(ValueError) as error:
        parse_check(entry)
    assert message in str(error.value)


def test_check_forms_parse():
    spaced = parse_check("checkpoints[final].kl.analytic.mean|kl.k1.mean <= 10")
    tight = parse_check("checkpoints[final].kl.analytic.mean|kl.k1.mean<=10")
    for check in (spaced, tight):
        assert (check.op, check.threshold, check.figure.selector) == ("<=", 10.0, "final")
        assert check.figure.alternatives == (("kl", "analytic", "mean"), ("kl", "k1", "mean"))
    step = parse_check("checkpoints[200].winrate.win_rate_ci[0]>0.5")
    assert (step.op, step.threshold, step.figure.selector) == (">", 0.5, "200")
    assert step.figure.alternatives == (("winrate", "win_rate_ci", 0),)
    relative = parse_check({"regression": "checkpoints[best].kl.k1.mean may not rise by more than 5%", "name": "kl"})
    assert (relative.name, relative.direction, relative.tolerance, relative.is_relative) == ("kl", "rise", 0.05, True)
    assert parse_check({"findings": "none of severity warning"}) == g.FindingsCheck(
        "findings: none of severity warning", "warning")
    top = parse_check('past_peak["beta0.1"].drop <= 0.1')
    assert top.figure.selector is None and top.figure.alternatives == (("past_peak", "beta0.1", "drop"),)


def test_load_gate_file_reports_the_check_number_and_reads_report_settings(tmp_path):
    good = tmp_path / "gate.yaml"
    good.write_text("checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\n  - findings: none of severity high\n"
                    "report:\n  n_samples: 2\n  temperature: 1\n")
    loaded = load_gate_file(good)
    assert len(loaded.checks) == 2 and loaded.report == {"n_samples": 2, "temperature": 1}
    cases = {"checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\n  - checkpoints[final].kl.k9.mean < 1\n":
             "check 2 (checkpoints[final].kl.k9.mean < 1): unknown figure 'kl.k9.mean': unknown key 'k9' after 'kl'; "
             "allowed: k1, k2, k3, analytic",
             "checks: []\n": "checks: must be a non-empty list",
             "chekcs:\n  - x\n": "unknown key 'chekcs'; allowed: checks, report",
             "checks:\n  - recommended.kl < 1\nreport:\n  n_sample: 2\n": "unknown report setting 'n_sample'; allowed:",
             "checks:\n  - recommended.kl < 1\nreport:\n  n_samples: two\n": "report setting n_samples: 'two' is not",
             "checks: [\n": "is not readable YAML"}
    for text, message in cases.items():
        good.write_text(text)
        with pytest.raises(UserError) as error:
            load_gate_file(good)
        assert message in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------- evaluation


def last_per_run(results: dict) -> dict[str, dict]:
    """The checkpoint of highest step in each run, by a plain loop."""
    last: dict[str, dict] = {}
    for c in results["checkpoints"]:
        if c["run"] not in last or c["step"] > last[c["run"]]["step"]:
            last[c["run"]] = c
    return last


def evaluate(results: dict, *entries: object, baseline: dict | None = None) -> list[g.CheckResult]:
    return g.evaluate_checks([parse_check(e) for e in entries], results, baseline)


def test_final_threshold_values_and_verdicts(results):
    last = last_per_run(results)
    accuracy = {run: c["rewards"]["accuracy"] for run, c in last.items()}
    between = sum(accuracy.values()) / 2  # one run above, one below (the example's runs differ)
    assert len(set(accuracy.values())) == 2
    got = evaluate(results, f"checkpoints[final].rewards.accuracy >= {between}")
    assert [(r.checkpoint, r.value, r.passed) for r in got] == [
        (f"{run}/{c['label']}", accuracy[run], accuracy[run] >= between) for run, c in last.items()]
    assert all(r.figure == "rewards.accuracy" and r.op == ">=" and r.bound == between and r.reason == "" for r in got)
    ci_low = evaluate(results, "checkpoints[final].winrate.win_rate_ci[0] >= 0.5")
    assert [r.value for r in ci_low] == [c["winrate"]["win_rate_ci"][0] for c in last.values()]
    share = evaluate(results, "checkpoints[final].drift.pairs.displacement_share <= 0.5")
    assert [r.value for r in share] == [c["drift"]["pairs"]["displacement_share"] for c in last.values()]
    assert [r.passed for r in share] == [c["drift"]["pairs"]["displacement_share"] <= 0.5 for c in last.values()]


@pytest.mark.parametrize(("op", "check"), [("==", lambda v, t: v == t), ("!=", lambda v, t: v != t),
                                           (">", lambda v, t: v > t), ("<", lambda v, t: v < t),
                                           ("<=", lambda v, t: v <= t)])
def test_every_operator_on_an_exact_value(results, op, check):
    value = last_per_run(results)[LONG]["rewards"]["n"]
    for threshold in (value - 1, value, value + 1):
        got = [r for r in evaluate(results, f"checkpoints[final].rewards.n {op} {threshold}")
               if r.checkpoint.startswith(f"{LONG}/")]
        assert got[0].passed == check(value, threshold)


def test_fallback_uses_k1_where_analytic_is_null(results):
    edited = copy.deepcopy(results)
    last = last_per_run(edited)[LONG]
    last["kl"]["analytic"] = None
    got = {r.checkpoint: r for r in evaluate(edited, "checkpoints[final].kl.analytic.mean|kl.k1.mean <= 10")}
    assert got[f"{LONG}/{NOISY_STEP}"].figure == "kl.k1.mean" and got[f"{LONG}/{NOISY_STEP}"].value == last["kl"]["k1"]["mean"]
    other = last_per_run(edited)[SHORT]
    assert got[f"{SHORT}/4"].figure == "kl.analytic.mean"
    assert got[f"{SHORT}/4"].value == other["kl"]["analytic"]["mean"]


def test_null_figure_fails_with_the_missing_reason_and_flag(unjudged):
    got = evaluate(unjudged, "checkpoints[final].winrate.win_rate_ci[0] >= 0.5")
    assert len(got) == 2 and not any(r.passed for r in got) and all(r.value is None for r in got)
    for r in got:
        assert r.reason.startswith("missing: ") and JUDGE_MISSING["why"] in r.reason
        assert JUDGE_MISSING["flag"] in r.reason
    best = evaluate(unjudged, "checkpoints[best].rewards.accuracy >= 0")
    assert len(best) == 1 and not best[0].passed and JUDGE_MISSING["flag"] in best[0].reason
    top = evaluate(unjudged, "recommended.kl <= 10")
    assert not top[0].passed and JUDGE_MISSING["why"] in top[0].reason


def test_reference_row_absent_key_and_empty_selection_fail(results):
    reference = evaluate(results, "checkpoints[0].winrate.win_rate >= 0")
    assert len(reference) == 2 and all(not r.passed and "is the reference" in r.reason for r in reference)
    older = copy.deepcopy(results)
    for c in older["checkpoints"]:
        if c["winrate"]:
            del c["winrate"]["n_unscored"]
    absent = evaluate(older, "checkpoints[final].winrate.n_unscored >= 0")
    assert all(not r.passed and "is not in results.json" in r.reason for r in absent)
    nowhere = evaluate(results, "checkpoints[7].rewards.accuracy >= 0")
    assert len(nowhere) == 1 and not nowhere[0].passed
    assert nowhere[0].reason == f"missing: no checkpoint at step 7 (steps: 0, 2, 4, {NOISY_STEP})"


def test_best_and_all_selectors(results):
    best = evaluate(results, "checkpoints[best].rewards.accuracy >= 0")
    recommended = results["recommended"]
    chosen = [c for c in results["checkpoints"] if (c["run"], c["step"]) == (recommended["run"], recommended["step"])]
    assert [(r.checkpoint, r.value) for r in best] == [(f"{recommended['run']}/{recommended['step']}",
                                                       chosen[0]["rewards"]["accuracy"])]
    every = evaluate(results, "checkpoints[all].length.mean_tokens_ratio <= 1.3")
    trained = [c for c in results["checkpoints"] if not c["is_reference"]]
    assert [(r.checkpoint, r.value) for r in every] == [(f"{c['run']}/{c['label']}", c["length"]["mean_tokens_ratio"])
                                                        for c in trained]


def test_findings_counts_the_severity_and_worse(results):
    high = [f for f in results["findings"] if f["severity"] == "high"]
    at_least_warning = [f for f in results["findings"] if f["severity"] in ("warning", "high")]
    assert high and len(at_least_warning) > len(high)
    got_high = evaluate(results, {"findings": "none of severity high"})[0]
    got_warning = evaluate(results, {"findings": "none of severity warning"})[0]
    assert (got_high.value, got_high.passed) == (len(high), False)
    assert got_warning.value == len(at_least_warning)
    assert all(f["code"] in got_high.note for f in high)
    run_level = copy.deepcopy(results)
    run_level["findings"] = [dict(high[0], step=None)]
    assert evaluate(run_level, {"findings": "none of severity high"})[0].note == (
        f"{high[0]['code']} (high) at {high[0]['run']}")
    clean = copy.deepcopy(results)
    clean["findings"] = [f for f in clean["findings"] if f["severity"] == "info"]
    assert evaluate(clean, {"findings": "none of severity warning"})[0].passed


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def drop_half_width(base: dict, now: dict) -> float:
    """Newcombe's (MOVER) lower half-width of a drop in accuracy, written out: the baseline's CI below its value
    and the new value's CI above it, combined as independent."""
    return ((base["accuracy"] - base["accuracy_ci_low"]) ** 2 + (now["accuracy_ci_high"] - now["accuracy"]) ** 2) ** 0.5


def narrow(checkpoint: dict, half_width: float = 0.01) -> None:
    """Give a checkpoint's accuracy a narrow CI around it (as on many held-out pairs)."""
    rewards = checkpoint["rewards"]
    rewards["accuracy_ci_low"], rewards["accuracy_ci_high"] = rewards["accuracy"] - half_width, rewards["accuracy"] + half_width


def test_regression_fails_on_a_drop_its_ci_puts_beyond_the_tolerance(results):
    """bound = baseline - tolerance - the drop CI's lower half-width: a drop beyond the tolerance only fails when
    its 95% CI lies wholly past it (before: the point estimates alone decided)."""
    new, baseline = copy.deepcopy(results), copy.deepcopy(results)
    for c in [*last_per_run(new).values(), *last_per_run(baseline).values()]:
        narrow(c)  # +- 0.01 on each side: the change's CI is +- 0.0141
    last_base = last_per_run(baseline)
    for run, shift in ((LONG, 0.05), (SHORT, 0.01)):  # LONG lost 0.05: CI [0.036, 0.064], wholly beyond 0.02
        for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high"):  # SHORT lost 0.01: within 0.02
            last_base[run]["rewards"][key] += shift
    check = {"regression": "checkpoints[final].rewards.accuracy may not drop by more than 0.02"}
    got = {r.checkpoint.partition("/")[0]: r for r in evaluate(new, check, baseline=baseline)}
    for run, passed in ((LONG, False), (SHORT, True)):
        base, now = last_base[run]["rewards"], last_per_run(new)[run]["rewards"]
        half = drop_half_width(base, now)
        assert half == pytest.approx(0.01 * 2 ** 0.5)
        assert got[run].op == ">=" and got[run].bound == pytest.approx(base["accuracy"] - 0.02 - half, abs=1e-12)
        assert got[run].value == now["accuracy"] and got[run].passed is passed
        assert f"baseline {base['accuracy']:.6g}" in got[run].note and "95% CI" in got[run].note
    assert "beyond the tolerance" in got[LONG].note


def test_regression_within_a_wide_ci_is_inconclusive_and_passes(results):
    """The real tiny results' accuracy CIs (Wilson, asymmetric) are wide: the same 0.05 drop is not shown beyond 0.02."""
    baseline = copy.deepcopy(results)
    base = last_per_run(baseline)[LONG]["rewards"]
    base["accuracy"] += 0.05
    (got,) = [r for r in evaluate(results, {"regression": "checkpoints[final].rewards.accuracy may not drop by more "
                                                          "than 0.02"}, baseline=baseline) if r.checkpoint.startswith(LONG)]
    now = last_per_run(results)[LONG]["rewards"]
    half = drop_half_width(base, now)
    assert half > 0.1 and got.passed and got.is_inconclusive and "inconclusive" in got.note
    assert got.bound == pytest.approx(base["accuracy"] - 0.02 - half)
    table = format_table([got]).splitlines()  # a passing row, yet its note is shown under it
    assert table[-2].startswith("    -> baseline") and "inconclusive" in table[-2]
    assert table[-1] == "gate passed: 1 of 1 checks passed (1 inconclusive: no regression shown, none ruled out)"


def test_regression_of_a_figure_without_an_se_compares_point_estimates(results):
    baseline = copy.deepcopy(results)
    for c in last_per_run(baseline).values():
        c["length"]["mean_tokens_ratio"] -= 0.2  # the new run's answers are 0.2 longer relative to the reference
    got = evaluate(results, {"regression": "checkpoints[final].length.mean_tokens_ratio may not rise by more than "
                                           "0.1"}, baseline=baseline)
    for r, c in zip(got, last_per_run(baseline).values()):
        assert r.op == "<=" and r.bound == pytest.approx(c["length"]["mean_tokens_ratio"] + 0.1) and not r.passed
        assert "point estimates" in r.note


def test_a_relative_tolerance_is_times_the_baseline_and_the_kl_se_counts(results):
    baseline = copy.deepcopy(results)
    relative = evaluate(results, {"regression": "checkpoints[final].kl.k1.mean may not rise by more than 10%"},
                        baseline=baseline)
    for r, base, now in zip(relative, last_per_run(baseline).values(), last_per_run(results).values()):
        se = (base["kl"]["k1"]["se"] ** 2 + now["kl"]["k1"]["se"] ** 2) ** 0.5
        assert r.op == "<=" and r.bound == pytest.approx(base["kl"]["k1"]["mean"] * 1.1 + Z95 * se) and r.passed


def test_regression_pairs_a_lone_baseline_run_and_fails_without_a_partner(results):
    baseline = copy.deepcopy(results)
    baseline["checkpoints"] = [dict(c, run="old") for c in baseline["checkpoints"] if c["run"] == SHORT]
    got = evaluate(results, {"regression": "checkpoints[final].rewards.accuracy may not drop by more than 0"},
                   baseline=baseline)
    old = last_per_run(baseline)["old"]["rewards"]
    for r, now in zip(got, last_per_run(results).values()):
        assert r.bound == pytest.approx(old["accuracy"] - drop_half_width(old, now["rewards"])) and "at old/4" in r.note
    two = copy.deepcopy(results)
    for c in two["checkpoints"]:
        c["run"] = "x" + c["run"]
    unmatched = evaluate(results, {"regression": "checkpoints[final].rewards.accuracy may not drop by more than 0"},
                         baseline=two)
    assert all(not r.passed and r.reason.startswith("missing: the baseline has no checkpoint") for r in unmatched)
    with pytest.raises(ValueError, match="baseline"):
        evaluate(results, {"regression": "recommended.kl may not rise by more than 1"})


# ---------------------------------------------------------------------------------------------- rendering


def test_table_and_markdown_show_every_row(unjudged):
    got = evaluate(unjudged, "checkpoints[final].rewards.accuracy >= 0", "checkpoints[final].winrate.win_rate >= 0.5",
                   {"name": "a|b", "check": "checkpoints[final].kl.k1.mean <= 100"})
    table = format_table(got)
    assert table.splitlines()[-1] == f"gate FAILED: {sum(r.passed for r in got)} of {len(got)} checks passed"
    assert table.count("FAIL") == 3 and table.count(JUDGE_MISSING["why"]) == 2  # two rows + headline
    markdown = format_markdown(got, "out/results.json")
    rows = [line for line in markdown.splitlines() if line.startswith("| ✅") or line.startswith("| ❌")]
    assert len(rows) == len(got) and all(line.count(" | ") == 6 for line in rows)  # "a|b" escaped, not a column
    assert "a\\|b" in markdown


# ---------------------------------------------------------------------------------------------- the report


def test_needed_steps_asks_the_report_only_for_what_the_checks_select():
    from dpo_eval.gate.run import needed_steps

    def steps(*entries):
        return needed_steps(tuple(parse_check(e) for e in entries))

    assert steps("checkpoints[final].rewards.accuracy >= 0.6") == "final"
    assert steps("checkpoints[final].rewards.accuracy >= 0.6", "checkpoints[200].kl.k1.mean < 5",
                 "checkpoints[50].kl.k1.mean < 5", {"regression": "checkpoints[200].kl.k1.mean may not rise by more than 1"}
                 ) == "50,200,final"
    for every in ("checkpoints[best].rewards.accuracy >= 0.6", "checkpoints[all].rewards.accuracy >= 0.6",
                  "recommended.kl < 5", {"findings": "none of severity high"}):
        assert steps("checkpoints[final].rewards.accuracy >= 0.6", every) is None


def test_report_config_takes_the_file_settings_and_the_flags_win(tmp_path):
    from dpo_eval.gate.run import GateConfig, report_config

    config_file = tmp_path / "gate.yaml"
    config_file.write_text("checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\n"
                           "report:\n  n_samples: 2\n  judge: rule:a:b\n  allow_pickle: true\n")
    loaded = load_gate_file(config_file)
    plain = report_config(GateConfig(target="run", config=str(config_file)), loaded)
    assert (plain.run_dirs, plain.n_samples, plain.judge, plain.steps, plain.models.allow_pickle) == (
        ("run",), 2, "rule:a:b", "final", True)
    flagged = report_config(GateConfig(target="run", config=str(config_file), judge="gold:x.jsonl", out="o",
                                       show_progress=False), loaded)
    assert (flagged.judge, flagged.out, flagged.show_progress, flagged.models.allow_pickle) == ("gold:x.jsonl", "o", False,
                                                                                         True)
    config_file.write_text("checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\nreport:\n  n_samples: 0\n")
    with pytest.raises(UserError, match="--n-samples"):
        report_config(GateConfig(target="run", config=str(config_file)), load_gate_file(config_file))


def test_the_report_block_takes_the_loading_settings_flat_and_the_flags_win(tmp_path):
    """A gate file's `report:` keeps ReportConfig's flat keys: the loading ones land in ReportConfig.models
    (ModelLoading), listed in their old place among the allowed keys; `models:` itself is no key."""
    from dpo_eval.gate.run import GateConfig, report_config
    from dpo_eval.model_settings import ModelLoading

    config_file = tmp_path / "gate.yaml"
    checks = "checks:\n  - checkpoints[final].rewards.accuracy >= 0.6\n"
    config_file.write_text(checks + "report:\n  token_budget: 64\n  device: cpu\n  dtype: float32\n"
                           "  cache_dir: c\n  trust_remote_code: true\n")
    loaded = load_gate_file(config_file)
    plain = report_config(GateConfig(target="run", config=str(config_file)), loaded)
    assert plain.models == ModelLoading(token_budget=64, device="cpu", dtype="float32", cache_dir="c",
                                        trust_remote_code=True)
    flagged = report_config(GateConfig(target="run", config=str(config_file), cache_dir="d", allow_pickle=True), loaded)
    assert flagged.models == ModelLoading(token_budget=64, device="cpu", dtype="float32", cache_dir="d",
                                          trust_remote_code=True, allow_pickle=True)
    assert report_config(GateConfig(target="run", config=str(config_file), trust_remote_code=True),
                         load_gate_file(config_file)).models.trust_remote_code
    cases = {"models: {device: cpu}": "unknown report setting 'models'; allowed: ref, data, ",
             "n_sample: 2": ", batch_size, token_budget, device, dtype, cache_dir, trust_remote_code, allow_pickle, "
                            "show_progress, render, ",
             "device: 3": "report setting device: 3 is not a <class 'str'>",
             "token_budget: x": "report setting token_budget: 'x' is not a int | None"}
    for text, message in cases.items():
        config_file.write_text(checks + f"report:\n  {text}\n")
        with pytest.raises(UserError) as error:
            load_gate_file(config_file)
        assert message in str(error.value)
    config_file.write_text(checks + "report:\n  token_budget: 0\n")
    with pytest.raises(UserError, match="--token-budget must be at least 1, got 0; leave it out for the default"):
        report_config(GateConfig(target="run", config=str(config_file)), load_gate_file(config_file))


def test_the_example_gate_yaml_holds_the_issue_examples():
    loaded = load_gate_file(Path(__file__).resolve().parent.parent / "data" / "gate.yaml")
    figures = {c.figure.text for c in loaded.checks if hasattr(c, "figure")}
    assert {"checkpoints[final].rewards.accuracy", "checkpoints[final].winrate.win_rate_ci[0]",
            "checkpoints[final].kl.analytic.mean|kl.k1.mean", "checkpoints[final].length.mean_tokens_ratio",
            "checkpoints[final].drift.pairs.displacement_share"} <= figures
    assert g.FindingsCheck("findings: none of severity high", "high") in loaded.checks
    assert any(isinstance(c, g.RegressionCheck) for c in loaded.checks)


@pytest.mark.parametrize("stage, nulled, figure", [
    ("score", "rewards", "rewards.accuracy"), ("score", "drift", "drift.pairs.chosen.total.mean"),
    ("samples", "kl", "kl.k1.mean"), ("kl", "kl.analytic", "kl.analytic.mean"),
    ("samples", "length", "length.checkpoint.mean_tokens"),
    ("unseen", "drift.dispersion.reference_samples", "drift.dispersion.reference_samples.total.mean"),
])
def test_a_figure_of_a_stage_not_run_says_which_stage(results, stage, nulled, figure):
    """`report --stages` leaves a stage's figures null and names the stage in `missing` (assemble's words):
    the gate's reason names that stage and its flag, never "its `missing` list gives no reason"."""
    from dpo_eval.evaluation.assemble import STAGE_FIGURES

    edited = copy.deepcopy(results)
    *parents, last = nulled.split(".")
    for checkpoint in edited["checkpoints"]:
        node = checkpoint
        for key in parents:
            node = node[key] if node is not None else None
        if node is not None:  # (a section already null stays null)
            node[last] = None
    why = f"the {stage} stage was not run (--stages x)"
    edited["missing"] = [{"what": STAGE_FIGURES[stage], "why": why, "flag": f"--stages with {stage}"}]
    got = evaluate(edited, f"checkpoints[final].{figure} >= 0")
    assert got and all(not r.passed and r.value is None for r in got)
    assert all(why in r.reason and f"--stages with {stage}" in r.reason for r in got), [r.reason for r in got]
