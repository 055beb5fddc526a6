"""How models load, and which reference: the settings score, rerank, rewardbench and report share.

``ModelLoading`` is how every model of a command is loaded and run (``--token-budget``, ``--device``,
``--dtype``, ``--cache-dir``, ``--trust-remote-code``, ``--allow-pickle``): ``dpo-eval report`` holds it
as ``ReportConfig.models`` (its reference is its own: None means each run's). ``ModelSettings`` adds the
required ``--ref`` of score, rerank and rewardbench, whose configs hold it as ``models``.
``pop_model_loading`` and ``pop_model_settings`` collect them from the flags. Light on purpose: the CLI
imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from dpo_eval.errors import UserError

REFERENCE_FREE = "none"
"""The --ref value that scores without a reference model."""


@dataclass(frozen=True)
class ModelLoading:
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
    def model_flags(self) -> dict:
        """The flags each model is identified and loaded with (identify_model, load_model, load_tokenizer)."""
        return {"trust_remote_code": self.trust_remote_code, "allow_pickle": self.allow_pickle}

    def validate(self) -> None:
        if self.token_budget is not None and self.token_budget < 1:
            raise UserError(f"--token-budget must be positive, got {self.token_budget}")


@dataclass(frozen=True, kw_only=True)
class ModelSettings(ModelLoading):
    """ModelLoading and the reference (a keyword: ModelSettings(ref=..., device=...))."""

    ref: str
    """A reference model, or "none" for reference-free rewards: always explicit, never a silent default."""

    @classmethod
    def with_ref(cls, ref: str, loading: ModelLoading) -> ModelSettings:
        """The settings of ``loading`` with the reference ``ref``."""
        return cls(ref=ref, **{name: getattr(loading, name) for name in LOADING_FIELDS})

    @property
    def is_reference_free(self) -> bool:
        return self.ref.lower() == REFERENCE_FREE


LOADING_FIELDS = tuple(f.name for f in fields(ModelLoading))
MODEL_FIELDS = tuple(f.name for f in fields(ModelSettings))


def pop_model_loading(options: dict) -> ModelLoading:
    """Take the loading settings out of a command's keyword arguments (or a gate file's flat `report:`
    settings), as a ModelLoading; the ones not there keep their defaults."""
    return ModelLoading(**{name: options.pop(name) for name in LOADING_FIELDS if name in options})


def pop_model_settings(options: dict) -> ModelSettings:
    """Take the model options out of a command's keyword arguments, as a ModelSettings."""
    return ModelSettings(**{name: options.pop(name) for name in MODEL_FIELDS})
