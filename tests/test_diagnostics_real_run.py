"""Diagnostics on a real DPO run of this project's trainer (issue #8, "what must be shown").

A tiny Llama is trained with dpo_eval.train.recipe.train on the learnable synthetic task (chosen responses
use GOOD_WORDS, rejected ones BAD_WORDS), checkpoints every STEP_EVERY steps. Then, per checkpoint:

- held-out pairs are scored against the initial model (the reference) and metrics.drift reads them:
  rejected log-probs fall faster than chosen ones (Yan et al. 2024's drastic drop), and the findings say so;
- the policy samples held-out prompts (temperature 1, so the samples are draws from pi) and
  KL(pi || pi_ref) is estimated by Schulman's k1 / k3 (metrics.kl) and by the analytic, Rao-Blackwellised
  sum along the same samples (engine pass, through dpo_eval.diagnostics.sample_kl): it is 0 at step 0,
  grows with steps, and k1 agrees with it within its standard errors.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import save_tiny_model, write_synthetic_preferences

from dpo_eval.diagnostics.sample_kl import samples_kl
from dpo_eval.generate import GenerateConfig, generate
from dpo_eval.metrics.drift import CheckpointDrift, drift_findings, pair_drift
from dpo_eval.metrics.findings import DropNoise, Thresholds, check_drastic_drop
from dpo_eval.metrics.kl import kl_from_samples
from dpo_eval.model_settings import ModelSettings
from dpo_eval.score import ScoreConfig, score
from dpo_eval.train.config import load_config
from dpo_eval.train.recipe import train

STEP_EVERY, MAX_STEPS = 8, 24
STEPS = (0, 8, 16, 24)  # 0: the reference itself
SAMPLES_PER_PROMPT = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train once; per step: the held-out pairs frame, the samples and their analytic KL."""
    root = tmp_path_factory.mktemp("real_run")
    init = save_tiny_model(root / "init", seed=7)
    train_data = write_synthetic_preferences(root / "train.jsonl", n=64, seed=1)
    held_out = write_synthetic_preferences(root / "held_out.jsonl", n=32, seed=2)
    # lr 1e-2 (constant) drives the run past the point where chosen log-probs stop rising, as in long real
    # runs; at 1e-3 the 24 steps only reach a rejected / chosen ratio of about 1.3.
    config = load_config(None, (), policy=init, data=train_data, output_dir=str(root / "run"),
                         learning_rate=1e-2, lr_schedule="constant", batch_size=8, max_steps=MAX_STEPS,
                         save_every=STEP_EVERY, show_progress=False, cache_dir=str(root / "cache"), max_length=None)
    train(config)
    models = {0: init, **{s: str(root / "run" / f"checkpoint-{s}") for s in STEPS[1:]}}
    result = {"pairs": {}, "samples": {}, "analytic": {}, "dirs": {}, "init": init, "cache": str(root / "cache")}
    for step, model in models.items():
        scored = score(ScoreConfig(policy=model, data=held_out, models=ModelSettings(ref=init, cache_dir=str(root / "cache")),
                                   out=str(root / f"score-{step}"), show_progress=False))
        result["pairs"][step] = scored.pairs
        out = result["dirs"][step] = root / f"generate-{step}"
        result["samples"][step] = generate(GenerateConfig(
            model=model, prompts=held_out, out=str(out), n=SAMPLES_PER_PROMPT, ref=init, temperature=1.0,
            max_new_tokens=8, seed=0, template="plain", batch_size=32, cache_dir=str(root / "cache"),
            show_progress=False))
        result["analytic"][step] = samples_kl(model, init, out / "samples.jsonl", cache_dir=str(root / "cache"))
    return result


