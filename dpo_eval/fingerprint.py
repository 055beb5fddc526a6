"""Content fingerprints of model weights: files on disk (memoized) and modules in memory.

A fingerprint is a short blake2b hex digest that changes whenever a weight changes, so results can
record exactly which weights produced them. Hashing a file reads all of its bytes, so file digests
are memoized in ``<cache_dir>/fingerprints.json`` keyed by the file's absolute path, size and
mtime: a 500 MB model is hashed once, and again only when the file is rewritten. A file whose digest
is already known (a Hub download names each LFS file's sha256: ``dpo_eval.models.hub``) is not read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from dpo_eval.jsonio import write_text_atomic

MEMO_NAME = "fingerprints.json"
BLOCK_SIZE = 8 * 1024 * 1024
DIGEST_SIZE = 16


def _new_hash() -> hashlib.blake2b:
    """A fresh blake2b hasher with the digest size every fingerprint uses."""
    return hashlib.blake2b(digest_size=DIGEST_SIZE)


def hash_file(path: Path) -> str:
    """Hex digest of the file's full bytes, read in 8 MiB blocks (no memo)."""
    digest = _new_hash()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _load_memo(memo_path: Path) -> dict[str, dict]:
    """The memo as ``{absolute path: {"size", "mtime_ns", "digest"}}``; empty if absent or unreadable."""
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _save_memo(memo_path: Path, memo: dict[str, dict]) -> None:
    """Write the memo atomically (jsonio.write_text_atomic)."""
    write_text_atomic(memo_path, json.dumps(memo, indent=1, sort_keys=True))


def file_digests(paths: Iterable[Path], cache_dir: Path) -> dict[Path, str]:
    """Digest of each file, reusing the on-disk memo when path, size and mtime are unchanged."""
    memo_path = Path(cache_dir) / MEMO_NAME
    memo = _load_memo(memo_path)
    digests: dict[Path, str] = {}
    is_dirty = False
    for path in paths:
        real = Path(path).resolve()
        stat = real.stat()
        entry = memo.get(str(real))
        if (
            isinstance(entry, dict)
            and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
        ):
            digests[path] = str(entry["digest"])
            continue
        digests[path] = hash_file(real)
        memo[str(real)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": digests[path]}
        is_dirty = True
    if is_dirty:
        _save_memo(memo_path, memo)
    return digests


def fingerprint_files(paths: Iterable[Path], cache_dir: Path, known: Mapping[Path, str] | None = None) -> str:
    """Fingerprint of a set of weight files: their sorted names, each with the digest of its bytes.

    Only file names (not folders) enter the hash, so a copied or moved model keeps its fingerprint.
    ``known``: digests given by the file's source (e.g. ``"sha256:<hex>"`` from the Hub), used instead of
    hashing those files.
    """
    ordered = sorted(paths, key=lambda p: Path(p).name)
    known = dict(known or {})
    digests = {**file_digests([p for p in ordered if p not in known], cache_dir), **known}
    combined = _new_hash()
    for path in ordered:
        combined.update(Path(path).name.encode("utf-8") + b"\0" + digests[path].encode("ascii") + b"\n")
    return combined.hexdigest()


def combine_fingerprints(**parts: str) -> str:
    """Fingerprint of named parts, e.g. ``combine_fingerprints(adapter=..., base=...)``; order-independent."""
    combined = _new_hash()
    for name in sorted(parts):
        combined.update(f"{name}={parts[name]}\n".encode())
    return combined.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor in its own dtype (bfloat16 included), on the CPU, in row-major order."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def fingerprint_module(model: torch.nn.Module) -> str:
    """Fingerprint of a module's ``state_dict``: each tensor's name, shape, dtype and bytes, sorted by name.

    For models held in memory (e.g. by the trainer). It is not comparable with the fingerprint of a
    weights folder, which hashes files.
    """
    combined = _new_hash()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name]
        header = f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n"
        combined.update(header.encode("utf-8"))
        combined.update(_tensor_bytes(tensor))
    return combined.hexdigest()
