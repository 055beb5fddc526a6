"""The `results.json` that `dpo-eval report` writes, `dpo-eval render` renders and `dpo-eval gate` checks.

Versioned: `schema_version` comes first and changes whenever a field changes meaning. Every figure
that depends on an input that was not given (no judge, no prompts) is `null`, and `missing` says what
is missing and which flag adds it: a reader never sees a made-up number.

Layout (the JSON Schema below is the contract; tests validate every written file against it):

    schema_version        int, RESULTS_SCHEMA_VERSION
    generated_at          ISO-8601 UTC time of writing
    provenance            versions (dpo_eval, python, torch, transformers), beta, seeds, judge (spec,
                          mode, template, template_sha256) or null, data (pairs/prompts: path, sha256, n),
                          reference (model identity incl. fingerprint), sampling settings, tokenization,
                          samples: {figures: {figure: settings of the samples it was computed from}, separate}
                          (figures kl, drift.dispersion: untempered, temperature 1 and top-p 1; length,
                          winrate, quality: the report's --temperature/--top-p; separate: whether the KL
                          figures had samples of their own)
    runs[]                name, path, trainer, loss, beta (the report's), steps[], trained_with (name, source,
                          version / loss / beta: {value, source} or null, from the trainer's own files),
                          reference {path, source}; a `dpo-eval loop` OUTPUT_DIR also has
        loop              {labeller, pairs, reference (the loop's settings; pairs null when online), online
                          (an `online: true` OAIF loop: one entry in rounds[], round_ends [], no
                          checkpoint rounds, agreement null), round_ends[] (the global step at
                          which each round ends, in order), rounds[]: {round, first_step, last_step, counts
                          (loop.json's: prompts, samples, unscored, ties, skipped_prompts, pairs,
                          mean_chosen_label, mean_rejected_label, ...), label_sources[], agreement (the
                          report's judge on the round's training pairs, metrics.label_agreement: n_pairs,
                          n_agree, n_disagree, n_ties, n_unscored, n_prompts, agreement, se, ci; or null),
                          agreement_reason (why null: no judge, the labeller is the judge, ...)}}
    checkpoints[]         one per (run, label), in run then step order (a final model with other weights
                          than the checkpoint of its step comes after it, at the same step):
        run, step, label, path, fingerprint, is_reference (the step-0 row of each run, if present),
        round             only in a loop run: the round whose global steps hold the step (null at step 0)
        final_path        the run's final model folder when it holds this checkpoint's weights (same
                          fingerprint: one row for both folders), else null
        rewards           `metrics.rewards.summarize_rewards` of its held-out pairs, or null
        winrate           judge vs the reference's samples: n, n_unscored, win_rate, win_rate_ci,
                          lc_win_rate, lc_win_rate_ci (LC fitted on this checkpoint's judgments alone),
                          lc_gap_ci (CI of win_rate - lc_win_rate, paired over prompts), position_bias_rate;
                          or null
        quality           {source, value, se}: the figure the KL-vs-quality fit uses; or null
        kl                analytic / k1 / k2 / k3 KL estimates (metrics.kl.KLEstimate as dicts); or null
        offpolicy         mean log-ratios on chosen and rejected pairs (not a KL); or null
        length            metrics.length comparison vs the reference's samples (paired_ratio and its CI:
                          per-prompt mean lengths over the shared prompts; truncation_rise ± SE); or null
        drift             metrics.drift pair drift (chosen_rejected_cov: the two means' clustered
                          covariance) + dispersion; or null
        findings[]        metrics.findings.Finding as dicts: this checkpoint's own, each fired on an effect
                          its 95% CI supports (the run-level degradation finding sits on the last checkpoint)
    fits                  {kl_quality: KLQualityFit as a dict, or null; reason: why null; optional
                          kl_estimator: the KLEstimate ("analytic", "k1", "k2", "k3") whose mean the fit used};
                          each form's kl_range is the KL range of the fitted points (min_kl, max_kl) and
                          is_peak_extrapolated says its peak lies outside it
    past_peak             {run: PastPeak as a dict (drop_se paired over prompts: se_method), or null with its
                          reason in missing}
    recommended           {run, step, kl, quality, quality_se, reason, rule: best_quality | fitted_peak} or null
    findings[]            every finding of every checkpoint and run, most severe first
    training_curves       {run: [{step, metric, value, split, source}]}: one point per (step, metric, split)
    missing[]             {what, why, flag}
    files                 {name: path relative to the results dir} of the per-example tables
    timings               {phase: seconds}
"""

from __future__ import annotations

