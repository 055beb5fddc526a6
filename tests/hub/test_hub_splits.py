"""A Hub dataset's split (and subset) named inline, ``org/name[@revision][/subset]:split``, by every data argument:
read_source's parsing, the conflict with --split / --subset, the one-line error for a split the dataset lacks, and
end to end against the test Hub (tests/hub/fake_hub.py): `dpo-eval train` on ``org/pairs:train_prefs`` with eval
data from another split, then `dpo-eval report` on that run with ``--prompts org/prompts:other`` and gold answers
from a Hub split. Reads run in fresh processes (datasets reads HF_ENDPOINT / HF_HOME when imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from fake_hub import FakeHub
from test_hub_data import parquet, read, ultrafeedback_rows

from dpo_eval.cli import main
from dpo_eval.data.hub_data import HubDataset, hub_source_name, parse_hub_dataset

pytest_plugins = ["hub_repos"]  # the `hub` fixture
COMMIT = "a" * 40


def test_inline_split_subset_and_revision_are_parsed_in_one_place() -> None:
    assert parse_hub_dataset("org/uf") == HubDataset("org/uf")
    assert parse_hub_dataset("org/uf@v1") == HubDataset("org/uf", "v1")
    assert parse_hub_dataset("org/uf:train_prefs") == HubDataset("org/uf", split="train_prefs")
    assert parse_hub_dataset("org/uf@v1/small:test") == HubDataset("org/uf", "v1", "small", "test")
    assert parse_hub_dataset("org/uf/small:test") == HubDataset("org/uf", None, "small", "test")
    # the source name hub_data writes reads back as the same repo, commit, subset and split
    assert parse_hub_dataset(hub_source_name("org/uf", COMMIT, "small", "test")) == HubDataset("org/uf", COMMIT,
                                                                                                "small", "test")
    for not_hub in ("org/uf/small", "data/pairs.jsonl:test", "a/b/c/d:test", "pairs.jsonl", "org/uf:a:b"):
        assert parse_hub_dataset(not_hub) is None, not_hub


def test_an_inline_split_reads_that_split_and_conflicts_with_another_split_flag(hub: FakeHub) -> None:
    v1 = hub.add_commit("org/uf", {"data/train_prefs-00000-of-00001.parquet": parquet(ultrafeedback_rows(2, "t")),
                                   "data/test_prefs-00000-of-00001.parquet": parquet(ultrafeedback_rows(3, "a"))},
                        kind="datasets", ref="v1")
    main_commit = hub.add_commit("org/uf", {"data/train_prefs-00000-of-00001.parquet": parquet(ultrafeedback_rows(
        2, "t")), "data/test_prefs-00000-of-00001.parquet": parquet(ultrafeedback_rows(4, "b"))}, kind="datasets")
    card = (b"---\nconfigs:\n- config_name: small\n  data_files:\n  - split: test\n    path: small/*.parquet\n"
            b"- config_name: large\n  data_files:\n  - split: test\n    path: large/*.parquet\n---\n")
    hub.add_commit("org/two", {"README.md": card, "small/x.parquet": parquet(ultrafeedback_rows(1, "s")),
                               "large/x.parquet": parquet(ultrafeedback_rows(2, "l"))}, kind="datasets")
    inline, same_flag, pinned, again, conflict, wrong, flag_wrong, subset, subset_conflict = read([
        {"pairs": "org/uf:train_prefs"}, {"pairs": "org/uf:train_prefs", "split": "train_prefs"},
        {"pairs": "org/uf@v1:test_prefs"}, {"pairs": f"org/uf@{v1}:test_prefs"},
        {"pairs": "org/uf:train_prefs", "split": "test_prefs"}, {"pairs": "org/uf:dev"},
        {"pairs": "org/uf", "split": "dev"}, {"pairs": "org/two/large:test"},
        {"pairs": "org/two/large:test", "subset": "small"}])
    assert inline["source"] == same_flag["source"] == f"org/uf@{main_commit}:train_prefs" and len(inline["pairs"]) == 2
    assert pinned["source"] == again["source"] == f"org/uf@{v1}:test_prefs" and len(pinned["pairs"]) == 3
    assert conflict["error"] == ("org/uf:train_prefs names split 'train_prefs' but --split 'test_prefs' was given: "
                                 "drop --split, or name the split once")
    assert wrong["error"] == ("Hub dataset org/uf: no split 'dev'; available splits: test_prefs, train_prefs; "
                              "name one as org/uf:SPLIT")
    assert flag_wrong["error"].endswith("; pass one with --split")
    assert len(subset["pairs"]) == 2 and subset["source"].endswith("/large:test")
    assert subset_conflict["error"].startswith("org/two/large:test names subset 'large' but --subset 'small'")
    for result in (conflict, wrong, subset_conflict):
        assert "\n" not in result["error"]


def test_a_conflicting_split_flag_exits_2_with_one_line(tmp_path: Path) -> None:
    """Decided before any Hub call or model load: the model named here does not exist."""
    result = CliRunner().invoke(main, ["generate", "--model", str(tmp_path / "no_model"), "--prompts",
                                       "org/prompts:other", "--split", "test", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "org/prompts:other names split 'other' but --split 'test' was given" in lines[0]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    judge_dir = Path(__file__).resolve().parents[1] / "judge"
    env = {**os.environ, "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": os.pathsep.join([str(judge_dir), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "dpo_eval.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)


def test_train_then_report_on_hub_splits(hub: FakeHub, tmp_path: Path) -> None:
    """train: data org/pairs:train_prefs, eval_data org/pairs:test_prefs (no "test" split: the default could not
    pick one); the manifest pins both to the commit. report on that run, after main moved on: held-out pairs from
    the manifest's pinned split, --prompts org/prompts:other (not its default "test" split), gold answers from org/gold:answers (its
    default split "test" answers no prompt, so a gold quality shows the named split was read)."""
    from conftest import save_tiny_model, write_synthetic_preferences  # tests/conftest.py

    model = save_tiny_model(tmp_path / "init", seed=7)
    train_rows = [json.loads(line) for line in Path(write_synthetic_preferences(tmp_path / "t.jsonl", n=16, seed=1))
                  .read_text().splitlines()]
    eval_rows = [json.loads(line) for line in Path(write_synthetic_preferences(tmp_path / "e.jsonl", n=6, seed=2))
                 .read_text().splitlines()]
    pairs_commit = hub.add_commit("org/pairs", {"data/train_prefs-00000-of-00001.parquet": parquet(train_rows),
                                                "data/test_prefs-00000-of-00001.parquet": parquet(eval_rows)},
                                  kind="datasets")
    other = [{"prompt_id": f"o{i}", "prompt": text} for i, text in enumerate(["tell me about the cat ", "why the dog "])]
    decoy = [{"prompt_id": f"d{i}", "prompt": f"what is {word} "} for i, word in enumerate(["it", "a", "mat"])]
    prompts_commit = hub.add_commit("org/prompts", {"data/test-00000-of-00001.parquet": parquet(decoy),
                                                    "data/other-00000-of-00001.parquet": parquet(other)},
                                    kind="datasets")
    answers = [{"prompt": row["prompt"], "answer": "the"} for row in other]
    hub.add_commit("org/gold", {"data/test-00000-of-00001.parquet": parquet([{"prompt": "nothing", "answer": "x"}]),
                                "data/answers-00000-of-00001.parquet": parquet(answers)}, kind="datasets")
    run = tmp_path / "run"
    sets = {"policy": model, "data": "org/pairs:train_prefs", "eval_data": "org/pairs:test_prefs",
            "output_dir": str(run), "learning_rate": "1e-2", "lr_schedule": "constant", "batch_size": "8",
            "max_steps": "2", "save_every": "1", "eval_every": "1", "show_progress": "false",
            "cache_dir": str(tmp_path / "cache"), "max_length": "null"}
    trained = _cli(tmp_path, "train", *[arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")])
    assert trained.returncode == 0, trained.stderr[-3000:]
    manifest = json.loads((run / "dpo_eval.json").read_text())
    assert manifest["data"]["n_pairs"] == 16 and manifest["data"]["eval_path"] == "org/pairs:test_prefs"
    assert manifest["data"]["source"] == f"org/pairs@{pairs_commit}:train_prefs"
    assert manifest["data"]["eval_source"] == f"org/pairs@{pairs_commit}:test_prefs"

    hub.add_commit("org/pairs", {"data/train_prefs-00000-of-00001.parquet": parquet(train_rows),  # main moves on:
                                 "data/test_prefs-00000-of-00001.parquet": parquet(eval_rows[:3])},  # the run's
                   kind="datasets")  # manifest keeps the report on the commit training read
    out = tmp_path / "report"
    done = _cli(tmp_path, "report", str(run), "--prompts", "org/prompts:other", "--judge", "gold:org/gold:answers",
                "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--n-samples", "2", "--max-new-tokens",
                "4", "--bootstrap-resamples", "50", "--lc-resamples", "5", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    stored_pairs, = (out / "store" / "hub_pairs").glob("*/rows.jsonl")
    assert [json.loads(line) for line in stored_pairs.read_text().splitlines()] == eval_rows
    stored_prompts, = (out / "store" / "hub_prompts").glob("*/rows.jsonl")
    assert [json.loads(line) for line in stored_prompts.read_text().splitlines()] == other
    results = json.loads((out / "results.json").read_text())
    provenance = json.dumps(results["provenance"])
    assert f"org/pairs@{pairs_commit}:test_prefs" in provenance and f"org/prompts@{prompts_commit}:other" in provenance
    qualities = [c["quality"] for c in results["checkpoints"] if c.get("quality")]
    assert qualities and all(q["source"] == "gold accuracy - reference's" and q["value"] is not None
                             for q in qualities)
