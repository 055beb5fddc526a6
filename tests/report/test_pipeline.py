"""`dpo-eval report` end to end on a tiny trained run: every file, the schema, and every number held to
what the individual commands (`score`, `generate`, the KL pass, a rule judge) give on the same inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE, trained_once

from dpo_eval.cli import main
from dpo_eval.evaluation.quality import gold_quality, judge_quality
from dpo_eval.evaluation.steps import unseen_sequences
from dpo_eval.metrics.kl import kl_from_samples
from dpo_eval.reports.schema import schema_errors


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


def invoke(*args: str) -> object:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def forbid_model_loading(monkeypatch) -> None:
    """Any model load from here on fails the test (a cached step must not load a model)."""
    from dpo_eval.models import load as model_load

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(model_load, "_from_pretrained", refuse)


@pytest.fixture(scope="module")
def judged(tiny, tmp_path_factory):
    """The report with a rule judge (longer output wins), written to its own --out."""
    out = tmp_path_factory.mktemp("judged") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(JUDGE_DIR))
        result = invoke("report", str(tiny["run"]), "--judge", RULE_JUDGE, "--out", str(out),
                        "--cache-dir", str(tiny["cache"]), *FAST)
    assert result.exit_code == 0, result.output
    return {"out": out, "results": json.loads((out / "results.json").read_text()), "output": result.output}


def checkpoint(results: dict, label: str) -> dict:
    return next(c for c in results["checkpoints"] if c["label"] == label)


def store_folder(out: Path, kind: str, name: str) -> Path:
    """The finished store folder of kind whose key.json names `name` (e.g. "run/4")."""
    for key_file in (out / "store" / kind).glob("*/key.json"):
        if name in json.loads(key_file.read_text())["name"].split(", "):
            return key_file.parent
    raise AssertionError(f"no {kind} artifact for {name}")


def test_every_file_is_written_and_results_validate(judged):
    out, results = judged["out"], judged["results"]
    assert schema_errors(results) == []
    assert [(c["label"], c["step"], c["is_reference"]) for c in results["checkpoints"]] == [
        ("0", 0, True), ("2", 2, False), ("4", 4, False)]
    assert results["runs"][0]["steps"] == [0, 2, 4] and results["runs"][0]["trainer"] == "dpo-eval"
    assert set(results["files"]) == {f"{kind}/run/{label}" for kind in ("pairs", "samples")
                                     for label in ("0", "2", "4")} | {"samples/reference"} | {
                                     f"quality/run/{label}" for label in ("2", "4")}  # judged: per-prompt quality
    for relative in results["files"].values():
        assert (out / relative).is_file()
    for kind in ("score", "samples", "kl", "entropy", "unseen", "judge"):
        folders = [p for p in (out / "store" / kind).iterdir()]
        assert folders and all((p / "key.json").is_file() and not p.name.endswith(".partial") for p in folders)
    from importlib.util import find_spec

    if find_spec("dpo_eval.reports.render") is not None:
        assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert set(results["timings"]) >= {"score", "samples", "kl", "entropy", "unseen", "judge", "assemble"}
    for phase in ("score", "samples", "kl", "entropy", "unseen", "judge"):  # one line per phase, with its time
        assert any(line.strip().startswith(f"{phase}:") and " s" in line for line in judged["output"].splitlines())


def assert_close_tree(got: object, expected: object, where: str = "") -> None:
    """Equal structure and non-float leaves; floats equal to 1e-12 relative."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), where
        for key in expected:
            assert_close_tree(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-12, nan_ok=True), where
    else:
        assert got == expected, where


