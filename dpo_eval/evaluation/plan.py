"""What `dpo-eval report` will evaluate, resolved and checked before any model loads.

Every input problem (run dirs, --steps, reference, data, prompts, judge, flags) surfaces here as one
UserError line. Models are identified (weights hashed, memoised in the cache dir), never loaded; the
store keys of every artifact are made from what is resolved here.

Rows: each run gets one row per checkpoint, and a first row for its reference at step 0 (the policy
before training: its figures are the zero point of every curve) unless the run has a step-0 checkpoint.
A checkpoint with no known step (``epoch_N``, a final model without trainer_state.json) is placed one
step after the run's previous row, and ``missing`` says so. A final model with the weights of one of the
run's checkpoints (same fingerprint) is that checkpoint's row, which records both folders
(``discover.fold_final_model``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path

from dpo_eval.data.pairs import PreferencePair, load_pairs
from dpo_eval.engine.cache import ENGINE_VERSION, numerics_tag, resolve_cache_dir
from dpo_eval.engine.distributed import DistContext
from dpo_eval.errors import UserError
from dpo_eval.evaluation.config import DEFAULT_BETA, STAGES, ReportConfig
from dpo_eval.evaluation.discover import Run, TrainingLogs, fold_final_model, read_training_logs
from dpo_eval.evaluation.inputs import (
    DataSource,
    Reference,
    ReportInputs,
    check_reference_identity,
    prompts_from_pairs,
    resolve_inputs,
)
from dpo_eval.evaluation.store import RunStore, path_sha256
from dpo_eval.evaluation.trainers import identify_trainer
from dpo_eval.evaluation.vllm_urls import resolve_vllm_urls
from dpo_eval.jsonio import write_jsonl
from dpo_eval.models import ModelIdentity, identify_model, resolve_device, resolve_dtype
from dpo_eval.tokenization import TokenizerSettings

REFERENCE_LABEL = "0"
TOKENIZER_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template*", "vocab.*",
                      "merges.txt", "*.model", "*.tiktoken")
"""Files of a tokenizer folder whose bytes enter ``tokenizer_sha256`` (vocabulary, merges, settings, chat
template: anything that changes token ids or how a prompt is rendered)."""

SAMPLE_FIGURES = {"kl": "untempered", "drift.dispersion": "untempered", "length": "user", "winrate": "user",
                  "quality": "user"}
"""Which samples each sample-based figure of a checkpoint is computed from. untempered (temperature 1,
top-p 1: Plan.untempered_sampling): the figures that are expectations under π or π_ref: k1/k2/k3 and the
analytic KL along the row's samples, and Δ log π on the reference's samples (-KL(π_ref‖π) in mean) and on
other prompts' responses (dispersion). user (--temperature/--top-p: Plan.sampling): what the judge sees
(win rate, LC win rate, quality, gold accuracy) and the length figures set beside it. Prompt entropy and the
pair figures use no samples."""

@dataclass(frozen=True)
class Row:
    """One row of results.json's checkpoints: a checkpoint of a run, or the run's reference at step 0."""

    run: str
    label: str
    step: int
    path: str
    identity: ModelIdentity
    is_reference: bool
    has_known_step: bool = True
    tokenizer_sha256: str = ""
    """``tokenizer_sha256`` of the tokenizer this row's model is run with (its own, else the reference's)."""
    final_path: str | None = None
    """The run's final model folder when it holds this checkpoint's weights (same fingerprint), else None."""


@dataclass(frozen=True)
class RunPlan:
    """A run with its reference, β, tokenization and rows."""

    run: Run
    reference: Reference
    ref_identity: ModelIdentity
    beta: float
    tokenization: TokenizerSettings
    rows: tuple[Row, ...]
    ref_tokenizer_sha256: str = ""
    """``tokenizer_sha256`` of the reference's own tokenizer (what the unseen pass tokenizes with)."""


