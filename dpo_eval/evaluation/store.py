"""The run store of `dpo-eval report`: every costly artifact in a folder named by its content key.

Layout under the store root (``OUT/store``)::

    <kind>/<key>/              a finished artifact: its files and key.json (what produced it)
    <kind>/<key>.partial/      work in progress (resumable tools such as generate and judge keep
                               their own partial state here); renamed to <key>/ when finished
    last_run.json              what the latest `dpo-eval report` computed and what it reused (rewritten
                               after every artifact, so a killed run leaves what it did up to then)

The key is ``sha256(canonical JSON of the key parts)``: model fingerprint(s), data file sha256,
tokenization, sampling settings and seed, judge config and template hash, and STORE_VERSION (bumped
whenever an artifact's content or meaning changes). Canonical JSON: sorted keys, no spaces, UTF-8.
A finished folder is only ever made by renaming a complete ``.partial`` folder (``os.replace``), so a
run killed at any moment leaves finished artifacts or work in progress, never a half-written artifact.
Different parts give a different key and so a different folder: a mismatch is never reused.

Test-only hook: with ``DPO_EVAL_REPORT_PAUSE_AT=<kind>:<n>`` set, the n-th artifact of that kind this
process computes is paused just before it is committed: the file ``<root>/.paused-at-<kind>-<n>`` is
written, and the process waits until it is deleted (or is killed). Tests use it to kill -9 a report at
a known point; it does nothing when the variable is unset.

Under torchrun only rank 0 writes here (see ``dpo_eval.evaluation.parallel``): a shared artifact is computed
by every rank and committed by rank 0, any other by rank 0 while the other ranks wait for its folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dpo_eval.engine.distributed import DistContext, barrier
from dpo_eval.evaluation.parallel import agree, is_done, wait_for
from dpo_eval.jsonio import write_json

STORE_VERSION = "1"
KEY_FILE = "key.json"
LEDGER_FILE = "last_run.json"
PAUSE_ENV = "DPO_EVAL_REPORT_PAUSE_AT"


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_key(parts: dict) -> str:
    """sha256 hex digest of the canonical JSON of ``{**parts, "store_version": STORE_VERSION}``."""
    return hashlib.sha256(canonical_json({**parts, "store_version": STORE_VERSION}).encode("utf-8")).hexdigest()


def path_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes; for a folder, of each file's relative path and bytes, in sorted order."""
    root = Path(path)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        if file != root:
            digest.update(str(file.relative_to(root)).encode("utf-8") + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class Ledger:
    """What this process computed and reused, per kind of artifact (the 'nothing recomputed' evidence)."""

    computed: dict[str, list[str]] = field(default_factory=dict)
    reused: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, name: str, is_computed: bool) -> None:
        (self.computed if is_computed else self.reused).setdefault(kind, []).append(name)

    def n_computed(self, kind: str | None = None) -> int:
        """Artifacts computed, of one kind or of all."""
        return sum(len(v) for k, v in self.computed.items() if kind is None or k == kind)

    def to_dict(self) -> dict:
        return {"computed": self.computed, "reused": self.reused}


@dataclass(frozen=True)
class Artifact:
    """One artifact's folder: ``path`` when finished, ``work`` while being made."""

    kind: str
    key: str
    parts: dict
    path: Path
    work: Path

    @property
    def is_done(self) -> bool:
        return (self.path / KEY_FILE).is_file()


class RunStore:
    """Content-keyed artifact folders under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, ledger: Ledger | None = None, ctx: DistContext | None = None):
        self.root = Path(root)
        self.ledger = ledger or Ledger()
        self.ctx = ctx or DistContext()
        self._computed_by_kind: dict[str, int] = {}

    def artifact(self, kind: str, parts: dict) -> Artifact:
        """The artifact of ``kind`` for these key parts (it may or may not exist yet)."""
        key = content_key({"kind": kind, **parts})
        folder = self.root / kind / key
        return Artifact(kind, key, parts, folder, folder.with_name(key + ".partial"))

    def ensure(self, artifact: Artifact, name: str, compute: Callable[[Path], None], is_shared: bool = False) -> Path:
        """The finished folder of ``artifact``; ``compute(work_dir)`` writes its files first if it is missing.

        ``name`` (e.g. ``"run/200"``) is what the ledger records. The work folder is kept between
        attempts, so tools that resume from their own partial files (generate, judge) continue there.
        Under torchrun, ``is_shared``: every rank runs ``compute`` (only rank 0 may write its files);
        otherwise rank 0 alone does, and the other ranks wait until the folder is committed.
        """
        if agree(artifact.is_done, self.ctx):
            self._note(artifact.kind, name, is_computed=False)
            return artifact.path
        if self.ctx.is_main:
            artifact.work.mkdir(parents=True, exist_ok=True)
        if is_shared and self.ctx.is_distributed:
            barrier(self.ctx)  # the work folder exists before any rank computes
            compute(artifact.work)
            if self.ctx.is_main:
                self._commit(artifact, name)
            barrier(self.ctx)  # committed before any rank reads it
        elif self.ctx.is_main:
            compute(artifact.work)
            self._commit(artifact, name)
        else:
            wait_for(is_done(artifact.path / KEY_FILE), f"{artifact.kind} {name}")
        self._note(artifact.kind, name, is_computed=True)
        return artifact.path

    def _commit(self, artifact: Artifact, name: str) -> None:
        """key.json into the work folder, then the folder renamed to its key (rank 0 only)."""
        write_json(artifact.work / KEY_FILE, {"kind": artifact.kind, "key": artifact.key,
                                              "store_version": STORE_VERSION, "parts": artifact.parts,
                                              "name": name})
        self._pause_if_requested(artifact.kind)
        if artifact.path.exists():  # a stale folder without key.json (never made by this code): replace it
            shutil.rmtree(artifact.path)
        os.replace(artifact.work, artifact.path)

    def _note(self, kind: str, name: str, is_computed: bool) -> None:
        self.ledger.note(kind, name, is_computed)
        self.write_ledger()

    def write_ledger(self) -> None:
        """Write the ledger to ``last_run.json`` (atomically; rank 0 only)."""
        if self.ctx.is_main:
            write_json(self.root / LEDGER_FILE, self.ledger.to_dict())

    def _pause_if_requested(self, kind: str, poll_s: float = 0.05) -> None:
        """Test-only pause before the n-th commit of ``kind`` (see the module docstring)."""
        self._computed_by_kind[kind] = count = self._computed_by_kind.get(kind, 0) + 1
        if os.environ.get(PAUSE_ENV, "").strip() != f"{kind}:{count}":
            return
        marker = self.root / f".paused-at-{kind}-{count}"
        marker.write_text(f"paused before committing {kind} #{count}, pid {os.getpid()}\n")
        while marker.exists():
            time.sleep(poll_s)
