"""`GateConfig`: every default of `dpo-eval gate` (the CLI options restate none of them).

Kept free of heavy imports: the CLI imports it at start-up. The config file is read by dpo_eval.gate.file.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_PASSED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
"""The gate's exit codes, as pytest's: every check passed, a check failed, bad input (one line), internal
error (one line and the file holding the traceback)."""

@dataclass(frozen=True)
class GateConfig:
    """What `dpo-eval gate` checks and, for a RUN_DIR or CHECKPOINT, how the report is made first."""

    target: str
    """results.json, its folder, a run dir or a checkpoint folder."""
    config: str
    """gate.yaml: the checks (and optional report settings)."""
    baseline: str | None = None
    """An earlier results.json (or its folder) for `regression:` checks."""
    junit: str | None = None
    """Write JUnit XML here (one testcase per check and checkpoint)."""
    ref: str | None = None
    data: str | None = None
    prompts: str | None = None
    judge: str | None = None
    out: str | None = None
    """The gate's results folder (a RUN_DIR or CHECKPOINT target); default RUN_DIR/.dpo_eval/gate, sharing
    the run store RUN_DIR/.dpo_eval/store with `dpo-eval report` (given: the store is OUT/store)."""
    cache_dir: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    show_progress: bool = True
    step_summary: str | None = None
    """Append a Markdown summary here; None: $GITHUB_STEP_SUMMARY when it is set."""
