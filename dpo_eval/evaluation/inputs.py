"""Resolve everything `dpo-eval report` needs before any model loads: runs, references, pairs, prompts.

Where each input comes from, first that works (an explicit flag always wins):

| input          | 1. flag        | 2. run manifest ``dpo_eval.json``         | 3. otherwise                          |
|----------------|----------------|-------------------------------------------|---------------------------------------|
| reference      | ``--ref``      | ``reference`` (``resolved``, then path);  | PEFT checkpoints: adapter_config.json's |
| (per run)      |                | reference-free losses: ``policy_init``    | ``base_model_name_or_path``; then the  |
|                |                |                                           | trainer's config (LLaMA-Factory's YAML |
|                |                |                                           | ``ref_model`` / ``model_name_or_path``, |
|                |                |                                           | torchtune's ``checkpoint_dir``)        |
| held-out pairs | ``--data``     | ``data.eval_path`` (``eval_data`` in the  | error                                  |
|                |                | train config); all runs must agree        |                                        |
| prompts        | ``--prompts``  | (dpo-eval train records none)             | the held-out pairs' prompts, once each |

``--ref`` is taken for every run even when the manifest names another reference; each such run gets a
warning line, since its implicit rewards beta * log(pi/pi_ref) then use a model it was not trained against.

Paths in a manifest are as given at training time, relative to that working directory: they are tried as
given, then relative to the training working directory worked out from the manifest's ``output_dir``
(``/x/runs/a`` trained with ``output_dir: runs/a`` ran in ``/x``). A reference that is a bare name with no
such path (``smollm2``) is passed on as an alias, and a Hub id (``org/name[@revision]``) with no such path as
a Hub model, for ``dpo_eval.models`` to resolve; a reference that training resolved from the Hub is pinned to
the commit it used (``org/name@<commit>``, from the snapshot folder it recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dpo_eval.data.hub_data import is_hub_dataset
from dpo_eval.errors import UserError
from dpo_eval.evaluation.discover import Run, discover_runs, parse_steps, read_json_file, select_steps
from dpo_eval.evaluation.trainers import recorded_reference
from dpo_eval.models.hub import is_hub_id
from dpo_eval.models.locate import hub_base_id

if TYPE_CHECKING:
    from dpo_eval.data.pairs import PreferencePair
    from dpo_eval.generate import Prompt
    from dpo_eval.models import ModelIdentity

REF_WAYS = ("pass --ref PATH (the model the run started from, or its Hub id), train with dpo-eval train (its "
            "dpo_eval.json names the reference), or evaluate PEFT checkpoints whose adapter_config.json names "
            "a local base model or a Hub id")


@dataclass(frozen=True)
class Reference:
    """The reference model of a run: where it is and how that was decided."""

    path: str
    """A local path (or a model alias) to pass to ``dpo_eval.models.identify_model`` / ``load_model``."""
    source: str
    """``"--ref"``, ``"manifest"``, ``"manifest policy_init"`` (reference-free loss), ``"adapter_config"``, or
    the trainer config and key (``"../dpo.yaml model_name_or_path"``, ``"torchtune_config.yaml
    checkpointer.checkpoint_dir"``)."""
    fingerprint: str | None = None
    """The reference's fingerprint recorded at training time (manifest only): see ``check_reference_identity``."""


@dataclass(frozen=True)
class DataSource:
    """A data file (or saved dataset folder) and how it was chosen."""

    path: str
    source: str
    """Pairs: ``"--data"`` or ``"manifest"``. Prompts: ``"--prompts"`` or ``"pairs"`` (derive from ``path``,
    the held-out pairs, with ``prompts_from_pairs``)."""


@dataclass(frozen=True)
class ReportInputs:
    """Everything `dpo-eval report` evaluates, checked, before any model loads."""

    runs: tuple[Run, ...]
    """Discovered runs, each with only the checkpoints ``--steps`` picked."""
    references: dict[str, Reference]
    """Reference model of each run, by run name."""
    pairs: DataSource
    """Held-out preference pairs (one set for every run)."""
    prompts: DataSource
    """Prompts to sample from."""
    warnings: tuple[str, ...]
    """Lines to show the user (an overridden reference, a step missing from a run, ...)."""


# ---------------------------------------------------------------------------------------------- paths


def _training_cwd(run: Run) -> Path | None:
    """The working directory training ran in, from the manifest's relative ``output_dir``; else None."""
    config = (run.manifest or {}).get("config")
    output_dir = config.get("output_dir") if isinstance(config, dict) else None
    if not isinstance(output_dir, str) or Path(output_dir).is_absolute():
        return None
    parts = Path(output_dir).parts
    manifest_dir = run.path if (run.path / "dpo_eval.json").is_file() else run.path.parent
    if not parts or manifest_dir.parts[-len(parts):] != parts:
        return None
    return Path(*manifest_dir.parts[: -len(parts)])


def _manifest_path(run: Run, value: object) -> Path | None:
    """A path recorded in the manifest, as it exists now (as given, or from the training cwd); else None."""
    if not isinstance(value, str) or not value:
        return None
    candidates = [Path(value).expanduser()]
    cwd = _training_cwd(run)
    if cwd is not None and not candidates[0].is_absolute():
        candidates.append(cwd / value)
    return next((p for p in candidates if p.exists()), None)


def _is_alias(value: str) -> bool:
    """A bare model name such as ``smollm2`` (no folder, no file suffix), left to dpo_eval.models."""
    return "/" not in value and "\\" not in value and "." not in value and bool(value)


def _hub_reference(recorded: dict) -> str | None:
    """A manifest reference that training took from the Hub, ``org/name@<commit>`` (pinned to the commit of the
    snapshot folder it recorded), when that folder is gone or the recorded path is a Hub id with no local path;
    None otherwise (a recorded local folder that no longer exists is not guessed to be a Hub id)."""
    path, resolved = recorded.get("path"), recorded.get("resolved")
    if not isinstance(path, str) or not isinstance(resolved, str) or not is_hub_id(path):
        return None
    snapshot = Path(resolved)
    if snapshot.parent.name != "snapshots":
        return None
    return path if "@" in path else f"{path}@{snapshot.name}"


def _same_path(a: str, b: str) -> bool:
    """Whether two model paths name the same thing (same resolved folder, or the same alias)."""
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


# ---------------------------------------------------------------------------------------------- reference


def _manifest_reference(run: Run) -> tuple[Reference | None, str]:
    """The reference recorded by dpo-eval train, or (None, why not) for the error message."""
    if run.manifest is None:
        return None, "no dpo_eval.json"
    recorded = run.manifest.get("reference")
    if isinstance(recorded, dict):
        fingerprint = recorded.get("fingerprint") if isinstance(recorded.get("fingerprint"), str) else None
        path, is_gguf = recorded.get("path"), recorded.get("kind") == "gguf"
        if is_gguf and isinstance(path, str) and _is_alias(path):
            return Reference(path, "manifest", fingerprint), ""
        hub = _hub_reference(recorded)
        if hub is not None:
            return Reference(hub, "manifest", fingerprint), ""
        for key in ("path", "resolved") if is_gguf else ("resolved", "path"):  # gguf: resolved is a cache copy
            found = _manifest_path(run, recorded.get(key))
            if found is not None:
                return Reference(str(found), "manifest", fingerprint), ""
        return None, f"its dpo_eval.json names reference {recorded.get('path')!r}, which does not exist here"
    if recorded is None and "policy_init" in run.manifest:  # reference-free loss: compare with the start
        found = _manifest_path(run, run.manifest["policy_init"])
        if found is not None:
            return Reference(str(found), "manifest policy_init"), ""
        if isinstance(run.manifest["policy_init"], str) and is_hub_id(run.manifest["policy_init"]):
            return Reference(run.manifest["policy_init"], "manifest policy_init"), ""
        return None, f"its dpo_eval.json names initial policy {run.manifest['policy_init']!r}, which does not exist here"
    return None, "its dpo_eval.json names no reference"


def _adapter_reference(run: Run) -> tuple[Reference | None, str]:
    """The base model named by the first PEFT checkpoint's adapter_config.json: a local path or a Hub id."""
    adapter = next((c for c in run.checkpoints if c.kind == "peft"), None)
    if adapter is None:
        return None, "no PEFT checkpoint"
    config_path = adapter.path / "adapter_config.json"
    config = read_json_file(config_path, "adapter config", "rewrite it with the adapter's save_pretrained")
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        return None, f"{config_path} names no base model"
    for candidate in (Path(base).expanduser(), adapter.path / base):
        if candidate.exists():
            return Reference(str(candidate), "adapter_config"), ""
    if is_hub_id(base):
        return Reference(hub_base_id(base, config.get("revision")), "adapter_config"), ""
    return None, f"{config_path} names base model {base!r}, which is neither a local path nor a Hub id"


def _explicit_reference(ref: str) -> Reference:
    """``--ref`` as given; a path that does not exist is a UserError (bare names pass on as aliases, Hub ids
    as Hub models)."""
    if not Path(ref).expanduser().exists() and not _is_alias(ref) and not is_hub_id(ref):
        raise UserError(f"--ref {ref} does not exist: pass a local model folder, a Hub id (org/name[@revision]), "
                        "a .gguf file or a model alias")
    return Reference(ref, "--ref")


def resolve_reference(run: Run, ref: str | None) -> tuple[Reference, list[str]]:
    """The run's reference (``--ref``, else manifest, else adapter base) and any warning lines."""
    recorded, why_not_manifest = _manifest_reference(run)
    if ref is not None:
        explicit = _explicit_reference(ref)
        if recorded is not None and not _same_path(explicit.path, recorded.path):
            return explicit, [f"run {run.name}: --ref {ref} overrides the reference it was trained against "
                              f"({recorded.path}, from dpo_eval.json)"]
        return explicit, []
    if recorded is not None:
        return recorded, []
    from_adapter, why_not_adapter = _adapter_reference(run)
    if from_adapter is not None:
        return from_adapter, []
    from_trainer = recorded_reference(run)
    if from_trainer is not None:
        return Reference(from_trainer.value, from_trainer.source), []
    raise UserError(f"run {run.name}: no reference model found ({why_not_manifest}; {why_not_adapter}; no trainer "
                    f"config naming a local model; no --ref): {REF_WAYS}")


def check_reference_identity(reference: Reference, identity: ModelIdentity) -> str | None:
    """Compare the reference's weights now (``identity``) with the fingerprint recorded at training time.

    Same, or nothing recorded: None. Different for a reference the manifest chose: UserError (the files
    changed under that path, so rewards beta * log(pi/pi_ref) would be wrong). Different for ``--ref``:
    a warning line (already implied by the override warning, but stated with the fingerprints).
    """
    if reference.fingerprint is None or identity.fingerprint == reference.fingerprint:
        return None
    what = (f"reference {reference.path} has fingerprint {identity.fingerprint[:12]}, but training recorded "
            f"{reference.fingerprint[:12]}")
    if reference.source == "--ref":
        return what
    raise UserError(f"{what}: its weights changed since training; pass --ref with the original reference model")


# ---------------------------------------------------------------------------------------------- data


def _existing(flag: str, value: str) -> str:
    """A data path given by a flag, or a Hub dataset id (read by ``dpo_eval.evaluation.plan``); a missing path is a
    UserError."""
    if not Path(value).expanduser().exists() and not is_hub_dataset(value):
        raise UserError(f"{flag} {value} does not exist: pass a .jsonl/.json/.parquet/.csv file, a saved dataset "
                        "folder or a Hub dataset (org/name[@revision][/subset][:split])")
    return value


def _recorded_eval_data(section: object) -> object:
    """A manifest's eval data: ``eval_source`` where it is a Hub dataset (pinned to the commit training read,
    ``org/name@<commit>[/subset]:split``), else ``eval_path`` as the config gave it."""
    if not isinstance(section, dict):
        return None
    pinned = section.get("eval_source")
    return pinned if isinstance(pinned, str) and is_hub_dataset(pinned) else section.get("eval_path")


def resolve_pairs(runs: Sequence[Run], data: str | None) -> tuple[DataSource, list[str]]:
    """Held-out pairs: ``--data``, else the runs' manifest ``data.eval_path`` (``eval_source`` for a Hub dataset; one
    for all runs)."""
    if data is not None:
        return DataSource(_existing("--data", data), "--data"), []
    found: dict[str, list[str]] = {}
    problems: list[str] = []
    for run in runs:
        recorded = _recorded_eval_data((run.manifest or {}).get("data"))
        if recorded is None:
            continue
        path = _manifest_path(run, recorded)
        if path is None and isinstance(recorded, str) and is_hub_dataset(recorded):
            found.setdefault(recorded, []).append(run.name)  # a Hub dataset, read by dpo_eval.evaluation.plan
        elif path is None:
            problems.append(f"run {run.name}'s dpo_eval.json names eval data {recorded!r}, which does not exist here")
        else:
            found.setdefault(str(path.resolve()), []).append(run.name)
    if len(found) > 1:
        listed = "; ".join(f"{p} ({', '.join(names)})" for p, names in found.items())
        raise UserError(f"the runs were evaluated on different held-out pairs ({listed}): pass --data to choose one")
    if not found:
        why = "; ".join(problems) or "no run's dpo_eval.json names eval data"
        raise UserError(f"no held-out pairs ({why}): pass --data PAIRS, or train with eval_data set")
    (path, names), = found.items()
    missing = [r.name for r in runs if r.name not in names]
    warnings = [f"held-out pairs {path} (from {names[0]}'s dpo_eval.json) are used for run(s) {', '.join(missing)} too"]
    return DataSource(path, "manifest"), warnings if missing else []


def resolve_prompts(pairs: DataSource, prompts: str | None) -> DataSource:
    """``--prompts``, else the held-out pairs' prompts (dpo-eval train's manifest records no prompt file)."""
    if prompts is not None:
        return DataSource(_existing("--prompts", prompts), "--prompts")
    return DataSource(pairs.path, "pairs")


def prompts_from_pairs(pairs: Sequence[PreferencePair]) -> list[Prompt]:
    """One prompt per distinct pair prompt, in file order, id = the first such pair's id; empty prompts dropped.

    Several pairs often share a prompt; sampling it once per prompt keeps every prompt equally weighted.
    """
    import json

    from dpo_eval.generate import Prompt

    seen: set[str] = set()
    prompts = []
    for pair in pairs:
        key = json.dumps(pair.prompt, sort_keys=True)
        if key in seen or not pair.prompt or (isinstance(pair.prompt, str) and not pair.prompt.strip()):
            continue
        seen.add(key)
        prompts.append(Prompt(pair.id, pair.prompt))
    return prompts


# ---------------------------------------------------------------------------------------------- all


def resolve_inputs(run_dirs: Sequence[str | Path], *, ref: str | None = None, data: str | None = None,
                   prompts: str | None = None, steps: str | None = None) -> ReportInputs:
    """Discover the runs and resolve references, pairs and prompts; every problem is one UserError line.

    Order of checks: --steps syntax, run dirs and checkpoints, --steps selection, references, pairs, prompts.
    """
    picked = parse_steps(steps)
    runs, warnings = select_steps(discover_runs(list(run_dirs)), picked)
    references = {}
    for run in runs:
        references[run.name], more = resolve_reference(run, ref)
        warnings += more
    pair_source, more = resolve_pairs(runs, data)
    return ReportInputs(runs=tuple(runs), references=references, pairs=pair_source,
                        prompts=resolve_prompts(pair_source, prompts), warnings=tuple(warnings + more))
