"""Find the checkpoints of training runs, in step order, before any model loads.

What a run directory (RUN_DIR) may hold as direct children, and what each becomes:

| child                              | written by                                     | step           | label     |
|------------------------------------|------------------------------------------------|----------------|-----------|
| ``checkpoint-N/``                  | dpo-eval train, HF Trainer, TRL, Axolotl,      | N              | ``"N"``   |
|                                    | LLaMA-Factory                                  |                |           |
| ``step_N/``                        | open-instruct, torchtune                       | N              | ``"N"``   |
| ``global_stepN_hf/``               | OpenRLHF's Hugging Face export (``--save_hf_ckpt``) | N         | ``"N"``   |
|                                    | (its DeepSpeed ``global_stepN/`` is skipped)   |                |           |
| ``epoch_N/``                       | torchtune, open-instruct                       | None           | ``"epoch_N"`` |
| weights in RUN_DIR itself          | ``save_model`` / ``save_pretrained`` at the end | root           | ``"final"`` |
|                                    |                                                | trainer_state's |           |
|                                    |                                                | global_step, else None |   |

A folder counts only when it holds loadable weights, judged as ``dpo_eval.models`` will load it:
with ``adapter_config.json`` it is a PEFT adapter (kind ``"peft"``) and needs ``adapter_model*.safetensors``
or ``adapter_model*.bin``; otherwise it needs ``config.json`` and ``*.safetensors`` or ``pytorch_model*.bin``
(kind ``"full"``). A folder with both a full model and an adapter whose config names no base model (torchtune's
LoRA ``epoch_N/``: merged weights beside the adapter) is the full model. Every other child folder is skipped with its reason (a checkpoint still being written,
DeepSpeed ZeRO shards, ``runs/`` TensorBoard logs, ...). A RUN_DIR that is itself a model folder with no
checkpoint children is a one-checkpoint run; if it is named like ``checkpoint-N`` its step is N.
A NeMo / NeMo-Aligner ``.nemo`` file (given, or in a dir with no checkpoint) is refused with one line
naming NeMo's Hugging Face export script.

Order: numbered checkpoints by step (numerically: 9 before 10), then ``epoch_N`` by N, and the final
model last, or at its step when ``trainer_state.json`` gives one (after a checkpoint of the same step).

A final model with the same weights as one of the run's checkpoints (TRL / HF Trainer: ``checkpoint-4``
and ``save_model()`` at the root after 4 steps) is that checkpoint: ``fold_final_model`` (called once the
models are fingerprinted, by ``dpo_eval.evaluation.plan``) drops it and records its folder as the
checkpoint's ``final_path``. A final model with other weights stays its own checkpoint ``"final"``, after
a checkpoint of the same step.

``--steps`` picks checkpoints by label: a step number, ``epoch_N``, or ``final`` (the run's last
checkpoint: its final model, else its highest step, so ``final`` also works for dpo-eval's own runs,
which save no separate final model).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from dpo_eval.errors import UserError
from dpo_eval.metrics import training_curves

MANIFEST = "dpo_eval.json"
"""dpo-eval train's run manifest at the run root (same name as ``dpo_eval.train.checkpoint.MANIFEST``)."""
TRAINER_STATE = "trainer_state.json"
TRAINER_LOG = "trainer_log.jsonl"
FINAL = "final"
NUMBERED = (
    re.compile(r"^checkpoint-(\d+)$"),
    re.compile(r"^step_(\d+)$"),
    re.compile(r"^global_step_?(\d+)(?:_hf)?$"),
)
EPOCH = re.compile(r"^epoch_(\d+)$")
LOOKED_FOR = (
    "checkpoint-N/, step_N/, global_stepN/ or epoch_N/ folders, or a model saved in the folder itself, "
    "each with config.json + *.safetensors (or pytorch_model*.bin), or adapter_config.json + adapter_model.*"
)
NEMO_SUFFIX = ".nemo"
NEMO_EXPORT = ("export it to a Hugging Face folder with NeMo's scripts/checkpoint_converters/"
               "convert_<model>_nemo_to_hf.py (e.g. convert_llama_nemo_to_hf.py --input_name_or_path X.nemo "
               "--output_path OUT)")
