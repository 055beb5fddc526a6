"""The log-prob cache: key storage on disk, compaction, readers racing a compacting writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpo_eval.engine import cache as cache_lib
from dpo_eval.engine.cache import LogpCache
from dpo_eval.errors import UserError


def make_rows(start: int, n: int, key_chars: int = 32) -> dict[str, tuple[float, float, int, int]]:
    """Rows whose values are a fixed function of their index: logp = -i/7, -2i/7; tokens i, i+1."""
    return {f"{i:0{key_chars}x}": (-i / 7, -2 * i / 7, i, i + 1) for i in range(start, start + n)}


def test_append_then_load_round_trips_values(tmp_path: Path) -> None:
    cache = LogpCache(tmp_path, "f" * 32, "cpu-float32")
    assert cache.load() == {}
    cache.append(make_rows(0, 5))
    cache.append(make_rows(5, 3))
    cache.append({})  # writes nothing
    assert cache.load() == make_rows(0, 8)
    assert len(list(cache.dir.glob("part-*.npz"))) == 2


@pytest.mark.parametrize("key_chars", [1, 32, 64, 200])
def test_keys_of_any_length_round_trip_exactly(tmp_path: Path, key_chars: int) -> None:
    cache = LogpCache(tmp_path, "f" * 32, "cpu-float32")
    rows = make_rows(0, 4, key_chars)
    rows["é-ключ-" + "x" * key_chars] = (-1.5, -2.5, 3, 4)  # non-ASCII keys survive too
    cache.append(rows)
    loaded = cache.load()
    assert loaded == rows
    assert {len(k) for k in loaded} == {len(k) for k in rows}


def test_shard_is_readable_without_pickle(tmp_path: Path) -> None:
    cache = LogpCache(tmp_path, "f" * 32, "cpu-float32")
    cache.append(make_rows(0, 3, 64))
    (shard,) = cache.dir.glob("part-*.npz")
    with np.load(shard, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)


def test_legacy_u32_shards_are_still_read(tmp_path: Path) -> None:
    cache = LogpCache(tmp_path, "f" * 32, "cpu-float32")
    cache.dir.mkdir(parents=True)
    old = make_rows(0, 3)
    values = np.array(list(old.values()), dtype=np.float64)
    np.savez(cache.dir / "part-00000000000000000001-1-0.npz", keys=np.array(list(old), dtype="U32"),
             values=values)
    cache.append(make_rows(3, 2))
    assert cache.load() == make_rows(0, 5)


def test_damaged_key_layout_is_refused(tmp_path: Path) -> None:
    cache = LogpCache(tmp_path, "f" * 32, "cpu-float32")
    cache.dir.mkdir(parents=True)
    shard = cache.dir / "part-00000000000000000001-1-0.npz"
    # offsets claim 40 bytes of keys but the blob holds 32
    np.savez(shard, key_bytes=np.zeros(32, dtype=np.uint8), key_offsets=np.array([0, 40]),
             values=np.zeros((1, 4)))
    with pytest.raises(UserError, match=f"{shard.name}.*delete"):
        cache.load()


def test_compaction_merges_and_keeps_every_row(tmp_path: Path) -> None:
    cache = LogpCache(tmp_path, "f" * 32, "cpu-float32", compact_after=3)
    for start in range(0, 20, 4):
        cache.append(make_rows(start, 4))
    assert cache.load(may_compact=False) == make_rows(0, 20)
    assert len(list(cache.dir.glob("part-*.npz"))) == 5
    assert cache.load() == make_rows(0, 20)
    assert len(list(cache.dir.glob("part-*.npz"))) == 1
    assert cache.load() == make_rows(0, 20)


def test_shard_compacted_away_between_listing_and_reading(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process compacts right after this reader listed the shards: the reader lists again."""
    reader = LogpCache(tmp_path, "f" * 32, "cpu-float32", compact_after=1000)
    other = LogpCache(tmp_path, "f" * 32, "cpu-float32", compact_after=2, writer_tag="other")
    for start in range(0, 12, 3):
        reader.append(make_rows(start, 3))
    real_read = cache_lib._read_shard
    calls = []

    def read_after_other_compacts(path: Path):
        calls.append(path)
        if len(calls) == 1:  # the other cache's reads below go straight through
            assert other.load() == make_rows(0, 12)  # merges all 4 shards, deletes them
            assert not path.exists()
        return real_read(path)

    monkeypatch.setattr(cache_lib, "_read_shard", read_after_other_compacts)
    assert reader.load() == make_rows(0, 12)
    assert len(list(reader.dir.glob("part-*.npz"))) == 1


WORKER = r"""
import sys
from pathlib import Path
from dpo_eval.engine.cache import LogpCache

root, name, n_rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
offset = 0 if name == "a" else 1_000_000
cache = LogpCache(root, "f" * 32, "cpu-float32", writer_tag=name, compact_after=3)
mine, seen = set(), set()
for i in range(n_rounds):
    rows = {f"{offset + 2 * i + j:064x}": (-(offset + 2 * i + j) / 7, -1.0, 1, 2) for j in range(2)}
    cache.append(rows)
    mine |= set(rows)
    loaded = cache.load(may_compact=True)
    assert mine <= set(loaded), "lost own rows"
    assert seen <= set(loaded), "rows seen before vanished"
    for key, value in loaded.items():
        assert value[0] == -int(key, 16) / 7, key
    seen = set(loaded)
print(len(seen))
"""


def test_two_processes_appending_loading_and_compacting_one_cache(tmp_path: Path) -> None:
    n_rounds = 150
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), name, str(n_rounds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for name in ("a", "b")]
    results = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, results):
        assert worker.returncode == 0, err[-3000:]
        assert int(out) >= 2 * n_rounds  # at least its own rows at its last load
    expected = {f"{offset + k:064x}" for offset in (0, 1_000_000) for k in range(2 * n_rounds)}
    final = LogpCache(tmp_path, "f" * 32, "cpu-float32").load()
    assert set(final) == expected
    assert all(value[0] == -int(key, 16) / 7 for key, value in final.items())
