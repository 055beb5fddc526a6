"""The judgment cache: one SQLite row per comparison, keyed by its content.

The key hashes the judge config, the template hash, the prompt, both outputs and their order,
so a rerun, or a run killed and restarted, never asks the judge again for a stored comparison,
and each comparison is stored once (the key is the primary key; each write is its own committed
transaction).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Verdict:
    """One judge call on one ordered comparison.

    preference_a: probability the output shown as A is better, in [0, 1]; None when unscored.
    reason: why it is unscored (None when scored). raw: the judge's raw output, always kept.
    """

    preference_a: float | None
    raw: str
    reason: str | None = None

    @property
    def is_scored(self) -> bool:
        return self.preference_a is not None


def comparison_key(judge_config: dict, template_sha: str, prompt: str, output_a: str, output_b: str) -> str:
    """Content key of one ordered comparison (A/B order is part of the content)."""
    payload = json.dumps([judge_config, template_sha, prompt, output_a, output_b], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgmentStore:
    """SQLite-backed map from comparison key to Verdict; safe to reopen after a crash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL)")
        self._lock = threading.Lock()  # judge threads share one connection

    def get(self, key: str) -> Verdict | None:
        with self._lock:
            row = self._db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        return Verdict(**json.loads(row[0])) if row else None

    def put(self, key: str, verdict: Verdict) -> None:
        """Store a verdict; a key already present keeps its first verdict."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO verdicts (key, verdict) VALUES (?, ?)",
                             (key, json.dumps(asdict(verdict))))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        self._db.close()
