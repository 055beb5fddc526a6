"""`ReportConfig`: every default of `dpo-eval report` (the CLI options restate none of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dpo_eval.errors import UserError, read_yaml_file
from dpo_eval.metrics.findings import Thresholds
from dpo_eval.model_settings import ModelLoading

DEFAULT_BETA = 0.1
"""β for implicit rewards when neither --beta nor the run's dpo_eval.json gives one."""
JUDGE_KINDS = ("openai", "local", "gold", "rule")
STAGES = ("score", "samples", "kl", "entropy", "unseen", "judge")
"""The report's stages, in the order they run (each makes one kind of run-store artifact)."""
VLLM_CANNOT = ("kl", "entropy")
"""Stages that need whole next-token distributions, which vLLM does not return (--logprob-backend vllm)."""
STAGE_NEEDS = {"kl": ("samples",), "unseen": ("samples",), "judge": ("samples",)}
"""What each stage reads: KL is measured along the row's samples, unseen scores the reference's samples,
the judge compares the row's samples with the reference's. score and entropy need no other stage."""


def resolve_stages(stages: tuple[str, ...] | None) -> tuple[str, ...]:
    """The stages to run: every stage for None, else the given ones and what they need, in STAGES order.

    Raises UserError (one line) for an unknown or empty selection.
    """
    if stages is None:
        return STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        what = f"unknown stage {unknown[0]!r}" if unknown else "no stage given"
        raise UserError(f"--stages: {what}; allowed: {', '.join(STAGES)} (comma-separated; leave it out for all)")
    wanted = set(stages) | {need for stage in stages for need in STAGE_NEEDS.get(stage, ())}
    return tuple(s for s in STAGES if s in wanted)


def thresholds_from_mapping(mapping: object, where: str) -> Thresholds:
    """Thresholds with a mapping's overrides (field name -> number); UserError naming the valid fields."""
    if not isinstance(mapping, dict):
        raise UserError(f"{where}: expected a mapping of threshold names to numbers, e.g. kl_budget: 5, got "
                        f"{type(mapping).__name__}")
    try:
        return Thresholds.from_dict(mapping)
    except (TypeError, ValueError) as error:
        raise UserError(f"{where}: {error}") from None


def load_thresholds(path: str | Path) -> Thresholds:
    """`--thresholds FILE`: a YAML or JSON mapping of metrics.findings.Thresholds fields (others default)."""
    mapping = read_yaml_file(path, "--thresholds", "pass a YAML or JSON file such as kl_budget: 5", "YAML or JSON")
    return thresholds_from_mapping({} if mapping is None else mapping, f"--thresholds {path}")


