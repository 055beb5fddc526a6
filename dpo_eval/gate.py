"""`dpo-eval gate`: check the figures of a results.json against thresholds, for CI.

    TARGET ─► results.json | its folder ──────────────────────────────────────┐
           └► RUN_DIR | CHECKPOINT ─► dpo_eval.report.pipeline.report ─► OUT/results.json
    gate.yaml (checked first, before any model loads) ─► metrics.gate.evaluate_checks ─► table,
           JUnit XML (--junit), Markdown appended to $GITHUB_STEP_SUMMARY; exit 0 pass / 1 fail / 2 input

For a RUN_DIR or CHECKPOINT the report runs through its run store (a rerun computes nothing it has), with
the gate's --ref/--data/--prompts/--judge/--out/--cache-dir and the file's `report:` settings. When every
check selects `final` or step numbers, only those checkpoints are evaluated (`--steps`); `best`, `all`,
findings and top-scope figures need every checkpoint. Likewise only the report stages the checks' figures
need are run (`--stages`, FIGURE_STAGES: a reward-accuracy gate scores the pairs and never samples or
judges); a findings check needs every stage (any stage can raise a finding), `best` and top-scope figures
the KL-vs-quality fit's (score, kl, judge). A `report: stages:` in the gate file wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.gate_config import GateConfig
from dpo_eval.gate_file import GateFile, load_gate_file
from dpo_eval.jsonio import write_text_atomic
from dpo_eval.metrics.gate import Check, CheckResult, FindingsCheck, Key, RegressionCheck, evaluate_checks
from dpo_eval.report.config import STAGES, ReportConfig, resolve_stages
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
        return 0 if self.is_passed else 1


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


def needed_steps(checks: tuple[Check, ...]) -> str | None:
    """The report's --steps for these checks: their step numbers and `final`, or None for every checkpoint."""
    selectors = []
    for check in checks:
        selector = None if isinstance(check, FindingsCheck) else check.figure.selector
        if selector is None or selector in ("best", "all"):
            return None
        selectors.append(selector)
    return ",".join(sorted(set(selectors), key=lambda s: (s == "final", int(s) if s.isdigit() else 0)))


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
    if "steps" not in settings:
        settings["steps"] = needed_steps(gate_file.checks)
    if "stages" not in settings:
        settings["stages"] = needed_stages(gate_file.checks)
    else:
        _check_file_stages(config.config, settings["stages"], gate_file.checks)
    report = ReportConfig(run_dirs=(config.target,), **settings)
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


def _results(config: GateConfig, gate_file: GateFile, is_results: bool) -> tuple[Path, dict, tuple[str, ...]]:
    if is_results:
        return (*load_results(config.target, "results"), ())
    from dpo_eval.report.pipeline import report

    result = report(report_config(config, gate_file))
    return (*load_results(result.out / RESULTS, "the report's results"), result.notes)


def write_outputs(config: GateConfig, outcome: GateOutcome) -> None:
    """--junit XML, and the Markdown summary appended to --step-summary or $GITHUB_STEP_SUMMARY."""
    from dpo_eval.reports.gate_summary import format_markdown
    from dpo_eval.reports.junit import render_junit

    if config.junit:
        Path(config.junit).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(config.junit, render_junit(outcome.checks))
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
    outcome = GateOutcome(path, tuple(evaluate_checks(gate_file.checks, results, baseline)), notes)
    write_outputs(config, outcome)
    return outcome


__all__ = ["GateConfig", "GateOutcome", "gate", "load_results"]
