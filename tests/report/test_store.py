"""The run store: content keys, atomic commits, key.json, reuse only on an equal key, the pause hook."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from dpo_eval.evaluation.store import STORE_VERSION, RunStore, content_key, path_sha256


def test_content_key_is_sha256_of_sorted_compact_json():
    parts = {"b": [1, 2], "a": {"y": 1.5, "x": "é"}}
    text = '{"a":{"x":"é","y":1.5},"b":[1,2],"store_version":"' + STORE_VERSION + '"}'
    assert content_key(parts) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert content_key({"a": {"x": "é", "y": 1.5}, "b": [1, 2]}) == content_key(parts)  # key order is irrelevant
    assert content_key({**parts, "b": [2, 1]}) != content_key(parts)


def test_path_sha256_of_file_and_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_bytes(b"bee")
    (tmp_path / "d" / "a.txt").write_bytes(b"ay")
    assert path_sha256(tmp_path / "d" / "a.txt") == hashlib.sha256(b"ay").hexdigest()
    expected = hashlib.sha256(b"a.txt\0ay" + b"b.txt\0bee").hexdigest()
    assert path_sha256(tmp_path / "d") == expected


def test_ensure_computes_once_and_records_key(tmp_path):
    store = RunStore(tmp_path)
    calls = []

    def compute(work):
        calls.append(work)
        (work / "out.txt").write_text("x")

    artifact = store.artifact("score", {"policy": "p", "data": "d"})
    path = store.ensure(artifact, "run/1", compute)
    assert path == tmp_path / "score" / artifact.key and (path / "out.txt").read_text() == "x"
    assert not artifact.work.exists()
    recorded = json.loads((path / "key.json").read_text())
    assert recorded["key"] == artifact.key == content_key({"kind": "score", "policy": "p", "data": "d"})
    assert recorded["parts"] == {"policy": "p", "data": "d"} and recorded["name"] == "run/1"
    assert store.ensure(store.artifact("score", {"data": "d", "policy": "p"}), "run/1", compute) == path
    assert len(calls) == 1
    other = store.ensure(store.artifact("score", {"policy": "p2", "data": "d"}), "run/2", compute)
    assert other != path and len(calls) == 2
    assert store.ledger.computed == {"score": ["run/1", "run/2"]} and store.ledger.reused == {"score": ["run/1"]}


def test_failed_compute_leaves_no_finished_folder_and_keeps_work(tmp_path):
    store = RunStore(tmp_path)
    artifact = store.artifact("samples", {"m": 1})

    def fail(work):
        (work / "samples.partial.jsonl").write_text("{}\n")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.ensure(artifact, "m", fail)
    assert not artifact.is_done and not artifact.path.exists()
    assert (artifact.work / "samples.partial.jsonl").exists()  # a resumable tool continues from here
    store.ensure(artifact, "m", lambda work: None)
    assert (artifact.path / "samples.partial.jsonl").exists() and artifact.is_done


PAUSED_CHILD = """
import sys
from dpo_eval.evaluation.store import RunStore
store = RunStore(sys.argv[1])
for i in range(3):
    store.ensure(store.artifact("judge", {"i": i}), str(i), lambda work: (work / "f").write_text("x"))
"""


def test_pause_hook_stops_before_the_nth_commit(tmp_path):
    env = {**os.environ, "DPO_EVAL_REPORT_PAUSE_AT": "judge:2"}
    child = subprocess.Popen([sys.executable, "-c", PAUSED_CHILD, str(tmp_path)], env=env)
    marker = tmp_path / ".paused-at-judge-2"
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, "child never paused"
            time.sleep(0.05)
        finished = [p for p in (tmp_path / "judge").iterdir() if not p.name.endswith(".partial")]
        partial = [p for p in (tmp_path / "judge").iterdir() if p.name.endswith(".partial")]
        assert len(finished) == 1 and len(partial) == 1 and (partial[0] / "key.json").exists()
        marker.unlink()
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
    assert len([p for p in (tmp_path / "judge").iterdir() if not p.name.endswith(".partial")]) == 3
