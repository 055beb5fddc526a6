"""`dpo-eval gate`: check the figures of a results.json against thresholds, for CI.

    TARGET ─► results.json | its folder ──────────────────────────────────────┐
           └► RUN_DIR | CHECKPOINT ─► dpo_eval.evaluation.pipeline.report ─► OUT/results.json
    gate.yaml (checked first, before any model loads) ─► metrics.gate.evaluate_checks ─► table,
           JUnit XML (--junit), Markdown appended to $GITHUB_STEP_SUMMARY

Exit codes (EXIT_*, as pytest's): 0 every check passed, 1 a check failed, 2 bad input (one line: a
UserError or a usage error), 3 internal error (one line naming the error and the file its traceback was
written to; dpo_eval.cli.gate).

For a RUN_DIR or CHECKPOINT the report runs through its run store (a rerun computes nothing it has), with
the gate's --ref/--data/--prompts/--judge/--out/--cache-dir and the file's `report:` and `thresholds:`
settings. Without --out it writes its own results folder, RUN_DIR/.dpo_eval/gate, and shares only the run
store RUN_DIR/.dpo_eval/store with `dpo-eval report` (never the report's results.json or report.html).
When every check selects `final` or step numbers, only those checkpoints are evaluated (`--steps`; step 0
is the reference row, which every report has); `best`, `all`, findings and top-scope figures need every
checkpoint. Likewise only the report stages the checks' figures
need are run (`--stages`, FIGURE_STAGES: a reward-accuracy gate scores the pairs and never samples or
judges); a findings check needs every stage (any stage can raise a finding), `best` and top-scope figures
the KL-vs-quality fit's (score, kl, judge). A `report: stages:` in the gate file wins.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.evaluation.config import STAGES, ReportConfig, resolve_stages
from dpo_eval.gate.config import EXIT_FAILED, EXIT_PASSED, GateConfig
from dpo_eval.gate.file import GateFile, load_gate_file
from dpo_eval.jsonio import write_text_atomic
from dpo_eval.metrics.gate import Check, CheckResult, FindingsCheck, Key, RegressionCheck, evaluate_checks
from dpo_eval.metrics.gate_baseline import incomparable_fields
from dpo_eval.model_settings import pop_model_loading
from dpo_eval.reports.schema import RESULTS_SCHEMA_VERSION, schema_errors

RESULTS = "results.json"
REPORT_FLAGS = ("ref", "data", "prompts", "judge", "out", "cache_dir")
"""GateConfig fields passed to the report as they are (when given)."""
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
FIGURE_STAGES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("rewards",): ("score",), ("offpolicy",): ("score",),
    ("winrate",): ("judge",), ("quality",): ("judge",),
    ("kl",): ("samples",), ("kl", "analytic"): ("kl",),
    ("length",): ("samples",), ("length", "pair_reward_length"): ("score", "samples"),
    ("length", "lc_gap"): ("judge",),
    ("drift",): ("score",), ("drift", "dispersion", "reference_samples"): ("score", "unseen"),
    ("drift", "dispersion", "other_prompts"): ("score", "unseen"), ("drift", "dispersion", "entropy"): ("score", "entropy"),
}
"""Report stages a checkpoint figure needs, by the longest matching key prefix (what each stage needs, e.g.
the samples of kl and judge, is added by resolve_stages). k1/k2/k3 come from the samples' log-probs, the
analytic KL from the kl pass; drift is null without the pairs (score), its dispersion needs unseen/entropy."""
FIT_STAGES = ("score", "kl", "judge")
"""Top-scope figures and the `best` selector: the KL-vs-quality fit (quality, KL, implicit reward)."""
GATE_FOLDER = "gate"
"""The gate's own results folder inside the report's default one (RUN_DIR/.dpo_eval/gate)."""
REFERENCE_STEP = "0"
"""The step selector of the reference rows: every report has them, whatever --steps picks."""


@dataclass(frozen=True)
class GateOutcome:
    results_path: Path
    checks: tuple[CheckResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def is_passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_PASSED if self.is_passed else EXIT_FAILED


def load_results(path: str | Path, what: str) -> tuple[Path, dict]:
    """A results.json (or the folder holding one), of this schema version and valid; UserError otherwise."""
    given = Path(path)
    file = given / RESULTS if given.is_dir() else given
    if not file.is_file():
        raise UserError(f"{what} {path}: no {RESULTS} there: pass a results.json written by `dpo-eval report` "
                        "or its folder")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{what} {file} is not readable JSON ({error}): rerun `dpo-eval report`") from None
    version = document.get("schema_version") if isinstance(document, dict) else None
    if version != RESULTS_SCHEMA_VERSION:
        raise UserError(f"{what} {file} has schema_version {version!r}, this dpo-eval reads "
                        f"{RESULTS_SCHEMA_VERSION}: rerun `dpo-eval report` with this version")
    errors = schema_errors(document)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{what} {file} does not match the results schema: {errors[0]}{more}")
    return file, document


def is_results_target(target: str) -> bool:
    """True for results.json or a folder holding one; False for a run dir or checkpoint folder."""
    path = Path(target)
    if not path.exists():
        raise UserError(f"{target} does not exist: pass results.json, its folder, a run dir or a checkpoint folder")
    if path.is_file():
        if path.suffix != ".json":
            raise UserError(f"{target} is a file but not a .json results file: pass results.json, its folder, "
                            "a run dir or a checkpoint folder")
        return True
    return (path / RESULTS).is_file()


def needed_steps(checks: tuple[Check, ...], has_step_0: bool = False) -> str | None:
    """The report's --steps for these checks: their step numbers and `final`, or None for every checkpoint.

    Step 0 selects the reference rows, which every report has: it is asked for only when a run has a
    trained checkpoint at step 0 (has_step_0); a gate on step 0 alone evaluates `final` (a report needs a
    checkpoint) and reads the reference rows.
    """
    selectors = []
    for check in checks:
        selector = None if isinstance(check, FindingsCheck) else check.figure.selector
        if selector is None or selector in ("best", "all"):
            return None
        selectors.append(selector)
    steps = {s for s in selectors if s != REFERENCE_STEP or has_step_0} or {"final"}
    return ",".join(sorted(steps, key=lambda s: (s == "final", int(s) if s.isdigit() else 0)))


def _has_step_0(target: str, checks: tuple[Check, ...]) -> bool:
    """Whether a check selects step 0 and a run of the target has a trained checkpoint labelled 0."""
    if not any(getattr(c, "figure", None) and c.figure.selector == REFERENCE_STEP for c in checks):
        return False
    from dpo_eval.evaluation.discover import available_steps, discover_runs

    return any(REFERENCE_STEP in available_steps(run) for run in discover_runs([target]))


def figure_stages(keys: tuple[Key, ...]) -> tuple[str, ...]:
    """The stages a checkpoint figure's key path needs (FIGURE_STAGES, longest prefix); every stage when
    no prefix matches (a figure added to the metrics without an entry here: run everything, never less)."""
    for length in range(len(keys), 0, -1):
        found = FIGURE_STAGES.get(tuple(keys[:length]))  # type: ignore[arg-type]
        if found is not None:
            return found
    return STAGES


def needed_stages(checks: tuple[Check, ...]) -> tuple[str, ...] | None:
    """The report's --stages for these checks (with what they need), or None when every stage is needed."""
    wanted: set[str] = set()
    for check in checks:
        if isinstance(check, FindingsCheck):
            return None
        figure = check.figure
        if figure.selector in (None, "best"):
            wanted.update(FIT_STAGES)
        if figure.selector is not None:
            wanted.update(stage for keys in figure.alternatives for stage in figure_stages(keys))
    stages = resolve_stages(tuple(s for s in STAGES if s in wanted))
    return None if stages == STAGES else stages