def test_rewards_equal_dpo_eval_score(judged, tiny, tmp_path):
    for label in ("2", "4"):
        out = tmp_path / f"score{label}"
        result = invoke("score", "--policy", str(tiny["run"] / f"checkpoint-{label}"), "--ref", tiny["init"],
                        "--data", tiny["eval"], "--out", str(out), "--cache-dir", str(tiny["cache"]),
                        "--no-progress")
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        # equal up to float summation order (score clusters pairs by prompt tokens, the report by prompt text)
        assert_close_tree(checkpoint(judged["results"], label)["rewards"], summary["rewards"])
        table = pd.read_parquet(judged["out"] / judged["results"]["files"][f"pairs/run/{label}"])
        expected = pd.read_parquet(out / "pairs.parquet")
        pd.testing.assert_frame_equal(table[expected.columns], expected)
        data = pd.read_json(tiny["eval"], lines=True)
        assert table["prompt"].tolist() == data["prompt"].tolist()
        assert table["chosen"].tolist() == data["chosen"].tolist()
        assert table["rejected"].tolist() == data["rejected"].tolist()
    reference = checkpoint(judged["results"], "0")["rewards"]
    assert reference["mean_margin"] == 0.0 and reference["accuracy"] == 0.0 and reference["n_ties"] == 12


def generate_samples(tiny, out: Path, model: str, prompts: str) -> list[dict]:
    result = invoke("generate", "--model", model, "--ref", tiny["init"], "--prompts", prompts, "--out", str(out),
                    "--n", "2", "--max-new-tokens", "8", "--seed", "0", "--cache-dir", str(tiny["cache"]),
                    "--no-progress")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_kl_equals_metrics_kl_on_dpo_eval_generate_samples(judged, tiny, tmp_path):
    prompts = str(next((judged["out"] / "store" / "prompts").glob("*/prompts.jsonl")))
    from dpo_eval.diagnostics.sample_kl import samples_kl

    for label in ("2", "4"):
        model = str(tiny["run"] / f"checkpoint-{label}")
        samples = generate_samples(tiny, tmp_path / label, model, prompts)
        analytic = samples_kl(model, tiny["init"], tmp_path / label / "samples.jsonl", cache_dir=str(tiny["cache"]))
        kept = [i for i, s in enumerate(samples) if s["n_tokens"] > 0]
        expected = kl_from_samples([samples[i]["prompt_id"] for i in kept], [samples[i]["policy_logp"] for i in kept],
                                   [samples[i]["ref_logp"] for i in kept], [samples[i]["n_tokens"] for i in kept],
                                   [analytic[i].kl for i in kept])
        got = checkpoint(judged["results"], label)["kl"]
        for name in ("k1", "k2", "k3", "analytic"):
            assert got[name]["mean"] == pytest.approx(getattr(expected, name).mean, rel=1e-6, abs=1e-9)
            assert got[name]["se"] == pytest.approx(getattr(expected, name).se, rel=1e-6, abs=1e-9)
        table = pd.read_parquet(judged["out"] / judged["results"]["files"][f"samples/run/{label}"])
        assert table["output"].tolist() == [s["output"] for s in samples]
    zero = checkpoint(judged["results"], "0")["kl"]
    assert zero["k1"]["mean"] == 0.0 and zero["analytic"]["mean"] == 0.0


def test_untempered_sampling_makes_one_set_of_samples_for_every_figure(judged):
    """--temperature 1 --top-p 1 (the defaults): the judge's samples are the KL's, sampled once per model."""
    out, results = judged["out"], judged["results"]
    stored = [json.loads(p.read_text()) for p in (out / "store" / "samples").glob("*/key.json")]
    assert len(stored) == 3  # the reference (= row 0), steps 2 and 4: one artifact each
    assert all((s["parts"]["sampling"]["temperature"], s["parts"]["sampling"]["top_p"]) == (1.0, 1.0) for s in stored)
    said = results["provenance"]["samples"]
    assert said["separate"] is False and set(said["figures"]) == {"kl", "drift.dispersion", "length", "winrate",
                                                                  "quality"}
    assert all(settings == said["figures"]["kl"] for settings in said["figures"].values())
    assert (said["figures"]["kl"]["temperature"], said["figures"]["kl"]["top_p"]) == (1.0, 1.0)


