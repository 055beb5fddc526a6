"""The vLLM servers a user already runs for a report's models (``--vllm-url CHECKPOINT=URL``, ``--vllm-ref-url``).

Under ``--logprob-backend vllm`` a model with a server of its own is asked there; every other model is
served by a server dpo-eval starts (``vllm_server.SERVERS``). Each URL is matched to a model before any
work: CHECKPOINT names a checkpoint by its folder's name (``checkpoint-200``, ``final``) or its step (``200``),
either as ``RUN/NAME`` too, or by its path, and the server must list that model (``vllm_server.served_model_for``), else one line, exit 2.
Servers are keyed by the model's fingerprint (a checkpoint and the final model of the same weights share
one); the URL and the vLLM version it reports join the store key of every artifact that asks it
(``served_parts``): numbers from a user's server and from a started one never share a key.
"""

from __future__ import annotations

from pathlib import Path

from dpo_eval.errors import UserError


def _names_row(name: str, run: str, row) -> bool:
    """Whether CHECKPOINT `name` is this row: its label (its step), its folder's name, either as RUN/NAME, or its
    folder."""
    if name in {short for label in (row.label, Path(row.path).name) for short in (label, f"{run}/{label}")}:
        return True
    return Path(name).resolve() in {Path(p).resolve() for p in (row.path, row.final_path) if p}


def _checkpoint_fingerprint(entry: str, runs) -> str:
    """The fingerprint of the checkpoint named by entry's CHECKPOINT (one line when none, or several models)."""
    name = entry.partition("=")[0]
    rows = [(rp.run.name, row) for rp in runs for row in rp.rows
            if not (row.is_reference and row.path == rp.reference.path)]  # the reference's row: --vllm-ref-url
    found = {row.identity.fingerprint for run, row in rows if _names_row(name, run, row)}
    if not found:
        labels = ", ".join(sorted({f"{run}/{Path(row.path).name}" for run, row in rows})) or "none"
        raise UserError(f"--vllm-url {entry}: no checkpoint {name!r} in this report; name one of {labels} "
                        "(the folder's name, its step, either as RUN/NAME, or its path)")
    if len(found) > 1:
        raise UserError(f"--vllm-url {entry}: {name!r} names checkpoints of several runs; write it as RUN/NAME")
    return found.pop()


def resolve_vllm_urls(config, runs, cache_root: Path) -> dict[str, tuple[str, str]]:
    """fingerprint -> (URL, vLLM version) of each model the user serves, every URL checked to serve its model."""
    from dpo_eval.vllm_server import served_model_for, served_version

    wanted: dict[str, tuple[str, str, object]] = {}  # fingerprint -> (url, flag, identity)
    if config.vllm_ref_url:
        for rp in runs:
            wanted[rp.ref_identity.fingerprint] = (config.vllm_ref_url, "--vllm-ref-url", rp.ref_identity)
    identities = {row.identity.fingerprint: row.identity for rp in runs for row in rp.rows}
    for entry in config.vllm_urls:
        fingerprint, url = _checkpoint_fingerprint(entry, runs), entry.partition("=")[2]
        if fingerprint in wanted and wanted[fingerprint][0] != url:
            raise UserError(f"--vllm-url {entry}: this model already has the server {wanted[fingerprint][0]} "
                            "(the same weights as another checkpoint or the reference): give one URL")
        wanted[fingerprint] = (url, "--vllm-url", identities[fingerprint])
    servers = {}
    for fingerprint, (url, flag, identity) in wanted.items():
        served_model_for(url, identity, cache_root, flag)
        servers[fingerprint] = (url, served_version(url))
    return servers


def served_parts(servers: dict[str, tuple[str, str]], *fingerprints: str) -> dict:
    """The store key part of the user's servers that an artifact of these models asks ({} when none: the
    keys of reports without --vllm-url are as before)."""
    asked = {fp: f"vllm{servers[fp][1]} at {servers[fp][0]}" for fp in fingerprints if fp in servers}
    return {"vllm_servers": asked} if asked else {}
