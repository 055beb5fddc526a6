"""Writing JSON results: atomically (temp file + rename), undefined figures (NaN) as null."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def finite_or_null(value):
    """JSON has no NaN or infinity: such figures become null, recursively."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write one JSON object per line, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(finite_or_null(row), allow_nan=False) + "\n" for row in rows))
    os.replace(tmp, path)


def write_json(path: str | Path, data: dict) -> None:
    """Write data to path atomically, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