def test_rejected_log_probs_fall_faster_than_chosen_and_drift_says_so(run):
    drifts = {step: pair_drift(run["pairs"][step]) for step in STEPS[1:]}
    chosen, rejected, ratios = [], [], []
    for step, drift in drifts.items():
        frame = run["pairs"][step]
        d_chosen = frame["policy_chosen_logp"] - frame["ref_chosen_logp"]
        d_rejected = frame["policy_rejected_logp"] - frame["ref_rejected_logp"]
        assert drift.chosen.total.mean == pytest.approx(d_chosen.mean(), abs=1e-9)
        assert drift.rejected.total.mean == pytest.approx(d_rejected.mean(), abs=1e-9)
        assert drift.drop_ratio == pytest.approx(abs(d_rejected.mean()) / abs(d_chosen.mean()), rel=1e-12)
        chosen.append(d_chosen.mean())
        rejected.append(d_rejected.mean())
        ratios.append(drift.drop_ratio)
        diff = d_chosen - d_rejected  # paired: SE of the margin
        assert diff.mean() > 5 * diff.std(ddof=1) / math.sqrt(len(diff)), f"step {step}: rejected not below chosen"
    print(f"mean Δ chosen {np.round(chosen, 2)}, rejected {np.round(rejected, 2)}, drop ratio {np.round(ratios, 2)}")
    assert all(r < 0 for r in rejected)
    assert np.all(np.diff(np.abs(rejected)) > 0), "|Δ rejected| must grow across checkpoints"
    assert np.all(np.diff(ratios) > 0), "the drop ratio must grow: rejected keeps falling as chosen levels off"
    # A drop is drastic (default Thresholds) once |Δ rejected| >= 3 |Δ chosen| by both paired contrasts'
    # 95% lower bounds, written out here over the per-pair values (each pair its own prompt), and the
    # per-token fall's upper bound <= -0.01 nats.
    last = drifts[STEPS[-1]]
    frame = run["pairs"][STEPS[-1]]
    c = (frame["policy_chosen_logp"] - frame["ref_chosen_logp"]).to_numpy()
    r = (frame["policy_rejected_logp"] - frame["ref_rejected_logp"]).to_numpy()
    z, a = 1.959963984540054, Thresholds().drastic_drop_ratio
    lows = [(d := -r - sign * a * c).mean() - z * d.std(ddof=1) / math.sqrt(d.size) for sign in (1, -1)]
    per_token = r / frame["rejected_tokens"].to_numpy()
    falls = per_token.mean() + z * per_token.std(ddof=1) / math.sqrt(per_token.size) <= -0.01
    expected = bool(min(lows) > 0 and falls)
    assert last.drop_ratio >= a
    noise = DropNoise(last.chosen.total.se, last.rejected.total.se, last.chosen_rejected_cov,
                      last.rejected.per_token.se)
    got = check_drastic_drop(last.chosen.total.mean, last.rejected.total.mean, last.rejected.per_token.mean,
                             Thresholds(), STEPS[-1], noise=noise)
    assert (got is not None) == expected
    if got is not None:
        assert [got.numbers["contrast_low_plus"], got.numbers["contrast_low_minus"]] == pytest.approx(lows)
    print(f"drastic-drop contrasts' lower bounds at step {STEPS[-1]}: {np.round(lows, 3)} -> fires: {expected}")
    steps = list(drifts)
    every = drift_findings([CheckpointDrift(s, d) for s, d in drifts.items()], pairs=[run["pairs"][s] for s in steps])
    assert ("drastic_drop" in {f.code for f in every if f.step == STEPS[-1]}) == expected
    findings = {f.code for f in every}
    # chosen rises here, so the run shows no displacement and no degradation: the findings discriminate.
    assert "degradation" not in findings and "likelihood_displacement" not in findings


def per_prompt_mean(prompt_ids: list[str], values: np.ndarray) -> tuple[float, float]:
    """Mean of per-prompt means and its SE: std (ddof 1) of the prompt means / sqrt(#prompts)."""
    means = pd.Series(values).groupby(prompt_ids).mean()
    return float(means.mean()), float(means.std(ddof=1) / math.sqrt(len(means)))


def kl_figures(run, step: int) -> dict:
    samples, analytic = run["samples"][step], run["analytic"][step]
    kept = [i for i, s in enumerate(samples) if s["n_tokens"] > 0]
    prompt_ids = [samples[i]["prompt_id"] for i in kept]
    policy = np.array([samples[i]["policy_logp"] for i in kept])
    ref = np.array([samples[i]["ref_logp"] for i in kept])
    kl = np.array([analytic[i].kl for i in kept])
    summary = kl_from_samples(prompt_ids, policy, ref, [samples[i]["n_tokens"] for i in kept], analytic_kl=kl)
    return {"summary": summary, "prompt_ids": prompt_ids, "k1": policy - ref, "analytic": kl, "kept": kept}


