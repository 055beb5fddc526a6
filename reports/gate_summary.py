"""The gate's checks as a plain-text table (stdout) and as Markdown (a GitHub step summary).

One row per check and checkpoint: figure, checkpoint, threshold, value, pass/fail; a failing row is
followed by why (a missing figure and the flag that adds it, the baseline behind a regression bound,
the findings counted), as is a regression that passed inconclusively (metrics.gate_noise). Computes nothing: every number comes from a `metrics.gate.CheckResult`.

In the Markdown every text from the results or the config (check, run and figure names, reasons, the
results path) is escaped (escape_markdown): every ASCII punctuation mark is backslash-escaped, which
CommonMark and GitHub read as the literal mark, so a name such as ``![x](https://h/p)`` shows as text,
never as an image, a link, HTML, an entity, emphasis or a new table column.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

from dpo_eval.metrics.gate import CheckResult

MARKDOWN_PUNCTUATION = frozenset(string.punctuation)
"""ASCII punctuation: CommonMark lets a backslash make each of them literal (and GFM tables the pipe)."""
HEADER = ("figure", "checkpoint", "threshold", "value", "result")


def escape_markdown(value: object) -> str:
    """Text shown as it is in Markdown (and in a table cell): every ASCII punctuation mark backslash-escaped,
    line breaks as spaces."""
    text = " ".join(str(value).splitlines())
    return "".join(f"\\{char}" if char in MARKDOWN_PUNCTUATION else char for char in text)


def number_text(value: float | None) -> str:
    if value is None:
        return "missing"
    return "?" if math.isnan(value) else f"{value:.6g}"


def threshold_text(result: CheckResult) -> str:
    return f"{result.op} {number_text(result.bound)}"


def detail_text(result: CheckResult) -> str:
    """What the row needs said beside its numbers: the missing reason and the note."""
    return "; ".join(part for part in (result.reason, result.note) if part)


def _row(result: CheckResult) -> tuple[str, ...]:
    return (result.figure, result.checkpoint or "-", threshold_text(result), number_text(result.value),
            "pass" if result.passed else "FAIL")


def headline(results: Sequence[CheckResult]) -> str:
    passed = sum(r.passed for r in results)
    state = "passed" if passed == len(results) else "FAILED"
    unsure = sum(r.is_inconclusive for r in results)
    caveat = f" ({unsure} inconclusive: no regression shown, none ruled out)" if unsure else ""
    return f"gate {state}: {passed} of {len(results)} checks passed{caveat}"


def format_table(results: Sequence[CheckResult]) -> str:
    """Aligned columns; under a failing row, its detail indented."""
    rows = [HEADER, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(rows[0], widths)).rstrip(),
             "  ".join("-" * width for width in widths)]
    for result, row in zip(results, rows[1:]):
        lines.append("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())
        detail = detail_text(result)
        if detail and (not result.passed or result.is_inconclusive):
            lines.append(f"    -> {detail}")
    return "\n".join([*lines, headline(results)])


def format_markdown(results: Sequence[CheckResult], source: str) -> str:
    """A step-summary section: headline, the results file, one table row per check (text escaped)."""
    cell = escape_markdown
    lines = [f"### dpo-eval {headline(results)}", "", f"Results: {cell(source)}", "",
             "| | check | figure | checkpoint | threshold | value | detail |", "|---|---|---|---|---|---|---|"]
    for result in results:
        mark = "✅" if result.passed else "❌"
        lines.append(f"| {mark} | {cell(result.name)} | {cell(result.figure)} | {cell(result.checkpoint or '-')} | "
                     f"{cell(threshold_text(result))} | {cell(number_text(result.value))} | "
                     f"{cell(detail_text(result))} |")
    return "\n".join(lines) + "\n\n"
