"""`dpo-eval loop` end to end on a tiny random model: what each round writes, counts recomputed from the
files, prompt slices, references, and the one-line errors that leave nothing committed."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from loop_setup import LOOP_DIR, loop_settings, make_base

from dpo_eval.cli import main
from dpo_eval.engine.cache import resolve_cache_dir
from dpo_eval.errors import UserError
from dpo_eval.loop.config import load_loop_config
from dpo_eval.loop.run import LOOP_FILE, run_loop
from dpo_eval.models import identify_model
from dpo_eval.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("loop"))


@pytest.fixture(autouse=True)
def rules_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(LOOP_DIR))


@pytest.fixture(scope="module")
def straight(base):
    """The uninterrupted two-round loop (fixed reference, max_min), run once for the module."""
    import sys

    sys.path.insert(0, str(LOOP_DIR))
    out = base["root"] / "straight"
    run_loop(load_loop_config(None, (), **loop_settings(base, out)))
    return out


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fingerprint(path: str, base: dict) -> str:
    return identify_model(path, cache_dir=resolve_cache_dir(str(base["root"] / "cache"))).fingerprint


def test_rounds_take_successive_wrapping_prompt_slices(straight):
    ids = [[r["prompt_id"] for r in rows(straight / f"round-{k}" / "samples" / "prompts.jsonl")] for k in (1, 2)]
    assert ids == [["q0", "q1", "q2"], ["q3", "q0", "q1"]]


def test_each_round_samples_the_previous_rounds_policy_and_trains_from_it(straight, base):
    record = json.loads((straight / LOOP_FILE).read_text())
    first, second = record["rounds"]
    assert first["policy"] == base["model"] and second["policy"] == first["final_checkpoint"]
    assert first["final_checkpoint"] == str(straight / "round-1" / "checkpoint-2")
    samples = rows(straight / "round-2" / "samples" / "samples.jsonl")
    assert {s["model"] for s in samples} == {first["final_checkpoint"]}
    assert len(samples) == 12 and all(s["ref_logp"] is not None for s in samples)
    manifests = [json.loads((straight / f"round-{k}" / ckpt.MANIFEST).read_text()) for k in (1, 2)]
    assert manifests[1]["policy_init"] == first["final_checkpoint"]
    # reference: fixed -> the starting policy in both rounds
    assert {m["reference"]["fingerprint"] for m in manifests} == {fingerprint(base["model"], base)}
    assert manifests[1]["data"]["path"] == str(straight / "round-2" / "pairs" / "pairs.jsonl")


def test_counts_and_pairs_recomputed_from_the_written_files(straight):
    import loop_rules as rules

    record = json.loads((straight / LOOP_FILE).read_text())
    for entry in record["rounds"]:
        folder = straight / f"round-{entry['round']}"
        samples, labels = rows(folder / "samples" / "samples.jsonl"), rows(folder / "labels" / "labels.jsonl")
        pairs = rows(folder / "pairs" / "pairs.jsonl")
        assert [label["score"] for label in labels] == [rules.good_minus_bad(s["prompt"], s["output"]) for s in samples]
        scores = defaultdict(list)
        for s, label in zip(samples, labels):
            scores[s["prompt_id"]].append(label["score"])
        expected_pairs, ties = [], 0
        for prompt_id, values in scores.items():  # max_min by hand: first best against first worst
            best, worst = values.index(max(values)), values.index(min(values))
            if values[best] == values[worst]:
                ties += 1
            else:
                expected_pairs.append((prompt_id, best, worst))
        assert [(p["prompt_id"], p["chosen_index"], p["rejected_index"]) for p in pairs] == expected_pairs
        by_key = {(s["prompt_id"], s["sample_index"]): s["output"] for s in samples}
        assert all(p["chosen"] == by_key[p["prompt_id"], p["chosen_index"]] for p in pairs)
        assert all(p["chosen_source"] == "rule:loop_rules:good_minus_bad" for p in pairs)
        chosen = [max(scores[p]) for p, _, _ in expected_pairs]
        rejected = [min(scores[p]) for p, _, _ in expected_pairs]
        assert entry["counts"] == {"prompts": 3, "samples": 12, "unscored": 0, "ties": ties, "unparseable_judgments": 0,
                                   "skipped_prompts": ties,
                                   "pairs": len(expected_pairs), "mean_chosen_label": sum(chosen) / len(chosen),
                                   "mean_rejected_label": sum(rejected) / len(rejected)}
    assert json.loads((straight / "round-1" / "pairs" / "counts.json").read_text()) == record["rounds"][0]["counts"]


def test_a_finished_loop_reruns_nothing_and_other_settings_are_refused(straight, base, capsys):
    before = {p: p.stat().st_mtime_ns for p in straight.rglob("*") if p.is_file() and p.name != LOOP_FILE}
    run_loop(load_loop_config(None, (), **loop_settings(base, straight)))
    # the sampling batch size changes no sample (each is seeded on its own): not a setting a resume must share
    run_loop(load_loop_config(None, ("sampling.batch_size=3",), **loop_settings(base, straight)))
    assert {p: p.stat().st_mtime_ns for p in straight.rglob("*") if p.is_file() and p.name != LOOP_FILE} == before
    with pytest.raises(UserError, match=r"holds a loop with other settings \(sampling\)"):
        run_loop(load_loop_config(None, ("sampling.seed=4",), **loop_settings(base, straight)))


def test_a_phase_made_with_other_settings_is_refused(straight, base, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(straight / "round-1" / "samples", copy / "round-1" / "samples")
    with pytest.raises(UserError, match="round-1/samples was made with other settings"):
        run_loop(load_loop_config(None, ("sampling.seed=4",), **loop_settings(base, copy)))


def test_reference_previous_is_the_last_rounds_policy(base, tmp_path):
    out = tmp_path / "previous"
    settings = loop_settings(base, out, reference="previous", pairs="max_random")
    record = run_loop(load_loop_config(None, (), **settings))
    manifest = json.loads((out / "round-2" / ckpt.MANIFEST).read_text())
    assert record["rounds"][1]["reference"] == record["rounds"][0]["final_checkpoint"]
    assert manifest["reference"]["fingerprint"] == fingerprint(record["rounds"][0]["final_checkpoint"], base)


def test_a_labeller_that_scores_nothing_is_exit_2_and_commits_nothing(base, tmp_path):
    out = tmp_path / "refuses"
    path = tmp_path / "refuses.yaml"
    path.write_text(yaml.safe_dump(loop_settings(base, out, labeller="rule:loop_rules:refuses")))
    result = CliRunner().invoke(main, ["loop", str(path)])
    assert result.exit_code == 2, result.output
    assert "round 1: labeller rule:loop_rules:refuses scored none of the 12 samples" in result.output
    assert "Traceback" not in result.output
    assert not (out / "round-1" / "labels").exists() and not (out / "round-1" / "labels.partial").exists()
    assert not list((out / "round-1").glob("checkpoint-*"))


def test_a_round_with_zero_pairs_is_exit_2_and_counts_the_ties(base, tmp_path):
    out = tmp_path / "constant"
    path = tmp_path / "constant.yaml"
    path.write_text(yaml.safe_dump(loop_settings(base, out, labeller="rule:loop_rules:constant")))
    result = CliRunner().invoke(main, ["loop", str(path)])
    assert result.exit_code == 2, result.output
    assert "round 1: no pair formed (3 tie(s), 3 prompt(s) without a usable pair)" in result.output
    assert (out / "round-1" / "labels" / "key.json").exists()
    assert not (out / "round-1" / "pairs").exists() and not (out / "round-1" / "pairs.partial").exists()


def test_output_dir_reads_as_one_run_with_global_steps(straight):
    from dpo_eval.evaluation.discover import discover_run, read_training_logs

    run = discover_run(straight)
    assert [c.label for c in run.checkpoints] == ["1", "2", "3", "4"]
    assert [c.path for c in run.checkpoints] == [
        (straight / f"round-{r}" / f"checkpoint-{n}").resolve() for r in (1, 2) for n in (1, 2)]
    assert run.manifest["reference"] == json.loads((straight / "round-1" / ckpt.MANIFEST).read_text())["reference"]
    assert [r["first_global_step"] for r in run.manifest["loop"]["rounds"]] == [1, 3]
    logs = read_training_logs(run).log_history
    per_round = [json.loads((straight / f"round-{r}" / "checkpoint-2" / ckpt.TRAINER_STATE).read_text())["log_history"]
                 for r in (1, 2)]
    assert logs == [{**h, "step": h["step"] + 2 * (r - 1), "round": r} for r, hs in zip((1, 2), per_round) for h in hs]
    assert [h["step"] for h in logs if "loss" in h] == [1, 2, 3, 4]


def test_report_reads_the_loop_as_one_run(straight, base, tmp_path):
    from conftest import write_synthetic_preferences

    heldout = write_synthetic_preferences(tmp_path / "heldout.jsonl", n=6, seed=2)
    result = CliRunner().invoke(main, ["report", str(straight), "--data", heldout, "--stages", "score",
                                       "--out", str(tmp_path / "report"), "--no-progress"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    rows = [(c["step"], c["path"]) for c in results["checkpoints"]]
    assert rows == [(0, str(Path(base["model"]).resolve()))] + [
        (2 * (r - 1) + n, str((straight / f"round-{r}" / f"checkpoint-{n}").resolve())) for r in (1, 2) for n in (1, 2)]