@dataclass(frozen=True)
class Plan:
    """Everything resolved: runs, data and their digests, numerics, judge identity, where results go."""

    config: ReportConfig
    inputs: ReportInputs
    runs: tuple[RunPlan, ...]
    out: Path
    cache_root: Path
    numerics: str
    pairs: tuple[PreferencePair, ...]
    pairs_sha256: str
    prompts_path: str
    prompts_sha256: str
    n_prompts: int
    judge: dict | None
    logs: dict[str, TrainingLogs]
    """What each run's trainer logged, by run name (read here: a broken log is an input problem)."""
    warnings: tuple[str, ...]
    ctx: DistContext = DistContext()
    """This process's place in a torchrun job (rank 0 of 1 without one)."""
    stages: tuple[str, ...] = STAGES
    """The stages this report runs (``config.run_stages``: --stages and what they need)."""
    vllm_servers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """fingerprint -> (URL, vLLM version) of the models the user serves (``report.vllm_urls``)."""

    @property
    def is_judged(self) -> bool:
        """Whether a judge is given and the judge stage runs (win rates and quality exist)."""
        return self.judge is not None and "judge" in self.stages

    @property
    def sampling(self) -> dict:
        """The settings a sample depends on (besides the model and the prompts): the user's --temperature and
        --top-p. The judge and the length figures read these samples (what the judge sees). With --vllm, the
        requests pin every other sampling parameter (dpo_eval.generate.VLLM_PLAIN_SAMPLER: no top-k, min-p or
        penalty from the model's generation_config.json), as the in-process sampler applies none; recorded
        as "sampler" so that samples made before that (server defaults) are not reused."""
        c = self.config
        settings = {"n": c.n_samples, "temperature": float(c.temperature), "top_p": float(c.top_p),
                    "max_new_tokens": c.max_new_tokens, "seed": c.seed, "template": c.template,
                    "max_prompts": c.max_prompts, "backend": "vllm" if c.vllm else "transformers"}
        if c.vllm:
            settings["sampler"] = "temperature and top-p only"
        return settings

    @property
    def untempered_sampling(self) -> dict:
        """``sampling`` at temperature 1 and top-p 1: samples of π itself, the samples every expectation under
        π is taken over (KL, dispersion). Neither the in-process sampler nor a vLLM server dpo-eval starts applies
        top-k or a penalty (``sampling``). Equal to ``sampling`` when the user's sampling is already
        untempered: then one set of samples serves all."""
        return {**self.sampling, "temperature": 1.0, "top_p": 1.0}

    @property
    def has_separate_kl_samples(self) -> bool:
        """Whether the KL figures need samples of their own (the user's sampling is tempered or truncated)."""
        return self.untempered_sampling != self.sampling

    @property
    def samples_provenance(self) -> dict:
        """results.json's provenance.samples: per figure (SAMPLE_FIGURES) the settings of the samples it is
        computed from, and whether the KL figures had samples of their own (``separate``)."""
        def settings(sampling: dict) -> dict:
            return {"n_samples": sampling["n"], **{k: v for k, v in sampling.items() if k != "n"}}

        made = {"untempered": settings(self.untempered_sampling), "user": settings(self.sampling)}
        return {"figures": {figure: made[which] for figure, which in SAMPLE_FIGURES.items()},
                "separate": self.has_separate_kl_samples}


def default_out(config: ReportConfig) -> Path:
    """--out, else RUN_DIR/.dpo_eval of the first run dir."""
    return Path(config.out) if config.out else Path(config.run_dirs[0]) / ".dpo_eval"


def _beta(config: ReportConfig, run: Run) -> float:
    """--beta, else the beta the run's trainer recorded (dpo_eval.json, LLaMA-Factory's YAML, torchtune's
    YAML, TRL's training_args.bin: ``trainers.identify_trainer``), else DEFAULT_BETA."""
    if config.beta is not None:
        return config.beta
    recorded = identify_trainer(run).beta
    beta = recorded.value if recorded is not None else None
    return float(beta) if isinstance(beta, int | float) and not isinstance(beta, bool) and beta > 0 else DEFAULT_BETA


def _tokenization(run: Run) -> TokenizerSettings:
    """The tokenization dpo-eval train recorded (template, max_length, truncation), else the defaults."""
    recorded = (run.manifest or {}).get("tokenization")
    if not isinstance(recorded, dict):
        return TokenizerSettings()
    fields = {k: recorded[k] for k in ("template", "max_length", "truncation") if k in recorded}
    try:
        return TokenizerSettings(**fields)
    except (UserError, TypeError) as error:
        raise UserError(f"run {run.name}: dpo_eval.json tokenization {fields} is invalid ({error}); "
                        "restore the file written by dpo-eval train") from None


def _identify(path: str, cache_root: Path, flags: dict) -> ModelIdentity:
    return identify_model(path, cache_dir=cache_root, **flags)


