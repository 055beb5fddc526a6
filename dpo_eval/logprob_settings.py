"""Which backend computes sequence log-probs: the engine (one device, or torchrun data parallel) or vLLM.

One frozen dataclass, nested in the configs of score, rewardbench and rerank (its fields are their
flags: ``--logprob-backend``, ``--vllm-python``, ``--vllm-arg``, ``--vllm-url``, ``--vllm-ref-url``);
the report reads ``logprob_backend`` and its own vLLM flags. Light on purpose: the CLI imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dpo_eval.errors import UserError

BACKENDS = ("engine", "vllm")
CLI_FLAGS = {"logprob_backend": "--logprob-backend", "vllm_python": "--vllm-python", "vllm_args": "--vllm-arg",
             "vllm_url": "--vllm-url", "vllm_ref_url": "--vllm-ref-url"}
"""Each field's flag on score, rewardbench and rerank (dpo_eval.cli.options)."""


@dataclass(frozen=True)
class LogprobSettings:
    logprob_backend: str = "engine"
    """engine: dpo-eval's own forward passes; vllm: a vLLM server per model (tensor/pipeline parallel)."""
    vllm_python: str | None = None
    """Python of the vLLM environment; default .venv-vllm/bin/python."""
    vllm_args: tuple[str, ...] = ()
    """Passed to every vLLM server started, unchanged (--vllm-arg=--tensor-parallel-size=8)."""
    vllm_url: str | None = None
    """A vLLM server already serving the policy (http://host:port/v1): none is started for it."""
    vllm_ref_url: str | None = None
    """A vLLM server already serving the reference."""

    @property
    def is_vllm(self) -> bool:
        return self.logprob_backend == "vllm"

    def validate(self, name: Callable[[str], str] = lambda field: CLI_FLAGS[field]) -> None:
        """One line for an unknown backend or vLLM settings without it; name(field) spells a field as the
        user wrote it (a CLI flag by default; the loop: ``logprobs.vllm_url``)."""
        if self.logprob_backend not in BACKENDS:
            raise UserError(f"{name('logprob_backend')} must be one of {', '.join(BACKENDS)}, "
                            f"got {self.logprob_backend!r}")
        vllm_only = [f for f in CLI_FLAGS if f != "logprob_backend" and getattr(self, f)]
        if vllm_only and not self.is_vllm:
            raise UserError(f"{'/'.join(name(f) for f in vllm_only)} apply to {name('logprob_backend')} vllm: "
                            f"set {name('logprob_backend')} vllm or drop them")

    def refuse(self, flag: str) -> None:
        """One line for a figure that needs whole next-token distributions, which vLLM does not return."""
        refuse_with_vllm(flag, self.logprob_backend)


def refuse_with_vllm(flag: str, backend: str) -> None:
    """Refuse flag under --logprob-backend vllm: it needs whole next-token distributions."""
    if backend == "vllm":
        raise UserError(f"{flag} needs whole next-token distributions, which --logprob-backend vllm cannot give "
                        "(vLLM returns the log-probs of the tokens asked only): drop it or use --logprob-backend engine")


def check_one_process(settings: LogprobSettings, ctx) -> None:
    """vLLM parallelises itself: refuse --logprob-backend vllm under torchrun (each rank would start servers)."""
    if settings.is_vllm and ctx.world_size > 1:
        raise UserError("--logprob-backend vllm runs its own parallelism (--vllm-arg=--tensor-parallel-size=N): "
                        "run it as one process, not under torchrun")


def numerics(settings: LogprobSettings, device, dtype) -> dict:
    """How the log-probs were computed: the engine's device and dtype, or vLLM's version and options."""
    if settings.is_vllm:
        from dpo_eval.engine.vllm_backend import numerics_summary

        return numerics_summary(settings, "policy")
    return {"backend": "engine", "device": device.type, "dtype": str(dtype).removeprefix("torch.")}
