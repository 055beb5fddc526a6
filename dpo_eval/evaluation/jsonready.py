"""Figures as JSON-ready values: what results.json holds of the metrics' dataclasses and numpy numbers."""

from __future__ import annotations

import dataclasses

import numpy as np


def plain(value: object) -> object:
    """Dataclasses, numpy scalars and tuples as JSON-ready dicts, Python numbers and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
