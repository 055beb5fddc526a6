"""The per-example tables beside results.json: their names in `files`, their columns, and loading them.

`files` maps a name to a parquet path relative to the results dir. Names:

| name                    | one row per                  | columns the report reads                   |
|-------------------------|------------------------------|--------------------------------------------|
| pairs/{run}/{label}     | held-out pair, scored by     | id, subset, prompt, chosen, rejected,      |
|                         | that checkpoint              | policy_chosen_logp, policy_rejected_logp,  |
|                         |                              | ref_chosen_logp, ref_rejected_logp,        |
|                         |                              | chosen_tokens, rejected_tokens,            |
|                         |                              | reward_chosen, reward_rejected, margin     |
| samples/{run}/{label}   | sample of that checkpoint    | prompt_id, prompt, output, n_tokens,       |
|                         |                              | finish_reason, policy_logp, ref_logp       |
| samples/reference       | sample of the reference      | as samples                                 |
| quality/{run}/{label}   | prompt, judged for that      | prompt_id, quality (its per-prompt quality |
|                         | checkpoint                   | the past-peak test pairs over prompts)     |

`{run}` and `{label}` are a checkpoint's `run` and `label` in results.json (`table_name` builds them).
A step-0 row (`is_reference`) without its own samples table uses ``samples/reference``. Columns the
report does not find are left out of what it shows; it computes nothing from them beyond drawing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

KINDS = ("pairs", "samples", "quality")
REFERENCE_SAMPLES = "samples/reference"


def table_name(kind: str, run: str | None = None, label: str | None = None) -> str:
    """The `files` key of a table: f"{kind}/{run}/{label}", or REFERENCE_SAMPLES for kind "samples" alone."""
    if kind not in KINDS:
        raise ValueError(f"table kind must be one of {KINDS}, got {kind!r}")
    if run is None and label is None and kind == "samples":
        return REFERENCE_SAMPLES
    if run is None or label is None:
        raise ValueError(f"a {kind} table belongs to a checkpoint: give its run and label")
    return f"{kind}/{run}/{label}"


@dataclass
class Tables:
    """The tables of a results dir that could be read, and notes on those that could not."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """One line per table listed in `files` that is absent or unreadable."""

    def get(self, kind: str, checkpoint: dict) -> pd.DataFrame | None:
        """The `kind` table of a checkpoint (a results.json checkpoint object), or None."""
        frame = self.frames.get(table_name(kind, checkpoint["run"], checkpoint["label"]))
        if frame is None and kind == "samples" and checkpoint.get("is_reference"):
            frame = self.frames.get(REFERENCE_SAMPLES)
        return frame

    def reference_samples(self) -> pd.DataFrame | None:
        return self.frames.get(REFERENCE_SAMPLES)


def load_tables(results_dir: str | Path, files: dict[str, str]) -> Tables:
    """Read every parquet table named in `files` (paths relative to results_dir); problems are noted, not
    raised."""
    root = Path(results_dir)
    tables = Tables()
    for name, relative in sorted(files.items()):
        path = root / relative
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            tables.problems.append(f"table {name}: path {relative} is not inside the results dir; not read")
            continue
        if not path.suffix == ".parquet":
            continue
        try:
            tables.frames[name] = pd.read_parquet(path)
        except FileNotFoundError:
            tables.problems.append(f"table {name}: {relative} is missing from the results dir")
        except Exception as error:  # noqa: BLE001 - a broken table costs its plots, not the report
            tables.problems.append(f"table {name}: {relative} could not be read ({type(error).__name__})")
    return tables
