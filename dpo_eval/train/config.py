"""`dpo-eval train` configuration: one frozen dataclass owns every default; YAML and --set override."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpo_eval.errors import UserError

SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA through peft: rank r, scaling alpha, dropout, which modules ("all-linear" or a list)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: Any = "all-linear"


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. `policy` initialises the model; `ref` defaults to it."""

    policy: str
    data: str
    output_dir: str
    ref: str | None = None
    eval_data: str | None = None
    data_format: str = "auto"
    skip_invalid: bool = False
    limit: int | None = None
    stages: list[str] | None = None  # sDPO: data splits trained in turn (dpo_eval.train.stages); data = the first
    # loss
    loss: str = "dpo"
    beta: float | None = None  # None: the loss's own default (loss_defaults; SimPO 2.0, the others 0.1)
    loss_params: dict = field(default_factory=dict)
    nll_coef: float = 0.0
    # optimisation
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: str = "cosine"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    seed: int = 0
    # tokenization
    template: str = "auto"
    max_length: int | None = 1024
    truncation: str = "keep_end"
    mask_special_tokens: bool = False
    # model and numerics
    device: str = "auto"
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    disable_dropout: bool = True
    lora: LoraSettings | None = None
    train_top_layers: int | None = None
    keep_ref_live: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False
    cache_dir: str | None = None
    # bookkeeping
    log_every: int = 1
    eval_every: int = 0
    save_every: int = 0
    show_progress: bool = True

    def validate(self) -> None:
        """Check values before any model loads; one line per problem."""
        from dpo_eval.train.losses import LOSSES

        if self.loss not in LOSSES and self.loss not in _special_losses():
            raise UserError(f"loss {self.loss!r} is unknown; choose one of "
                            f"{', '.join(sorted([*LOSSES, *_special_losses()]))}")
        if self.loss == "listwise" and (self.mask_special_tokens or self.keep_ref_live):
            raise UserError("loss listwise supports neither mask_special_tokens nor keep_ref_live (its reference "
                            "log-probs come from the per-sequence cache); set both to false")
        if self.lr_schedule not in SCHEDULES:
            raise UserError(f"lr_schedule {self.lr_schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}")
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum, "epochs": self.epochs,
                    "learning_rate": self.learning_rate, "beta": self.loss_beta}
        for name, value in positive.items():
            if not value > 0:
                raise UserError(f"{name} must be positive, got {value}")
        for name in ("max_steps", "train_top_layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1 (or null), got {value}")
        for name in ("warmup_steps", "eval_every", "save_every", "nll_coef", "weight_decay"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.eval_every and not self.eval_data:
            raise UserError("eval_every is set but eval_data is not; give eval_data or set eval_every: 0")
        if self.lora is not None and self.train_top_layers is not None:
            raise UserError("lora and train_top_layers cannot be combined; choose one")
        check_loss_params(self.loss, self.loss_beta, self.loss_params)

    @property
    def loss_beta(self) -> float:
        """The beta the loss runs with: `beta` when the config sets it, else the loss's default."""
        return self.beta if self.beta is not None else loss_defaults(self.loss)["beta"]

    def loss_settings(self) -> dict:
        """Every hyperparameter the loss runs with (its defaults, then loss_params), beta included."""
        return {**loss_defaults(self.loss), **self.loss_params, "beta": self.loss_beta}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _special_losses() -> dict[str, Callable]:
    """Losses outside the paired registry, each fed by its own path in the recipe: KTO (unpaired items),
    TDPO (token-level KLs, dpo_eval.train.losses_token), listwise (ranked groups, dpo_eval.train.listwise)."""
    from dpo_eval.train.listwise import plackett_luce_loss
    from dpo_eval.train.losses import kto_loss
    from dpo_eval.train.losses_family import npo_loss
    from dpo_eval.train.losses_token import TOKEN_LOSSES

    return {"kto": kto_loss, **TOKEN_LOSSES, "listwise": plackett_luce_loss, "npo": npo_loss}


def _loss_function(loss: str) -> Callable:
    from dpo_eval.train.losses import LOSSES

    return _special_losses().get(loss) or LOSSES[loss]


def loss_defaults(loss: str) -> dict[str, Any]:
    """The defaults of loss `loss`, beta included: its function's keyword defaults, which are the
    paper's settings (SimPO: beta 2.0, gamma 1.0, i.e. gamma / beta 0.5 as the authors' recipes) or,
    where the paper gives none, TRL's beta 0.1. docs/train.md's loss-defaults table lists them."""
    return {name: p.default for name, p in inspect.signature(_loss_function(loss)).parameters.items()
            if p.default is not inspect.Parameter.empty}


def loss_param_hints(loss: str) -> dict[str, Any]:
    """The hyperparameters `loss_params` may set for `loss`, with their type hints: the loss
    function's keyword parameters that have defaults, except beta (a top-level setting)."""
    function = _loss_function(loss)
    hints = typing.get_type_hints(function)
    return {name: hints.get(name, Any) for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty and name != "beta"}


def _check_loss_values(loss: str, beta: float, params: dict) -> None:
    """Run the loss once on a one-item dummy batch so its own value checks (ranges) speak now."""
    import torch

    from dpo_eval.train import listwise, losses_token
    from dpo_eval.train.losses import PairLogps, kto_loss
    from dpo_eval.train.losses_family import required_extras

    one = torch.ones(1)
    try:
        if loss == "kto":
            kto_loss(-one, -one, torch.tensor([True]), torch.tensor(0.0), beta=beta, **params)
        elif loss in losses_token.TOKEN_LOSSES:
            losses_token.probe(loss, beta, params)
        elif loss == "listwise":
            listwise.probe(beta, params)
        elif loss == "npo":
            _loss_function(loss)(-one, -one, torch.tensor([True]), one, beta=beta, **params)
        else:  # extras (losses_family): any valid value, so only the hyperparameters are checked
            extras = dict.fromkeys(required_extras(loss, params), one / 2)
            _loss_function(loss)(PairLogps(-one, -one, -one, -one, one, one, extras=extras), beta=beta, **params)
    except ValueError as err:
        raise UserError(f"loss_params for loss {loss!r}: {err}") from None


def check_loss_params(loss: str, beta: float, params: Any) -> dict:
    """Validate `loss_params` against the loss function's signature before any model loads.

    Unknown names (with the closest valid one suggested), wrong types and out-of-range values
    are one-line UserErrors. Returns the params with numeric strings made floats.
    """
    if not isinstance(params, dict):
        raise UserError(f"loss_params must be a mapping of name: value, got {params!r}")
    hints = loss_param_hints(loss)
    allowed = ", ".join(hints) or "none"
    checked = {}
    for name, value in params.items():
        if name == "beta":
            raise UserError(f"loss_params.beta: beta is a top-level setting; set beta: {value} instead")
        if name not in hints:
            close = difflib.get_close_matches(str(name), list(hints), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"loss_params.{name}: loss {loss!r} has no parameter {name!r}{hint}; "
                            f"its parameters: {allowed}")
        value = _check_scalar(f"loss_params.{name}", value, hints[name])
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"loss_params.{name} must be a finite number, got {value}")
        checked[name] = value
    _check_loss_values(loss, beta, checked)
    return checked


