"""`dpo-eval loop` configuration: one frozen dataclass owns every default; YAML and --set override.

`--set` follows `dpo-eval train`'s rules (a YAML value; dotted keys reach nested settings:
`--set sampling.temperature=0.7`, `--set train.learning_rate=1e-5`). `train:` holds any
`dpo-eval train` setting applied to each round, except those the loop sets itself (LOOP_OWNED).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_eval.errors import UserError
from dpo_eval.logprob_settings import LogprobSettings
from dpo_eval.metrics.loop_pairs import PAIR_RULES, RSO_RANKINGS
from dpo_eval.train.config import TrainConfig, _check_scalar, read_settings
from dpo_eval.train.config import load_config as load_train_config

REFERENCES = ("fixed", "previous")
LOOP_OWNED = ("policy", "ref", "data", "output_dir", "stages", "eval_data")
"""Train settings the loop sets per round (eval_data is a top-level loop setting)."""
IGNORED_FOR_RESUME = ("show_progress",)


def resume_view(config: dict) -> dict:
    """A loop config (as loop.json stores it) less what may differ on a resume: progress bars and the
    sampling batch size (neither changes a result)."""
    view = {k: v for k, v in config.items() if k not in IGNORED_FOR_RESUME}
    if isinstance(view.get("sampling"), dict):
        view["sampling"] = {k: v for k, v in view["sampling"].items() if k != "batch_size"}
    return view


@dataclass(frozen=True)
class SamplingSettings:
    """How each round samples its K responses per prompt (as `dpo-eval generate`)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 8
    """Prompts sampled together (each with its K samples): speed and memory only, never the samples
    (each is seeded by its own round, prompt and index), so not part of the resume key."""


@dataclass(frozen=True)
class RsoSettings:
    """Statistical rejection sampling (Liu et al. 2023): beta of the target policy, how many samples
    to accept per prompt, and how the accepted ones are paired."""

    beta: float = 0.5
    accept: int = 2
    ranking: str = "first_round"


def _judge_default(name: str) -> Any:
    from dpo_eval.judge.run import JudgeConfig

    return JudgeConfig.__dataclass_fields__[name].default


@dataclass(frozen=True)
class JudgeSettings:
    """How the pairwise judge labellers (openai:, local:, a pairwise rule:) run; `dpo-eval judge`'s defaults."""

    template: str = _judge_default("template")
    base_url: str = _judge_default("base_url")
    api_key_env: str | None = _judge_default("api_key_env")


