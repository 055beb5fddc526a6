"""Which model a result came from: ``ModelIdentity`` and its fingerprint, computed without loading.

The fingerprint names everything that fixes a model's log-probs besides device and dtype, so the
log-prob cache (``dpo_eval.engine.cache``) can key on it:

- the weight files' bytes (``dpo_eval.fingerprint.fingerprint_files``);
- ``config.json`` as canonical JSON (sorted keys), less ``CONFIG_IGNORED`` (bookkeeping only): rope
  scaling, soft-capping, sliding windows, logit scales and every other field enter the digest;
- the attention implementation. It is decided here, before loading, from the settings: ``sdpa``
  when the model class that ``AutoModelForCausalLM`` would build supports it, else ``eager``
  (transformers' own default rule). ``dpo_eval.models.load`` passes this choice explicitly to
  ``from_pretrained`` and refuses a model that came back with another one, so the fingerprint never
  names an implementation that was not used, and a fully cached model need never be loaded.
- for a PEFT adapter: the adapter's weights and settings, and the fingerprint of its base;
- for a model named by Hub id: the repo and the commit it resolved to (``org/name@<commit>``), and the
  Hub's sha256 of each LFS weight file in place of hashing its bytes (``dpo_eval.models.hub``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.fingerprint import combine_fingerprints, fingerprint_files
from dpo_eval.models.hub import hub_file_digests
from dpo_eval.models.locate import Located, locate, read_adapter_config, read_json_config, refuse_pickle

ADAPTER_CONFIG_IGNORED = ("base_model_name_or_path", "revision", "peft_version")
CONFIG_IGNORED = ("_name_or_path", "transformers_version")  # where it came from, which version wrote it


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a result came from."""

    path: str
    """The path (or alias) as the user gave it."""
    resolved: str
    """The local folder actually loaded (for gguf: the converted folder; for peft: the adapter folder)."""
    kind: str
    """``"pretrained"``, ``"checkpoint"``, ``"peft"`` or ``"gguf"``."""
    fingerprint: str
    """Hex digest of the weights, the config and the attention implementation (for peft: of the adapter,
    its settings and the base's fingerprint)."""
    attn_implementation: str
    """The attention implementation the model is loaded with: ``"sdpa"`` or ``"eager"``."""

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def _model_config(located: Located) -> dict:
    """The ``config.json`` of a located model (for peft: of its base)."""
    if located.base is not None:
        return _model_config(located.base)
    return read_json_config(located.resolved / "config.json", "rewrite it with the model's save_pretrained")


def config_digest(config: dict) -> str:
    """Digest of the canonical JSON of a model config, less the ``CONFIG_IGNORED`` fields."""
    kept = {key: value for key, value in config.items() if key not in CONFIG_IGNORED}
    return combine_fingerprints(config=json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str))


def _model_class(folder: Path, config: dict, trust_remote_code: bool) -> type:
    """The class ``AutoModelForCausalLM.from_pretrained(folder)`` builds, found without building it."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    auto_map = config.get("auto_map")
    if trust_remote_code and isinstance(auto_map, dict) and "AutoModelForCausalLM" in auto_map:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        return get_class_from_dynamic_module(auto_map["AutoModelForCausalLM"], str(folder))
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        hint = "pass --trust-remote-code (a train config: trust_remote_code: true) to run the model's own code" if auto_map else "upgrade transformers"
        raise UserError(f"{folder / 'config.json'} has model_type {model_type!r}, unknown to transformers: {hint}")
    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[CONFIG_MAPPING[model_type]]
    except KeyError as error:
        raise UserError(
            f"{folder / 'config.json'} is a {model_type!r} model, which is not a causal language model: "
            "pass a decoder-only (causal LM) model"
        ) from error


def resolve_attention(located: Located, *, trust_remote_code: bool = False) -> str:
    """``"sdpa"`` when the model's class supports it, else ``"eager"`` (for peft: its base's)."""
    if located.base is not None:
        return resolve_attention(located.base, trust_remote_code=trust_remote_code)
    model_class = _model_class(located.resolved, _model_config(located), trust_remote_code)
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"


def _adapter_settings_digest(folder: Path) -> str:
    """Digest of the adapter's settings that change the merged weights (rank, alpha, targets, ...)."""
    config = read_adapter_config(folder)
    for key in ADAPTER_CONFIG_IGNORED:
        config.pop(key, None)
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return combine_fingerprints(settings=json.dumps(config, sort_keys=True, default=str))


def _weights_fingerprint(located: Located, cache_dir: Path) -> str:
    """Fingerprint of the weight files; a Hub download's LFS files by the sha256 the Hub gave."""
    known = hub_file_digests(list(located.weight_files)) if located.hub is not None else None
    return fingerprint_files(located.weight_files, cache_dir, known)


def _fingerprint(located: Located, cache_dir: Path, attention: str) -> str:
    """The fingerprint of a located model (see the module docstring)."""
    hub = {"hub": located.hub.name} if located.hub is not None else {}
    if located.base is not None:
        return combine_fingerprints(
            adapter=_weights_fingerprint(located, cache_dir),
            adapter_settings=_adapter_settings_digest(located.resolved),
            base=_fingerprint(located.base, cache_dir, attention),
            **hub,
        )
    return combine_fingerprints(
        weights=_weights_fingerprint(located, cache_dir),
        config=config_digest(_model_config(located)),
        attn_implementation=attention,
        **hub,
    )


def identity_of(located: Located, cache_dir: Path, *, trust_remote_code: bool = False) -> ModelIdentity:
    """The public identity of a located model."""
    attention = resolve_attention(located, trust_remote_code=trust_remote_code)
    fingerprint = _fingerprint(located, cache_dir, attention)
    return ModelIdentity(located.path, str(located.resolved), located.kind, fingerprint, attention)


def identify_model(
    path: str, *, cache_dir: Path, allow_pickle: bool = False, trust_remote_code: bool = False
) -> ModelIdentity:
    """Resolve and fingerprint a model without loading it (a GGUF file is converted once, if needed).

    trust_remote_code must be what the model will be loaded with: a model with its own code may
    choose another attention implementation than the built-in class of its ``model_type``.
    """
    located = locate(path, Path(cache_dir))
    refuse_pickle(located, allow_pickle)
    return identity_of(located, Path(cache_dir), trust_remote_code=trust_remote_code)
