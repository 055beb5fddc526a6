"""report.html: one self-contained page (inline CSS, PNGs as data URIs, no script, no external URL).

Order: the recommended checkpoint and why (one sentence with its figures); the key figures of every
checkpoint; findings by severity; "is my run broken?" per run; plots;
per-checkpoint tables (a round column when a `dpo-eval loop` run is in the report); each loop run's rounds;
worst examples with their text; what is missing and the flag that adds it;
provenance. Every string from the results or the tables is escaped with html.escape(quote=True).
"""

from __future__ import annotations

import base64
import json

from dpo_eval.reports import rounds, view
from dpo_eval.reports.html_tables import (
    esc,
    key_figures_table,
    rewards_table,
    samples_table,
    table,
    worst_examples,
)
from dpo_eval.reports.plots import Plot
from dpo_eval.reports.tables import Tables
from dpo_eval.reports.verdict import BACKGROUND, recommendation, run_verdicts
from dpo_eval.reports.view import fmt

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       margin: 0 auto; max-width: 960px; padding: 1.5em; line-height: 1.45; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta { color: #555; font-size: 0.9em; }
.box { border: 1px solid #ccc; border-left: 6px solid #0072B2; padding: 0.6em 1em; margin: 1em 0;
       background: #f7fbff; }
.finding { border-left: 6px solid #999; padding: 0.1em 0.9em; margin: 0.5em 0; background: #fafafa; }
.finding p { margin: 0.35em 0; }
.sev-high { border-left-color: #D55E00; }
.sev-warning { border-left-color: #E69F00; }
.sev-info { border-left-color: #56B4E9; }
.badge { display: inline-block; font-size: 0.75em; font-weight: 700; padding: 0.1em 0.5em; border-radius: 3px;
         color: #fff; background: #666; margin-right: 0.5em; letter-spacing: 0.04em; }
.badge.sev-high { background: #B34700; }
.badge.sev-warning { background: #8a5a00; }
.badge.sev-info { background: #005a8c; }
.verdict-ok { border-left-color: #009E73; }
.verdict-look { border-left-color: #E69F00; }
.verdict-broken { border-left-color: #D55E00; }
.advice { font-style: italic; }
.nums { font-family: ui-monospace, monospace; font-size: 0.85em; color: #333; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.45em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
table.numbers td { font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
pre.text { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: 0.5em;
           margin: 0.2em 0 0.6em; font-size: 0.85em; max-height: 18em; overflow: auto; }
.example { border: 1px solid #e3e3e3; padding: 0.3em 0.8em; margin: 0.8em 0; }
.label { margin: 0.3em 0 0; font-weight: 600; }
"""


KEY_LEGEND = ("Each figure ± its standard error, or [its 95% confidence interval], shown to the precision that "
              "uncertainty supports. Reward accuracy and margin on the held-out pairs (implicit reward β·Δ log π); "
              "KL and length on the checkpoint's own samples; win rates from the judge against the reference's "
              "samples. ★ recommended checkpoint.")
LEGEND = ("★ recommended checkpoint. r: implicit reward β·Δ log π; Δ: change of log π against the reference; "
          "quality: the figure the KL-quality fit uses.")


def render_html(results: dict, tables: Tables, plots: list[Plot], skipped_plots: list[str]) -> str:
    """The whole page as a string."""
    sections = [
        _header(results), _recommended(results),
        _section("Key figures", key_figures_table(results) + f'<p class="meta">{esc(KEY_LEGEND)}</p>'),
        _findings(results), _verdicts(results),
        _section("Plots", "".join(_figure(p) for p in plots) or "<p>No plot has data.</p>"),
        _section("Checkpoints", "<h3>Held-out pairs</h3>" + rewards_table(results)
                 + "<h3>Samples</h3>" + samples_table(results)
                 + f"<p class=\"meta\">{esc(LEGEND)}</p>"),
        _loop_rounds(results), _section("Worst examples", worst_examples(results, tables)),
        _missing(results, tables, skipped_plots), _provenance(results),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>dpo-eval report</title><style>{CSS}</style></head><body>"
            + "".join(sections) + "</body></html>\n")


def _section(title: str, body: str, anchor: str | None = None) -> str:
    anchor = anchor or title.lower().replace(" ", "-").replace("?", "").replace(":", "")
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def _loop_rounds(results: dict) -> str:
    """The per-round section of each `dpo-eval loop` run (reports.rounds); nothing without one."""
    runs = view.loop_runs(results)
    if not runs:
        return ""
    body = f"<p>{esc(rounds.intro(results))}</p>" + "".join(
        f'<p class="meta">{esc(rounds.run_caption(run))}</p>' + table(rounds.HEADERS, rounds.round_rows(run), "numbers")
        for run in runs)
    return _section("Loop rounds", body, "loop-rounds")


def _header(results: dict) -> str:
    runs = ", ".join(f"{r['name']} ({len(r.get('steps', []))} checkpoints)" for r in results.get("runs", []))
    meta = (f"Runs: {runs or 'none'} · generated {results.get('generated_at', '')} · schema "
            f"v{results.get('schema_version', '')}")
    trained = "".join(f'<p class="meta">{esc(view.trained_with(r))}</p>' for r in results.get("runs", []))
    return f'<header><h1>dpo-eval report</h1><p class="meta">{esc(meta)}</p>{trained}</header>'


def _recommended(results: dict) -> str:
    rec = results.get("recommended")
    if not rec:
        reason = view.dig(results, "fits", "reason") or "no checkpoint has a quality figure"
        flag = view.missing_flag(results, "--judge")
        hint = f" Add {flag} to measure quality." if flag else ""
        return _section("Recommended checkpoint", f'<div class="box"><p>No checkpoint is recommended: '
                                                  f"{esc(reason)}.{esc(hint)}</p></div>", "recommended")
    body = f'<div class="box"><p><strong>{esc(recommendation(results))}</strong></p></div>'
    return _section("Recommended checkpoint", body, "recommended")


def _finding(results: dict, finding: dict) -> str:
    severity = finding.get("severity", "info")
    where = view.finding_place(results, finding)
    numbers = ", ".join(f"{view.words(k)} {fmt(v, '.3g')}" for k, v in (finding.get("numbers") or {}).items())
    threshold = view.number(finding.get("threshold"))
    numbers += f"; threshold {threshold:.3g}" if threshold is not None else ""
    return (f'<div class="finding sev-{esc(severity)}"><p><span class="badge sev-{esc(severity)}">'
            f"{esc(severity.upper())}</span><strong>{esc(finding.get('title', ''))}</strong> "
            f"<span class=\"meta\">{esc(where)}</span></p><p>{esc(finding.get('message', ''))}</p>"
            f'<p class="nums">{esc(numbers)}</p>'
            f'<p class="advice">Try: {esc(finding.get("advice", ""))}</p></div>')


def _findings(results: dict) -> str:
    found = view.sorted_findings(results.get("findings", []))
    if not found:
        return _section("Findings", "<p>No finding fired.</p>")
    counts = ", ".join(f"{sum(f.get('severity') == s for f in found)} {s}" for s in view.SEVERITY_ORDER)
    return _section("Findings", f'<p class="meta">{esc(counts)}, most severe first.</p>'
                    + "".join(_finding(results, f) for f in found))


def _verdicts(results: dict) -> str:
    blocks = []
    for v in run_verdicts(results):
        facts = "".join(f"<li>{esc(fact)}</li>" for fact in v.facts)
        blocks.append(f'<div class="box verdict-{esc(v.verdict)}">'
                      f"<h3>{esc(_verdict_title(results, v.run, v.step))}</h3>"
                      f"<p><strong>{esc(v.headline)}</strong></p><ul>{facts}</ul></div>")
    body = f"<p>{esc(BACKGROUND)}</p>" + ("".join(blocks) or "<p>No trained checkpoint has rewards.</p>")
    return _section("rewards/chosen is negative and falling: is my run broken?", body, "is-my-run-broken")


def _verdict_title(results: dict, run: str, step: int) -> str:
    last = f"last checkpoint, step {step}"
    return last[0].upper() + last[1:] if len(view.run_names(results)) <= 1 else f"{run} ({last})"


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<figure id="plot-{esc(plot.key)}"><h3>{esc(plot.title)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{esc(plot.title)}" width="900">'
            f"<figcaption>{esc(plot.caption)}</figcaption></figure>")


def _missing(results: dict, tables: Tables, skipped_plots: list[str]) -> str:
    rows = [[m.get("what", ""), m.get("why", ""), m.get("flag", "")] for m in results.get("missing", [])]
    headers = ["what is missing", "why", "flag that adds it"]
    body = table(headers, rows) if rows else "<p>Nothing is missing.</p>"
    notes = tables.problems + [f"plot not drawn (no data): {title}" for title in skipped_plots]
    body += "".join(f"<p class=\"meta\">{esc(note)}</p>" for note in notes)
    return _section("What is missing", body, "missing")


def _provenance(results: dict) -> str:
    provenance, timings = results.get("provenance") or {}, results.get("timings") or {}
    rows = [[key, json.dumps(value, sort_keys=True)] for key, value in provenance.items()]
    rows += [[f"time: {phase}", f"{fmt(seconds, '.1f')} s"] for phase, seconds in timings.items()]
    return _section("Provenance", table(["what", "value"], rows))
