"""Which trainer wrote a run, and what it recorded: name, version, loss and beta, each with its source.

Read from the files the trainers write, never by running their code (``training_args.bin`` is a pickle:
it is read opcode by opcode with ``pickletools``, which executes nothing). Places looked in: the run dir,
the folder above a lone ``checkpoint-N`` dir, and the run's checkpoint folders (newest first).

| trainer          | told by                                            | version              | loss, beta               |
|------------------|----------------------------------------------------|----------------------|--------------------------|
| dpo-eval         | ``dpo_eval.json`` with kind ``dpo_eval.train``     | none recorded        | its ``loss``             |
| LLaMA-Factory    | ``trainer_log.jsonl``, ``training_loss.png``,      | none recorded (0.9.5) | ``pref_loss``, ``pref_beta`` |
|                  | model card tag ``llama-factory``                   |                      | of its training YAML (in the |
|                  |                                                    |                      | run dir or the folder above, |
|                  |                                                    |                      | ``output_dir`` = the run; |
|                  |                                                    |                      | defaults sigmoid, 0.1)   |
| torchtune        | ``epoch_N/`` folders beside ``torchtune_config.yaml`` | none recorded     | the YAML's ``loss``      |
|                  | or a ``logs/log_*.txt`` DiskLogger file            |                      | ``_component_`` and ``beta`` |
| OpenRLHF         | ``global_stepN`` / ``global_stepN_hf`` folders     | none recorded        | none recorded            |
| TRL              | model card ``README.md`` with tag ``trl``, or a    | ``- TRL: X`` in the card | ``loss_type``, ``beta`` |
|                  | ``training_args.bin`` pickling a ``trl.`` class    |                      |                          |
|                  |                                                    |                      | in ``training_args.bin`` |
| Axolotl          | model card ``README.md`` with tag ``axolotl``      | ``axolotl version: `X` `` | none read          |
|                  |                                                    | in the card          |                          |
| transformers Trainer | ``trainer_state.json`` and nothing above       | ``transformers_version`` in config.json | none recorded |
"""

from __future__ import annotations

import json
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_eval.evaluation.discover import TRAINER_LOG, Run, meta_folder