def tokenizer_sha256(paths: tuple[str, ...], cache_root: Path) -> str:
    """sha256 of the tokenizer files ``load_tokenizer(*paths)`` reads: the TOKENIZER_PATTERNS files of the
    first folder it takes them from (name and bytes of each, sorted by name); "none" when there is none.

    The model fingerprint names weights and config only, so this is what makes a tokenizer edit (a new
    chat template, an added token) a new store key for every artifact that tokenizes.
    """
    from dpo_eval.models.locate import locate
    from dpo_eval.models.tokenizer import _first_tokenizer_folder

    for path in paths:
        folder = _first_tokenizer_folder(locate(path, cache_root))
        if folder is None:
            continue
        digest = hashlib.sha256()
        files = sorted(p for p in folder.iterdir() if p.is_file()
                       and any(fnmatch.fnmatch(p.name, pattern) for pattern in TOKENIZER_PATTERNS))
        for file in files:
            digest.update(file.name.encode("utf-8") + b"\0" + path_sha256(file).encode("ascii") + b"\0")
        return digest.hexdigest()
    return "none"


def _rows(run: Run, ref_path: str, ref_identity: ModelIdentity, cache_root: Path, flags: dict) -> tuple[Row, ...]:
    """The reference row at step 0 (unless the run has a step-0 checkpoint), then each checkpoint."""
    rows = []
    if not any(c.step == 0 for c in run.checkpoints):
        rows.append(Row(run.name, REFERENCE_LABEL, 0, ref_path, ref_identity, is_reference=True,
                        tokenizer_sha256=tokenizer_sha256((ref_path,), cache_root)))
    identities = {c.path: _identify(str(c.path), cache_root, flags) for c in run.checkpoints}
    checkpoints = fold_final_model(run.checkpoints, {p: i.fingerprint for p, i in identities.items()})
    last = 0
    for checkpoint in checkpoints:
        step = checkpoint.step if checkpoint.step is not None else last + 1
        last = max(last, step)
        path = str(checkpoint.path)
        rows.append(Row(run.name, checkpoint.label, step, path, identities[checkpoint.path],
                        is_reference=checkpoint.step == 0, has_known_step=checkpoint.step is not None,
                        tokenizer_sha256=tokenizer_sha256((path, ref_path), cache_root),
                        final_path=str(checkpoint.final_path) if checkpoint.final_path else None))
    return tuple(rows)


def _run_plan(config: ReportConfig, inputs: ReportInputs, run: Run, cache_root: Path) -> tuple[RunPlan, list[str]]:
    reference = inputs.references[run.name]
    ref_identity = _identify(reference.path, cache_root, config.models.model_flags)
    warning = check_reference_identity(reference, ref_identity)
    plan = RunPlan(run, reference, ref_identity, _beta(config, run), _tokenization(run),
                   _rows(run, reference.path, ref_identity, cache_root, config.models.model_flags),
                   ref_tokenizer_sha256=tokenizer_sha256((reference.path,), cache_root))
    return plan, [f"run {run.name}: {warning}"] if warning else []


def _prompts(store: RunStore, prompts: DataSource, pairs: list[PreferencePair], pairs_sha: str) -> Path:
    """The prompts file to sample: --prompts as given, or the pairs' prompts written once into the store."""
    if prompts.source != "pairs":
        return Path(prompts.path)
    derived = prompts_from_pairs(pairs)
    if not derived:
        raise UserError(f"the held-out pairs {prompts.path} have no non-empty prompt to sample: pass --prompts")
    artifact = store.artifact("prompts", {"pairs_sha256": pairs_sha})
    folder = store.ensure(artifact, "prompts from pairs", lambda work: write_jsonl(
        work / "prompts.jsonl", [{"prompt_id": p.id, "prompt": p.text} for p in derived]))
    return folder / "prompts.jsonl"


def _hub_data_file(store: RunStore, source: DataSource, split: str | None, subset: str | None, kind: str) -> DataSource:
    """A Hub dataset's split written once into the store as jsonl, keyed by ``org/name@<commit>[/subset]:split``
    (``dpo_eval.data.formats.read_source``), so every later step reads a local file whose sha256 keys what
    depends on it; a local path is returned as it is."""
    from dpo_eval.data.formats import read_source
    from dpo_eval.data.hub_data import is_hub_dataset

    if not is_hub_dataset(source.path):
        return source
    rows, name = read_source(source.path, split, subset)
    artifact = store.artifact(kind, {"hub_source": name})
    folder = store.ensure(artifact, f"{kind} {name}", lambda work: write_jsonl(work / "rows.jsonl", rows))
    return DataSource(str(folder / "rows.jsonl"), f"{source.source} {name}")


