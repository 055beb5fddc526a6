"""Make a loaded causal LM trainable: all weights, the top N layers, or a LoRA adapter."""

from __future__ import annotations

import torch

from dpo_eval.errors import UserError
from dpo_eval.train.config import LoraSettings, TrainConfig


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks: the ModuleList under the base model as long as num_hidden_layers."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    for module in model.base_model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise UserError(f"cannot find the {n_layers} decoder layers of {type(model).__name__}; "
                    "train all weights (train_top_layers: null) or use lora")


def freeze_all_but_top_layers(model: torch.nn.Module, n_top: int) -> None:
    """Train only the last n_top decoder layers (and the final norm): cheap CPU runs."""
    layers = decoder_layers(model)
    if n_top > len(layers):
        raise UserError(f"train_top_layers={n_top} but the model has {len(layers)} layers")
    model.requires_grad_(False)
    for layer in list(layers)[-n_top:]:
        layer.requires_grad_(True)
    for name, module in model.base_model.named_children():
        if "norm" in name.lower() and not isinstance(module, torch.nn.ModuleList):
            module.requires_grad_(True)


def add_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Wrap the model in a peft LoRA adapter; returns the PeftModel."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("lora needs peft: pip install 'dpo-eval[peft]'") from None
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout to p = 0 (as TRL does by default): the policy and reference log-probs
    then come from the same deterministic function."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout"):  # rates held as floats (e.g. Llama's attention)
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def make_trainable(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """Apply the config's choice of trainable weights; returns the module to save (maybe a PeftModel)."""
    model.requires_grad_(True)
    if config.disable_dropout:
        disable_dropout(model)
    if config.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.train_top_layers is not None:
        freeze_all_but_top_layers(model, config.train_top_layers)
    if config.lora is not None:
        model = add_lora(model, config.lora)
    return model


def causal_lm(module: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside a PeftModel (LoRA layers injected in place), or the module itself."""
    get_base = getattr(module, "get_base_model", None)
    return get_base() if callable(get_base) else module
