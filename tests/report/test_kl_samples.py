"""`dpo-eval report --temperature 0.7 --top-p 0.9`: the KL figures (k1/k2/k3 and the analytic pass) and the
dispersion to unseen responses come from untempered samples (temperature 1, top-p 1) stored under their own
key; the judge and the length figures from the samples at the user's settings (what the judge sees);
results.json says which samples each figure used; untempered user settings sample once; a rerun reuses both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from test_resume import (
    assert_reused_all,
    finished,
    kill_while_paused,
    ledger,
    report_cmd,
    run_to_the_end,
    strip,
)
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE, trained_once

from dpo_eval.cli import main
from dpo_eval.evaluation.config import ReportConfig
from dpo_eval.evaluation.plan import Plan
from dpo_eval.evaluation.store import KEY_FILE
from dpo_eval.reports.schema import schema_errors

TEMPERED = ("--temperature", "0.7", "--top-p", "0.9")
UNTEMPERED = {"temperature": 1.0, "top_p": 1.0}
USERS = {"temperature": 0.7, "top_p": 0.9}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return trained_once(tmp_path_factory)


def report(tiny: dict, out: Path, *more: str):
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(JUDGE_DIR))
        return CliRunner().invoke(main, ["report", str(tiny["run"]), "--judge", RULE_JUDGE, "--out", str(out),
                                         "--cache-dir", str(tiny["cache"]), "--no-render", *FAST, *more],
                                  catch_exceptions=False)


@pytest.fixture(scope="module")
def tempered(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tempered") / "out"
    result = report(tiny, out, *TEMPERED)
    assert result.exit_code == 0, result.output
    return {"out": out, "results": json.loads((out / "results.json").read_text()),
            "ledger": json.loads((out / "store" / "last_run.json").read_text())}


def artifacts(out: Path, kind: str) -> list[dict]:
    """key.json of every finished artifact of a kind, with its folder as "path"."""
    return [{**json.loads(f.read_text()), "path": f.parent} for f in sorted((out / "store" / kind).glob(f"*/{KEY_FILE}"))]


def samples_folder(out: Path, fingerprint: str, settings: dict) -> Path:
    """The one samples artifact of the model with these settings (temperature, top_p)."""
    found = [a["path"] for a in artifacts(out, "samples") if a["parts"]["model"] == fingerprint
             and all(a["parts"]["sampling"][k] == v for k, v in settings.items())]
    assert len(found) == 1, (fingerprint, settings, found)
    return found[0]


def read_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines() if line.strip()]


def checkpoint(results: dict, label: str) -> dict:
    return next(c for c in results["checkpoints"] if c["label"] == label)


def names(entries: list[str]) -> set[str]:
    return {n for entry in entries for n in entry.split(", ")}


def kl_by_hand(rows: list[dict], analytic: dict[tuple[str, int], float]) -> dict[str, tuple[float, float]]:
    """(mean, se) of each estimator written out: per sample lr = log π - log π_ref, k1 = lr, k2 = lr²/2,
    k3 = (e^-lr - 1) + lr, analytic = the kl pass's per-sample sum; mean over prompts of per-prompt means,
    se = SD (ddof 1) of the prompt means / √prompts. Empty samples are left out."""
    kept = [r for r in rows if r["n_tokens"] > 0]
    frame = pd.DataFrame({"prompt_id": [str(r["prompt_id"]) for r in kept],
                          "lr": [r["policy_logp"] - r["ref_logp"] for r in kept],
                          "analytic": [analytic[(str(r["prompt_id"]), r["sample_index"])] for r in kept]})
    frame["k1"] = frame["lr"]
    frame["k2"] = 0.5 * frame["lr"] ** 2
    frame["k3"] = np.expm1(-frame["lr"]) + frame["lr"]
    found = {}
    for name in ("k1", "k2", "k3", "analytic"):
        means = frame.groupby("prompt_id")[name].mean().to_numpy()
        found[name] = (float(means.mean()), float(means.std(ddof=1) / math.sqrt(means.size)))
    return found


def test_each_model_is_sampled_at_the_users_settings_and_untempered(tempered):
    out, results = tempered["out"], tempered["results"]
    models = {c["fingerprint"] for c in results["checkpoints"]}  # the reference (= row 0), step 2, step 4
    stored = artifacts(out, "samples")
    assert len(models) == 3 and len(stored) == 6
    for fingerprint in models:
        for settings in (USERS, UNTEMPERED):
            rows = read_rows(samples_folder(out, fingerprint, settings))
            assert rows and all((r["temperature"], r["top_p"]) == (settings["temperature"], settings["top_p"])
                                for r in rows)
    assert names(tempered["ledger"]["computed"]["samples"]) == {
        f"run/{label}{suffix}" for label in ("@reference", "0", "2", "4") for suffix in ("", " (untempered)")}


def test_kl_figures_are_the_estimators_on_the_untempered_samples(tempered):
    out, results = tempered["out"], tempered["results"]
    kl_passes = artifacts(out, "kl")
    for label in ("2", "4"):
        row = checkpoint(results, label)
        untempered = samples_folder(out, row["fingerprint"], UNTEMPERED)
        (kl_pass,) = [a for a in kl_passes if a["parts"]["policy"] == row["fingerprint"]]
        assert kl_pass["parts"]["samples"] == untempered.name
        table = pd.read_parquet(kl_pass["path"] / "kl.parquet")
        analytic = dict(zip(zip(table["prompt_id"], table["sample_index"]), table["kl"]))
        expected = kl_by_hand(read_rows(untempered), analytic)
        for name, (mean, se) in expected.items():
            assert row["kl"][name]["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12), (label, name)
            assert row["kl"][name]["se"] == pytest.approx(se, rel=1e-9, abs=1e-12), (label, name)
        users = read_rows(samples_folder(out, row["fingerprint"], USERS))
        on_users = kl_by_hand(users, {(str(r["prompt_id"]), r["sample_index"]): 0.0 for r in users})
        assert on_users["k1"][0] != pytest.approx(row["kl"]["k1"]["mean"])  # the tempered samples give another k1
    reference = checkpoint(results, "0")["kl"]
    assert reference["k1"]["mean"] == 0.0 and reference["analytic"]["mean"] == 0.0


def first_by_prompt(rows: list[dict]) -> dict[str, str]:
    return {r["prompt_id"]: r["output"] for r in rows if r["sample_index"] == 0}


def test_judge_lengths_and_tables_use_the_users_samples_and_dispersion_the_untempered(tempered):
    out, results = tempered["out"], tempered["results"]
    reference_fp = checkpoint(results, "0")["fingerprint"]
    ref_users = samples_folder(out, reference_fp, USERS)
    ref_untempered = samples_folder(out, reference_fp, UNTEMPERED)
    judged = artifacts(out, "judge")
    unseen = artifacts(out, "unseen")
    assert unseen and {a["parts"]["reference_samples"] for a in unseen} == {ref_untempered.name}
    for label in ("2", "4"):
        row = checkpoint(results, label)
        users = samples_folder(out, row["fingerprint"], USERS)
        (judge,) = [a for a in judged if a["parts"]["candidates"] == users.name]
        assert judge["parts"]["baseline"] == ref_users.name
        mine, theirs = first_by_prompt(read_rows(users)), first_by_prompt(read_rows(ref_users))
        prefs = [0.5 if len(mine[p]) == len(theirs[p]) else float(len(mine[p]) > len(theirs[p])) for p in mine]
        assert row["winrate"]["win_rate"] == pytest.approx(np.mean(prefs), abs=1e-12)
        assert row["length"]["checkpoint"]["mean_tokens"] == pytest.approx(
            np.mean([r["n_tokens"] for r in read_rows(users)]))
        assert row["length"]["reference"]["mean_tokens"] == pytest.approx(
            np.mean([r["n_tokens"] for r in read_rows(ref_users)]))
        table = pd.read_parquet(out / results["files"][f"samples/run/{label}"])
        assert table["output"].tolist() == [r["output"] for r in read_rows(users)]
        assert table["analytic_kl"].isna().all()  # the kl pass ran on other samples
        own = row["drift"]["dispersion"]["reference_samples"]["total"]
        assert own["n"] == sum(r["n_tokens"] > 0 for r in read_rows(ref_untempered))


def test_results_say_which_samples_each_figure_used(tempered):
    results = tempered["results"]
    assert schema_errors(results) == []
    said = results["provenance"]["samples"]
    assert said["separate"] is True
    for figure, settings in (("kl", UNTEMPERED), ("drift.dispersion", UNTEMPERED), ("length", USERS),
                             ("winrate", USERS), ("quality", USERS)):
        assert {k: said["figures"][figure][k] for k in settings} == settings, figure
        assert said["figures"][figure]["n_samples"] == 2 and said["figures"][figure]["max_new_tokens"] == 8
    assert (results["provenance"]["sampling"]["temperature"], results["provenance"]["sampling"]["top_p"]) == (0.7, 0.9)
    broken = json.loads(json.dumps(results))
    broken["provenance"]["samples"]["figures"]["kl"]["temperature"] = "1"
    assert schema_errors(broken)


def forbid_model_loading(monkeypatch) -> None:
    from dpo_eval.models import load as model_load

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(model_load, "_from_pretrained", refuse)


def test_a_rerun_reuses_both_sets_of_samples_and_loads_no_model(tempered, tiny, monkeypatch):
    forbid_model_loading(monkeypatch)
    result = report(tiny, tempered["out"], *TEMPERED)
    assert result.exit_code == 0, result.output
    ledger = json.loads((tempered["out"] / "store" / "last_run.json").read_text())
    assert ledger["computed"] == {}
    assert names(ledger["reused"]["samples"]) == names(tempered["ledger"]["computed"]["samples"])
    again = json.loads((tempered["out"] / "results.json").read_text())
    assert strip(again) == strip(tempered["results"])


def test_untempered_settings_are_served_by_the_untempered_samples_without_sampling_again(tempered, tiny,
                                                                                          monkeypatch):
    """--temperature 1 --top-p 1 (the defaults): the samples the tempered report made for its KL figures are
    the user's samples now; nothing is sampled, the KL figures are the tempered report's, one set serves all."""
    forbid_model_loading(monkeypatch)
    result = report(tiny, tempered["out"], "--stages", "samples,kl")
    assert result.exit_code == 0, result.output
    ledger = json.loads((tempered["out"] / "store" / "last_run.json").read_text())
    assert ledger["computed"] == {} and len(artifacts(tempered["out"], "samples")) == 6
    assert names(ledger["reused"]["samples"]) == {f"run/{label}" for label in ("@reference", "0", "2", "4")}
    results = json.loads((tempered["out"] / "results.json").read_text())
    said = results["provenance"]["samples"]
    assert said["separate"] is False and said["figures"]["kl"] == said["figures"]["length"]
    assert said["figures"]["kl"]["temperature"] == 1.0 and said["figures"]["kl"]["top_p"] == 1.0
    for mine, theirs in zip(results["checkpoints"], tempered["results"]["checkpoints"], strict=True):
        assert mine["kl"] == theirs["kl"]
        untempered = read_rows(samples_folder(tempered["out"], mine["fingerprint"], UNTEMPERED))
        assert mine["length"]["checkpoint"]["mean_tokens"] == pytest.approx(np.mean([r["n_tokens"] for r in untempered]))


def test_killed_while_sampling_untempered_then_resumed(tempered, tiny, tmp_path, monkeypatch):
    """Killed with the reference's untempered samples made but not committed: the rerun keeps the reference's
    samples at the user's settings, finishes the rest, and its KL figures are the uninterrupted report's."""
    out = tmp_path / "killed"
    cmd = [*report_cmd(tiny["run"], out, tiny["cache"]), "--no-render", "--stages", "samples,kl", *TEMPERED]
    kill_while_paused(cmd, out, "samples:2")  # the 1st samples artifact: the reference's at 0.7; the 2nd: at 1
    before = finished(out)
    assert before["samples"] == {"run/@reference", "run/0"}
    run_to_the_end(cmd, monkeypatch)
    assert_reused_all(before, out)
    assert names(ledger(out)["computed"]["samples"]) == {
        "run/@reference (untempered)", "run/0 (untempered)", "run/2", "run/2 (untempered)", "run/4",
        "run/4 (untempered)"}
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["provenance"]["samples"] == tempered["results"]["provenance"]["samples"]
    for mine, theirs in zip(resumed["checkpoints"], tempered["results"]["checkpoints"], strict=True):
        assert mine["kl"] == theirs["kl"] and mine["length"]["checkpoint"] == theirs["length"]["checkpoint"]


def plan_of(config: ReportConfig):
    """An object with Plan's sampling properties over ``config`` (they read nothing else)."""
    names = ("sampling", "untempered_sampling", "has_separate_kl_samples")
    plan = type("PlanSampling", (), {name: getattr(Plan, name) for name in names})()
    plan.config = config
    return plan


