"""Load a located model for scoring: devices, dtypes, ``from_pretrained``, PEFT merging."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from dpo_eval.errors import UserError
from dpo_eval.models.identify import ModelIdentity, identity_of
from dpo_eval.models.locate import Located, locate, refuse_pickle
from dpo_eval.models.tokenizer import tokenizer_next_to

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LoadedModel:
    """A model ready for scoring: eval mode, gradients off, on its device and dtype."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase | None
    """The model's own tokenizer when one was found next to it, else None."""
    identity: ModelIdentity


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


def _from_pretrained(
    located: Located, dtype: torch.dtype, trust_remote_code: bool, attention: str
) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` with the attention implementation the identity names.

    A model that comes back with another implementation is refused: its log-probs would be cached
    under the wrong fingerprint.
    """
    model = AutoModelForCausalLM.from_pretrained(
        located.resolved,
        attn_implementation=attention,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        use_safetensors=not located.is_pickled,
    )
    used = getattr(model.config, "_attn_implementation", None)
    if used != attention:
        raise RuntimeError(
            f"{located.path} was loaded with attention implementation {used!r}, not the {attention!r} "
            "asked for and recorded in its fingerprint: please report this (model class and transformers version)"
        )
    return model


def _merge_adapter(
    adapter: Located, base: Located, dtype: torch.dtype, trust_remote_code: bool, attention: str
) -> torch.nn.Module:
    """Load the base model, apply the PEFT adapter and merge it into the base weights."""
    if importlib.util.find_spec("peft") is None:
        raise UserError(f"{adapter.path} is a PEFT adapter and loading it needs peft: pip install peft")
    from peft import PeftModel

    base_model = _from_pretrained(base, dtype, trust_remote_code, attention)
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

    The attention implementation is the one ``identify_model`` names (``sdpa`` where the model class
    supports it, else ``eager``). The tokenizer is the one found next to the model (for a checkpoint,
    also in its parent; for an adapter, also with its base), or None.
    """
    cache_dir = Path(cache_dir)
    located = locate(path, cache_dir)
    refuse_pickle(located, allow_pickle)
    identity = identity_of(located, cache_dir, trust_remote_code=trust_remote_code)
    attention = identity.attn_implementation
    if located.base is not None:
        model = _merge_adapter(located, located.base, dtype, trust_remote_code, attention)
    else:
        model = _from_pretrained(located, dtype, trust_remote_code, attention)
    model = model.to(device).eval()  # not .to(dtype): that would also cast float32 buffers such as RoPE's
    model.requires_grad_(False)
    tokenizer = tokenizer_next_to(located, trust_remote_code=trust_remote_code)
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity)
