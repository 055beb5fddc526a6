"""A tiny `dpo-eval loop` (tests/loop/loop_setup.py) reported beside the tiny offline run (tiny_run.py) with the
rule judge "the longer output wins": the shared setup of the loop-report tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_run import JUDGE_DIR, RULE_JUDGE, copy_run, trained_once

LOOP_TESTS = Path(__file__).resolve().parent.parent / "loop"


def report_loop_beside_offline(tmp_path_factory, name: str, adjust: Callable[[dict], None],
                               **report_settings) -> tuple[Path, Path, object]:
    """(report folder, loop OUTPUT_DIR, ReportConfig): the loop's settings (loop_settings) changed in place by
    `adjust`, run, then reported with the offline run under ReportConfig(**report_settings)."""
    from dpo_eval.evaluation.config import ReportConfig
    from dpo_eval.evaluation.pipeline import report
    from dpo_eval.loop.config import load_loop_config
    from dpo_eval.loop.run import run_loop
    from dpo_eval.model_settings import ModelLoading

    root = tmp_path_factory.mktemp(name)
    tiny = trained_once(tmp_path_factory)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(LOOP_TESTS))
        patch.syspath_prepend(str(JUDGE_DIR))
        from loop_setup import loop_settings, make_base

        out = root / "loop"
        settings = loop_settings(make_base(root / "base"), out)
        adjust(settings)
        run_loop(load_loop_config(None, (), **settings))
        config = ReportConfig(run_dirs=(str(copy_run(tiny, root / "offline")), str(out)), data=tiny["eval"],
                              models=ModelLoading(cache_dir=str(tiny["cache"])), judge=RULE_JUDGE,
                              out=str(root / "report"), **report_settings)
        report(config)
    return root / "report", out, config
