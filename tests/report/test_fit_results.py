"""fits.fit_results: statistics that cannot be made are null with their reason in `missing` (never raised),
quality SEs per row, the past-peak drop paired over prompts, and the extrapolated KL-quality peak labelled."""

from __future__ import annotations

import math

import jsonschema
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dpo_eval.evaluation.fits import fit_results, prompt_quality_frame, quality_frame
from dpo_eval.evaluation.quality import gold_prompt_quality, gold_quality, judge_prompt_quality
from dpo_eval.reports import plots
from dpo_eval.reports.schema import RESULTS_SCHEMA
from dpo_eval.reports.tables import table_name


def checkpoint(run: str, step: int, quality: float, se: float | None, kl: float, margin: float | None = None,
               label: str | None = None) -> dict:
    return {"run": run, "step": step, "label": label or str(step),
            "quality": {"source": "judge win rate - 0.5", "value": quality, "se": se},
            "kl": {"analytic": {"mean": kl, "se": 0.01}, "k3": {"mean": kl, "se": 0.01}},
            "rewards": {"mean_margin": step if margin is None else margin}, "findings": []}


def rise_and_fall(run: str = "r", se: float | None = 0.01) -> list[dict]:
    """quality along steps 1..6 at KL = step: peak 0.18 at step 3, last 0.05."""
    qualities = [0.05, 0.12, 0.18, 0.16, 0.10, 0.05]
    return [checkpoint(run, s, q, se, float(s)) for s, q in zip(range(1, 7), qualities)]


def prompt_tables(checkpoints: list[dict], per_prompt: dict[tuple[str, int], np.ndarray]) -> dict[str, pd.DataFrame]:
    return {table_name("quality", c["run"], c["label"]): pd.DataFrame(
        {"prompt_id": [f"p{i}" for i in range(len(values))], "quality": values})
        for c in checkpoints for key, values in per_prompt.items() if key == (c["run"], c["step"])}


# ---------------------------------------------------------------------------------------------- item 1


def test_a_final_model_at_a_checkpoints_step_stands_for_that_step_in_the_past_peak_test_and_recommendation():
    """Before: both rows went to detect_past_peak / recommend_checkpoint, which refused "step 6 twice": a run
    whose final model (other weights) was saved at its last checkpoint's step had no past-peak test and no
    recommendation. Now the later row (the final model) stands for the step there; the fit keeps both."""
    final = checkpoint("r", 6, 0.04, 0.01, 6.3, label="final")  # a root final model at the last step
    checkpoints = rise_and_fall() + [final]
    missing: list[dict] = []
    fits, past, recommended = fit_results(checkpoints, has_judge=True, missing=missing)
    assert fits["kl_quality"]["bon"]["n"] == 7  # a regression over points: the fit needs no unique steps
    assert past["r"]["last_step"] == 6 and past["r"]["last_quality"] == pytest.approx(0.04)  # the final row's
    assert past["r"]["peak_step"] == 3 and recommended["step"] == 3
    assert [m["what"] for m in missing] == ["checkpoint 6 of run r in the past-peak test and the recommendation"]
    assert "also the step of final" in missing[0]["why"]
    if past["r"]["is_past_peak"]:  # the finding lands on the row that stands for the step
        assert final["findings"] and not checkpoints[5]["findings"]
    # a final row without a quality (not judged) leaves the checkpoint in place, with no note
    unjudged = {**checkpoint("r", 6, 0.0, 0.01, 6.3, label="final"), "quality": None}
    missing = []
    _, past, _ = fit_results(rise_and_fall() + [unjudged], has_judge=True, missing=missing)
    assert past["r"]["last_quality"] == pytest.approx(0.05) and missing == []


