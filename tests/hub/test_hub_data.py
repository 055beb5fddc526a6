"""Datasets by Hub id, through datasets.load_dataset against the test Hub (tests/hub/fake_hub.py): the
published layouts read as they are, --split / --subset, revision pinning, the cache reused offline with the
Hub gone, and the one-line errors. Each read runs in a fresh process (tests/hub/read_data.py): datasets and
huggingface_hub read HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when imported."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from fake_hub import FakeHub

pytest_plugins = ["hub_repos"]  # the `hub` fixture
SCRIPT = Path(__file__).with_name("read_data.py")
USER = "Say w1 w2."


def parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def ultrafeedback_rows(n: int, tag: str) -> list[dict]:
    """UltraFeedback-binarized's columns: prompt, prompt_id, chosen/rejected/messages as message lists, scores."""
    def chat(answer: str) -> list[dict]:
        return [{"role": "user", "content": USER}, {"role": "assistant", "content": answer}]
    return [{"prompt": USER, "prompt_id": f"{tag}{i}", "chosen": chat(f"good {tag}{i}"), "rejected": chat(f"bad {i}"),
             "messages": chat(f"good {tag}{i}"), "score_chosen": 8.0, "score_rejected": 3.0} for i in range(n)]


def read(calls: list[dict], *, is_offline: bool = False) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1" if is_offline else "0"}
    done = subprocess.run([sys.executable, str(SCRIPT), json.dumps(calls)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_hub_datasets_read_in_their_published_layouts(hub: FakeHub) -> None:
    v1 = hub.add_commit("org/uf", {"data/train_prefs-00000-of-00001.parquet": parquet(ultrafeedback_rows(2, "t")),
                                   "data/test_prefs-00000-of-00001.parquet": parquet(ultrafeedback_rows(3, "a"))},
                        kind="datasets", ref="v1")
    main = hub.add_commit("org/uf", {"data/train_prefs-00000-of-00001.parquet": parquet(ultrafeedback_rows(2, "t")),
                                     "data/test_prefs-00000-of-00001.parquet": parquet(ultrafeedback_rows(4, "b"))},
                          kind="datasets")
    hh = [{"chosen": f"\n\nHuman: hi {i}\n\nAssistant: hello", "rejected": f"\n\nHuman: hi {i}\n\nAssistant: go"}
          for i in range(2)]
    hub.add_commit("org/hh", {"data/test-00000-of-00001.parquet": parquet(hh)}, kind="datasets")
    bench = [{"prompt": "p", "chosen": "c", "rejected": "r", "subset": "chat", "id": 7}]
    bench_commit = hub.add_commit("org/bench", {"data/filtered-00000-of-00001.parquet": parquet(bench)}, kind="datasets")
    alpaca = [{"instruction": "Name a colour.", "dataset": "x"}]
    arena = [{"question_id": "q1", "category": "arena", "turns": [{"content": "Write a poem."}]}]
    hub.add_commit("org/alpaca", {"eval.jsonl": json.dumps(alpaca[0]).encode() + b"\n"}, kind="datasets")
    hub.add_commit("org/arena", {"question.jsonl": json.dumps(arena[0]).encode() + b"\n"}, kind="datasets")
    hub.add_commit("org/odd", {"data.jsonl": b'{"question": "q", "answer": "a"}\n'}, kind="datasets")
    (uf, pinned, by_commit, no_split, bad_split, hh_out, bench_out, alpaca_out, arena_out, odd, missing, unpaired,
     ranked) = read([
        {"pairs": "org/uf", "split": "test_prefs"}, {"pairs": "org/uf@v1", "split": "test_prefs"},
        {"pairs": f"org/uf@{v1}", "split": "test_prefs"}, {"pairs": "org/uf"}, {"pairs": "org/uf", "split": "dev"},
        {"pairs": "org/hh"}, {"pairs": "org/bench", "split": "filtered"}, {"prompts": "org/alpaca"},
        {"prompts": "org/arena"}, {"pairs": "org/odd"}, {"pairs": "org/missing"}, {"unpaired": "org/uf@v1:test_prefs"},
        {"ranked": "org/bench:filtered"}])
    assert (uf["source"], uf["format"]) == (f"org/uf@{main}:test_prefs", "chat")
    assert [p["chosen"] for p in uf["pairs"]] == [[{"role": "assistant", "content": f"good b{i}"}] for i in range(4)]
    assert uf["pairs"][0]["prompt"] == [{"role": "user", "content": USER}]
    assert pinned["source"] == by_commit["source"] == f"org/uf@{v1}:test_prefs" and len(pinned["pairs"]) == 3
    assert no_split["error"].startswith("Hub dataset org/uf: has several splits and none is 'test'")
    assert bad_split["error"] == ("Hub dataset org/uf: no split 'dev'; available splits: test_prefs, train_prefs; "
                                  "pass one with --split")
    assert hh_out["format"] == "hh" and hh_out["pairs"][1]["prompt"] == [{"role": "user", "content": "hi 1"}]
    assert (bench_out["format"], bench_out["pairs"][0]["subset"], bench_out["pairs"][0]["id"]) == ("text", "chat", "7")
    assert alpaca_out["prompts"] == [["0", "Name a colour."]] and arena_out["prompts"] == [["q1", "Write a poem."]]
    assert odd["error"].startswith("org/odd@") and "columns question, answer match no preference-pair layout" in odd[
        "error"]
    assert missing["error"].startswith("Hub dataset org/missing not found")
    # KTO/NPO and listwise training data: the manifest's source is pinned to the commit read, as for pairs
    assert unpaired == {"source": f"org/uf@{v1}:test_prefs", "n": 6}  # 3 pairs: each chosen and rejected
    assert ranked == {"source": f"org/bench@{bench_commit}:filtered", "n": 1}
    for result in (no_split, bad_split, odd, missing):
        assert "\n" not in result["error"]


def test_a_hub_dataset_is_read_offline_from_the_cache(hub: FakeHub) -> None:
    commit = hub.add_commit("org/uf", {"data/test-00000-of-00001.parquet": parquet(ultrafeedback_rows(3, "a"))},
                            kind="datasets")
    online, = read([{"pairs": "org/uf"}])
    hub.stop()
    offline, never = read([{"pairs": "org/uf"}, {"pairs": "org/never"}], is_offline=True)
    assert offline == online and offline["source"] == f"org/uf@{commit}:test"
    assert "org/never" in never["error"] and "\n" not in never["error"]


def test_a_subset_is_a_config_of_the_dataset(hub: FakeHub) -> None:
    card = (b"---\nconfigs:\n- config_name: small\n  data_files:\n  - split: test\n    path: small/*.parquet\n"
            b"- config_name: large\n  data_files:\n  - split: test\n    path: large/*.parquet\n---\n")
    hub.add_commit("org/two", {"README.md": card, "small/x.parquet": parquet(ultrafeedback_rows(1, "s")),
                               "large/x.parquet": parquet(ultrafeedback_rows(2, "l"))}, kind="datasets")
    small, large, none, wrong = read([{"pairs": "org/two", "subset": "small"}, {"pairs": "org/two", "subset": "large"},
                                      {"pairs": "org/two"}, {"pairs": "org/two", "subset": "tiny"}])
    assert len(small["pairs"]) == 1 and len(large["pairs"]) == 2 and small["source"].endswith("/small:test")
    assert none["error"].startswith("Hub dataset org/two has several subsets: pass one with --subset")
    assert wrong["error"].startswith("Hub dataset org/two has no subset 'tiny'")


def test_score_with_hub_models_and_a_hub_dataset_matches_the_local_copies(hub: FakeHub, tmp_path: Path) -> None:
    """`dpo-eval score` given Hub ids only scores exactly what it scores given local copies of the same files."""
    import pandas as pd
    from conftest import save_tiny_model, write_text_pairs  # tests/conftest.py
    from hub_repos import folder_files
    from subprocesses import run_together  # tests/subprocesses.py

    policy, ref = save_tiny_model(tmp_path / "policy", seed=1), save_tiny_model(tmp_path / "sft", seed=0)
    hub.add_commit("org/policy", folder_files(Path(policy)))
    hub.add_commit("org/sft", folder_files(Path(ref)))
    local_pairs = write_text_pairs(tmp_path / "pairs.jsonl", n=6, seed=3)
    rows = [json.loads(line) for line in Path(local_pairs).read_text().splitlines()]
    commit = hub.add_commit("org/pairs", {"data/test_prefs-00000-of-00001.parquet": parquet(rows),
                                          "data/train_prefs-00000-of-00001.parquet": parquet(rows[:2])},
                            kind="datasets")

    def score(out: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "dpo_eval.cli", "score", *args, "--out", str(tmp_path / out),
                "--cache-dir", str(tmp_path / f"cache_{out}"), "--no-progress"]

    # both at once (each its own out and cache): each is a Python start importing torch
    for done in run_together(score("hub", "--policy", "org/policy", "--ref", "org/sft", "--data", "org/pairs",
                                   "--split", "test_prefs"),
                             score("local", "--policy", policy, "--ref", ref, "--data", local_pairs),
                             env={**os.environ, "HF_HUB_OFFLINE": "0"}):
        assert done.returncode == 0, done.stderr
    by_hub, local = tmp_path / "hub", tmp_path / "local"
    summary = json.loads((by_hub / "summary.json").read_text())
    assert summary["data"]["source"] == f"org/pairs@{commit}:test_prefs"
    assert summary["policy"]["path"] == "org/policy" and "models--org--policy" in summary["policy"]["resolved"]
    hub_scores, local_scores = pd.read_parquet(by_hub / "pairs.parquet"), pd.read_parquet(local / "pairs.parquet")
    numeric = [c for c in local_scores.columns if pd.api.types.is_float_dtype(local_scores[c])]
    assert numeric and len(hub_scores) == 6
    pd.testing.assert_frame_equal(hub_scores[numeric], local_scores[numeric])


def test_rewardbench_and_generate_take_hub_names(hub: FakeHub, tmp_path: Path) -> None:
    """rewardbench --data org/bench --split filtered and generate --prompts org/arena on a Hub model, end to end."""
    from conftest import save_tiny_model  # tests/conftest.py
    from hub_repos import folder_files

    model = save_tiny_model(tmp_path / "sft", seed=0)
    hub.add_commit("org/sft", folder_files(Path(model)))
    bench = [{"prompt": "hello there ", "chosen": "good yes", "rejected": "bad no", "subset": s, "id": i}
             for i, s in enumerate(["chat", "chat", "safety"])]
    bench_commit = hub.add_commit("org/bench", {"data/filtered-00000-of-00001.parquet": parquet(bench),
                                                "data/raw-00000-of-00001.parquet": parquet(bench[:1])}, kind="datasets")
    arena = [{"question_id": f"q{i}", "category": "arena", "turns": [{"content": f"hello {i}"}]} for i in range(2)]
    hub.add_commit("org/arena", {"question.jsonl": b"".join(json.dumps(r).encode() + b"\n" for r in arena)},
                   kind="datasets")

    def cli(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "dpo_eval.cli", *args, "--cache-dir", str(tmp_path / "cache")],
                              capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "0"}, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    cli("rewardbench", "--policy", "org/sft", "--ref", "none", "--data", "org/bench", "--split", "filtered",
        "--out", str(tmp_path / "rb"), "--no-progress")
    summary = json.loads((tmp_path / "rb" / "rewardbench.json").read_text())
    assert f"org/bench@{bench_commit}:filtered" in json.dumps(summary) and summary["data"]["n_pairs"] == 3
    cli("generate", "--model", "org/sft", "--prompts", "org/arena", "--n", "1", "--max-new-tokens", "2",
        "--out", str(tmp_path / "gen"), "--template", "plain")
    samples = [json.loads(line) for line in (tmp_path / "gen" / "samples.jsonl").read_text().splitlines()]
    assert sorted(s["prompt_id"] for s in samples) == ["q0", "q1"]
