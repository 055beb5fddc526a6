"""De-quantize a GGUF file once into a float32 ``save_pretrained`` folder under the cache directory."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dpo_eval.errors import UserError
from dpo_eval.fingerprint import file_digests


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


def convert_gguf(file: Path, cache_dir: Path) -> Path:
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