def longer_wins_preferences(candidate: list[dict], baseline: list[dict]) -> dict[str, float]:
    """The rule judge written out: per prompt, the first samples compared by length in characters."""
    first = lambda rows: {r["prompt_id"]: r["output"] for r in rows if r["sample_index"] == 0}  # noqa: E731
    mine, theirs = first(candidate), first(baseline)
    return {p: 0.5 if len(mine[p]) == len(theirs[p]) else float(len(mine[p]) > len(theirs[p])) for p in mine}


def test_rule_judge_win_rates_and_quality(judged):
    out, results = judged["out"], judged["results"]
    reference = [json.loads(line) for line in (store_folder(out, "samples", "run/0") / "samples.jsonl")
                 .read_text().splitlines()]
    for label in ("2", "4"):
        mine = [json.loads(line) for line in (store_folder(out, "samples", f"run/{label}") / "samples.jsonl")
                .read_text().splitlines()]
        prefs = np.array(list(longer_wins_preferences(mine, reference).values()))
        got = checkpoint(results, label)
        assert got["winrate"]["n"] == len(prefs) and got["winrate"]["n_unscored"] == 0
        assert got["winrate"]["win_rate"] == pytest.approx(prefs.mean(), abs=1e-12)
        assert got["quality"] == {"source": "judge win rate - 0.5", "value": pytest.approx(prefs.mean() - 0.5),
                                  "se": pytest.approx(prefs.std(ddof=1) / math.sqrt(len(prefs)))}
    assert checkpoint(results, "0")["winrate"] is None and checkpoint(results, "0")["quality"] is None
    assert results["provenance"]["judge"]["spec"] == RULE_JUDGE
    assert results["recommended"] is not None and results["recommended"]["run"] == "run"
    assert all(m["flag"] != "--judge openai:MODEL (or --judge local:PATH, --judge gold:ANSWERS)"
               for m in results["missing"])


def test_rule_judge_per_prompt_quality_pairs_the_past_peak_drop(judged):
    """quality/run/{label} holds each prompt's mean preference - 0.5; the drop's SE is paired over them."""
    out, results = judged["out"], judged["results"]
    samples = {label: [json.loads(line) for line in (store_folder(out, "samples", f"run/{label}") / "samples.jsonl")
                       .read_text().splitlines()] for label in ("0", "2", "4")}
    per_prompt = {label: {p: v - 0.5 for p, v in longer_wins_preferences(samples[label], samples["0"]).items()}
                  for label in ("2", "4")}
    for label in ("2", "4"):
        table = pd.read_parquet(out / results["files"][f"quality/run/{label}"])
        assert dict(zip(table["prompt_id"], table["quality"])) == pytest.approx(per_prompt[label])
    past = results["past_peak"]["run"]
    peak, last = str(past["peak_step"]), str(past["last_step"])
    assert last == "4" and past["se_method"] == "paired"
    if peak != last:
        d = np.array([per_prompt[peak][p] - per_prompt[last][p] for p in per_prompt[last]])
        assert past["n_prompts"] == len(d) and past["drop"] == pytest.approx(d.mean())
        assert past["drop_se"] == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)))


def test_without_a_judge_missing_names_the_flag(tiny, tmp_path):
    out = tmp_path / "out"
    result = invoke("report", str(tiny["run"]), "--out", str(out), "--cache-dir", str(tiny["cache"]), *FAST)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert schema_errors(results) == []
    assert all(c["winrate"] is None and c["quality"] is None for c in results["checkpoints"])
    assert results["fits"]["kl_quality"] is None and results["recommended"] is None
    judge_missing = [m for m in results["missing"] if "win rates" in m["what"]]
    assert len(judge_missing) == 1 and "--judge openai:MODEL" in judge_missing[0]["flag"]
    assert "--judge local:PATH" in judge_missing[0]["flag"] and "--judge gold:ANSWERS" in judge_missing[0]["flag"]
    assert not (out / "store" / "judge").exists()
    assert all(c["kl"] is not None and c["rewards"] is not None for c in results["checkpoints"])


