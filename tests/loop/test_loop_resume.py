"""kill -9 at every phase of the loop (sampling, labelling, pairing, training, between rounds), rerun the
same command each time: the final weights equal an uninterrupted loop's, bit for bit."""

from __future__ import annotations

import json
import signal
import sys

import pytest
from loop_setup import LOOP_DIR, make_base, start_loop, write_loop_yaml
from safetensors.torch import load_file

from dpo_eval.loop import phases
from dpo_eval.loop.run import LOOP_FILE
from dpo_eval.train import checkpoint as ckpt

sys.path.insert(0, str(LOOP_DIR.parent / "train"))
from test_recipe import assert_same_weights, wait_for_pause  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("loop_resume"))


def kill_at(config, out, env: dict, marker) -> None:
    victim = start_loop(config, out.parent, **env)
    try:
        wait_for_pause(victim, marker)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    marker.unlink(missing_ok=True)


def test_kill_9_at_each_phase_resumes_to_the_same_final_weights(base, tmp_path):
    straight = tmp_path / "straight"  # a process like the killed ones (same threads, so the same float sums)
    done = start_loop(write_loop_yaml(base, straight), tmp_path)  # runs beside the first kills (outputs apart)

    out = tmp_path / "killed"
    config = write_loop_yaml(base, out)
    points = [(1, "samples"), (1, "labels"), (1, "pairs"), (1, "train"), (1, "round"), (2, "samples")]
    for round_index, name in points:
        if name == "train":  # the trainer's own hook: paused after round 1's checkpoint-1, mid-round
            env, marker = {ckpt.PAUSE_ENV: "1"}, ckpt.pause_marker(out / "round-1", 1)
        else:
            env = {phases.PAUSE_ENV: f"{round_index}:{name}"}
            marker = phases.pause_marker(out, round_index, name)
        kill_at(config, out, env, marker)
        if name in ("samples", "labels", "pairs"):  # paused just before the commit: only the partial exists
            assert (out / f"round-{round_index}" / f"{name}.partial").is_dir()
            assert not (out / f"round-{round_index}" / name).exists()
    assert [r["round"] for r in json.loads((out / LOOP_FILE).read_text())["rounds"]] == [1]
    finished = start_loop(config, out.parent)
    assert finished.wait(300) == 0, finished.stderr.read()[-2000:]
    assert done.wait(300) == 0, done.stderr.read()[-2000:]
    for k in (1, 2):
        a = load_file(straight / f"round-{k}" / "checkpoint-2" / "model.safetensors")
        b = load_file(out / f"round-{k}" / "checkpoint-2" / "model.safetensors")
        assert_same_weights(a, b, atol=0)
    for name in ("samples/samples.jsonl", "labels/labels.jsonl", "pairs/pairs.jsonl"):
        same = (straight / "round-2" / name).read_text().replace(str(straight), str(out))
        assert same == (out / "round-2" / name).read_text()
    record = json.loads((out / LOOP_FILE).read_text())
    assert [r["counts"] for r in record["rounds"]] == [
        r["counts"] for r in json.loads((straight / LOOP_FILE).read_text())["rounds"]]