def _check_file_stages(where: str, stages: tuple[str, ...] | None, checks: tuple[Check, ...]) -> None:
    """The config's own `report: stages:` must run every stage its checks need (else they fail as null)."""
    ran = set(resolve_stages(stages))
    for check in checks:
        needed = needed_stages((check,))
        left_out = [s for s in (needed or STAGES) if s not in ran]
        if left_out:
            raise UserError(f"--config {where}: report: stages leave out {', '.join(left_out)}, which check "
                            f"{check.name!r} needs: add it to stages or drop the stages setting")


def report_config(config: GateConfig, gate_file: GateFile) -> ReportConfig:
    """The report of config.target: the file's `report:` settings, then the gate's flags (which win)."""
    settings = dict(gate_file.report)
    settings.update({name: getattr(config, name) for name in REPORT_FLAGS if getattr(config, name) is not None})
    for flag in ("trust_remote_code", "allow_pickle"):
        settings[flag] = settings.get(flag, False) or getattr(config, flag)
    settings["show_progress"] = settings.get("show_progress", True) and config.show_progress
    if "out" not in settings:  # its own results folder; the report's run store shared
        from dpo_eval.evaluation.plan import default_out

        report_out = default_out(ReportConfig(run_dirs=(config.target,)))
        settings["out"] = str(report_out / GATE_FOLDER)
        settings.setdefault("store", str(report_out / "store"))
    if gate_file.thresholds is not None:
        settings["thresholds"] = gate_file.thresholds
    if "steps" not in settings:
        settings["steps"] = needed_steps(gate_file.checks, _has_step_0(config.target, gate_file.checks))
    if "stages" not in settings:
        settings["stages"] = needed_stages(gate_file.checks)
    else:
        _check_file_stages(config.config, settings["stages"], gate_file.checks)
    report = ReportConfig(run_dirs=(config.target,), models=pop_model_loading(settings), **settings)
    report.validate()
    return report