def test_rerun_computes_nothing_and_loads_no_model(judged, tiny, monkeypatch):
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    forbid_model_loading(monkeypatch)
    before = json.loads((judged["out"] / "results.json").read_text())
    result = invoke("report", str(tiny["run"]), "--judge", RULE_JUDGE, "--out", str(judged["out"]),
                    "--cache-dir", str(tiny["cache"]), *FAST)
    assert result.exit_code == 0, result.output
    ledger = json.loads((judged["out"] / "store" / "last_run.json").read_text())
    assert ledger["computed"] == {}
    assert set(ledger["reused"]) == {"prompts", "score", "samples", "kl", "entropy", "unseen", "judge"}
    after = json.loads((judged["out"] / "results.json").read_text())
    strip = lambda d: {k: v for k, v in d.items() if k not in ("generated_at", "timings")}  # noqa: E731
    assert strip(after) == strip(before)


@pytest.mark.parametrize(("args", "message"), [
    (("--steps", "7"), "no run has step 7"),
    (("--judge", "bogus:x"), "--judge 'bogus:x'"),
    (("--data", "missing.jsonl"), "--data missing.jsonl does not exist"),
    (("--n-samples", "0"), "--n-samples"),
    (("--judge", "rule:no_such_module:f"), "cannot import"),
])
def test_input_problems_are_one_line_exit_2_before_any_model_loads(tiny, tmp_path, monkeypatch, args, message):
    forbid_model_loading(monkeypatch)
    result = CliRunner().invoke(main, ["report", str(tiny["run"]), "--out", str(tmp_path / "o"),
                                       "--cache-dir", str(tiny["cache"]), *args, "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_a_run_without_reference_is_refused(tmp_path, monkeypatch):
    from conftest import save_tiny_model

    forbid_model_loading(monkeypatch)
    save_tiny_model(tmp_path / "run" / "checkpoint-2")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2 and "no reference model found" in result.output and "--ref" in result.output


def test_unseen_responses_pair_each_prompt_with_the_next_prompts_first_sample():
    rows = [{"prompt_id": p, "sample_index": i, "prompt": p, "token_ids": ids}
            for p, i, ids in [("a", 0, [1]), ("a", 1, [2, 3]), ("b", 0, []), ("b", 1, [4]), ("c", 0, [5])]]
    frame = unseen_sequences(rows, lambda row: [ord(row["prompt_id"])])
    own = frame[frame["source"] == "reference_samples"]
    assert own["response_ids"].tolist() == [[1], [2, 3], [4], [5]]  # the empty sample is left out
    other = frame[frame["source"] == "other_prompts"]
    assert list(zip(other["prompt_id"], other["response_prompt_id"], other["response_ids"].map(tuple))) == [
        ("a", "b", (4,)), ("b", "c", (5,)), ("c", "a", (1,))]  # b's first non-empty sample; c wraps to a
    assert other["prompt_ids"].tolist() == [[ord("a")], [ord("b")], [ord("c")]]


def test_quality_formulas():
    judgments = pd.DataFrame({"preference": [1.0, 0.0, 0.5, np.nan, 1.0], "prompt_id": list("abcde")})
    got = judge_quality(judgments)
    scored = np.array([1.0, 0.0, 0.5, 1.0])  # one judgment per prompt: the plain SE
    assert got["value"] == pytest.approx(scored.mean() - 0.5)
    assert got["se"] == pytest.approx(scored.std(ddof=1) / 2.0)
    # several judgments per prompt: clustered, sqrt(P/(P-1) sum_p (T_p - w n_p)^2) / n
    judgments = pd.DataFrame({"preference": [1.0, 1.0, 0.0, 0.0, 0.5, np.nan], "prompt_id": list("aabbcc")})
    w = 2.5 / 5
    totals, counts = np.array([2.0, 0.0, 0.5]), np.array([2, 2, 1])
    got = judge_quality(judgments)
    assert got["value"] == pytest.approx(w - 0.5)
    assert got["se"] == pytest.approx(math.sqrt(3 / 2 * np.sum((totals - w * counts) ** 2)) / 5)
    answers = {"q1": ["4"], "q2": ["7"]}
    samples = pd.DataFrame({"prompt_id": ["1", "1", "2", "2", "3"], "prompt": ["q1", "q1", "q2", "q2", "q3"],
                            "output": ["it is 4", "14", "7", "seven", "x"]})
    ref = pd.DataFrame({"prompt_id": ["1", "2"], "prompt": ["q1", "q2"], "output": ["no", "7!"]})
    gold = gold_quality(samples, ref, answers)
    diffs = np.array([0.5 - 0.0, 0.5 - 1.0])  # q1: 1 of 2 correct vs 0; q2: 1 of 2 vs 1; q3 has no answer
    assert gold["value"] == pytest.approx(diffs.mean()) and gold["se"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(2))


def test_gold_judge_quality_is_accuracy_minus_the_references(judged, tiny, tmp_path, monkeypatch):
    """Reuses the judged report's store: only the gold judge's artifacts are new, and no model loads."""
    from dpo_eval.judge.gold import answer_tokens, contains_answer

    out = judged["out"]
    prompts = [json.loads(line) for line in next((out / "store" / "prompts").glob("*/prompts.jsonl"))
               .read_text().splitlines()]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"prompt": p["prompt"], "answer": "the"}) + "\n" for p in prompts))
    forbid_model_loading(monkeypatch)
    result = invoke("report", str(tiny["run"]), "--judge", f"gold:{answers}", "--out", str(out),
                    "--cache-dir", str(tiny["cache"]), *FAST)
    assert result.exit_code == 0, result.output
    assert set(json.loads((out / "store" / "last_run.json").read_text())["computed"]) == {"judge"}
    results = json.loads((out / "results.json").read_text())
    assert schema_errors(results) == [] and not [m for m in results["missing"] if "gold" in m["flag"]]

    def accuracy(label: str) -> pd.Series:
        rows = [json.loads(line) for line in (store_folder(out, "samples", f"run/{label}") / "samples.jsonl")
                .read_text().splitlines()]
        frame = pd.DataFrame({"prompt_id": [r["prompt_id"] for r in rows],
                              "correct": [contains_answer(r["output"], answer_tokens("the")) for r in rows]})
        return frame.groupby("prompt_id")["correct"].mean()

    for label in ("2", "4"):
        diffs = (accuracy(label) - accuracy("0")).to_numpy()
        quality = checkpoint(results, label)["quality"]
        assert quality["source"] == "gold accuracy - reference's"
        assert quality["value"] == pytest.approx(diffs.mean(), abs=1e-12)


def test_two_runs_share_every_artifact_with_equal_content(judged, tiny, tmp_path, monkeypatch):
    """A copy of the run under another name: same weights, same keys, so nothing is computed for it."""
    from tiny_run import copy_run

    other = copy_run(tiny, tmp_path / "other")
    monkeypatch.syspath_prepend(str(JUDGE_DIR))
    forbid_model_loading(monkeypatch)
    result = invoke("report", str(tiny["run"]), str(other), "--judge", RULE_JUDGE, "--out", str(judged["out"]),
                    "--cache-dir", str(tiny["cache"]), *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((judged["out"] / "store" / "last_run.json").read_text())["computed"] == {}
    results = json.loads((judged["out"] / "results.json").read_text())
    assert schema_errors(results) == [] and [r["name"] for r in results["runs"]] == ["run", "other"]
    rows = {(c["run"], c["label"]): c for c in results["checkpoints"]}
    assert len(rows) == 6 and "pairs/other/4" in results["files"]
    for label in ("0", "2", "4"):
        assert rows[("other", label)]["kl"] == rows[("run", label)]["kl"]
        assert rows[("other", label)]["rewards"] == rows[("run", label)]["rewards"]
