"""Start and stop a vLLM OpenAI-compatible server for generation or judging.

vLLM's CPU and CUDA builds pin their own torch, so vLLM lives in its own environment (`make
vllm-env` creates .venv-vllm); point --vllm-python at its interpreter. Any vLLM option passes
through unchanged (--vllm-arg=--tensor-parallel-size=2, --vllm-arg=--gpu-memory-utilization=0.9 ...),
so a model too large for one GPU is served the way vLLM users already do it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from dpo_eval.errors import UserError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, seconds: float = 900) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-1500:] if log.exists() else ""
            raise UserError(f"vLLM exited with code {process.returncode} before serving; log {log}: ...{tail[-300:]!r}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            return
        except OSError:
            time.sleep(2)
    process.terminate()
    raise UserError(f"vLLM did not start within {seconds:.0f} s; see {log}")


@contextlib.contextmanager
def vllm_server(model_dir: str, served_name: str, python: str | None = None,
                extra_args: Sequence[str] = ()) -> Iterator[str]:
    """Serve model_dir (a safetensors directory) under served_name; yields the base URL."""
    python = python or str(Path(".venv-vllm/bin/python"))
    if not Path(python).exists():
        raise UserError(f"no vLLM python at {python}: run `make vllm-env` or pass --vllm-python")
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="dpo_eval_vllm_")) / "server.log"
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
               "--served-model-name", served_name, "--port", str(port), *extra_args]
    print(f"starting vLLM: {' '.join(command)} (log {log})", file=sys.stderr)
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