def _check_scalar(name: str, value: Any, hint: Any) -> Any:
    """Give YAML scalars the field's type (YAML reads 1e-3 as a string); refuse wrong types."""
    allowed = set(typing.get_args(hint)) or {hint}
    if value is None and type(None) in allowed:
        return None
    for kind in (bool, int, float, str):
        if kind not in allowed:
            continue
        if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                continue
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise UserError(f"setting {name} must be {names}, got {value!r}")


def _coerce(name: str, value: Any) -> Any:
    hint = typing.get_type_hints(TrainConfig)[name]
    if set(typing.get_args(hint) or {hint}) <= {bool, int, float, str, type(None)}:
        return _check_scalar(name, value, hint)
    if name == "lora" and isinstance(value, dict):
        unknown = set(value) - {f.name for f in dataclasses.fields(LoraSettings)}
        if unknown:
            raise UserError(f"lora: unknown key(s) {', '.join(sorted(unknown))}")
        return LoraSettings(**value)
    if name == "lora" and value is True:
        return LoraSettings()
    if name == "adam_betas":
        return tuple(value)
    if name == "stages" and value is not None:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise UserError(f"stages must be a non-empty list of data paths (one split per sDPO stage), got {value!r}")
    return value


def _apply_override(values: dict, assignment: str) -> None:
    """Apply one `key=value` (value parsed as YAML; `loss_params.gamma=0.5` sets a nested key)."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected key=value, e.g. --set learning_rate=1e-5")
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw)
    *parents, leaf = key.strip().split(".")
    target = values
    for parent in parents:
        target = target.setdefault(parent, {})
        if not isinstance(target, dict):
            raise UserError(f"--set {assignment!r}: {parent} is not a mapping")
    target[leaf] = value


def read_settings(path: str | Path | None, overrides: tuple[str, ...], base: dict) -> dict:
    """`base`, then the YAML mapping at `path` (if given), then the `key=value` overrides (dotted keys reach
    into nested mappings): the settings a config dataclass is built from (train's and the loop's)."""
    values: dict = dict(base)
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise UserError(f"config file {path} does not exist") from None
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: expected a mapping of settings at the top level")
        values.update(loaded)
    for assignment in overrides:
        _apply_override(values, assignment)
    return values


def load_config(path: str | Path | None, overrides: tuple[str, ...] = (), **base: Any) -> TrainConfig:
    """Read YAML (if given), apply `key=value` overrides, build and validate a TrainConfig."""
    values = read_settings(path, overrides, base)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    if values.get("stages") is not None:
        if "data" in values:
            raise UserError("give either data or stages (sDPO: one data split per stage), not both")
        values["data"] = _coerce("stages", values["stages"])[0]
    missing = [name for name in ("policy", "data", "output_dir") if name not in values]
    if missing:
        raise UserError(f"missing required setting(s) {', '.join(missing)} (in the YAML or via --set)")
    try:
        config = TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})
    except TypeError as err:
        raise UserError(f"bad setting: {err}") from None
    config.validate()
    return dataclasses.replace(config, loss_params=check_loss_params(config.loss, config.loss_beta,
                                                                     config.loss_params))
