"""On-disk cache of per-pair log-probs, keyed by model fingerprint, numerics and pair content.

A cache directory belongs to one (model fingerprint, device type, dtype, engine version); the
model fingerprint (``dpo_eval.models.identify``) covers the weights, the model's config and the
attention implementation it is loaded with. Inside, rows are keyed by each pair's token-content
key, which fixes the data and the tokenization settings. Shards are written atomically as work
completes, so a killed run keeps what it finished and a rerun (or the next checkpoint against the
same reference) recomputes nothing it has.

Shard layout (``part-<time_ns>-<pid>-<writer>[-compact].npz``, read with ``allow_pickle=False``):

==============  ============  =====================================================================
array           dtype/shape   meaning
==============  ============  =====================================================================
``key_bytes``   uint8 (b,)    the UTF-8 bytes of every key, concatenated
``key_offsets`` int64 (n+1,)  key i is ``key_bytes[offsets[i]:offsets[i+1]]``; 0 first, b last
``values``      float64 (n,4) chosen_logp, rejected_logp, chosen_tokens, rejected_tokens
==============  ============  =====================================================================

Shards written before this layout hold ``keys`` as fixed-width ``U32`` strings; they are still read.

Many processes may share one cache directory. Compaction writes the merged shard (atomically)
before it deletes exactly the shards it merged, so every row is in some shard at every moment;
a reader that finds a listed shard gone lists the directory again and reads the new shards (a
row seen twice is the same row).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dpo_eval.errors import UserError

ENGINE_VERSION = "1"
COMPACT_AFTER = 64  # shards; more are merged into one on load

CachedRow = tuple[float, float, int, int]  # chosen_logp, rejected_logp, chosen_tokens, rejected_tokens


def numerics_tag(device, dtype, exclude_ids=None) -> str:
    """What besides the model changes log-probs: device type, dtype, tokens left out of the sums."""
    tag = f"{device.type}-{str(dtype).removeprefix('torch.')}"
    if exclude_ids is not None:
        tag += "-excl" + hashlib.blake2b(str(sorted(exclude_ids.tolist())).encode(), digest_size=4).hexdigest()
    return tag


def default_cache_dir() -> Path:
    """~/.cache/dpo_eval, or $XDG_CACHE_HOME/dpo_eval."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dpo_eval"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """The cache directory a command was given, else the default."""
    return Path(cache_dir) if cache_dir else default_cache_dir()


class LogpCache:
    """Per-model store of pair log-probs: ``load`` everything, ``append`` finished rows."""

    def __init__(self, root: Path, model_fingerprint: str, numerics: str, writer_tag: str = "0",
                 compact_after: int = COMPACT_AFTER):
        self.dir = Path(root) / "logps" / f"{model_fingerprint}-{numerics}-v{ENGINE_VERSION}"
        self.writer_tag = writer_tag
        self.compact_after = compact_after

    def load(self, may_compact: bool = True) -> dict[str, CachedRow]:
        """All rows stored so far, also while other processes append and compact.

        may_compact: merge the shards into one when there are more than ``compact_after``.
        """
        rows: dict[str, CachedRow] = {}
        read = self._read_all(rows)
        if may_compact and len(read) > self.compact_after:
            self._compact(rows, read)
        return rows

    def append(self, rows: dict[str, CachedRow]) -> None:
        """Write rows as one new shard, atomically."""
        if not rows:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_shard(self.dir / self._shard_name(""), rows)

    def _shard_name(self, suffix: str) -> str:
        return f"part-{time.time_ns():020d}-{os.getpid()}-{self.writer_tag}{suffix}.npz"

    def _read_all(self, rows: dict[str, CachedRow]) -> list[Path]:
        """Read every shard into rows; returns the shards read.

        A shard that vanished between listing and opening was merged by a compaction, which wrote
        its merged shard first: list again and read what is new, until a pass loses nothing.
        """
        read: list[Path] = []
        done: set[Path] = set()
        while self.dir.is_dir():
            is_lossless = True
            for shard in sorted(set(self.dir.glob("part-*.npz")) - done):
                done.add(shard)
                try:
                    rows.update(_read_shard(shard))
                except FileNotFoundError:
                    is_lossless = False
                    continue
                read.append(shard)
            if is_lossless:
                break
        return read

    def _compact(self, rows: dict[str, CachedRow], merged: Iterable[Path]) -> None:
        """Write rows (everything in ``merged``) as one shard, then delete exactly ``merged``."""
        _write_shard(self.dir / self._shard_name("-compact"), rows)
        for shard in merged:
            shard.unlink(missing_ok=True)


def _write_shard(path: Path, rows: dict[str, CachedRow]) -> None:
    """Write rows in the layout of the module docstring: temporary file, fsync, rename."""
    encoded = [key.encode("utf-8") for key in rows]
    offsets = np.cumsum([0] + [len(key) for key in encoded], dtype=np.int64)
    key_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    values = np.array(list(rows.values()), dtype=np.float64).reshape(-1, 4)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, key_bytes=key_bytes, key_offsets=offsets, values=values)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _damaged(path: Path, what: str) -> UserError:
    return UserError(f"log-prob cache shard {path} is damaged ({what}): delete it and rerun to recompute")


def _decode_keys(path: Path, data, n_rows: int) -> list[str]:
    """The keys of a shard, checked against its layout and row count."""
    if "key_bytes" not in data.files:  # the legacy fixed-width layout
        if "keys" not in data.files or data["keys"].dtype.kind != "U":
            raise _damaged(path, "no key_bytes or keys array")
        keys = [str(key) for key in data["keys"]]
    else:
        blob, offsets = data["key_bytes"].tobytes(), data["key_offsets"]
        if (offsets.ndim != 1 or len(offsets) != n_rows + 1 or offsets[0] != 0
                or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0)):
            raise _damaged(path, f"{len(offsets)} key offsets for {n_rows} rows and {len(blob)} key bytes")
        try:
            keys = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
        except UnicodeDecodeError as error:
            raise _damaged(path, f"key bytes are not UTF-8: {error}") from error
    if len(keys) != n_rows:
        raise _damaged(path, f"{len(keys)} keys for {n_rows} rows")
    return keys


def _read_shard(path: Path) -> dict[str, CachedRow]:
    """The rows of one shard; FileNotFoundError when it vanished (compacted away)."""
    with np.load(path, allow_pickle=False) as data:
        values = data["values"].reshape(-1, 4)
        keys = _decode_keys(path, data, len(values))
    return {k: (float(v[0]), float(v[1]), int(v[2]), int(v[3])) for k, v in zip(keys, values)}
