"""The packing's attention without a (batch, seq, seq) tensor: a FlexAttention BlockMask.

Shared-prefix packing (``dpo_eval.engine.packing`` for pairs, ``dpo_eval.engine.multi`` for groups)
needs a mask no fused SDPA kernel takes: a response sees its own prompt but not its sibling
response. The dense path builds it as an additive (B, 1, L, L) tensor, so SDPA runs its masked
kernel over every L x L block of every row. Here the same rule is a FlexAttention ``mask_mod``
(Wang & Hegde 2024, "Accelerating Direct Preference Optimization with Prefix Sharing") over the
rows laid end to end as one sequence of B * L positions:

    query i may attend key j  <=>  j == i
                                   or (slot[i] == slot[j] and j <= i and segment[j] != pad
                                       and (segment[j] == prompt or segment[j] == segment[i]))

slot = the pair or group a position belongs to (unique in the batch, so rows never see each
other once laid end to end), segment = prompt / response k / pad as the packing's layout table
says. This is the dense mask, entry for entry (tests hold ``create_mask`` of it to the tensor).
The BlockMask keeps per 128 x 128 block only whether it is empty, full or partial, so the kernel
skips the empty blocks (other pairs, the sibling response, padding). Flattening the rows changes
nothing else: every other op is per position, position ids restart per sequence, and the flat
index of a position is the index ``source_index`` already uses.

Which path runs is chosen per model (``use_flex``), as the prefix cache is: FlexAttention where
the model runs attention through transformers' AttentionInterface with flex support, attends to
the whole context in every layer (no sliding window), has no attention logit soft-capping, no
attention dropout and no activation checkpointing in training, and torch has FlexAttention; by default only on CUDA (Triton
kernels, compiled once by transformers; should that fail, "auto" warns once and the model keeps the
dense mask from then on). On the CPU it runs only when asked
(``set_packed_attention(model, "flex")``, used by the tests), eagerly, with torch's reference
kernel. ``set_packed_attention(model, "dense")`` keeps the dense mask everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import threading
import warnings
from collections.abc import Callable, Iterator

import torch

PATHS = ("auto", "flex", "dense")
FLEX_IMPLEMENTATION = "dpo_eval_packed_flex"  # registered in transformers' AttentionInterface
_PATH_ATTRIBUTE = "_dpo_eval_packed_attention"
_SWITCH_LOCK = threading.RLock()  # the forward switches the model's attention implementation


def set_packed_attention(model: torch.nn.Module, path: str) -> None:
    """Pick the packed-attention path of this model: "auto" (flex on CUDA where supported), "flex"
    (wherever supported, the CPU included; an error where not), or "dense" (the 4D mask)."""
    if path not in PATHS:
        raise ValueError(f"packed attention path {path!r} is not one of {', '.join(PATHS)}")
    setattr(model, _PATH_ATTRIBUTE, path)


def flex_unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why this model cannot run the packed BlockMask path, or None when it can."""
    if not _has_flex_attention():
        return f"torch {torch.__version__} has no FlexAttention"
    try:
        from transformers.modeling_utils import AttentionInterface  # noqa: F401
    except ImportError:
        return "this transformers has no AttentionInterface"
    if not getattr(model, "_supports_flex_attn", False):
        return f"{type(model).__name__} does not support flex attention in transformers"
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return "not every layer attends to the whole context (layer_types)"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "the model uses sliding-window attention"
    if getattr(config, "attn_logit_softcapping", None):
        return "the model soft-caps attention logits"
    if model.training and getattr(config, "attention_dropout", 0.0):
        return "flex attention has no attention dropout (training with attention_dropout > 0)"
    if model.training and any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        return ("activation checkpointing recomputes layers in backward, after the forward has switched the "
                "attention implementation back")
    return None


def _device_reason(model: torch.nn.Module, device: torch.device) -> str | None:
    """Why the device cannot run it: FlexAttention has no backward on the CPU (torch 2.13)."""
    needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())
    if device.type != "cuda" and needs_grad:
        return f"FlexAttention has no backward on {device.type} (torch {torch.__version__})"
    return None


def use_flex(model: torch.nn.Module, device: torch.device) -> bool:
    """True when the packed forward of this model on this device runs the BlockMask path."""
    path = getattr(model, _PATH_ATTRIBUTE, "auto")
    if path == "dense" or (path == "auto" and not (device.type == "cuda" and _has_triton())):
        return False
    reason = flex_unsupported_reason(model) or _device_reason(model, device)
    if path == "flex" and reason:
        raise ValueError(f"flex packed attention was asked for, but {reason}: "
                         "use set_packed_attention(model, 'dense')")
    return reason is None


