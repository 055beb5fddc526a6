"""The per-round section of a `dpo-eval loop` run (report.html and report.md): its runs[].loop, as saved.

One table per loop run, a row per round: its global steps, the loop's counts (prompts, samples, unscored
samples, ties, prompts skipped, pairs; an online loop's one row sums its steps), the mean label of the chosen
and of the rejected responses, where the labels came from, and the report judge's agreement with those labels
on the round's training pairs (with its 95% CI, and the pairs it agreed on, disagreed on, tied and could not
score) or why there is none.
Nothing is computed here.
"""

from __future__ import annotations

from dpo_eval.reports import view
from dpo_eval.reports.view import fmt

HEADERS = ["round", "steps", "prompts", "samples", "unscored", "ties", "prompts skipped", "pairs",
           "mean label chosen", "mean label rejected", "label source", "judge agreement [95% CI]",
           "agree / disagree / tie / unscored"]
INTRO = ("Per round of the loop: what it sampled and labelled, the pairs it trained on, and how often the "
         "report's judge{judge} prefers each pair's chosen response (judged as every judgment of this report: "
         "both orders in verdict mode; ties and unscored pairs counted apart; CI clustered by prompt).")


def intro(results: dict) -> str:
    """The section's first line, naming the report's judge when there is one."""
    spec = view.dig(results, "provenance", "judge", "spec")
    return INTRO.format(judge=f" ({spec})" if spec else "")


def _count(counts: dict, key: str) -> str:
    value = counts.get(key)
    return view.NOT_AVAILABLE if value is None else str(value)


def _agreement_counts(agreement: dict | None, reason: str) -> str:
    if not isinstance(agreement, dict):
        return reason or view.NOT_AVAILABLE
    return " / ".join(str(agreement.get(k, view.NOT_AVAILABLE))
                      for k in ("n_agree", "n_disagree", "n_ties", "n_unscored"))


def round_rows(run: dict) -> list[list[str]]:
    """The cells of a loop run's table (HEADERS), a row per round."""
    loop = run.get("loop") or {}
    rows = []
    for r in loop.get("rounds", []):
        counts = r.get("counts") or {}
        sources = ", ".join(r.get("label_sources") or []) or str(loop.get("labeller") or view.NOT_AVAILABLE)
        name = "online" if loop.get("online") else str(r.get("round"))
        rows.append([name, f"{r.get('first_step')}–{r.get('last_step')}",
                     *(_count(counts, k) for k in ("prompts", "samples", "unscored", "ties", "skipped_prompts",
                                                   "pairs")),
                     fmt(counts.get("mean_chosen_label"), ".3g"), fmt(counts.get("mean_rejected_label"), ".3g"),
                     sources, view.fmt_agreement(r.get("agreement")),
                     _agreement_counts(r.get("agreement"), r.get("agreement_reason", ""))])
    return rows


def run_caption(run: dict) -> str:
    """One line above a loop run's table: its labeller, pair rule and reference."""
    loop = run.get("loop") or {}
    pairs = ("online (OAIF: every step trains on two fresh samples per prompt, labelled)" if loop.get("online")
             else f"pairs {loop.get('pairs')}")
    return f"{run.get('name', '')}: labeller {loop.get('labeller')}, {pairs}, reference {loop.get('reference')}"
