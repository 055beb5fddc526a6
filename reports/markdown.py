"""report.md: a short summary for a pull-request comment (recommendation, verdicts, findings, a table).

Strings from the results have <, > and & escaped (GitHub renders inline HTML in Markdown) and pipes in table
cells are escaped, so no data can break out of its cell or inject markup.
"""

from __future__ import annotations

import html

from dpo_eval.reports import rounds, view
from dpo_eval.reports.verdict import recommendation, run_verdicts
from dpo_eval.reports.view import fmt, fmt_pm, fmt_rate

SEVERITY_MARK = {"high": "**HIGH**", "warning": "**warning**", "info": "info"}


def md(value: object) -> str:
    """Text safe inside Markdown: <, > and & escaped (no attribute is written, so quotes stay), one line."""
    return html.escape(str(value), quote=False).replace("\n", " ")


def cell(value: object) -> str:
    return md(value).replace("|", "\\|")


def render_markdown(results: dict) -> str:
    """The whole report.md as a string."""
    parts = ["# dpo-eval report", ""]
    parts += [f"- {md(view.trained_with(r))}" for r in results.get("runs", [])]
    parts += ["", _recommended(results), "", "## Is my run broken?", ""]
    verdicts = [f"- **{md(view.checkpoint_name(results, v.run, v.step))}**: {md(v.headline)}"
                for v in run_verdicts(results)]
    parts += verdicts or ["- no data"]
    parts += ["", "## Findings", ""] + _findings(results)
    parts += ["", "## Checkpoints", ""] + checkpoint_rows(results)
    parts += _loop_rounds(results)
    missing = results.get("missing", [])
    if missing:
        parts += ["", "## Missing", ""]
        parts += [f"- {md(m['what'])}: {md(m['why'])} (add {md(m['flag'])})" for m in missing]
    return "\n".join(parts) + "\n"


def _recommended(results: dict) -> str:
    rec = results.get("recommended")
    if not rec:
        reason = view.dig(results, "fits", "reason") or "no quality figure"
        return f"**Recommended checkpoint:** none ({md(reason)})."
    return f"**Recommended checkpoint:** {md(recommendation(results))}"


def _findings(results: dict) -> list[str]:
    found = view.sorted_findings(results.get("findings", []))
    if not found:
        return ["No finding fired."]
    lines = []
    for f in found:
        where = view.checkpoint_name(results, f.get("run") or "", f["step"]) if f.get("step") is not None else "the run"
        mark = SEVERITY_MARK.get(f.get("severity"), md(f.get("severity")))
        lines.append(f"- {mark} {md(f.get('title', ''))}"
                     f" ({md(where)}): {md(f.get('message', ''))} _Try:_ {md(f.get('advice', ''))}")
    return lines


def checkpoint_rows(results: dict) -> list[str]:
    """The per-checkpoint Markdown table: header, separator, one row per checkpoint."""
    estimator = view.kl_estimator(results)
    headers = ["run", "step", "accuracy [95% CI]", "margin ± SE", "chosen fell on", f"KL ({estimator}) ± SE", "length ratio",
               "win rate [95% CI]", "LC win rate [95% CI]"]
    has_rounds = view.has_rounds(results)  # a loop run is in the report: a round column after the step
    headers = [*headers[:2], "round", *headers[2:]] if has_rounds else headers
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for c in results.get("checkpoints", []):
        rewards, rate = c.get("rewards") or {}, c.get("winrate") or {}
        drift = view.pair_drift(c) or {}
        values = [c["run"], f"{c['step']}{' (reference)' if view.is_reference(c) else ''}",
                  *(["—", "—"] if view.is_reference(c) else  # rewards against itself: 0 by definition
                    [view.reward_accuracy_text(rewards), view.margin_text(rewards)]),
                  fmt(drift.get("displacement_share"), ".0%"),
                  fmt_pm(view.dig(c, "kl", estimator, "mean"), view.dig(c, "kl", estimator, "se")),
                  fmt(view.length_figure(c, "mean_tokens_ratio"), ".2f"),
                  fmt_rate(rate, "win_rate"), fmt_rate(rate, "lc_win_rate")]
        values = [*values[:2], view.round_cell(c), *values[2:]] if has_rounds else values
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return lines


def _loop_rounds(results: dict) -> list[str]:
    """The per-round section of each `dpo-eval loop` run (reports.rounds); nothing without one."""
    runs = view.loop_runs(results)
    if not runs:
        return []
    lines = ["", "## Loop rounds", "", md(rounds.intro(results))]
    for run in runs:
        lines += ["", f"{md(rounds.run_caption(run))}", "", "| " + " | ".join(rounds.HEADERS) + " |",
                  "|" + "---|" * len(rounds.HEADERS)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rounds.round_rows(run)]
    return lines