RESULTS_SCHEMA_VERSION = 3
"""2 (issue 16): quality and win-rate SEs/CIs clustered by prompt, the past-peak drop paired over prompts,
LC win rates fitted per checkpoint, KL from untempered samples, is_peak_in_range -> is_peak_extrapolated:
figures of version 1 are not comparable, so the gate refuses a version-1 baseline.
3: findings fire on effects their 95% CIs support, each checkpoint's from its own figures (drift findings
per checkpoint, no longer once per run), past_peak.threshold = k SE + tolerance; new figures
drift.pairs.chosen_rejected_cov, length.paired_ratio(_ci), length.truncation_rise(_se), runs[].loop.online.
A version-2 baseline's findings meant otherwise: the gate refuses it (rerun `dpo-eval report`)."""

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_OBJECT_OR_NULL = {"type": ["object", "null"]}
_CI = {"type": ["array", "null"], "items": _NUMBER_OR_NULL, "minItems": 2, "maxItems": 2}

FINDING = {
    "type": "object",
    "required": ["code", "severity", "title", "message", "advice", "numbers"],
    "properties": {
        "code": {"type": "string"},
        "severity": {"enum": ["info", "warning", "high"]},
        "title": {"type": "string"},
        "message": {"type": "string"},
        "advice": {"type": "string"},
        "numbers": {"type": "object"},
        "threshold": _NUMBER_OR_NULL,
        "step": {"type": ["integer", "null"]},
        "run": {"type": ["string", "null"]},
    },
}

WINRATE = {
    "type": ["object", "null"],
    "required": ["n", "n_unscored", "win_rate", "win_rate_ci", "lc_win_rate", "lc_win_rate_ci"],
    "properties": {
        "n": {"type": "integer"},
        "n_unscored": {"type": "integer"},
        "win_rate": _NUMBER_OR_NULL,
        "win_rate_ci": _CI,
        "lc_win_rate": _NUMBER_OR_NULL,
        "lc_win_rate_ci": _CI,
        "lc_gap_ci": _CI,
        "position_bias_rate": _NUMBER_OR_NULL,
    },
}