@functools.cache
def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _has_flex_attention() -> bool:
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def packing_mask_mod(segments: torch.Tensor, slots: torch.Tensor, prompt: int, pad: int) -> Callable:
    """The mask_mod of the module docstring over flat (B * L,) segments and slots."""

    def mask_mod(batch, head, q_idx, kv_idx):
        seg_q, seg_kv = segments[q_idx], segments[kv_idx]
        visible = (slots[q_idx] == slots[kv_idx]) & (kv_idx <= q_idx) & (seg_kv != pad)
        return (visible & ((seg_kv == prompt) | (seg_kv == seg_q))) | (q_idx == kv_idx)

    return mask_mod


def packing_block_mask(segments: torch.Tensor, slots: torch.Tensor, prompt: int, pad: int):
    """BlockMask of the (B, L) packing laid end to end: batch 1, heads broadcast, B * L positions."""
    from torch.nn.attention.flex_attention import create_block_mask

    flat_segments, flat_slots = segments.reshape(-1), slots.reshape(-1)
    n = flat_segments.shape[0]
    return create_block_mask(packing_mask_mod(flat_segments, flat_slots, prompt, pad), 1, None, n, n,
                             device=segments.device, _compile=segments.device.type == "cuda")


def _flex_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """AttentionInterface function: transformers' flex path (compiled) on CUDA, eager flex elsewhere.

    query (B, Hq, L, D), key and value (B, Hkv, L, D); returns ((B, L, Hq, D), None)."""
    if dropout:
        raise ValueError("flex packed attention has no attention dropout: set attention_dropout to 0")
    if query.device.type == "cuda":
        from transformers.integrations.flex_attention import flex_attention_forward

        return flex_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():  # eager on purpose here: the reference kernel, no compile
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        out = flex_attention(query, key, value, block_mask=attention_mask, scale=scaling,
                             enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _configs(module: torch.nn.Module) -> list:
    seen: dict[int, object] = {}
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@contextlib.contextmanager
def flex_implementation(decoder: torch.nn.Module) -> Iterator[None]:
    """Run the decoder's attention through ``_flex_attention`` inside the block, then restore it."""
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(FLEX_IMPLEMENTATION, _flex_attention)
    with _SWITCH_LOCK:
        configs = _configs(decoder)
        before = [c._attn_implementation_internal for c in configs]
        try:
            for config in configs:
                config._attn_implementation_internal = FLEX_IMPLEMENTATION
            yield
        finally:
            for config, implementation in zip(configs, before):
                config._attn_implementation_internal = implementation


def packed_last_hidden(model: torch.nn.Module, decoder: torch.nn.Module, input_ids: torch.Tensor,
                       position_ids: torch.Tensor, segments: torch.Tensor, slots: torch.Tensor, *,
                       prompt: int, pad: int, dense_mask: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Last-layer hidden states (B * L, H) of a packed batch, in flat (row-major) position order.

    input_ids, position_ids, segments, slots: (B, L). dense_mask() builds the (B, 1, L, L) additive
    mask; it is called only on the dense path.
    """
    if use_flex(model, input_ids.device):
        try:
            block_mask = packing_block_mask(segments, slots, prompt, pad)
            with flex_implementation(decoder):
                out = decoder(input_ids=input_ids.reshape(1, -1), attention_mask=block_mask,
                              position_ids=position_ids.reshape(1, -1), use_cache=False)
            return out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - "auto" falls back, once per model; "flex" raises
            if getattr(model, _PATH_ATTRIBUTE, "auto") != "auto":
                raise
            warnings.warn(f"flex packed attention failed ({type(error).__name__}: {error}); "
                          f"{type(model).__name__} uses the dense 4D mask from now on", stacklevel=2)
            set_packed_attention(model, "dense")
    out = decoder(input_ids=input_ids, attention_mask=dense_mask(), position_ids=position_ids, use_cache=False)
    return out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])


def micro_batch_rows(lengths: list[int], is_flex: bool) -> list[list[int]]:
    """Rows of a trainer micro-batch (item indices): with flex, one row of every item in order (the rows
    are laid end to end anyway, so a single row has no padding at all); dense, best-fit rows as wide
    as the longest item (``plan_batches`` with the micro-batch as the budget)."""
    from dpo_eval.engine.batching import plan_batches

    if is_flex:
        return [list(range(len(lengths)))]
    return [row for batch in plan_batches(lengths, token_budget=sum(lengths)) for row in batch]
