"""HTML tables of report.html: per-checkpoint figures and the worst examples with their text.

Every string that comes from results.json or a table goes through `esc` (html.escape, quote=True).
"""

from __future__ import annotations

import html

import pandas as pd

from dpo_eval.reports import view
from dpo_eval.reports.tables import Tables
from dpo_eval.reports.view import fmt, fmt_pm, fmt_rate

TEXT_LIMIT = 1500
"""Characters of a prompt or response shown before it is cut (the full text stays in the table)."""
N_WORST = 2
REFERENCE_CELL = "— (reference)"
"""The reward accuracy and margin of a reference row: implicit rewards against itself are 0."""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def table(headers: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """An HTML table; headers and cells are escaped here."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{esc(css_class)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _step_label(results: dict, ckpt: dict) -> str:
    rec = results.get("recommended") or {}
    star = " ★" if rec.get("run") == ckpt["run"] and rec.get("step") == ckpt["step"] else ""
    ref = " (reference)" if view.is_reference(ckpt) else ""
    return f"{ckpt['step']}{ref}{star}"


def _with_round(results: dict, headers: list[str], rows: list[list[str]]) -> str:
    """A numbers table of one row per checkpoint (run, step first), with a round column after the step when a
    `dpo-eval loop` run is in the report (view.has_rounds); reports of other runs keep their columns."""
    if view.has_rounds(results):
        headers = [*headers[:2], "round", *headers[2:]]
        rows = [[*row[:2], view.round_cell(c), *row[2:]] for row, c in zip(rows, results.get("checkpoints", []))]
    return table(headers, rows, "numbers")


def _quality_column(results: dict) -> bool:
    """Whether the key figures need a quality column: only for gold answers (a judge's quality is its win
    rate - 0.5, already shown as the win rate)."""
    return any("gold" in str(view.dig(c, "quality", "source")) for c in results.get("checkpoints", []))


def _length_vs_reference(ckpt: dict) -> str:
    ratio = view.length_figure(ckpt, "mean_tokens_ratio")
    mine, ref = view.length_figure(ckpt, "checkpoint.mean_tokens"), view.length_figure(ckpt, "reference.mean_tokens")
    if ratio is None:
        return view.NOT_AVAILABLE
    tokens = "" if mine is None or ref is None else f" ({mine:.3g} vs {ref:.3g} tokens)"
    return f"{ratio:.2f}×{tokens}"


def key_figures_table(results: dict) -> str:
    """The first screen: one row per checkpoint with the figures that decide which to keep, each with its
    uncertainty where results.json saves one (view.fmt_pm, view.fmt_rate)."""
    estimator = view.kl_estimator(results)
    gold = _quality_column(results)
    headers = ["run", "step", "reward accuracy [95% CI]", "margin ± SE", f"KL ({estimator}, nats) ± SE",
               "mean length vs reference", "win rate [95% CI]", "LC win rate [95% CI]"]
    headers += ["gold accuracy − reference's ± SE"] if gold else []
    rows = []
    for ckpt in results.get("checkpoints", []):
        rewards, rate, quality = ckpt.get("rewards") or {}, ckpt.get("winrate") or {}, ckpt.get("quality") or {}
        kl = view.dig(ckpt, "kl", estimator) or {}
        accuracy = view.reward_accuracy_text(rewards)
        accuracy = accuracy if accuracy == view.NOT_AVAILABLE else f"{accuracy} of {rewards.get('n')}"
        margin = view.margin_text(rewards)
        if view.is_reference(ckpt):  # its margins are 0 by definition: every pair a tie, not a 0% accuracy
            accuracy, margin = REFERENCE_CELL, REFERENCE_CELL
        row = [ckpt["run"], _step_label(results, ckpt), accuracy, margin, fmt_pm(kl.get("mean"), kl.get("se")),
               _length_vs_reference(ckpt), fmt_rate(rate, "win_rate"), fmt_rate(rate, "lc_win_rate")]
        row += [fmt_pm(quality.get("value"), quality.get("se"), signed=True)] if gold else []
        rows.append(row)
    return _with_round(results, headers, rows)


def rewards_table(results: dict) -> str:
    """Rewards and Δ log π on held-out pairs, one row per checkpoint."""
    headers = ["run", "step", "pairs", "accuracy [95% CI]", "margin ± SE", "r chosen", "r rejected",
               "Δ/token chosen ± SE", "Δ/token rejected ± SE", "chosen fell on"]
    rows = []
    for ckpt in results.get("checkpoints", []):
        rewards, drift = ckpt.get("rewards") or {}, view.pair_drift(ckpt) or {}
        rows.append([ckpt["run"], _step_label(results, ckpt), str(rewards.get("n", view.NOT_AVAILABLE)),
                     view.reward_accuracy_text(rewards), view.margin_text(rewards),
                     fmt(rewards.get("mean_reward_chosen"), "+.3g"),
                     fmt(rewards.get("mean_reward_rejected"), "+.3g"),
                     fmt_pm(*view.delta(ckpt, "chosen"), signed=True),
                     fmt_pm(*view.delta(ckpt, "rejected"), signed=True),
                     fmt(drift.get("displacement_share"), ".0%")])
    return _with_round(results, headers, rows)


def samples_table(results: dict) -> str:
    """KL, length, win rates and quality on the checkpoints' own samples, one row per checkpoint."""
    estimator = view.kl_estimator(results)
    headers = ["run", "step", f"KL ({estimator}, nats) ± SE", "mean length ratio", "cut at the token limit",
               "win rate [95% CI]", "LC win rate [95% CI]", "quality ± SE", "findings"]
    rows = []
    for ckpt in results.get("checkpoints", []):
        rate, quality = ckpt.get("winrate") or {}, ckpt.get("quality") or {}
        kl = view.dig(ckpt, "kl", estimator) or {}
        rows.append([ckpt["run"], _step_label(results, ckpt), fmt_pm(kl.get("mean"), kl.get("se")),
                     fmt(view.length_figure(ckpt, "mean_tokens_ratio"), ".2f"),
                     fmt(view.length_figure(ckpt, "checkpoint.truncated_share"), ".0%"),
                     fmt_rate(rate, "win_rate"), fmt_rate(rate, "lc_win_rate"),
                     fmt_pm(quality.get("value"), quality.get("se"), signed=True),
                     str(len(ckpt.get("findings", [])))])
    return _with_round(results, headers, rows)


def _text(value: object) -> str:
    text = "" if value is None else str(value)
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT] + f"… ({len(text) - TEXT_LIMIT} more characters)"
    return f'<pre class="text">{esc(text)}</pre>'


