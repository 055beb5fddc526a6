"""Which model a result came from: ``ModelIdentity`` and its fingerprint, computed without loading."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from dpo_eval.fingerprint import combine_fingerprints, fingerprint_files
from dpo_eval.models.locate import Located, locate, read_adapter_config, refuse_pickle

ADAPTER_CONFIG_IGNORED = ("base_model_name_or_path", "revision", "peft_version")


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights a result came from."""

    path: str
    """The path (or alias) as the user gave it."""
    resolved: str
    """The local folder actually loaded (for gguf: the converted folder; for peft: the adapter folder)."""
    kind: str
    """``"pretrained"``, ``"checkpoint"``, ``"peft"`` or ``"gguf"``."""
    fingerprint: str
    """Hex digest of the weights (for peft: of the adapter, its settings and the base)."""

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def _adapter_settings_digest(folder: Path) -> str:
    """Digest of the adapter's settings that change the merged weights (rank, alpha, targets, ...)."""
    config = read_adapter_config(folder)
    for key in ADAPTER_CONFIG_IGNORED:
        config.pop(key, None)
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return combine_fingerprints(settings=json.dumps(config, sort_keys=True, default=str))


def _fingerprint(located: Located, cache_dir: Path) -> str:
    """The fingerprint of a located model's weights (for peft: adapter, its settings and the base)."""
    weights = fingerprint_files(located.weight_files, cache_dir)
    if located.base is None:
        return weights
    return combine_fingerprints(
        adapter=weights,
        adapter_settings=_adapter_settings_digest(located.resolved),
        base=_fingerprint(located.base, cache_dir),
    )


def identity_of(located: Located, cache_dir: Path) -> ModelIdentity:
    """The public identity of a located model."""
    return ModelIdentity(located.path, str(located.resolved), located.kind, _fingerprint(located, cache_dir))


def identify_model(
    path: str, *, cache_dir: Path, allow_pickle: bool = False, trust_remote_code: bool = False
) -> ModelIdentity:
    """Resolve and fingerprint a model without loading it (a GGUF file is converted once, if needed)."""
    located = locate(path, Path(cache_dir))
    refuse_pickle(located, allow_pickle)
    return identity_of(located, Path(cache_dir))
