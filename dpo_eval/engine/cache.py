"""On-disk cache of per-pair log-probs, keyed by model fingerprint, numerics and pair content.

A cache directory belongs to one (weights fingerprint, device type, dtype, engine version);
inside, rows are keyed by each pair's token-content key, which fixes the data and the
tokenization settings. Shards are written atomically as work completes, so a killed run
keeps what it finished and a rerun (or the next checkpoint against the same reference)
recomputes nothing it has.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ENGINE_VERSION = "1"
COMPACT_AFTER = 64  # shards; more are merged into one on load

CachedRow = tuple[float, float, int, int]  # chosen_logp, rejected_logp, chosen_tokens, rejected_tokens


def numerics_tag(device, dtype, exclude_ids=None) -> str:
    """What besides the weights changes log-probs: device type, dtype, tokens left out of the sums."""
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

    def __init__(self, root: Path, model_fingerprint: str, numerics: str, writer_tag: str = "0"):
        self.dir = Path(root) / "logps" / f"{model_fingerprint}-{numerics}-v{ENGINE_VERSION}"
        self.writer_tag = writer_tag

    def load(self, may_compact: bool = True) -> dict[str, CachedRow]:
        """All rows stored so far (later shards win on duplicate keys).

        may_compact: merge many shards into one; pass False while other processes may read.
        """
        if not self.dir.is_dir():
            return {}
        shards = sorted(self.dir.glob("part-*.npz"))
        rows: dict[str, CachedRow] = {}
        for shard in shards:
            rows.update(_read_shard(shard))
        if may_compact and len(shards) > COMPACT_AFTER:
            self._compact(rows, shards)
        return rows

    def append(self, rows: dict[str, CachedRow]) -> None:
        """Write rows as one new shard, atomically."""
        if not rows:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{self.writer_tag}.npz"
        _write_shard(self.dir / name, rows)

    def _compact(self, rows: dict[str, CachedRow], shards: Iterable[Path]) -> None:
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{self.writer_tag}-compact.npz"
        _write_shard(self.dir / name, rows)
        for shard in shards:
            shard.unlink(missing_ok=True)


def _write_shard(path: Path, rows: dict[str, CachedRow]) -> None:
    keys = list(rows)
    values = np.array([rows[k] for k in keys], dtype=np.float64).reshape(-1, 4)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, keys=np.array(keys, dtype="U32"), values=values)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_shard(path: Path) -> dict[str, CachedRow]:
    with np.load(path, allow_pickle=False) as data:
        keys, values = data["keys"], data["values"]
    return {str(k): (float(v[0]), float(v[1]), int(v[2]), int(v[3])) for k, v in zip(keys, values)}