def test_analytic_pass_scores_the_samples_generate_drew(run):
    for step in STEPS:
        samples, analytic = run["samples"][step], run["analytic"][step]
        assert len(analytic) == len(samples) == 32 * SAMPLES_PER_PROMPT
        for sample, result in zip(samples, analytic):
            assert result.n_tokens == len(sample["token_ids"]) == sample["n_tokens"]
            if sample["n_tokens"]:  # the same contexts as generate's: the same sampled-token log-probs
                assert result.policy_logp == pytest.approx(sample["policy_logp"], abs=1e-4)
                assert result.ref_logp == pytest.approx(sample["ref_logp"], abs=1e-4)


def test_kl_is_zero_at_step_0_and_grows_with_steps(run):
    assert all(r.kl == 0.0 for r in run["analytic"][0])  # policy == reference: every KL_t is exactly 0
    assert all(s["policy_logp"] == s["ref_logp"] for s in run["samples"][0])
    figures = {step: kl_figures(run, step) for step in STEPS}
    analytic = [figures[s]["summary"].analytic for s in STEPS]
    k1 = [figures[s]["summary"].k1 for s in STEPS]
    print("analytic KL", [f"{e.mean:.3f}±{e.se:.3f}" for e in analytic], "k1", [f"{e.mean:.3f}±{e.se:.3f}" for e in k1])
    for step, estimate in zip(STEPS, analytic):  # the clustered mean, written out
        assert (estimate.mean, estimate.se) == pytest.approx(
            per_prompt_mean(figures[step]["prompt_ids"], figures[step]["analytic"]), rel=1e-9, abs=1e-12)
    first, last = analytic[1], analytic[-1]
    assert last.mean - first.mean > 4 * math.hypot(first.se, last.se)
    for before, after in zip(analytic, analytic[1:]):  # monotone, up to noise
        assert after.mean > before.mean - 2 * math.hypot(before.se, after.se)


def test_k1_and_analytic_agree_at_every_checkpoint(run):
    for step in STEPS[1:]:
        f = kl_figures(run, step)
        summary = f["summary"]
        assert summary.k1.mean == pytest.approx(per_prompt_mean(f["prompt_ids"], f["k1"])[0], rel=1e-9)
        gap, gap_se = per_prompt_mean(f["prompt_ids"], f["k1"] - f["analytic"])  # paired by sample
        print(f"step {step}: k1 {summary.k1.mean:.3f}±{summary.k1.se:.3f}, k3 {summary.k3.mean:.3f}±"
              f"{summary.k3.se:.3f}, analytic {summary.analytic.mean:.3f}±{summary.analytic.se:.3f}, "
              f"k1 - analytic {gap:+.3f}±{gap_se:.3f}")
        assert abs(gap) < 4 * gap_se, f"step {step}: k1 and analytic KL disagree"


def test_sample_kl_refuses_samples_it_cannot_trust(run, tmp_path):
    from dpo_eval.errors import UserError

    with pytest.raises(UserError, match="samples of another model"):
        samples_kl(run["init"], run["init"], run["dirs"][STEPS[-1]] / "samples.jsonl", cache_dir=run["cache"])
    copied = tmp_path / "copied"
    shutil.copytree(run["dirs"][STEPS[-1]], copied)
    (copied / "generate_summary.json").write_text("{")
    with pytest.raises(UserError, match="generate_summary.json is unreadable"):
        samples_kl(run["init"], run["init"], copied / "samples.jsonl", cache_dir=run["cache"])
    broken = tmp_path / "samples.jsonl"
    broken.write_text(json.dumps({"prompt_id": "a", "prompt": "the cat "}) + "\n")
    with pytest.raises(UserError, match=r"row 1 lacks \['token_ids'\]"):
        samples_kl(run["init"], run["init"], broken, cache_dir=run["cache"])