@dataclass(frozen=True)
class LoopConfig:
    """Every setting of `dpo-eval loop`. Round 0 starts at `policy`; `ref` defaults to it."""

    policy: str
    prompts: str
    labeller: str
    output_dir: str
    ref: str | None = None
    reference: str = "fixed"
    rounds: int = 2
    prompts_per_round: int | None = None  # None: every prompt each round
    samples_per_prompt: int = 4
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    pairs: str = "max_min"
    rso: RsoSettings = field(default_factory=RsoSettings)
    judge_samples: int = 3
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    online: bool = False  # OAIF: per-step sampling and labelling (dpo_eval.loop.online)
    logprobs: LogprobSettings = field(default_factory=LogprobSettings)
    """The `implicit:` labeller's sequence log-probs: `logprob_backend: vllm` (with `vllm_python`, `vllm_args`,
    `vllm_url`, `vllm_ref_url`) scores through vLLM as `dpo-eval rerank --logprob-backend vllm` does."""
    eval_data: str | None = None
    train: dict = field(default_factory=dict)
    show_progress: bool = True

    def validate(self) -> None:
        """Check values before any model loads; one line per problem."""
        if self.reference not in REFERENCES:
            raise UserError(f"reference {self.reference!r} is unknown; choose one of {', '.join(REFERENCES)}")
        if self.pairs not in PAIR_RULES:
            raise UserError(f"pairs {self.pairs!r} is unknown; choose one of {', '.join(PAIR_RULES)}")
        for name in ("rounds", "samples_per_prompt", "judge_samples"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            raise UserError("samples_per_prompt must be at least 2 to form a pair")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            raise UserError(f"prompts_per_round must be at least 1 (or null for all), got {self.prompts_per_round}")
        self._validate_nested()

    def _validate_nested(self) -> None:
        s, rso = self.sampling, self.rso
        self.logprobs.validate(lambda name: f"logprobs.{name}")
        if self.logprobs.is_vllm and not self.labeller.startswith("implicit:"):
            raise UserError(f"logprobs.logprob_backend vllm applies to the implicit: labeller only (labeller is "
                            f"{self.labeller!r}): drop logprobs or use an implicit:POLICY[,REF] labeller")
        if s.temperature < 0 or not 0 < s.top_p <= 1 or s.max_new_tokens < 1:
            raise UserError("sampling: temperature must be >= 0, top_p in (0, 1], max_new_tokens at least 1")
        if s.batch_size < 1:
            raise UserError(f"sampling: batch_size must be at least 1, got {s.batch_size}")
        if rso.ranking not in RSO_RANKINGS:
            raise UserError(f"rso.ranking {rso.ranking!r} is unknown; choose one of {', '.join(RSO_RANKINGS)}")
        if not rso.beta > 0:
            raise UserError(f"rso.beta must be positive, got {rso.beta}")
        if not 2 <= rso.accept <= self.samples_per_prompt:
            raise UserError(f"rso.accept must be between 2 and samples_per_prompt ({self.samples_per_prompt}), "
                            f"got {rso.accept}")

    @property
    def cache_dir(self) -> str | None:
        return self.train.get("cache_dir")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def resume_key(self) -> dict:
        """What a rerun must share with the run in OUTPUT_DIR to continue it."""
        return resume_view(self.to_dict())


def _nested(cls: type, name: str, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise UserError(f"{name} must be a mapping, got {value!r}")
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = set(value) - set(hints)
    if unknown:
        raise UserError(f"{name}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(hints)}")
    types = {"float": float, "int": int, "str": str, "str | None": str | None}
    return cls(**{k: _check_list(f"{name}.{k}", v) if hints[k] == "tuple[str, ...]" else
                  _check_scalar(f"{name}.{k}", v, types[hints[k]]) for k, v in value.items()})


def _check_list(name: str, value: Any) -> tuple[str, ...]:
    """A YAML list of strings (one string: a list of one) as a tuple."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise UserError(f"setting {name} must be a list of strings, got {value!r}")
    return tuple(values)


def check_train_settings(train: Any) -> dict:
    """Validate the `train:` mapping as `dpo-eval train` would (with placeholder policy/data/output_dir);
    returns it with each value as the train config holds it."""
    if not isinstance(train, dict):
        raise UserError(f"train must be a mapping of `dpo-eval train` settings, got {train!r}")
    owned = sorted(set(train) & set(LOOP_OWNED))
    if owned:
        raise UserError(f"train: {', '.join(owned)} is set by the loop each round; remove it from train: "
                        "(policy, ref, eval_data are top-level loop settings)")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train) - known)
    if unknown:
        raise UserError(f"train: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known - set(LOOP_OWNED)))}")
    checked = load_train_config(None, (), **{**train, "policy": "-", "data": "-", "output_dir": "-"}).to_dict()
    return {name: checked[name] for name in train}  # typed as train has them (YAML reads 1e-5 as a string)


def _coerce(name: str, value: Any) -> Any:
    if name == "sampling":
        return _nested(SamplingSettings, name, value)
    if name == "rso":
        return _nested(RsoSettings, name, value)
    if name == "judge":
        return _nested(JudgeSettings, name, value)
    if name == "logprobs":
        return _nested(LogprobSettings, name, value)
    if name == "train":
        return check_train_settings(value)
    hint = {f.name: f.type for f in dataclasses.fields(LoopConfig)}[name]
    kinds = {"str": str, "int": int, "float": float, "bool": bool, "str | None": str | None,
             "int | None": int | None}
    return _check_scalar(name, value, kinds[hint]) if hint in kinds else value


def load_loop_config(path: str | Path | None, overrides: tuple[str, ...] = (), **base: Any) -> LoopConfig:
    """Read YAML (if given), apply `key=value` overrides, build and validate a LoopConfig."""
    values = read_settings(path, overrides, base)
    known = [f.name for f in dataclasses.fields(LoopConfig)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    missing = [name for name in ("policy", "prompts", "labeller", "output_dir") if name not in values]
    if missing:
        raise UserError(f"missing required setting(s) {', '.join(missing)} (in the YAML or via --set)")
    config = LoopConfig(**{k: _coerce(k, v) for k, v in values.items()})
    config.validate()
    return config