def test_each_statistic_fails_on_its_own():
    # two points: no fit (it needs 3), but the past-peak check and the recommendation are made
    missing: list[dict] = []
    fits, past, recommended = fit_results(rise_and_fall()[:2], has_judge=True, missing=missing)
    assert fits["kl_quality"] is None and "at least 3 points" in fits["reason"]
    assert past["r"]["is_past_peak"] is False and recommended["step"] == 2
    assert [m["what"] for m in missing] == ["the quality-vs-KL fit"]
    # one run's per-prompt table with a prompt twice: only that run's past-peak check is null
    checkpoints = rise_and_fall("a") + rise_and_fall("b")
    per_prompt = {(c["run"], c["step"]): np.full(4, c["quality"]["value"]) + [0.1, -0.1, 0.05, -0.05]
                  for c in checkpoints}
    tables = prompt_tables(checkpoints, per_prompt)
    broken = table_name("quality", "a", "6")
    tables[broken] = pd.concat([tables[broken], tables[broken].head(1)])
    missing = []
    fits, past, recommended = fit_results(checkpoints, True, tables=tables, missing=missing)
    assert past["a"] is None and past["b"] is not None and fits["kl_quality"] is not None and recommended
    assert [m["what"] for m in missing] == ["the past-peak check of run a (fit results)"]
    assert "prompt p0 twice" in missing[0]["why"]
    # per-prompt tables for no checkpoint: the drop has no paired SE, so the run is not tested, and said so
    missing = []
    _, past, _ = fit_results(rise_and_fall(), True, tables={}, missing=missing)
    assert past["r"]["se_method"] == "none" and past["r"]["is_quality_falling"] is None
    assert not past["r"]["is_past_peak"] and missing[0]["what"] == "the past-peak check of run r (fit results)"
    assert "has no per-prompt qualities" in missing[0]["why"]


def test_an_unexpected_error_is_null_and_named_as_a_bug(monkeypatch):
    from dpo_eval.metrics import overoptimization

    def broken(*args, **kwargs):
        raise KeyError("x")

    monkeypatch.setattr(overoptimization, "recommend_checkpoint", broken)
    missing: list[dict] = []
    _, _, recommended = fit_results(rise_and_fall(), True, missing=missing)
    assert recommended is None and "KeyError" in missing[0]["why"] and "bug" in missing[0]["why"]


# ---------------------------------------------------------------------------------------------- item 2


def test_one_checkpoint_without_an_se_keeps_the_noise_guard_of_every_run():
    """Before: run a's SE-less row dropped quality_se for the frame; run b's drop of 0.015 then fired
    "past its peak" against a threshold of 0."""
    checkpoints = rise_and_fall("a")
    checkpoints[1]["quality"]["se"] = None  # e.g. every preference alike: SE 0, written as null
    noisy = [checkpoint("b", s, q, 0.01, float(s)) for s, q in zip(range(1, 7), [0.05, 0.1, 0.18, 0.17, 0.17, 0.165])]
    missing: list[dict] = []
    fits, past, _ = fit_results(checkpoints + noisy, True, missing=missing)
    b = past["b"]
    assert b["threshold"] == pytest.approx(2 * math.hypot(0.01, 0.01)) and b["is_quality_falling"] is False
    assert not b["is_past_peak"] and not any(c["findings"] for c in noisy)
    assert past["a"]["is_past_peak"] and "steps [2] left out (no SE)" in past["a"]["reason"]
    assert fits["kl_quality"]["is_weighted"] and fits["kl_quality"]["n_excluded"] == 1
    said = [m for m in missing if m["what"] == "the quality SE of run a step(s) [2]"]
    assert len(said) == 1 and "never weighted as exact" in said[0]["why"]


def test_quality_frame_keeps_ses_and_implicit_rewards_per_row():
    checkpoints = rise_and_fall()
    checkpoints[0]["quality"]["se"] = None
    checkpoints[1]["rewards"] = None
    frame = quality_frame(checkpoints)
    assert list(frame.columns) == ["run", "step", "kl", "quality", "quality_se", "implicit_reward"]
    assert np.isnan(frame["quality_se"][0]) and frame["quality_se"][1:].tolist() == [0.01] * 5
    assert np.isnan(frame["implicit_reward"][1]) and frame["implicit_reward"][0] == 1.0