@pytest.mark.parametrize(("settings", "is_separate"), [
    ({}, False), ({"temperature": 0.7}, True), ({"top_p": 0.95}, True), ({"temperature": 0.0}, True),
    ({"vllm": True}, False), ({"vllm": True, "temperature": 0.7}, True),
])
def test_untempered_samples_are_the_users_only_for_untempered_settings(settings, is_separate):
    """vLLM's requests pin top-k, min-p and the penalties (generate.VLLM_PLAIN_SAMPLER), so its samples at
    temperature 1 and top-p 1 are untempered too; its settings say so ("sampler")."""
    plan = plan_of(ReportConfig(run_dirs=("r",), **settings))
    assert plan.has_separate_kl_samples is is_separate
    assert (plan.untempered_sampling["temperature"], plan.untempered_sampling["top_p"]) == (1.0, 1.0)
    assert plan.untempered_sampling.get("sampler") == ("temperature and top-p only" if settings.get("vllm") else None)
    assert {k: v for k, v in plan.untempered_sampling.items() if k not in ("temperature", "top_p")} == \
        {k: v for k, v in plan.sampling.items() if k not in ("temperature", "top_p")}


def test_vllm_requests_pin_every_sampling_parameter_but_temperature_and_top_p():
    """vLLM 0.8 on fills a request's missing top_k, min_p and penalties from the model's generation_config.json:
    a request to a server dpo-eval started carries them, so its samples follow temperature and top-p alone."""
    from dpo_eval.generate import VLLM_PLAIN_SAMPLER, GenerateConfig, Prompt, _server_request

    prompt = Prompt(id="p", text="hi")
    started = _server_request(GenerateConfig(model="m", prompts="p", out="o", vllm=True, temperature=0.7), prompt,
                              [1, 2], is_chat=False)
    assert {k: started[k] for k in ("top_k", "min_p", "repetition_penalty", "presence_penalty",
                                    "frequency_penalty")} == {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
                                                              "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert VLLM_PLAIN_SAMPLER.keys() <= started.keys() and started["temperature"] == 0.7
    other = _server_request(GenerateConfig(model="m", prompts="p", out="o", base_url="http://h"), prompt, [1, 2],
                            is_chat=False)  # any OpenAI-compatible server: only the OpenAI parameters
    assert not VLLM_PLAIN_SAMPLER.keys() & other.keys()


class Sampled(Exception):
    """Raised by the stand-in generate() at its second call: the test needs only the configs it was given."""


def test_vllm_untempered_samples_use_the_same_server_options(tiny, tmp_path, monkeypatch):
    import dpo_eval.generate

    seen = []

    def fake_generate(config):
        seen.append(config)
        if len(seen) == 2:
            raise Sampled

    monkeypatch.setattr(dpo_eval.generate, "generate", fake_generate)
    args = ["report", str(tiny["run"]), "--out", str(tmp_path / "out"), "--cache-dir", str(tiny["cache"]), *FAST,
            *TEMPERED, "--vllm", "--vllm-python", "/opt/vllm/bin/python", "--vllm-arg=--tensor-parallel-size=2",
            "--stages", "samples"]
    with pytest.raises(Sampled):
        CliRunner().invoke(main, args, catch_exceptions=False)
    users, untempered = seen  # the reference's samples at the user's settings, then untempered
    assert (users.temperature, users.top_p, users.vllm_args) == (0.7, 0.9, ("--tensor-parallel-size=2",))
    assert (untempered.temperature, untempered.top_p) == (1.0, 1.0)
    assert untempered.vllm_args == users.vllm_args  # one server for both: the requests carry the sampling
