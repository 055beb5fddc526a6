"""Writing result files: atomically (temp file beside the target, then rename), NaN as null in JSON.

`atomic_path` is the one atomic writer: every file dpo-eval writes whole goes through it, so a
crash or a kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UNIQUE = itertools.count()


def finite_or_null(value):
    """JSON has no NaN or infinity: such figures become null, recursively."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on a normal exit it replaces `path` (os.replace,
    atomic on one filesystem), on an error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{next(_UNIQUE)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to path atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write one JSON object per line, atomically."""
    write_text_atomic(path, "".join(json.dumps(finite_or_null(row), allow_nan=False) + "\n" for row in rows))


def write_json(path: str | Path, data: dict) -> None:
    """Write data to path atomically, so a crash never leaves a half-written file."""
    write_text_atomic(path, json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n")