# ---------------------------------------------------------------------------------------------- item 3


def test_the_report_pairs_the_drop_over_prompts_and_says_the_peak_was_picked():
    checkpoints = rise_and_fall()
    rng = np.random.default_rng(0)
    shared = rng.normal(0.0, 0.3, 30)  # the reference's per-prompt noise, shared by every checkpoint
    per_prompt = {("r", c["step"]): c["quality"]["value"] + shared + rng.normal(0.0, 0.05, 30) for c in checkpoints}
    tables = prompt_tables(checkpoints, per_prompt)
    _, past, _ = fit_results(checkpoints, True, tables=tables)
    p = past["r"]
    d = per_prompt[("r", 3)] - per_prompt[("r", 6)]  # peak (step 3) minus last (step 6), prompt by prompt
    se = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / (len(d) - 1)) / math.sqrt(len(d))
    assert (p["peak_step"], p["last_step"], p["se_method"], p["n_prompts"]) == (3, 6, "paired", 30)
    assert p["drop"] == pytest.approx(d.mean()) and p["drop_se"] == pytest.approx(se)
    assert se < 0.5 * math.hypot(*(np.std(per_prompt[("r", s)], ddof=1) / math.sqrt(30) for s in (3, 6)))
    assert p["is_past_peak"]
    found = next(f for f in checkpoints[-1]["findings"] if f["code"] == "over_optimisation")
    assert "picked as the maximum" in found["message"] and "one-sided" in found["message"]
    assert "paired SE" in found["message"] and found["numbers"]["drop_se"] == pytest.approx(se)


def test_prompt_quality_frame_and_per_prompt_quality_formulas():
    judgments = pd.DataFrame({"prompt_id": ["a", "a", "b", "b", "c"], "preference": [1.0, 0.5, 0.0, np.nan, np.nan]})
    got = judge_prompt_quality(judgments)
    assert got.to_dict() == {"a": pytest.approx(0.75 - 0.5), "b": pytest.approx(0.0 - 0.5)}  # c: nothing scored
    answers = {"q1": ["4"], "q2": ["7"]}
    samples = pd.DataFrame({"prompt_id": [1, 1, 2, 2, 3], "prompt": ["q1", "q1", "q2", "q2", "q3"],
                            "output": ["it is 4", "14", "7", "seven", "x"]})
    ref = pd.DataFrame({"prompt_id": [1, 2], "prompt": ["q1", "q2"], "output": ["no", "7!"]})
    gold = gold_prompt_quality(samples, ref, answers)
    assert gold.to_dict() == {"1": pytest.approx(0.5 - 0.0), "2": pytest.approx(0.5 - 1.0)}
    assert gold_quality(samples, ref, answers)["value"] == pytest.approx(gold.mean())
    checkpoints = rise_and_fall()[:2]
    tables = prompt_tables(checkpoints, {("r", 1): np.array([0.1, 0.2]), ("r", 2): np.array([0.3, 0.4])})
    frame = prompt_quality_frame(checkpoints, tables)
    assert frame.to_dict("list") == {"run": ["r"] * 4, "step": [1, 1, 2, 2], "prompt_id": ["p0", "p1"] * 2,
                                     "quality": [0.1, 0.2, 0.3, 0.4]}


# ---------------------------------------------------------------------------------------------- item 17


def bon_points(kls: np.ndarray) -> list[dict]:
    d = np.sqrt(kls)
    return [checkpoint("r", i + 1, float(q), 0.05, float(k), margin=float(i))
            for i, (k, q) in enumerate(zip(kls, d * (1.0 - 0.25 * d)))]  # peak at KL 4


