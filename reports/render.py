"""`render(results_dir)`: report.html and report.md from a results dir's saved files only.

Reads results.json (refused unless it has this code's schema_version and validates against
RESULTS_SCHEMA), the per-example parquet tables its `files` names, draws the plots and writes both
reports atomically (dpo_eval.jsonio.write_text_atomic: a temporary file beside each, then a rename).
Loads no model, computes no statistic.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_eval.jsonio import write_text_atomic
from dpo_eval.reports.html import render_html
from dpo_eval.reports.markdown import render_markdown
from dpo_eval.reports.plots import draw_all
from dpo_eval.reports.schema import RESULTS_SCHEMA_VERSION, schema_errors
from dpo_eval.reports.tables import load_tables

RESULTS = "results.json"
OUTPUTS = ("report.html", "report.md")
N_ERRORS_SHOWN = 3


def render(results_dir: str | Path) -> list[Path]:
    """Write results_dir/report.html and results_dir/report.md; return their paths.

    Raises ValueError (one line: what, where, how to fix) when results.json is absent, not JSON, of
    another schema_version, or does not validate.
    """
    root = Path(results_dir)
    results = read_results(root)
    tables = load_tables(root, results["files"])
    plots, skipped = draw_all(results, tables)
    texts = (render_html(results, tables, plots, skipped), render_markdown(results))
    paths = [root / name for name in OUTPUTS]
    for path, text in zip(paths, texts):
        write_text_atomic(path, text)
    return paths


def read_results(root: Path) -> dict:
    """results.json of a results dir, checked against the schema."""
    path = root / RESULTS
    if not path.is_file():
        where = "is not a directory" if not root.is_dir() else f"has no {RESULTS}"
        raise ValueError(f"{root} {where}: pass the --out folder of `dpo-eval report` (it holds {RESULTS})")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        message = f"{path} is not valid JSON ({error}): rerun `dpo-eval report` to rewrite it"
        raise ValueError(message) from None
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise ValueError(f"{path} holds a JSON {kind}, not an object: is it a results file?")
    version = document.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {version!r} but this dpo-eval renders version "
                         f"{RESULTS_SCHEMA_VERSION}: rerun `dpo-eval report` with this version (or render "
                         "with the dpo-eval that wrote it)")
    errors = schema_errors(document)
    if errors:
        more = len(errors) - N_ERRORS_SHOWN
        shown = "; ".join(errors[:N_ERRORS_SHOWN]) + (f" (and {more} more)" if more > 0 else "")
        raise ValueError(f"{path} does not match the results schema: {shown}; rerun `dpo-eval report` "
                         "to rewrite it")
    return document

