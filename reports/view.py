"""Read saved figures out of a results document and format them as text. No statistic is computed here.

Every accessor returns None where results.json has null or lacks the object (a figure not measured), so
the HTML, Markdown and plots show "n/a" or leave a series out instead of failing.
"""

from __future__ import annotations

import math
from typing import Any

SEVERITY_ORDER = ("high", "warning", "info")
"""Most severe first: the order findings are shown in."""
NOT_AVAILABLE = "n/a"
KL_ESTIMATORS = ("analytic", "k3", "k1", "k2")
"""Preference order of the KL estimator shown when results.json does not name the one its fit used."""


def number(value: Any) -> float | None:
    """value as a finite float, else None (null, NaN, infinity, a string, a missing key)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def dig(obj: Any, *keys: str | int) -> Any:
    """obj[k1][k2]...; None as soon as a level is missing or null."""
    for key in keys:
        if isinstance(obj, dict):
            obj = obj.get(key)
        elif isinstance(obj, list | tuple) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
        if obj is None:
            return None
    return obj


def fmt(value: Any, spec: str = ".3g") -> str:
    """A saved number formatted with `spec` ("+.3f", ".1%", ...), or NOT_AVAILABLE."""
    x = number(value)
    return NOT_AVAILABLE if x is None else format(x, spec)


SIGNIFICANT = 2
"""Significant figures an uncertainty (an SE, a CI's half-width) is shown to; its figure to the same place."""


def decimal_places(uncertainty: float, significant: int = SIGNIFICANT) -> int:
    """Decimal places that show `uncertainty` (> 0) to `significant` significant figures: significant - 1 -
    floor(log10(u)), one fewer when rounding carries into the next power of ten (0.0996 -> 0.10: 2 places).
    Negative for u >= 10**significant (rounds to tens, hundreds, ...)."""
    exponent = math.floor(math.log10(uncertainty))
    places = significant - 1 - exponent
    if round(uncertainty, places) >= 10.0 ** (exponent + 1):
        places -= 1
    return places


def fixed(value: float, places: int, signed: bool = False) -> str:
    """value rounded to `places` decimal places (negative: to tens, hundreds, ...), never "-0.00"."""
    rounded = round(value, places) + 0.0
    rounded = 0.0 if rounded == 0 else rounded
    return format(rounded, f"{'+' if signed else ''}.{max(places, 0)}f")


def fmt_pm(value: object, se: object, signed: bool = False) -> str:
    """"value ± se" to the precision the SE supports: the SE to SIGNIFICANT significant figures and the value
    rounded to the same decimal place (0.04688 ± 0.0652 -> "0.047 ± 0.065"). Without a positive finite SE
    the value alone, to 3 significant figures; NOT_AVAILABLE without a value."""
    x, error = number(value), number(se)
    if x is None:
        return NOT_AVAILABLE
    if error is None or error <= 0:
        return format(x, "+.3g" if signed else ".3g")
    places = decimal_places(error)
    return f"{fixed(x, places, signed)} ± {fixed(error, places)}"


def fmt_ci(ci: Any, spec: str = ".1%") -> str:
    """"[low, high]" of a saved interval, or NOT_AVAILABLE."""
    low, high = number(dig(ci, 0)), number(dig(ci, 1))
    if low is None or high is None:
        return NOT_AVAILABLE
    return f"[{low:{spec}}, {high:{spec}}]"


def percent_places(ci: Any) -> int:
    """Decimal places of a percentage whose 95% CI is `ci` (fractions): the CI's half-width in percentage
    points plays the SE's role (SIGNIFICANT significant figures, at least 0 places); 1 without a CI."""
    low, high = number(dig(ci, 0)), number(dig(ci, 1))
    if low is None or high is None or high <= low:
        return 1
    return max(0, decimal_places((high - low) / 2 * 100))


def percent(value: object, places: int = 1) -> str:
    x = number(value)
    return NOT_AVAILABLE if x is None else f"{fixed(x * 100, places)}%"


def fmt_rate(rate: dict, name: str) -> str:
    """"39% [21%, 57%]" of a saved rate and its f"{name}_ci", to the places the CI supports (percent_places);
    the rate alone (1 place) when no CI was saved."""
    ci = rate.get(f"{name}_ci")
    places = percent_places(ci)
    value = percent(rate.get(name), places)
    if value == NOT_AVAILABLE or number(dig(ci, 0)) is None or number(dig(ci, 1)) is None:
        return value
    return f"{value} [{percent(ci[0], places)}, {percent(ci[1], places)}]"


def reward_accuracy_text(rewards: dict) -> str:
    """A checkpoint's reward accuracy with its 95% CI (clustered by prompt): "77% [65%, 86%]"."""
    ci = [rewards.get("accuracy_ci_low"), rewards.get("accuracy_ci_high")]
    return fmt_rate({"accuracy": rewards.get("accuracy"), "accuracy_ci": ci}, "accuracy")


def margin_text(rewards: dict) -> str:
    """The mean margin r_chosen - r_rejected ± its SE (clustered by prompt)."""
    return fmt_pm(rewards.get("mean_margin"), rewards.get("margin_se"), signed=True)


def severity_rank(finding: dict) -> int:
    severity = finding.get("severity")
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def sorted_findings(findings: list[dict]) -> list[dict]:
    """Most severe first; within a severity, the saved order is kept."""
    return sorted(findings, key=severity_rank)


def run_names(results: dict) -> list[str]:
    """Runs in saved order, with any run that only appears in checkpoints appended."""
    names = [r["name"] for r in results.get("runs", [])]
    extra = [c["run"] for c in results.get("checkpoints", []) if c["run"] not in names]
    return names + list(dict.fromkeys(extra))


def run_checkpoints(results: dict, run: str, *, trained_only: bool = False) -> list[dict]:
    """A run's checkpoints by step; trained_only leaves out the reference (step-0) row."""
    rows = [c for c in results.get("checkpoints", []) if c["run"] == run]
    if trained_only:
        rows = [c for c in rows if not is_reference(c)]
    return sorted(rows, key=lambda c: c["step"])


def is_reference(checkpoint: dict) -> bool:
    return bool(checkpoint.get("is_reference"))


def kl_estimator(results: dict) -> str:
    """The KL estimator to show: the one results.json says its fit used, else the first of KL_ESTIMATORS
    that any checkpoint has."""
    named = dig(results, "fits", "kl_estimator")
    if isinstance(named, str):
        return named
    for name in KL_ESTIMATORS:
        if any(dig(c, "kl", name, "mean") is not None for c in results.get("checkpoints", [])):
            return name
    return KL_ESTIMATORS[0]


def kl_mean(checkpoint: dict, estimator: str) -> float | None:
    return number(dig(checkpoint, "kl", estimator, "mean"))


def pair_drift(checkpoint: dict) -> dict | None:
    """metrics.drift.PairDrift of a checkpoint: drift.pairs, or drift itself when saved flat."""
    drift = checkpoint.get("drift")
    if not isinstance(drift, dict):
        return None
    if isinstance(drift.get("pairs"), dict):
        return drift["pairs"]
    return drift if "chosen" in drift else None


def dispersion(checkpoint: dict) -> dict | None:
    value = dig(checkpoint, "drift", "dispersion")
    return value if isinstance(value, dict) else None


def delta(checkpoint: dict, side: str, scale: str = "per_token") -> tuple[float | None, float | None]:
    """(mean, se) of Δ log π of the chosen or rejected responses ("total" or "per_token")."""
    summary = dig(pair_drift(checkpoint), side, scale)
    return number(dig(summary, "mean")), number(dig(summary, "se"))


def unseen_delta(checkpoint: dict, source: str,
                 scale: str = "per_token") -> tuple[float | None, float | None]:
    """(mean, se) of Δ log π of responses in no pair: source "reference_samples" or "other_prompts"."""
    summary = dig(dispersion(checkpoint), source, scale)
    return number(dig(summary, "mean")), number(dig(summary, "se"))


def length_figure(checkpoint: dict, name: str) -> float | None:
    """A field of the saved metrics.length.LengthComparison (top level of `length`, or under "comparison")."""
    length = checkpoint.get("length") or {}
    source = length.get("comparison") if isinstance(length.get("comparison"), dict) else length
    return number(dig(source, *name.split(".")))


def run_findings(results: dict, run: str) -> list[dict]:
    return [f for f in results.get("findings", []) if f.get("run") == run]


def missing_flag(results: dict, word: str) -> str | None:
    """The flag of the first `missing` entry whose flag or what mentions `word` (e.g. "--judge")."""
    for entry in results.get("missing", []):
        if word in entry.get("flag", "") or word in entry.get("what", ""):
            return entry["flag"]
    return None


def checkpoint_name(results: dict, run: str, step: object) -> str:
    """How the page names a checkpoint: "step 4" when the report has one run, else "lr-1e-2 at step 4" (a run's
    folder name alone reads badly when it is a default such as "run")."""
    return f"step {step}" if len(run_names(results)) <= 1 else f"{run} at step {step}"


def finding_place(results: dict, finding: dict) -> str:
    """The checkpoint a finding is about (checkpoint_name); the run alone for a run-level finding."""
    run, step = finding.get("run") or "", finding.get("step")
    if step is not None:
        return checkpoint_name(results, run, step)
    return f"the run {run}" if len(run_names(results)) > 1 else "the run"


def words(key: str) -> str:
    """A saved key as words: "chosen_delta_per_token" -> "chosen delta per token"."""
    return str(key).replace("_", " ")


FORM_NAMES = {"bon": "best-of-n", "rl": "RL"}
"""Gao et al. (2022)'s two forms of quality against KL, as the page names them."""


def trained_with(run: dict) -> str:
    """One line for a run header: trainer, version, loss, beta and reference, each with where it came from.

    E.g. ``a: trainer LLaMA-Factory (trainer_log.jsonl) · version: not recorded · loss sigmoid (../dpo.yaml)
    · β 0.2 (../dpo.yaml) · reference /m (--ref)``.
    """
    info = run.get("trained_with") or {}
    name = info.get("name") or run.get("trainer") or "unknown"
    parts = [f"trainer {name} ({info['source']})" if info.get("source") else f"trainer {name}"]
    for key, label in (("version", "version"), ("loss", "loss"), ("beta", "β")):
        entry = info.get(key)
        parts.append(f"{label} {entry['value']} ({entry['source']})" if entry else f"{label}: not recorded")
    if run.get("beta") is not None and (info.get("beta") or {}).get("value") != run.get("beta"):
        parts.append(f"report used β {run['beta']}")
    reference = run.get("reference") or {}
    if reference:
        parts.append(f"reference {reference.get('path')} ({reference.get('source')})")
    return f"{run.get('name', '')}: " + " · ".join(parts)


def has_rounds(results: dict) -> bool:
    """Whether any checkpoint carries a loop round (a `dpo-eval loop` run is in the report): the checkpoint
    tables then get a round column."""
    return any("round" in c for c in results.get("checkpoints", []))


def round_cell(checkpoint: dict) -> str:
    """A checkpoint's loop round as a table cell: the number, "—" for a row with none (reference, offline)."""
    value = checkpoint.get("round")
    return "—" if value is None else str(value)


def loop_runs(results: dict) -> list[dict]:
    """The runs that are `dpo-eval loop` OUTPUT_DIRs (they carry `loop`), in saved order."""
    return [r for r in results.get("runs", []) if isinstance(r.get("loop"), dict)]


def round_ends(results: dict, run: str) -> list[tuple[int, int]]:
    """(round, the global step it ends at) of a loop run; [] for any other run."""
    loop = next((r["loop"] for r in loop_runs(results) if r.get("name") == run), None)
    ends = (loop or {}).get("round_ends") or []
    return [(i, int(step)) for i, step in enumerate(ends, start=1) if number(step) is not None]


def fmt_agreement(agreement: dict | None) -> str:
    """"83% [70%, 95%]" of a saved label agreement (the CI's places, as fmt_rate), or NOT_AVAILABLE."""
    if not isinstance(agreement, dict):
        return NOT_AVAILABLE
    return fmt_rate({"rate": agreement.get("agreement"), "rate_ci": agreement.get("ci")}, "rate")