@dataclass(frozen=True)
class ReportConfig:
    """What `dpo-eval report` evaluates and how; the defaults run on a CPU in minutes for small models."""

    run_dirs: tuple[str, ...]
    ref: str | None = None
    """Reference model for every run; default: each run's dpo_eval.json, else its adapters' base model."""
    data: str | None = None
    """Held-out preference pairs; default: the runs' dpo_eval.json eval data."""
    prompts: str | None = None
    """Prompts to sample; default: the held-out pairs' prompts, once each."""
    split: str | None = None
    """Split of a Hub dataset (or saved DatasetDict) given as --data; default: "test", or the only split."""
    subset: str | None = None
    """Config (subset) of a Hub dataset given as --data."""
    judge: str | None = None
    """openai:MODEL, local:PATH, gold:ANSWERS or rule:module:function; None: no judge (no win rates)."""
    steps: str | None = None
    """Checkpoints to evaluate, e.g. "100,200,final"; None: every checkpoint."""
    stages: tuple[str, ...] | None = None
    """Stages to run (of STAGES; what they need is added, see STAGE_NEEDS); None: every stage. The figures
    of a stage not run are null in results.json and `missing` says why."""
    out: str | None = None
    """Results folder; default RUN_DIR/.dpo_eval (required with several runs unless the first run's is meant)."""
    n_samples: int = 4
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    template: str = "auto"
    max_prompts: int | None = None
    """Only the first N prompts are sampled (None: all)."""
    beta: float | None = None
    """β of implicit rewards; None: the run's dpo_eval.json loss beta, else DEFAULT_BETA."""
    judge_mode: str = "verdict"
    judge_template: str = "pairwise"
    judge_base_url: str = "https://api.openai.com/v1"
    judge_api_key_env: str | None = "OPENAI_API_KEY"
    judge_concurrency: int = 4
    bootstrap_resamples: int = 2000
    lc_resamples: int = 200
    batch_size: int = 8
    models: ModelLoading = field(default_factory=ModelLoading)
    """How every model is loaded and run (checkpoints, reference, a local judge): token_budget (padded
    tokens per forward pass of the log-prob passes; None: the device's default, as `dpo-eval score`),
    device, dtype, cache_dir, trust_remote_code, allow_pickle. Their flags and a gate file's `report:`
    keys keep these names (pop_model_loading)."""
    show_progress: bool = True
    render: bool = True
    vllm: bool = False
    """Sample with a vLLM server started per model (`generate --vllm`; needs `make vllm-env` or vllm_python)."""
    vllm_python: str | None = None
    """Python of the vLLM environment; default .venv-vllm/bin/python."""
    vllm_args: tuple[str, ...] = ()
    """Options passed to vLLM unchanged, e.g. --tensor-parallel-size=2."""
    logprob_backend: str = "engine"
    """Sequence log-probs (score stage) from the engine or from vLLM (a server per model, vllm_python and
    vllm_args); with vllm the kl and entropy stages, which need whole distributions, do not run."""
    vllm_urls: tuple[str, ...] = ()
    """CHECKPOINT=URL: a vLLM server the user runs for that checkpoint (folder name or step, RUN/NAME, or path);
    the checkpoints without one are served by a server dpo-eval starts (vllm_python, vllm_args)."""
    vllm_ref_url: str | None = None
    """A vLLM server the user runs for the reference."""
    thresholds: Thresholds = Thresholds()
    """When each finding fires (metrics.findings.Thresholds); recorded in results.json's provenance."""
    store: str | None = None
    """The run store folder; default OUT/store. The gate points it at the report's store while writing
    its own results folder, so the two share computed artifacts but never each other's results.json."""

    @property
    def run_stages(self) -> tuple[str, ...]:
        """The stages this report runs: ``stages`` with what they need (resolve_stages), less those
        vLLM cannot give (VLLM_CANNOT) under logprob_backend vllm."""
        stages = resolve_stages(self.stages)
        if self.logprob_backend == "vllm":
            return tuple(s for s in stages if s not in VLLM_CANNOT)
        return stages

    def validate(self) -> None:
        """Flag values that are wrong whatever the inputs (one line each)."""
        if self.n_samples < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise UserError("--n-samples, --max-new-tokens and --batch-size must be at least 1")
        if self.models.token_budget is not None and self.models.token_budget < 1:
            raise UserError(f"--token-budget must be at least 1, got {self.models.token_budget}; leave it out for "
                            "the default")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError(f"--temperature must be >= 0 and --top-p in (0, 1]; got {self.temperature}, {self.top_p}")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise UserError(f"--max-prompts must be at least 1 (got {self.max_prompts}); leave it out for all prompts")
        if self.beta is not None and not self.beta > 0:
            raise UserError(f"--beta must be positive, got {self.beta}")
        if self.judge is not None:
            kind, _, rest = self.judge.partition(":")
            if kind not in JUDGE_KINDS or not rest:
                raise UserError(f"--judge {self.judge!r}: use openai:MODEL, local:PATH, gold:ANSWERS or "
                                "rule:module:function")
        if self.bootstrap_resamples < 1 or self.lc_resamples < 0:
            raise UserError("--bootstrap-resamples must be >= 1 and --lc-resamples >= 0")
        resolve_stages(self.stages)
        self._validate_backend()

    def _validate_backend(self) -> None:
        from dpo_eval.logprob_settings import BACKENDS, refuse_with_vllm

        if self.logprob_backend not in BACKENDS:
            raise UserError(f"--logprob-backend must be one of {', '.join(BACKENDS)}, got {self.logprob_backend!r}")
        for stage in VLLM_CANNOT:
            if stage in (self.stages or ()):
                refuse_with_vllm(f"--stages {stage}", self.logprob_backend)
        if (self.vllm_urls or self.vllm_ref_url) and self.logprob_backend != "vllm":
            raise UserError("--vllm-url/--vllm-ref-url apply to --logprob-backend vllm: add it or drop them")
        names = [entry.partition("=")[0] for entry in self.vllm_urls]
        for entry, name in zip(self.vllm_urls, names):
            if not name or not entry.partition("=")[2] or names.count(name) > 1:
                raise UserError(f"--vllm-url {entry!r}: give each checkpoint once as CHECKPOINT=URL "
                                "(e.g. checkpoint-200=http://host:8000/v1)")