def judge_identity(config: ReportConfig, cache_root: Path) -> dict | None:
    """What the judge's verdicts depend on (part of the judge artifacts' key); None without --judge.

    Checks the judge before any model loads: the template, the mode, a gold file's answers, a rule's import.
    """
    if config.judge is None:
        return None
    from dpo_eval.judge.judging import MODES
    from dpo_eval.judge.templates import load_template

    if config.judge_mode not in MODES:
        raise UserError(f"--judge-mode {config.judge_mode!r}: use one of {', '.join(MODES)}")
    template = load_template(config.judge_template)
    kind, _, rest = config.judge.partition(":")
    identity = {"spec": config.judge, "mode": config.judge_mode, "template": template.name,
                "template_sha256": template.sha256, "seed": config.seed}
    if kind == "gold":
        from dpo_eval.judge.gold import GoldJudge

        identity["answers_sha256"] = GoldJudge(rest).digest
    elif kind == "rule":
        from dpo_eval.judge.backends import RuleJudge

        source = inspect.getsourcefile(RuleJudge(rest).function)
        identity["source_sha256"] = path_sha256(source) if source else None
    elif kind == "local":
        identity["model_fingerprint"] = _identify(rest, cache_root, config.models.model_flags).fingerprint
    else:
        identity["base_url"] = config.judge_base_url
    return identity


def _numerics(config: ReportConfig) -> str:
    """What besides the models changes log-probs: device type, dtype and the engine's version; under
    --logprob-backend vllm, the vLLM version and a digest of its options (every store key holds it)."""
    if config.logprob_backend == "vllm":
        from dpo_eval.engine.vllm_backend import VllmOptions
        from dpo_eval.vllm_server import installed_version

        options = VllmOptions(config.vllm_python, tuple(config.vllm_args))
        return f"vllm{installed_version(config.vllm_python)}-{options.digest()}"
    device = resolve_device(config.models.device)
    return f"{numerics_tag(device, resolve_dtype(config.models.dtype, device))}-engine{ENGINE_VERSION}"


def build_plan(config: ReportConfig, store: RunStore) -> Plan:
    """Resolve and check every input (one UserError line each); identify models; no model is loaded.

    ``store`` is where derived prompts are written (its root: ``default_out(config) / "store"``).
    """
    config.validate()
    inputs = resolve_inputs(config.run_dirs, ref=config.ref, data=config.data, prompts=config.prompts,
                            steps=config.steps)
    pairs_source = _hub_data_file(store, inputs.pairs, config.split, config.subset, "hub_pairs")
    prompts_source = (pairs_source if inputs.prompts.source == "pairs" else
                      _hub_data_file(store, inputs.prompts, None, None, "hub_prompts"))
    inputs = replace(inputs, pairs=pairs_source, prompts=replace(prompts_source, source=inputs.prompts.source)
                     if inputs.prompts.source == "pairs" else prompts_source)
    cache_root = resolve_cache_dir(config.models.cache_dir)
    numerics = _numerics(config)
    loaded = load_pairs(inputs.pairs.path)
    pairs_sha = path_sha256(inputs.pairs.path)
    judge = judge_identity(config, cache_root)
    runs, warnings = [], list(inputs.warnings)
    logs = {run.name: read_training_logs(run) for run in inputs.runs}
    warnings += [w for log in logs.values() for w in log.warnings]
    if len(config.run_dirs) > 1 and config.out is None:
        warnings.append(f"results of all runs go to {default_out(config)} (the first run's): pass --out to choose")
    for run in inputs.runs:
        run_plan, more = _run_plan(config, inputs, run, cache_root)
        runs.append(run_plan)
        warnings += more
    servers = resolve_vllm_urls(config, runs, cache_root) if config.logprob_backend == "vllm" else {}
    prompts_path = _prompts(store, inputs.prompts, loaded.pairs, pairs_sha)
    from dpo_eval.generate import read_prompts

    n_prompts = len(read_prompts(str(prompts_path), config.max_prompts))
    return Plan(config=config, inputs=inputs, runs=tuple(runs), out=default_out(config), cache_root=cache_root, numerics=numerics,
                pairs=tuple(loaded.pairs), pairs_sha256=pairs_sha, prompts_path=str(prompts_path),
                prompts_sha256=path_sha256(prompts_path), n_prompts=n_prompts, judge=judge,
                logs=logs, warnings=tuple(warnings), ctx=store.ctx, stages=config.run_stages,
                vllm_servers=servers)

