"""Whether a regression's baseline results.json was made like the results it is compared with.

A regression check compares a figure with the baseline's: it means something only when both were measured
the same way. From each document's ``provenance``:

    data.pairs.sha256, data.prompts.sha256     the same held-out pairs and prompts (by content)
    judge                                      the same judge (spec, mode, template, answers...; seed aside)
    sampling                                   n_samples, max_new_tokens, temperature, top_p, template, ...
    beta[run], reference[run]                  per run of the results, its baseline partner's (the run of
                                               the same name, else a lone baseline run): β and fingerprint

A field recorded on one side only is a difference ("not recorded"); absent on both sides, it is equal.
"""

from __future__ import annotations

import json

COMPARABLE_PROVENANCE = (("data", "pairs", "sha256"), ("data", "prompts", "sha256"), ("judge",), ("sampling",))
"""Provenance paths a baseline must share with the results (beside each run's β and reference)."""
JUDGE_IGNORED = ("seed",)
"""Judge identity fields that change which samples are judged in which order, not what a verdict means."""
_ABSENT = object()


def _get(document: object, keys: tuple[str, ...]) -> object:
    node = document
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def _shown(value: object) -> str:
    return "not recorded" if value is _ABSENT else json.dumps(value, sort_keys=True)


def _differences(name: str, now: object, base: object) -> list[str]:
    """'name (results' value vs baseline's)' for a differing value; for two mappings, one per differing key."""
    if isinstance(now, dict) and isinstance(base, dict):
        keys = sorted(set(now) | set(base))
        return [d for k in keys for d in _differences(f"{name}.{k}", now.get(k, _ABSENT), base.get(k, _ABSENT))]
    return [] if now == base else [f"{name} ({_shown(now)} vs {_shown(base)})"]


def _per_run(provenance: dict, run: str, field: str) -> object:
    """A run's β, or its reference's fingerprint (the run's own entry, else the document's reference)."""
    if field == "beta":
        return _get(provenance, ("beta", run))
    own = _get(provenance, ("reference", "runs", run))
    return _get(own if isinstance(own, dict) else _get(provenance, ("reference",)), ("fingerprint",))


def _judge(value: object) -> object:
    return {k: v for k, v in value.items() if k not in JUDGE_IGNORED} if isinstance(value, dict) else value


def incomparable_fields(results: dict, baseline: dict) -> list[str]:
    """Each way the baseline was made differently from the results, as 'field (results vs baseline)'."""
    now, base = results.get("provenance") or {}, baseline.get("provenance") or {}
    found = []
    for keys in COMPARABLE_PROVENANCE:
        values = [_get(p, keys) for p in (now, base)]
        found += _differences(".".join(keys), *(_judge(v) if keys == ("judge",) else v for v in values))
    base_beta, now_beta = _get(base, ("beta",)), _get(now, ("beta",))
    base_runs = list(base_beta) if isinstance(base_beta, dict) else []
    for run in now_beta if isinstance(now_beta, dict) else {}:
        partner = run if run in base_runs else base_runs[0] if len(base_runs) == 1 else None
        if partner is None:
            continue  # no partner: the regression checks of this run fail as unmatched
        for field in ("beta", "reference"):
            name = f"{field}[{run}]" if partner == run else f"{field}[{run} vs baseline {partner}]"
            found += _differences(name, _per_run(now, run, field), _per_run(base, partner, field))
    return found
