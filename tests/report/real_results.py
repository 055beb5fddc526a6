"""Results dirs written by the real `dpo-eval report` (assemble's own output), made once per test session.

The render, headline, browser and gate tests read these instead of a hand-built copy of the document, so
they fail when assemble changes what it writes. Two runs of the tiny trained run (tests/report/tiny_run.py):

    lr-1e-2         the tiny run as trained: reference (step 0), steps 2 and 4
    lr-1e-2-noisy   the same checkpoints plus step 6, step 4's weights moved by 0.3 * N(0, 1): its KL is far
                    past the others, its chosen log-probs fall (high findings), its accuracy drops

reported on the tiny run's held-out pairs with HOSTILE_SCRIPT and HOSTILE_IMG added to every prompt (a page
must show them as text, never run them), with the rule judge "the longer output wins" (`judged`), and again
from the same store without a judge (`unjudged`: no model is loaded a second time). Small sampling and
bootstrap settings (tiny_run.FAST) keep the whole build to seconds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from tiny_run import JUDGE_DIR, RULE_JUDGE, add_checkpoint, copy_run, trained_once

HOSTILE_SCRIPT = "<script>window.__pwned=1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned=2">'
RUNS = ("lr-1e-2", "lr-1e-2-noisy")
NOISY_STEP, NOISY_SCALE = 6, 0.3
SETTINGS = {"n_samples": 2, "max_new_tokens": 8, "bootstrap_resamples": 200, "lc_resamples": 5,
            "show_progress": False, "render": False}
"""tiny_run.FAST as ReportConfig fields; the tests render the pages themselves."""


@dataclass(frozen=True)
class RealResults:
    """The two results dirs (results.json, tables/) and the run dirs they were made from."""

    judged: Path
    unjudged: Path
    run_dirs: tuple[Path, ...]


def build_real_results(tmp_path_factory) -> RealResults:
    """Report the two runs with and without the rule judge (see the module docstring)."""
    from dpo_eval.evaluation.config import ReportConfig
    from dpo_eval.evaluation.pipeline import report
    from dpo_eval.model_settings import ModelLoading

    tiny = trained_once(tmp_path_factory)
    root = tmp_path_factory.mktemp("real_results")
    run_dirs = (copy_run(tiny, root / "runs" / RUNS[0]), copy_run(tiny, root / "runs" / RUNS[1]))
    add_checkpoint(run_dirs[1], NOISY_STEP, scale=NOISY_SCALE)
    data = _hostile_pairs(Path(tiny["eval"]), root / "heldout.jsonl")
    common = {"run_dirs": tuple(str(r) for r in run_dirs), "data": str(data),
              "models": ModelLoading(cache_dir=str(tiny["cache"])), **SETTINGS}
    judged, unjudged = root / "judged", root / "unjudged"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(JUDGE_DIR))
        report(ReportConfig(**common, judge=RULE_JUDGE, out=str(judged)))
    shutil.copytree(judged / "store", unjudged / "store")  # content-keyed: the unjudged report reuses it all
    report(ReportConfig(**common, out=str(unjudged)))
    return RealResults(judged=judged, unjudged=unjudged, run_dirs=run_dirs)


def _hostile_pairs(source: Path, target: Path) -> Path:
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    target.write_text("".join(json.dumps({**r, "prompt": f"{r['prompt']}{HOSTILE_SCRIPT} {HOSTILE_IMG} "}) + "\n"
                              for r in rows))
    return target


def copy_results(folder: Path, target: Path) -> Path:
    """A copy of a results dir (results.json and tables/, not the store) that a test may change."""
    target.mkdir(parents=True)
    shutil.copy2(folder / "results.json", target / "results.json")
    shutil.copytree(folder / "tables", target / "tables")
    return target


def load_results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())