LLAMAFACTORY_FILES = (TRAINER_LOG, "training_loss.png")
TORCHTUNE_CONFIG = "torchtune_config.yaml"
TRAINING_ARGS = "training_args.bin"
PICKLED_FIELDS = ("beta", "loss_type")
"""The DPOConfig fields read from training_args.bin's pickle opcodes."""
AXOLOTL_VERSION = re.compile(r"axolotl version: `([^`]+)`")
CARD_VERSION = re.compile(r"^\s*-\s*(TRL|LLaMA-Factory|Transformers):\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Recorded:
    """A value the run's files record, and the file (relative to the run dir where it is under it)."""

    value: Any
    source: str


@dataclass(frozen=True)
class TrainerInfo:
    """What a run says about how it was trained."""

    name: str
    """``dpo-eval``, ``LLaMA-Factory``, ``torchtune``, ``OpenRLHF``, ``TRL``, ``transformers Trainer``,
    or ``unknown``."""
    name_source: str
    """The file(s) that told: ``"trainer_log.jsonl, training_loss.png"``, ``"README.md (tag trl)"``, ..."""
    version: Recorded | None = None
    loss: Recorded | None = None
    beta: Recorded | None = None

    def to_dict(self) -> dict:
        """JSON form: each recorded value as ``{"value", "source"}`` or None."""
        def entry(r: Recorded | None) -> dict | None:
            return None if r is None else {"value": r.value, "source": r.source}

        return {"name": self.name, "source": self.name_source, "version": entry(self.version),
                "loss": entry(self.loss), "beta": entry(self.beta)}


# ---------------------------------------------------------------------------------------------- files


def _folders(run: Run) -> list[Path]:
    """Where a run's trainer files may be: the run dir, its meta folder, then its checkpoints newest first."""
    folders = [run.path, meta_folder(run.path)]
    folders += [c.path for c in reversed(run.checkpoints)]
    return list(dict.fromkeys(folders))


def _find(run: Run, name: str) -> Path | None:
    """The first folder's ``name`` file (see _folders), or None."""
    return next((f / name for f in _folders(run) if (f / name).is_file()), None)


def _shown(run: Run, path: Path) -> str:
    """A path relative to the run dir when under it (``checkpoint-6/README.md``) or beside it (``../dpo.yaml``),
    else in full."""
    if path.is_relative_to(run.path):
        return str(path.relative_to(run.path))
    if path.parent == run.path.parent:
        return f"../{path.name}"
    return str(path)


def _read_text(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _yaml(path: Path | None) -> dict:
    """A YAML file as a dict; {} when missing or not a mapping (it only labels the report)."""
    if path is None:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _card_tags(card: str) -> set[str]:
    """The ``tags:`` list of a model card's YAML front matter, lower-cased."""
    if not card.startswith("---"):
        return set()
    front = card.split("---", 2)[1] if card.count("---") >= 2 else ""
    import yaml

    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError:
        return set()
    tags = meta.get("tags") if isinstance(meta, dict) else None
    return {str(t).lower() for t in tags} if isinstance(tags, list) else set()


def _card_version(card: str, framework: str) -> str | None:
    """``X`` of a model card's ``- Framework: X`` line (the "Framework versions" section)."""
    return next((m.group(2) for m in CARD_VERSION.finditer(card) if m.group(1).lower() == framework.lower()), None)


def pickled_fields(path: Path, names: tuple[str, ...] = PICKLED_FIELDS) -> dict[str, Any]:
    """Plain values (number, string, list of strings) stored under ``names`` in a torch.save'd pickle.

    The pickle is never loaded: its opcodes are walked with ``pickletools.genops`` (which runs nothing),
    and a string opcode equal to a wanted name followed by a number, a string or a list of strings is
    taken as that field. A file that is not a readable zip or pickle gives {}.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            member = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            data = archive.read(member)
        ops = _resolved_ops(data)
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError):
        return {}
    found: dict[str, Any] = {}
    for index, (name, arg) in enumerate(ops[:-1]):
        if "UNICODE" in name and arg in names and arg not in found:
            value = _value_at(ops, index + 1)
            if value is not None:
                found[arg] = value
    return found


def _resolved_ops(data: bytes) -> list[tuple[str, Any]]:
    """The pickle's opcodes (name, argument) without memo stores, each memo fetch of a string replaced by
    that string (a repeated string is pickled once and fetched after), read without executing anything."""
    ops: list[tuple[str, Any]] = []
    memo: dict[int, tuple[str, Any]] = {}
    for op, arg, _ in pickletools.genops(data):
        if op.name in {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}:
            if ops:
                memo[len(memo) if op.name == "MEMOIZE" else int(arg)] = ops[-1]
        elif op.name in {"GET", "BINGET", "LONG_BINGET"}:
            ops.append(memo.get(int(arg), ("GET", arg)))
        else:
            ops.append((op.name, arg))
    return ops


def pickled_classes(path: Path) -> set[str]:
    """``module.Name`` of every class a torch.save'd pickle names (GLOBAL / STACK_GLOBAL opcodes), read
    without loading it; {} for a file that is not a readable zip or pickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        ops = _resolved_ops(data)
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError):
        return set()
    found = {str(arg).replace(" ", ".") for name, arg in ops if name == "GLOBAL"}
    found |= {f"{ops[i - 2][1]}.{ops[i - 1][1]}" for i, (name, _) in enumerate(ops)
              if name == "STACK_GLOBAL" and i >= 2}
    return found


def _value_at(ops: list[tuple[str, Any]], index: int) -> Any:
    """The plain value whose opcodes start at ``ops[index]``, or None when it is not a plain value."""
    name, arg = ops[index]
    if name in {"BINFLOAT", "FLOAT", "BININT", "BININT1", "BININT2", "INT", "LONG1"} or "UNICODE" in name:
        return arg
    if name == "EMPTY_LIST":
        items = []
        for later_name, later_arg in ops[index + 1:]:
            if "UNICODE" in later_name:
                items.append(later_arg)
            elif later_name in {"APPEND", "APPENDS"}:
                return items
            elif later_name != "MARK":
                return None
    return None


# ---------------------------------------------------------------------------------------------- trainers


def _dpo_eval(run: Run) -> TrainerInfo | None:
    manifest = run.manifest or {}
    if manifest.get("kind") != "dpo_eval.train":
        return None
    source = "dpo_eval.json"
    loss = manifest.get("loss") if isinstance(manifest.get("loss"), dict) else {}
    return TrainerInfo("dpo-eval", source, None,
                       Recorded(loss["name"], source) if loss.get("name") else None,
                       Recorded(loss["beta"], source) if _is_number(loss.get("beta")) else None)


def _training_yaml(run: Run) -> Path | None:
    """The YAML a run was trained from: in the run dir or the folder above it (where ``llamafactory-cli train
    X.yaml`` usually runs), with ``stage`` and an ``output_dir`` that is this run dir (as given, or relative
    to the YAML's folder). LLaMA-Factory 0.9.5 copies no config into its output dir."""
    for folder in dict.fromkeys([run.path, meta_folder(run.path), run.path.parent]):
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            config = _yaml(path)
            output_dir = config.get("output_dir")
            if "stage" not in config or not isinstance(output_dir, str):
                continue
            target = Path(output_dir).expanduser()
            target = target if target.is_absolute() else path.parent / target
            if target.exists() and target.resolve() == run.path.resolve():
                return path
    return None


def _llamafactory(run: Run) -> TrainerInfo | None:
    seen = [name for name in LLAMAFACTORY_FILES if _find(run, name)]
    card_path = _find(run, "README.md")
    card = _read_text(card_path)
    if "llama-factory" in _card_tags(card):
        seen.append(f"{_shown(run, card_path)} (tag llama-factory)")
    if not seen:
        return None
    config_path = _training_yaml(run)
    config = _yaml(config_path)
    where = _shown(run, config_path) if config_path else ""
    version = _card_version(card, "LLaMA-Factory")  # 0.9.5's card lists no LLaMA-Factory version
    loss = config.get("pref_loss", "sigmoid" if config else None)
    beta = config.get("pref_beta", 0.1 if config else None)
    default = " (LLaMA-Factory's default)"
    return TrainerInfo(
        "LLaMA-Factory", ", ".join(seen),
        Recorded(version, _shown(run, card_path)) if version and card_path else None,
        Recorded(loss, where + ("" if "pref_loss" in config else default)) if loss else None,
        Recorded(beta, where + ("" if "pref_beta" in config else default)) if _is_number(beta) else None)


def _torchtune(run: Run) -> TrainerInfo | None:
    config_path = _find(run, TORCHTUNE_CONFIG)
    logs = sorted((run.path / "logs").glob("log_*.txt")) if (run.path / "logs").is_dir() else []
    has_epochs = any(c.label.startswith("epoch_") for c in run.checkpoints)
    if not has_epochs or (config_path is None and not logs):
        return None
    told = [_shown(run, p) for p in ([config_path] if config_path else []) + logs[:1]]
    config = _yaml(config_path)
    loss = config.get("loss") if isinstance(config.get("loss"), dict) else {}
    where = _shown(run, config_path) if config_path else ""
    component, beta = loss.get("_component_"), loss.get("beta")
    return TrainerInfo("torchtune", ", ".join(["epoch_N/", *told]), None,
                       Recorded(component, where) if component else None,
                       Recorded(beta, where) if _is_number(beta) else None)


def _openrlhf(run: Run) -> TrainerInfo | None:
    names = [c.path.name for c in run.checkpoints if c.path.name.startswith("global_step")]
    return TrainerInfo("OpenRLHF", f"{names[0]}/") if names else None


def _trl(run: Run) -> TrainerInfo | None:
    card_path = _find(run, "README.md")
    card = _read_text(card_path)
    args_path = _find(run, TRAINING_ARGS)
    trl_class = next((c for c in (pickled_classes(args_path) if args_path else ()) if c.startswith("trl.")), None)
    if card_path is not None and "trl" in _card_tags(card):
        told = f"{_shown(run, card_path)} (tag trl)"
    elif trl_class is not None:
        told = f"{_shown(run, args_path)} (pickles {trl_class})"
    else:
        return None
    version = _card_version(card, "TRL")
    fields = pickled_fields(args_path) if args_path else {}
    where = f"{_shown(run, args_path)} (pickle opcodes, not loaded)" if args_path else ""
    loss = fields.get("loss_type")
    loss = ",".join(loss) if isinstance(loss, list) else loss
    return TrainerInfo("TRL", told, Recorded(version, _shown(run, card_path)) if version and card_path else None,
                       Recorded(loss, where) if loss else None,
                       Recorded(fields["beta"], where) if _is_number(fields.get("beta")) else None)


def _axolotl(run: Run) -> TrainerInfo | None:
    """Axolotl's model card: tag ``axolotl`` and ``axolotl version: `X` `` in its embedded config."""
    card_path = _find(run, "README.md")
    card = _read_text(card_path)
    if card_path is None or "axolotl" not in _card_tags(card):
        return None
    version = AXOLOTL_VERSION.search(card)
    return TrainerInfo("Axolotl", f"{_shown(run, card_path)} (tag axolotl)",
                       Recorded(version.group(1), _shown(run, card_path)) if version else None)


def _hf_trainer(run: Run) -> TrainerInfo | None:
    if run.trainer_state_path is None:
        return None
    config_path = _find(run, "config.json")
    try:
        version = json.loads(_read_text(config_path) or "{}").get("transformers_version")
    except (ValueError, AttributeError):
        version = None
    return TrainerInfo("transformers Trainer", _shown(run, run.trainer_state_path),
                       Recorded(version, f"{_shown(run, config_path)} (transformers_version)")
                       if version and config_path else None)


DETECTORS = (_dpo_eval, _llamafactory, _torchtune, _openrlhf, _axolotl, _trl, _hf_trainer)
"""Tried in this order; the first that recognises the run names it (LLaMA-Factory and TRL runs also hold
trainer_state.json, so the plain transformers Trainer comes last)."""


def identify_trainer(run: Run) -> TrainerInfo:
    """The trainer that wrote ``run`` and what it recorded; ``unknown`` when no file tells."""
    for detect in DETECTORS:
        info = detect(run)
        if info is not None:
            return info
    return TrainerInfo("unknown", "no trainer file (dpo_eval.json, trainer_state.json, trainer_log.jsonl, ...)")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------- reference


def _relative_to_training_cwd(run: Run, config_path: Path, value: object, output_dir: object) -> Path | None:
    """A path from a trainer config as it exists now: absolute, or relative to the training working directory
    (worked out from the config's relative ``output_dir``, which names this run dir), else to the config's folder."""
    if not isinstance(value, str) or not value:
        return None
    given = Path(value).expanduser()
    candidates = [given] if given.is_absolute() else []
    if isinstance(output_dir, str) and not Path(output_dir).is_absolute():
        parts = Path(output_dir).parts
        if parts and run.path.parts[-len(parts):] == parts:
            candidates.append(Path(*run.path.parts[: -len(parts)]) / given)
    candidates.append(config_path.parent / given)
    return next((p for p in candidates if p.exists()), None)


def recorded_reference(run: Run) -> Recorded | None:
    """The reference model a trainer's config names, as a local path: LLaMA-Factory's ``ref_model``, else its
    ``model_name_or_path`` (DPO's default reference is the starting model); torchtune's
    ``checkpointer.checkpoint_dir`` (its LoRA DPO recipe's reference is the base model, adapters off).
    None when no config names one that exists here."""
    config_path = _training_yaml(run) if _llamafactory(run) else None
    if config_path is not None:
        config = _yaml(config_path)
        key = "ref_model" if config.get("ref_model") else "model_name_or_path"
        found = _relative_to_training_cwd(run, config_path, config.get(key), config.get("output_dir"))
        return Recorded(str(found), f"{_shown(run, config_path)} {key}") if found else None
    config_path = _find(run, TORCHTUNE_CONFIG)
    if config_path is not None and _torchtune(run):
        config = _yaml(config_path)
        checkpointer = config.get("checkpointer") if isinstance(config.get("checkpointer"), dict) else {}
        found = _relative_to_training_cwd(run, config_path, checkpointer.get("checkpoint_dir"),
                                          config.get("output_dir"))
        return Recorded(str(found), f"{_shown(run, config_path)} checkpointer.checkpoint_dir") if found else None
    return None