def test_a_peak_outside_the_fitted_kl_range_is_labelled_extrapolated_and_not_recommended_on():
    fits, _, recommended = fit_results(bon_points(np.linspace(2.5, 4.0, 6) ** 2), True)  # KL 6.25 .. 16
    fit = fits["kl_quality"]
    assert fit["min_kl"] == pytest.approx(6.25) and fit["max_kl"] == pytest.approx(16.0)
    assert fit["bon"]["kl_range"] == [pytest.approx(6.25), pytest.approx(16.0)]
    assert fit["bon"]["peak_kl"] == pytest.approx(4.0) and fit["bon"]["is_peak_extrapolated"] is True
    assert "extrapolated" in recommended["reason"] and recommended["step"] == 1  # the best observed
    jsonschema.validate(fits, RESULTS_SCHEMA["properties"]["fits"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**fits, "kl_quality": {**fit, "bon": {k: v for k, v in fit["bon"].items()
                                                                    if k != "is_peak_extrapolated"}}},
                            RESULTS_SCHEMA["properties"]["fits"])
    inside, _, _ = fit_results(bon_points(np.linspace(1.0, 4.0, 6) ** 2), True)
    assert inside["kl_quality"]["bon"]["is_peak_extrapolated"] is False


def test_the_page_labels_an_extrapolated_peak():
    fits, _, _ = fit_results(bon_points(np.linspace(2.5, 4.0, 6) ** 2), True)
    ax = Figure().add_subplot()
    plots._draw_fits(ax, fits["kl_quality"], 4.0)
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.startswith("best-of-n peak") and label.endswith("(extrapolated)") for label in labels)
    inside, _, _ = fit_results(bon_points(np.linspace(1.0, 4.0, 6) ** 2), True)
    ax = Figure().add_subplot()
    plots._draw_fits(ax, inside["kl_quality"], 2.0)
    assert not any("extrapolated" in label for label in ax.get_legend_handles_labels()[1])


def test_past_peak_entries_validate_and_a_null_one_too():
    _, past, _ = fit_results(rise_and_fall(), True)
    schema = RESULTS_SCHEMA["properties"]["past_peak"]
    jsonschema.validate(past, schema)
    jsonschema.validate({"r": None}, schema)


def test_the_past_peak_test_takes_its_k_and_tolerance_from_the_thresholds():
    """report --thresholds / the gate's thresholds: block reach the past-peak test (was: k = 2, tolerance 0 fixed)."""
    from dpo_eval.metrics.findings import Thresholds

    _, past, _ = fit_results(rise_and_fall(), True)
    assert past["r"]["threshold"] == pytest.approx(2 * math.hypot(0.01, 0.01)) and past["r"]["is_past_peak"]
    _, past, _ = fit_results(rise_and_fall(), True, thresholds=Thresholds(past_peak_k=3.0, past_peak_tolerance=0.2))
    # k * se + tolerance: the drop's one-sided bound must pass the tolerance (was max(k * se, tolerance))
    assert past["r"]["threshold"] == pytest.approx(3 * math.hypot(0.01, 0.01) + 0.2)  # the drop 0.13 below it
    assert not past["r"]["is_past_peak"]


def test_a_runs_past_peak_test_does_not_depend_on_the_other_runs_kl_estimate():
    """The fit takes the KL estimate most rows have over all runs; the past-peak test uses no KL, so a run whose
    rows lack that estimate is still tested, as it is alone (before: its rows were dropped, its test null)."""
    analytic_only = [dict(c, kl={"analytic": c["kl"]["analytic"]}) for c in rise_and_fall("a")]
    k3_only = [dict(c, kl={"k3": c["kl"]["k3"]}) for c in rise_and_fall("b")[:4]]
    fits, past, _ = fit_results(analytic_only + k3_only, True)
    assert fits["kl_estimator"] == "analytic"
    _, alone, _ = fit_results(k3_only, True)
    assert past["b"] is not None and past["b"] == alone["b"]
    _, a_alone, _ = fit_results(analytic_only, True)
    assert past["a"] == a_alone["a"]