def _check_flags(config: GateConfig, gate_file: GateFile, is_results: bool) -> None:
    """Flags that cannot apply: a regression check without --baseline, report flags on a results file."""
    if any(isinstance(c, RegressionCheck) for c in gate_file.checks) and config.baseline is None:
        names = [c.name for c in gate_file.checks if isinstance(c, RegressionCheck)]
        raise UserError(f"--config {config.config}: {names[0]!r} compares with a baseline: pass --baseline OLD.json")
    given = [f"--{name.replace('_', '-')}" for name in REPORT_FLAGS if getattr(config, name) is not None]
    if is_results and given:
        verb = "apply" if len(given) > 1 else "applies"
        raise UserError(f"{', '.join(given)} {verb} only when the target is a run dir or checkpoint; "
                        f"{config.target} is a results file: drop the flag or pass the run dir")


def _check_thresholds(config: GateConfig, gate_file: GateFile, results: dict) -> None:
    """A results file's findings were made with its own thresholds: the file's `thresholds:` must match."""
    if gate_file.thresholds is None:
        return
    wanted = dataclasses.asdict(gate_file.thresholds)
    used = (results.get("provenance") or {}).get("thresholds") or {}
    differ = [f"{k} ({used.get(k, 'not recorded')} there, {float(v)} here)" for k, v in wanted.items()
              if used.get(k) != v]
    if differ:
        raise UserError(f"--config {config.config}: thresholds: differ from those {config.target} was made with: "
                        f"{', '.join(differ)}; rerun `dpo-eval report --thresholds FILE`, or gate the run dir")


def _baseline_caveat(config: GateConfig, gate_file: GateFile, results: dict, baseline: dict | None) -> str:
    """'' for a comparable baseline (or none); UserError for one made otherwise, unless allow_incomparable."""
    if baseline is None or not any(isinstance(c, RegressionCheck) for c in gate_file.checks):
        return ""
    differ = incomparable_fields(results, baseline)
    if not differ:
        return ""
    if not gate_file.allow_incomparable:
        raise UserError(f"--baseline {config.baseline} was made otherwise than the results: {'; '.join(differ)}; "
                        "a regression compares like with like: remake the baseline with the same pairs, prompts, "
                        f"judge, β, reference and sampling, or set allow_incomparable: true in {config.config}")
    return f"baseline not comparable (allow_incomparable: true): {'; '.join(differ)}"


def _results(config: GateConfig, gate_file: GateFile, is_results: bool) -> tuple[Path, dict, tuple[str, ...]]:
    if is_results:
        return (*load_results(config.target, "results"), ())
    from dpo_eval.evaluation.pipeline import report

    result = report(report_config(config, gate_file))
    return (*load_results(result.out / RESULTS, "the report's results"), result.notes)


def write_outputs(config: GateConfig, outcome: GateOutcome) -> None:
    """--junit XML, and the Markdown summary appended to --step-summary or $GITHUB_STEP_SUMMARY."""
    from dpo_eval.reports.gate_summary import format_markdown
    from dpo_eval.reports.junit import render_junit

    if config.junit:
        try:
            Path(config.junit).parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(config.junit, render_junit(outcome.checks))
        except OSError as error:
            raise UserError(f"cannot write --junit {config.junit} ({error}): pass a writable path") from None
    summary = config.step_summary or os.environ.get(STEP_SUMMARY_ENV)
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(format_markdown(outcome.checks, str(outcome.results_path)))
        except OSError as error:
            raise UserError(f"cannot append the summary to {summary} ({error}): check {STEP_SUMMARY_ENV}") from None


def gate(config: GateConfig) -> GateOutcome:
    """Check config.target against config.config; write --junit and the step summary; return the outcome.

    Every input is checked (config, flags, baseline) before a model loads; problems raise UserError.
    """
    gate_file = load_gate_file(config.config)
    is_results = is_results_target(config.target)
    _check_flags(config, gate_file, is_results)
    baseline = None if config.baseline is None else load_results(config.baseline, "--baseline")[1]
    path, results, notes = _results(config, gate_file, is_results)
    if is_results:
        _check_thresholds(config, gate_file, results)
    caveat = _baseline_caveat(config, gate_file, results, baseline)
    outcome = GateOutcome(path, tuple(evaluate_checks(gate_file.checks, results, baseline, caveat)),
                          (*notes, *([caveat] if caveat else [])))
    write_outputs(config, outcome)
    return outcome


__all__ = ["GateConfig", "GateOutcome", "gate", "load_results"]