COLUMN_WORDS = {"reward_chosen": "r chosen", "reward_rejected": "r rejected", "margin": "margin",
                "policy_chosen_logp": "log π chosen", "ref_chosen_logp": "reference log π chosen",
                "chosen_tokens": "chosen tokens", "rejected_tokens": "rejected tokens", "n_tokens": "tokens",
                "policy_logp": "log π", "ref_logp": "reference log π"}
"""How the worst examples name a table's columns."""
FINISH_WORDS = {"length": "cut at the token limit", "stop": "ended by the model"}
"""A sample's saved finish_reason in words."""


def _numbers(row: pd.Series, columns: tuple[str, ...]) -> str:
    shown = [f"{COLUMN_WORDS.get(c, view.words(c))} "
             f"{fmt(row[c], '+.3g' if 'reward' in c or 'margin' in c or 'logp' in c else '.4g')}"
             for c in columns if c in row.index]
    return esc(", ".join(shown))


def _pair_example(title: str, row: pd.Series) -> str:
    numbers = _numbers(row, ("reward_chosen", "reward_rejected", "margin", "policy_chosen_logp",
                             "ref_chosen_logp", "chosen_tokens", "rejected_tokens"))
    parts = [f'<div class="example"><h4>{esc(title)}: pair {esc(row.get("id", "?"))}</h4>'
             f'<p class="nums">{numbers}</p>']
    for field in ("prompt", "chosen", "rejected"):
        if field in row.index:
            parts.append(f"<p class=\"label\">{field}</p>{_text(row[field])}")
    return "".join(parts) + "</div>"


def _sample_example(row: pd.Series) -> str:
    numbers = _numbers(row, ("n_tokens", "policy_logp", "ref_logp"))
    reason = row["finish_reason"] if "finish_reason" in row.index else None
    finish = f", {esc(FINISH_WORDS.get(reason, f'finished: {reason}'))}" if reason is not None else ""
    parts = [f'<div class="example"><h4>Longest sample: prompt {esc(row.get("prompt_id", "?"))}</h4>'
             f'<p class="nums">{numbers}{finish}</p>']
    for field in ("prompt", "output"):
        if field in row.index:
            parts.append(f"<p class=\"label\">{field}</p>{_text(row[field])}")
    return "".join(parts) + "</div>"


def worst_examples(results: dict, tables: Tables) -> str:
    """Per run, at its last trained checkpoint: the lowest chosen rewards, the most negative margins (pairs
    not shown already), the longest samples (rows picked by saved columns; nothing recomputed)."""
    blocks = []
    for run in view.run_names(results):
        trained = view.run_checkpoints(results, run, trained_only=True)
        if not trained:
            continue
        ckpt, found = trained[-1], []
        pairs, samples = tables.get("pairs", ckpt), tables.get("samples", ckpt)
        if pairs is not None and "reward_chosen" in pairs:
            found += [_pair_example("Biggest chosen drop (lowest chosen reward)", row)
                      for _, row in pairs.nsmallest(N_WORST, "reward_chosen").iterrows()]
        if pairs is not None and "margin" in pairs:
            shown = pairs.nsmallest(N_WORST, "reward_chosen").index if "reward_chosen" in pairs else []
            wrong = pairs[(pairs["margin"] < 0) & ~pairs.index.isin(shown)]
            found += [_pair_example("Most confident wrong margin", row)
                      for _, row in wrong.nsmallest(N_WORST, "margin").iterrows()]
        if samples is not None and "n_tokens" in samples:
            found += [_sample_example(row) for _, row in samples.nlargest(N_WORST, "n_tokens").iterrows()]
        if found:
            title = view.checkpoint_name(results, run, ckpt["step"])
            blocks.append(f"<h3>{esc(title[0].upper() + title[1:])}</h3>" + "".join(found))
    return "".join(blocks) or "<p>No per-example tables were saved with these results.</p>"