FORM_FIT = {
    "type": "object",
    "required": ["form", "alpha", "beta", "shape", "peak_kl", "kl_range", "is_peak_extrapolated"],
    "properties": {"form": {"enum": ["bon", "rl"]}, "peak_kl": _NUMBER_OR_NULL,
                   "kl_range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                   "is_peak_extrapolated": {"type": ["boolean", "null"]}},
}

KL_QUALITY_FIT = {
    "type": ["object", "null"],
    "required": ["bon", "rl", "best", "is_weighted", "min_kl", "max_kl", "n_excluded"],
    "properties": {"bon": FORM_FIT, "rl": FORM_FIT, "best": {"enum": ["bon", "rl"]}, "min_kl": {"type": "number"},
                   "max_kl": {"type": "number"}, "n_excluded": {"type": "integer"}},
}

PAST_PEAK = {
    "type": ["object", "null"],
    "required": ["peak_step", "last_step", "drop", "drop_se", "se_method", "threshold", "is_quality_falling",
                 "is_past_peak", "reason"],
    "properties": {"drop_se": _NUMBER_OR_NULL, "n_prompts": {"type": ["integer", "null"]},
                   "se_method": {"enum": ["paired", "unpaired", "none"]}, "threshold": _NUMBER_OR_NULL,
                   "is_quality_falling": {"type": ["boolean", "null"]}, "is_past_peak": {"type": "boolean"},
                   "reason": {"type": "string"}},
}
SAMPLE_SETTINGS = {
    "type": "object",
    "required": ["n_samples", "temperature", "top_p", "max_new_tokens", "seed"],
    "properties": {"n_samples": {"type": "integer"}, "temperature": {"type": "number"}, "top_p": {"type": "number"},
                   "max_new_tokens": {"type": "integer"}, "seed": {"type": "integer"}},
}
SAMPLES_PROVENANCE = {
    "type": "object",
    "required": ["figures", "separate"],
    "properties": {"figures": {"type": "object", "required": ["kl", "drift.dispersion", "length", "winrate", "quality"],
                               "additionalProperties": SAMPLE_SETTINGS},
                   "separate": {"type": "boolean"}},
}
"""provenance.samples: which samples each sample-based figure was computed from (written by every report
since untempered KL samples; optional so older results.json files still validate)."""

AGREEMENT = {
    "type": ["object", "null"],
    "required": ["n_pairs", "n_agree", "n_disagree", "n_ties", "n_unscored", "n_prompts", "agreement", "se", "ci"],
    "properties": {**{k: {"type": "integer"} for k in ("n_pairs", "n_agree", "n_disagree", "n_ties", "n_unscored",
                                                        "n_prompts")},
                   "agreement": _NUMBER_OR_NULL, "se": _NUMBER_OR_NULL, "ci": _CI},
}
LOOP = {
    "type": "object",
    "required": ["labeller", "round_ends", "rounds"],
    "properties": {
        "labeller": {"type": ["string", "null"]},
        "online": {"type": "boolean"},
        "round_ends": {"type": "array", "items": {"type": "integer"}},
        "rounds": {"type": "array", "items": {
            "type": "object",
            "required": ["round", "first_step", "last_step", "counts", "label_sources", "agreement",
                         "agreement_reason"],
            "properties": {"round": {"type": "integer"}, "first_step": {"type": "integer"},
                           "last_step": {"type": "integer"}, "counts": {"type": "object"},
                           "label_sources": {"type": "array", "items": {"type": "string"}},
                           "agreement": AGREEMENT, "agreement_reason": {"type": "string"}}}},
    },
}
"""runs[].loop: a `dpo-eval loop` OUTPUT_DIR's rounds (added in version 2; absent for other runs)."""

CHECKPOINT = {
    "type": "object",
    "required": ["run", "step", "label", "path", "fingerprint", "rewards", "winrate", "quality", "kl",
                 "offpolicy", "length", "drift", "findings"],
    "properties": {
        "run": {"type": "string"},
        "step": {"type": "integer"},
        "label": {"type": "string"},
        "path": {"type": "string"},
        "final_path": {"type": ["string", "null"]},
        "fingerprint": {"type": "string"},
        "is_reference": {"type": "boolean"},
        "round": {"type": ["integer", "null"]},
        "rewards": {
            "type": ["object", "null"],
            "required": ["n", "accuracy", "mean_margin", "per_subset"],
            # accuracy_ci_low/high (95%) and margin_se are clustered by prompt over n_prompts prompts; optional
            # so results.json files written before them still validate (the verdict then says it has no CI)
            "properties": {"n": {"type": "integer"}, "accuracy": _NUMBER_OR_NULL,
                           "mean_margin": _NUMBER_OR_NULL, "per_subset": {"type": "object"},
                           "n_prompts": {"type": "integer"}, "accuracy_ci_low": _NUMBER_OR_NULL,
                           "accuracy_ci_high": _NUMBER_OR_NULL, "margin_se": _NUMBER_OR_NULL},
        },
        "winrate": WINRATE,
        "quality": {
            "type": ["object", "null"],
            "required": ["source", "value", "se"],
            "properties": {"source": {"type": "string"}, "value": _NUMBER_OR_NULL, "se": _NUMBER_OR_NULL},
        },
        "kl": _OBJECT_OR_NULL,
        "offpolicy": _OBJECT_OR_NULL,
        "length": _OBJECT_OR_NULL,
        "drift": _OBJECT_OR_NULL,
        "findings": {"type": "array", "items": FINDING},
    },
}

RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dpo-eval results.json",
    "type": "object",
    "required": ["schema_version", "generated_at", "provenance", "runs", "checkpoints", "fits", "past_peak",
                 "recommended", "findings", "training_curves", "missing", "files", "timings"],
    "properties": {
        "schema_version": {"const": RESULTS_SCHEMA_VERSION},
        "generated_at": {"type": "string"},
        "provenance": {"type": "object", "required": ["versions", "beta", "seeds", "judge", "data", "reference"],
                       "properties": {"samples": SAMPLES_PROVENANCE}},
        "runs": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "path", "steps"],
                      "properties": {"name": {"type": "string"}, "path": {"type": "string"},
                                     "steps": {"type": "array", "items": {"type": "integer"}}, "loop": LOOP}},
        },
        "checkpoints": {"type": "array", "items": CHECKPOINT},
        "fits": {"type": "object", "required": ["kl_quality", "reason"],
                 "properties": {"kl_quality": KL_QUALITY_FIT,
                                "kl_estimator": {"enum": ["analytic", "k1", "k2", "k3"]}}},
        "past_peak": {"type": "object", "additionalProperties": PAST_PEAK},
        "recommended": {
            "type": ["object", "null"],
            "required": ["run", "step", "reason"],
            "properties": {"run": {"type": "string"}, "step": {"type": "integer"}, "reason": {"type": "string"},
                           "rule": {"enum": ["best_quality", "fitted_peak"]}},
        },
        "findings": {"type": "array", "items": FINDING},
        "training_curves": {"type": "object"},
        "missing": {
            "type": "array",
            "items": {"type": "object", "required": ["what", "why", "flag"],
                      "properties": {"what": {"type": "string"}, "why": {"type": "string"},
                                     "flag": {"type": "string"}}},
        },
        "files": {"type": "object", "additionalProperties": {"type": "string"}},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}


def schema_errors(document: dict) -> list[str]:
    """Every way `document` departs from RESULTS_SCHEMA, as "path: message" lines (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(RESULTS_SCHEMA)
    return [f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
            for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]