NEMO_CONFIG = "model_config.yaml"
"""What an unpacked .nemo checkpoint folder holds (beside model_weights/)."""
TORCHTUNE_LOGS = "logs"
"""torchtune's DiskLogger folder in a run dir (its default ``log_dir: ${output_dir}/logs``): ``log_*.txt``."""
STEP_TOKEN = re.compile(r"^(\d+|final|epoch_\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One set of weights of a run, ready to hand to ``dpo_eval.models.load_model``."""

    run: str
    """The name of the run it belongs to."""
    step: int | None
    """Training step (optimizer steps) when known; None for ``epoch_N`` and an unnumbered final model."""
    label: str
    """What ``--steps`` and the report call it: ``"100"``, ``"epoch_2"`` or ``"final"``."""
    path: Path
    """The folder holding the weights (absolute)."""
    kind: str
    """``"full"`` (config.json + model weights) or ``"peft"`` (adapter_config.json + adapter weights)."""
    final_path: Path | None = None
    """The run's final model (weights at the run root) when it holds these same weights (see
    ``fold_final_model``); None otherwise."""


@dataclass(frozen=True)
class Skipped:
    """A child folder of a run dir that holds no loadable weights."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Run:
    """A training run: its checkpoints in step order and where its manifest and logs are."""

    name: str
    """The run dir's name, with parent folders prepended where two runs share a name."""
    path: Path
    """The run dir as resolved (absolute)."""
    checkpoints: tuple[Checkpoint, ...]
    """In step order (see the module docstring); after ``select_steps`` only the picked ones."""
    manifest: dict | None
    """dpo-eval train's ``dpo_eval.json`` (at the run root, or its parent for a checkpoint-N dir), or None."""
    trainer_state_path: Path | None
    """``trainer_state.json`` at the run root, else in the highest-step checkpoint holding one."""
    trainer_log_path: Path | None
    """LLaMA-Factory's ``trainer_log.jsonl`` at the run root, or None."""
    skipped: tuple[Skipped, ...] = field(default=())
    """Child folders that are not checkpoints, each with the reason."""


# ---------------------------------------------------------------------------------------------- weights


def _weights_kind(folder: Path) -> tuple[str | None, str]:
    """(``"full"`` / ``"peft"``, "") when the folder holds loadable weights, else (None, why not)."""
    files = {p.name for p in folder.iterdir() if p.is_file()}
    adapter_weights = [n for n in files if n.startswith("adapter_model") and n.endswith((".safetensors", ".bin"))]
    model_weights = [n for n in files if (n.endswith(".safetensors") and not n.startswith("adapter_model"))
                     or (n.startswith("pytorch_model") and n.endswith(".bin"))]
    if "adapter_config.json" in files and "config.json" in files and model_weights and not _names_base(folder):
        return "full", ""  # torchtune's LoRA epoch_N/: the merged model beside an adapter that names no base
    if "adapter_config.json" in files:
        if adapter_weights:
            return "peft", ""
        return None, "adapter_config.json but no adapter_model.safetensors or adapter_model.bin"
    if "config.json" in files and model_weights:
        return "full", ""
    if "config.json" in files:
        return None, ("config.json but no weights (*.safetensors, pytorch_model*.bin): still being written, "
                      "or DeepSpeed ZeRO shards not consolidated (run zero_to_fp32.py)")
    if model_weights or adapter_weights:
        return None, "weight files but no config.json: not a save_pretrained folder"
    return None, "no config.json, adapter_config.json or weight files"


def _names_base(folder: Path) -> bool:
    """Whether the folder's adapter_config.json names a base model (PEFT's save_pretrained always does)."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # unreadable: treated as an adapter, and reported as one where its base is looked up
    return isinstance(config, dict) and bool(config.get("base_model_name_or_path"))


def _numbered(name: str) -> int | None:
    """N of checkpoint-N, step_N, global_stepN or global_stepN_hf; else None."""
    for pattern in NUMBERED:
        if match := pattern.match(name):
            return int(match.group(1))
    return None


def _child_checkpoint(run: str, child: Path) -> Checkpoint | Skipped:
    """A checkpoint for a numbered or epoch_N child folder with weights; else why it is skipped."""
    step, epoch = _numbered(child.name), EPOCH.match(child.name)
    if step is None and epoch is None:
        if child.name.startswith(".checkpoint-"):
            return Skipped(child, "a checkpoint being written (dpo-eval's temporary folder)")
        return Skipped(child, "name is not checkpoint-N, step_N, global_stepN or epoch_N")
    kind, reason = _weights_kind(child)
    if kind is None:
        return Skipped(child, reason)
    label = str(step) if step is not None else child.name
    return Checkpoint(run, step, label, child.resolve(), kind)


def _order_key(checkpoint: Checkpoint) -> tuple[float, int, int]:
    """Sort key: numbered by step, then epoch_N by N, final at its step (after a same-step one) or last."""
    is_final = checkpoint.label == FINAL
    if checkpoint.step is not None:
        return (checkpoint.step, int(is_final), 0)
    if is_final:
        return (math.inf, 1, 0)
    return (math.inf, 0, int(checkpoint.label.removeprefix("epoch_")))


# ---------------------------------------------------------------------------------------------- json


def read_json_file(path: Path, what: str, fix: str) -> Any:
    """Parse a JSON file; unreadable or invalid JSON is a one-line UserError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {what} {path} ({error}): {fix}") from error


def _read_manifest(folder: Path) -> dict | None:
    """dpo-eval train's manifest in ``folder``, or None when there is none."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    fix = "restore the file written by dpo-eval train, or delete it and pass --ref and --data"
    manifest = read_json_file(path, "run manifest", fix)
    if not isinstance(manifest, dict):
        raise UserError(f"run manifest {path} is not a JSON object: {fix}")
    return manifest


def _global_step(trainer_state: Path) -> int | None:
    """``global_step`` of a trainer_state.json, or None when it has none."""
    state = read_json_file(trainer_state, "trainer state", "restore or delete it")
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


# ---------------------------------------------------------------------------------------------- one run


def meta_folder(path: Path) -> Path:
    """Where a run's manifest and logs may also be: the parent of a lone checkpoint-N dir, else the dir."""
    return path.parent if _numbered(path.name) is not None else path


def _root_checkpoint(name: str, path: Path, has_children: bool) -> Checkpoint | None:
    """The model saved directly in the run dir: "final", or the dir's own step for a lone checkpoint-N."""
    kind, _ = _weights_kind(path)
    if kind is None:
        return None
    step = _numbered(path.name)
    if step is not None and not has_children:
        return Checkpoint(name, step, str(step), path, kind)
    state = path / TRAINER_STATE
    return Checkpoint(name, _global_step(state) if state.is_file() else None, FINAL, path, kind)


def _trainer_state_path(path: Path, checkpoints: list[Checkpoint]) -> Path | None:
    """trainer_state.json at the root, else in the highest-step checkpoint that has one."""
    if (path / TRAINER_STATE).is_file():
        return path / TRAINER_STATE
    for checkpoint in reversed(checkpoints):
        if (checkpoint.path / TRAINER_STATE).is_file():
            return checkpoint.path / TRAINER_STATE
    return None


def _check_unique_steps(path: Path, checkpoints: list[Checkpoint]) -> None:
    """Two folders for the same label (checkpoint-100 and step_100) would be ambiguous."""
    seen: dict[str, Path] = {}
    for checkpoint in checkpoints:
        if checkpoint.label in seen:
            raise UserError(f"{path} holds two checkpoints for {checkpoint.label} ({seen[checkpoint.label].name}, "
                            f"{checkpoint.path.name}): move one out of the run dir")
        seen[checkpoint.label] = checkpoint.path


def _existing_dir(run_dir: str | Path) -> Path:
    """The run dir resolved; a missing path or a file is a one-line UserError."""
    given = Path(run_dir).expanduser()
    if not given.is_dir():
        what = "is a file, not a folder" if given.exists() else "does not exist"
        raise UserError(f"run dir {run_dir} {what}: pass the output folder of a training run (or a model folder)")
    return given.resolve()


def _refuse_nemo(run_dir: str | Path, path: Path) -> None:
    """A NeMo / NeMo-Aligner ``.nemo`` file (given, or the only thing in the dir) is a one-line UserError."""
    nemo = ([path] if path.suffix == NEMO_SUFFIX else
            sorted([*path.glob(f"*{NEMO_SUFFIX}"), *path.glob(NEMO_CONFIG), *path.glob(f"*/{NEMO_CONFIG}")])
            if path.is_dir() else [])
    if nemo:
        raise UserError(f"{nemo[0] if path.is_dir() else run_dir} is a NeMo checkpoint, which dpo-eval does not "
                        f"read: {NEMO_EXPORT}, and pass that folder")


def _twin_skip(found: list[Checkpoint | Skipped]) -> list[Checkpoint | Skipped]:
    """OpenRLHF: a ``global_stepN`` DeepSpeed folder beside its ``global_stepN_hf`` export says so."""
    exported = {c.path.name.removesuffix("_hf") for c in found if isinstance(c, Checkpoint)
                and c.path.name.startswith("global_step") and c.path.name.endswith("_hf")}
    return [Skipped(s.path, f"DeepSpeed checkpoint (its Hugging Face export {s.path.name}_hf is read)")
            if isinstance(s, Skipped) and s.path.name in exported else s for s in found]


def discover_run(run_dir: str | Path, name: str | None = None) -> Run:
    """The checkpoints (step order), manifest and log files of one run dir; see the module docstring."""
    if Path(run_dir).suffix == NEMO_SUFFIX and Path(run_dir).is_file():
        _refuse_nemo(run_dir, Path(run_dir))
    path = _existing_dir(run_dir)
    name = name or path.name
    found = _twin_skip([_child_checkpoint(name, child) for child in sorted(path.iterdir()) if child.is_dir()])
    checkpoints = [c for c in found if isinstance(c, Checkpoint)]
    root = _root_checkpoint(name, path, has_children=bool(checkpoints))
    checkpoints = sorted(checkpoints + ([root] if root else []), key=_order_key)
    if not checkpoints:
        _refuse_nemo(run_dir, path)
        raise UserError(f"no checkpoints found in run dir {run_dir}: looked for {LOOKED_FOR}")
    _check_unique_steps(path, checkpoints)
    meta = meta_folder(path)
    trainer_log = next((f / TRAINER_LOG for f in (path, meta) if (f / TRAINER_LOG).is_file()), None)
    return Run(name=name, path=path, checkpoints=tuple(checkpoints),
               manifest=_read_manifest(path) or (_read_manifest(meta) if meta != path else None),
               trainer_state_path=_trainer_state_path(path, checkpoints), trainer_log_path=trainer_log,
               skipped=tuple(s for s in found if isinstance(s, Skipped)))


def fold_final_model(checkpoints: tuple[Checkpoint, ...], fingerprints: Mapping[Path, str]) -> tuple[Checkpoint, ...]:
    """The checkpoints with a final model that has a checkpoint's weights folded into that checkpoint.

    ``fingerprints``: each checkpoint's weights fingerprint by its path (``ModelIdentity.fingerprint``).
    When the ``"final"`` checkpoint's fingerprint equals another checkpoint's, the final one is dropped and
    the other gains ``final_path`` (the final model's folder); with several equal ones, the one at the
    final model's step, else the latest. Any other final model is kept as it is (its own row, label
    ``"final"``, after a checkpoint of the same step).
    """
    final = next((c for c in checkpoints if c.label == FINAL), None)
    if final is None:
        return checkpoints
    twins = [c for c in checkpoints if c is not final and fingerprints[c.path] == fingerprints[final.path]]
    if not twins:
        return checkpoints
    twin = next((c for c in twins if c.step == final.step and final.step is not None), twins[-1])
    return tuple(replace(c, final_path=final.path) if c is twin else c for c in checkpoints if c is not final)


# ---------------------------------------------------------------------------------------------- several runs


def _default_name(path: Path) -> str:
    """The dir's name; a lone ``checkpoint-N`` dir is named ``PARENT/checkpoint-N``."""
    return f"{path.parent.name}/{path.name}" if _numbered(path.name) is not None else path.name


def run_names(paths: list[Path]) -> list[str]:
    """One name per run dir: its name, with parent folders prepended until names differ."""
    names = [_default_name(p) for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < max(len(p.parts) for p in paths):
        depth += 1
        names = [n if names.count(n) == 1 else "/".join(p.parts[-depth:]) for n, p in zip(names, paths, strict=True)]
    return names


def discover_runs(run_dirs: list[str | Path]) -> list[Run]:
    """``discover_run`` for each dir, named by ``run_names``; the same dir twice is refused."""
    if not run_dirs:
        raise UserError("no run dir given: pass at least one RUN_DIR (a training output folder or a model folder)")
    paths = [_existing_dir(d) for d in run_dirs]
    if len(set(paths)) < len(paths):
        twice = next(str(d) for d, p in zip(run_dirs, paths, strict=True) if paths.count(p) > 1)
        raise UserError(f"run dir {twice} was given twice: pass each run once")
    return [discover_run(p, name) for p, name in zip(paths, run_names(paths), strict=True)]


# ---------------------------------------------------------------------------------------------- --steps


def parse_steps(text: str | None) -> tuple[str, ...] | None:
    """``"100,200,final"`` -> ``("100", "200", "final")``; None or "" -> None (every checkpoint)."""
    if text is None or not text.strip():
        return None
    tokens = [t.strip() for t in text.split(",")]
    for token in tokens:
        if not STEP_TOKEN.match(token):
            raise UserError(f"--steps {text!r}: {token!r} is not a step; give comma-separated step numbers, "
                            "epoch_N or final, e.g. --steps 100,200,final")
    return tuple(dict.fromkeys(str(int(t)) if t.isdigit() else t for t in tokens))


def _picked(run: Run, steps: tuple[str, ...]) -> tuple[Checkpoint, ...]:
    """The run's checkpoints whose label is in ``steps``; ``final`` means the run's last checkpoint."""
    last = run.checkpoints[-1]
    return tuple(c for c in run.checkpoints if c.label in steps or (FINAL in steps and c is last))


def available_steps(run: Run) -> list[str]:
    """The labels ``--steps`` accepts for a run, in order (``final`` always: the last checkpoint)."""
    labels = [c.label for c in run.checkpoints]
    return labels if FINAL in labels else [*labels, FINAL]


def select_steps(runs: list[Run], steps: tuple[str, ...] | None) -> tuple[list[Run], list[str]]:
    """Keep only the checkpoints named in ``steps`` (None keeps all); returns (runs, warning lines).

    A step no run has is a UserError naming the available steps; a step only some runs have is a warning,
    and a run left with no checkpoint is an error.
    """
    if steps is None:
        return runs, []
    warnings = []
    for step in steps:
        missing = [r.name for r in runs if step not in available_steps(r)]
        if len(missing) == len(runs):
            available = "; ".join(f"{r.name}: {', '.join(available_steps(r))}" for r in runs)
            raise UserError(f"--steps: no run has step {step}; available steps are {available}")
        if missing:
            warnings.append(f"--steps: step {step} is not in run(s) {', '.join(missing)}")
    picked = [replace(r, checkpoints=_picked(r, steps)) for r in runs]
    for run in picked:
        if not run.checkpoints:
            raise UserError(f"--steps {','.join(steps)} picks no checkpoint of run {run.name}; its steps are "
                            f"{', '.join(available_steps(next(r for r in runs if r.name == run.name)))}")
    return picked, warnings


# ---------------------------------------------------------------------------------------------- logs


@dataclass(frozen=True)
class TrainingLogs:
    """What the trainers logged: HF/TRL/dpo-eval ``log_history``, LLaMA-Factory's jsonl rows, torchtune's lines."""

    log_history: list[dict]
    """``trainer_state.json``'s ``log_history`` (one dict per logging or eval step); [] without the file."""
    trainer_log: list[dict]
    """``trainer_log.jsonl`` rows (``current_steps``, ``loss``, ``lr``, ...); [] without the file."""
    warnings: tuple[str, ...] = ()
    """E.g. a cut-off last line of trainer_log.jsonl (a run killed mid-write), which is left out."""
    disk_log: list[str] = field(default_factory=list)
    """torchtune's DiskLogger lines (``logs/log_*.txt``, files in name order: a resumed run's after the
    first); [] without them."""


def _read_trainer_log(path: Path) -> tuple[list[dict], list[str]]:
    """Rows of a jsonl log; a broken last line is dropped with a warning, a broken earlier one is an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"cannot read trainer log {path} ({error}): check its permissions") from error
    rows, warnings = [], []
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    for index, (number, line) in enumerate(numbered):
        try:
            row = json.loads(line)
        except ValueError as error:
            if index == len(numbered) - 1:
                warnings.append(f"{path}: line {number} is cut off (left out)")
                continue
            raise UserError(f"trainer log {path}: line {number} is not JSON ({error}): fix or delete the line") from error
        if not isinstance(row, dict):
            raise UserError(f"trainer log {path}: line {number} is not a JSON object: fix or delete the line")
        rows.append(row)
    return rows, warnings


def read_training_logs(run: Run) -> TrainingLogs:
    """Read the run's ``trainer_state.json`` log_history, ``trainer_log.jsonl`` rows and torchtune's
    ``logs/log_*.txt`` lines (any may be absent)."""
    history: list[dict] = []
    if run.trainer_state_path is not None:
        state = read_json_file(run.trainer_state_path, "trainer state", "restore or delete it")
        history = state.get("log_history", []) if isinstance(state, dict) else None
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise UserError(f"trainer state {run.trainer_state_path}: log_history is not a list of objects; "
                            "restore or delete the file")
    rows, warnings = _read_trainer_log(run.trainer_log_path) if run.trainer_log_path else ([], [])
    return TrainingLogs(log_history=history, trainer_log=rows, warnings=tuple(warnings),
                        disk_log=_read_disk_log(run.path / TORCHTUNE_LOGS))


def _read_disk_log(folder: Path) -> list[str]:
    """The lines of torchtune's ``log_*.txt`` files in ``folder``, files in name order; [] without any."""
    if not folder.is_dir():
        return []
    lines: list[str] = []
    for path in sorted(folder.glob("log_*.txt")):
        try:
            lines += path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise UserError(f"cannot read training log {path} ({error}): check its permissions") from error
    return lines


CURVE_SOURCES = ("trainer_state.json", TRAINER_LOG, f"{TORCHTUNE_LOGS}/log_*.txt")
"""The curve sources in order of preference: log_history has every figure the trainer logged, and
LLaMA-Factory's trainer_log.jsonl repeats some of them (loss, accuracy, lr), so its points only fill
steps or metrics log_history lacks (a run whose trainer_state.json is from an earlier checkpoint)."""


def curves_frame(logs: TrainingLogs) -> pd.DataFrame:
    """The run's training curves, one point per (step, metric, split), with the source file of each."""
    return training_curves.merge_sources(list(zip(CURVE_SOURCES, (
        training_curves.hf_log_history_frame(logs.log_history),
        training_curves.llamafactory_log_frame(logs.trainer_log),
        training_curves.torchtune_log_frame(logs.disk_log)), strict=True)))
