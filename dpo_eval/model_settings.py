"""Which reference, and how models load: the settings score, rerank and rewardbench share.

One frozen dataclass, nested in those commands' configs as ``models`` (its fields are their flags:
``--ref``, ``--token-budget``, ``--device``, ``--dtype``, ``--cache-dir``, ``--trust-remote-code``,
``--allow-pickle``; ``pop_model_settings`` collects them). Light on purpose: the CLI imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from dpo_eval.errors import UserError

REFERENCE_FREE = "none"
"""The --ref value that scores without a reference model."""


@dataclass(frozen=True)
class ModelSettings:
    ref: str
    """A reference model, or "none" for reference-free rewards: always explicit, never a silent default."""
    token_budget: int | None = None
    """Padded tokens per forward pass; None: the device's default (engine.batching.default_token_budget)."""
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: str | None = None
    """Log-prob cache; None: ~/.cache/dpo_eval (engine.cache.resolve_cache_dir)."""
    trust_remote_code: bool = False
    """Allow model code from the model folders."""
    allow_pickle: bool = False
    """Allow pickled .bin weights (they can run code when loaded)."""

    @property
    def is_reference_free(self) -> bool:
        return self.ref.lower() == REFERENCE_FREE

    def validate(self) -> None:
        if self.token_budget is not None and self.token_budget < 1:
            raise UserError(f"--token-budget must be positive, got {self.token_budget}")


MODEL_FIELDS = tuple(f.name for f in fields(ModelSettings))


def pop_model_settings(options: dict) -> ModelSettings:
    """Take the model options out of a command's keyword arguments, as a ModelSettings."""
    return ModelSettings(**{name: options.pop(name) for name in MODEL_FIELDS})
