"""The report's figures, drawn from saved figures and per-example tables (matplotlib, Agg, no pyplot).

Each `plot_*` takes the loaded results document (and the Tables) and returns PNG bytes, or None when its
data is missing. Figures are 900 x ~400 px, colour-blind-safe (Okabe & Ito 2008 palette) with markers or
line styles that tell series apart without colour too. Nothing here computes a statistic: the fitted
curves are the saved fit's parameters evaluated by metrics.overoptimization.quality_curve.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dpo_eval.metrics.overoptimization import quality_curve
from dpo_eval.reports import view
from dpo_eval.reports.tables import Tables

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SIDE_STYLE = {"chosen": ("#009E73", "o", "-"), "rejected": ("#D55E00", "s", "--"),
              "reference_samples": ("#0072B2", "^", ":"), "other_prompts": ("#CC79A7", "D", "-.")}
SIDE_LABEL = {"chosen": "chosen (pairs)", "rejected": "rejected (pairs)",
              "reference_samples": "unseen: reference's samples",
              "other_prompts": "unseen: other prompts' responses"}
WIDTH_IN, DPI = 9.0, 100


@dataclass(frozen=True)
class Plot:
    """A drawn figure and what it shows."""

    key: str
    title: str
    caption: str
    png: bytes


def run_style(index: int) -> dict:
    return {"color": OKABE_ITO[index % len(OKABE_ITO)], "marker": MARKERS[index % len(MARKERS)]}


def new_figure(n_cols: int = 1, n_rows: int = 1, height: float = 4.0) -> tuple[Figure, np.ndarray]:
    """A 900 px wide figure of n_rows x n_cols axes with fixed margins (a layout engine triples the
    drawing time)."""
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False).ravel())
    fig.subplots_adjust(left=0.09 if n_cols == 1 else 0.08, right=0.98, bottom=0.5 / height,
                        top=1.0 - 0.35 / height, wspace=0.32, hspace=0.4 * 3.0 / height * n_rows / 2 + 0.15)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _series(results: dict, run: str, get: Callable[[dict], float | None],
            trained_only: bool = False) -> tuple[list[int], list[float]]:
    """(steps, values) of a run's checkpoints where get(checkpoint) is not None."""
    points = [(c["step"], get(c)) for c in view.run_checkpoints(results, run, trained_only=trained_only)]
    points = [(s, v) for s, v in points if v is not None]
    return [s for s, _ in points], [v for _, v in points]


def plot_rewards(results: dict, tables: Tables | None = None) -> bytes | None:
    """Reward accuracy (trained checkpoints) and mean implicit-reward margin against step, a line per run."""
    panels = (("accuracy", "reward accuracy (fraction of pairs)"),
              ("mean_margin", "mean reward margin (β·nats)"))
    fig, axes = new_figure(2)
    drawn = False
    for i, run in enumerate(view.run_names(results)):
        for ax, (field, _) in zip(axes, panels):
            # the reference's rewards are all 0: ties, which accuracy does not count as wins
            steps, values = _series(results, run, lambda c, f=field: view.number(view.dig(c, "rewards", f)),
                                    trained_only=field == "accuracy")
            if steps:
                ax.plot(steps, values, label=run, **run_style(i))
                drawn = True
    if not drawn:
        return None
    for ax, (_, label) in zip(axes, panels):
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
    axes[0].axhline(0.5, color="grey", lw=1, ls=":")
    axes[1].axhline(0.0, color="grey", lw=1, ls=":")
    axes[0].legend(title="run")
    return to_png(fig)


def plot_drift(results: dict, tables: Tables | None = None) -> bytes | None:
    """Mean Δ log π per token (± SE) of chosen, rejected and unseen responses against step, a panel per
    run."""
    runs = [r for r in view.run_names(results)
            if any(view.pair_drift(c) for c in view.run_checkpoints(results, r))]
    if not runs:
        return None
    fig, axes = new_figure(len(runs), height=4.2)
    for ax, run in zip(axes, runs):
        for side in SIDE_STYLE:
            get = ((lambda c, s=side: view.delta(c, s)) if side in ("chosen", "rejected")
                   else (lambda c, s=side: view.unseen_delta(c, s)))
            points = [(c["step"], *get(c)) for c in view.run_checkpoints(results, run)]
            points = [p for p in points if p[1] is not None]
            if not points:
                continue
            steps, means, ses = zip(*points)
            color, marker, style = SIDE_STYLE[side]
            ax.errorbar(steps, means, yerr=[s or 0.0 for s in ses], color=color, marker=marker, ls=style,
                        capsize=3, label=SIDE_LABEL[side])
        ax.axhline(0.0, color="grey", lw=1)
        ax.set_title(run)
        ax.set_xlabel("training step")
        ax.set_ylabel("Δ log π vs reference (nats per token)")
    axes[0].legend(fontsize="small")
    return to_png(fig)


def plot_kl_quality(results: dict, tables: Tables | None = None) -> bytes | None:
    """Quality against √KL for every checkpoint with both, the two saved fits, and their peaks."""
    fig = kl_quality_figure(results)
    return None if fig is None else to_png(fig)


def kl_quality_figure(results: dict) -> Figure | None:
    """plot_kl_quality's figure: every run's points (one error-bar series per run, labelled "run NAME") on one
    axes; None when no checkpoint has both figures."""
    estimator = view.kl_estimator(results)
    fig, axes = new_figure(1, height=4.6)
    ax = axes[0]
    largest, source = 0.0, None
    for i, run in enumerate(view.run_names(results)):
        points = [(view.kl_mean(c, estimator), view.dig(c, "quality"))
                  for c in view.run_checkpoints(results, run)]
        points = [(k, q) for k, q in points
                  if k is not None and view.number(view.dig(q, "value")) is not None]
        if not points:
            continue
        source = points[0][1].get("source", source)
        root = np.sqrt(np.clip([k for k, _ in points], 0.0, None))
        errors = [view.number(q.get("se")) or 0.0 for _, q in points]
        ax.errorbar(root, [q["value"] for _, q in points], yerr=errors, ls="none", capsize=3,
                    label=f"run {run}", **run_style(i))
        largest = max(largest, float(root.max()))
    if source is None:
        return None
    _draw_fits(ax, view.dig(results, "fits", "kl_quality"), largest)
    ax.axhline(0.0, color="grey", lw=1, ls=":")
    ax.set_xlabel(f"√KL(π ‖ π_ref) ({estimator} estimate; √nats per sequence)")
    ax.set_ylabel(f"quality relative to the reference ({source})")
    ax.legend(fontsize="small")
    return fig


def _draw_fits(ax, fit: dict | None, largest: float) -> None:
    """Both saved forms' curves over [0, 1.3 × the largest √KL or the peak], and each form's peak."""
    if not isinstance(fit, dict):
        return
    peaks = [view.number(view.dig(fit, form, "peak_kl")) for form in ("bon", "rl")]
    top = max([largest * 1.3] + [np.sqrt(p) * 1.15 for p in peaks if p is not None])
    grid = np.linspace(0.0, top, 200)
    for form, color, style in (("bon", "#000000", "-"), ("rl", "#E69F00", "--")):
        form_fit = fit.get(form)
        alpha, beta = view.number(view.dig(form_fit, "alpha")), view.number(view.dig(form_fit, "beta"))
        if alpha is None or beta is None:
            continue
        best = " (better fit)" if fit.get("best") == form else ""
        name = "best-of-n d(α − βd)" if form == "bon" else "RL d(α − β log d)"
        ax.plot(grid, quality_curve(form, alpha, beta, grid ** 2), color=color, ls=style,
                lw=2.2 if best else 1.4, label=f"fit: {name}{best}")
        peak_kl, peak_q = view.number(form_fit.get("peak_kl")), view.number(form_fit.get("peak_quality"))
        if peak_kl is not None and peak_q is not None:
            ax.plot([np.sqrt(peak_kl)], [peak_q], marker="*", ms=16, color=color, mec="white", ls="none",
                    label=f"{view.FORM_NAMES[form]} peak: KL {peak_kl:.3g}, quality {peak_q:.3g}"
                          f"{' (extrapolated)' if form_fit.get('is_peak_extrapolated') else ''}")


def plot_winrates(results: dict, tables: Tables | None = None) -> bytes | None:
    """Raw and length-controlled win rates (with their saved CIs) against step, one colour per run."""
    fig, axes = new_figure(1, height=4.2)
    ax, drawn = axes[0], False
    for i, run in enumerate(view.run_names(results)):
        style = run_style(i)
        for field, ci_field, ls, label, offset in (("win_rate", "win_rate_ci", "-", "raw", -2),
                                                    ("lc_win_rate", "lc_win_rate_ci", "--", "LC", 2)):
            rows = [(c["step"], view.dig(c, "winrate")) for c in view.run_checkpoints(results, run)]
            rows = [(s, w) for s, w in rows if w and view.number(w.get(field)) is not None]
            if not rows:
                continue
            steps = np.array([s for s, _ in rows], dtype=float) + offset  # nudge apart overlapping bars
            values = np.array([w[field] for _, w in rows])
            low, high = _ci_bars(values, [view.dig(w, ci_field) for _, w in rows])
            ax.errorbar(steps, values, yerr=[low, high], color=style["color"], marker=style["marker"], ls=ls,
                        capsize=3, mfc="white" if label == "LC" else style["color"], label=f"{run} {label}")
            drawn = True
    if not drawn:
        return None
    ax.axhline(0.5, color="grey", lw=1, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("win rate vs the reference's samples (fraction, 95% CI)")
    ax.legend(fontsize="small", ncol=2)
    return to_png(fig)


def _ci_bars(values: np.ndarray, cis: list) -> tuple[list[float], list[float]]:
    """Error-bar lengths below and above each value from its saved CI (0 where the CI was not saved, or where a
    percentile-bootstrap CI lies wholly on one side of its point estimate: a bar cannot have negative length)."""
    ends = [(view.number(view.dig(ci, 0)), view.number(view.dig(ci, 1))) for ci in cis]
    low = [0.0 if lo is None else max(0.0, v - lo) for v, (lo, _) in zip(values, ends)]
    high = [0.0 if hi is None else max(0.0, hi - v) for v, (_, hi) in zip(values, ends)]
    return low, high


def plot_lengths(results: dict, tables: Tables) -> bytes | None:
    """Histograms of sample lengths (tokens) of each run's checkpoints against the reference's samples."""
    reference = tables.reference_samples() if tables else None
    runs = [r for r in view.run_names(results)
            if any(tables.get("samples", c) is not None
                   for c in view.run_checkpoints(results, r, trained_only=True))]
    if not runs:
        return None
    fig, axes = new_figure(len(runs), height=4.0)
    limit = view.number(view.dig(results, "provenance", "sampling", "max_new_tokens"))
    for ax, run in zip(axes, runs):
        frames = [(f"step {c['step']}", tables.get("samples", c))
                  for c in view.run_checkpoints(results, run, trained_only=True)]
        frames = [(name, f) for name, f in frames if f is not None and "n_tokens" in f]
        everything = [f["n_tokens"].to_numpy(float) for _, f in frames]
        if reference is not None and "n_tokens" in reference:
            everything.append(reference["n_tokens"].to_numpy(float))
            ax.hist(everything[-1], bins=_bins(everything), color="#999999", alpha=0.6, label="reference")
        for i, (name, frame) in enumerate(frames):
            ax.hist(frame["n_tokens"].to_numpy(float), bins=_bins(everything), histtype="step", lw=2,
                    ls=("-", "--", ":", "-.")[i % 4], color=OKABE_ITO[i % len(OKABE_ITO)], label=name)
        if limit is not None:
            ax.axvline(limit, color="black", lw=1, ls=":", label=f"token limit {limit:g}")
        ax.set_title(run)
        ax.set_xlabel("sample length (tokens)")
        ax.set_ylabel("samples")
        ax.legend(fontsize="small")
    return to_png(fig)


def _bins(arrays: list[np.ndarray]) -> np.ndarray:
    values = np.concatenate(arrays) if arrays else np.zeros(1)
    return np.linspace(values.min(), values.max() + 1.0, 25)


PAIR_REWARD_LENGTH = ("reward_chosen", "chosen_tokens", "reward_rejected", "rejected_tokens")


def plot_reward_length(results: dict, tables: Tables) -> bytes | None:
    """Implicit reward against response length on held-out pairs, at each run's last checkpoint."""
    shown = []
    for run in view.run_names(results):
        trained = view.run_checkpoints(results, run, trained_only=True)
        frame = tables.get("pairs", trained[-1]) if trained and tables else None
        if frame is not None and set(PAIR_REWARD_LENGTH) <= set(frame):
            shown.append((run, trained[-1], frame))
    if not shown:
        return None
    fig, axes = new_figure(len(shown), height=4.0)
    for ax, (run, ckpt, frame) in zip(axes, shown):
        for side in ("chosen", "rejected"):
            color, marker, _ = SIDE_STYLE[side]
            ax.scatter(frame[f"{side}_tokens"], frame[f"reward_{side}"], s=18, color=color, marker=marker,
                       alpha=0.7, label=side)
        rho = view.length_figure(ckpt, "pair_reward_length.responses.rho")
        rho_text = f" (Spearman ρ {rho:+.2f})" if rho is not None else ""
        ax.set_title(f"{run}, step {ckpt['step']}{rho_text}")
        ax.axhline(0.0, color="grey", lw=1)
        ax.set_xlabel("response length (tokens)")
        ax.set_ylabel("implicit reward β·Δ log π (nats)")
        ax.legend(fontsize="small")
    return to_png(fig)


TRAINING_METRICS = (("loss", "loss (nats)"), ("rewards/margins", "reward margin (β·nats)"),
                    ("rewards/accuracies", "reward accuracy (fraction)"),
                    ("rewards/chosen", "chosen reward (β·nats)"),
                    ("rewards/rejected", "rejected reward (β·nats)"),
                    ("logps/chosen", "log π(chosen) (nats)"))


def plot_training_curves(results: dict, tables: Tables | None = None) -> bytes | None:
    """The trainer's logged curves (train solid, eval dashed), a panel per metric, a colour per run, and a dotted
    vertical line where each round of a `dpo-eval loop` run ends."""
    fig = training_curves_figure(results)
    return None if fig is None else to_png(fig)


def training_curves_figure(results: dict) -> Figure | None:
    """plot_training_curves' figure; None when no metric of TRAINING_METRICS was logged."""
    curves = {run: rows for run, rows in (results.get("training_curves") or {}).items() if rows}
    logged = {r.get("metric") for rows in curves.values() for r in rows}
    present = [(m, label) for m, label in TRAINING_METRICS if m in logged]
    if not present:
        return None
    n_cols = min(3, len(present))
    n_rows = -(-len(present) // n_cols)
    fig, axes = new_figure(n_cols, n_rows, height=3.0 * n_rows)
    for ax, (metric, label) in zip(axes, present):
        for i, (run, rows) in enumerate(curves.items()):
            for split, ls in (("train", "-"), ("eval", "--")):
                points = sorted((r["step"], r["value"]) for r in rows if r.get("metric") == metric
                                and r.get("split") == split and view.number(r.get("value")) is not None)
                if points:
                    ax.plot(*zip(*points), ls=ls, color=OKABE_ITO[i % len(OKABE_ITO)], label=f"{run} {split}")
            _mark_rounds(ax, results, run, OKABE_ITO[i % len(OKABE_ITO)])
        ax.set_xlabel("training step")
        ax.set_ylabel(label, fontsize="small")
    for ax in axes[len(present):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small")
    return fig


def _mark_rounds(ax, results: dict, run: str, color: str) -> None:
    """A dotted vertical line at the global step where each round of a loop run ends, labelled "round R" (the
    round that ends there) at the top of the panel; nothing for another run."""
    for round_index, step in view.round_ends(results, run):
        ax.axvline(step, color=color, lw=1, ls=":", gid=f"round-end {run} {round_index}")
        ax.text(step, 1.0, f"round {round_index}", transform=ax.get_xaxis_transform(), ha="right", va="top",
                rotation=90, fontsize="x-small", color=color)


PLOTS: tuple[tuple[str, str, str, Callable], ...] = (
    ("rewards", "Reward accuracy and margin", "Held-out pairs: how often the chosen response out-rewards the "
     "rejected one, and the mean implicit-reward margin.", plot_rewards),
    ("drift", "Where the probability went", "Mean change of log π against the reference per token (± SE), "
     "for chosen, rejected and responses in no pair.", plot_drift),
    ("kl_quality", "Quality against KL", "Each checkpoint's quality against √KL from the reference, with "
     "both Gao et al. (2022) forms fitted to all points and their peaks (★).", plot_kl_quality),
    ("winrates", "Win rates", "Raw and length-controlled win rates against the reference's samples, with "
     "95% CIs (bars nudged apart on the step axis).", plot_winrates),
    ("lengths", "Sample lengths", "Length distributions of each checkpoint's samples against the reference's "
     "(grey).", plot_lengths),
    ("reward_length", "Implicit reward against length", "Held-out pairs at each run's last checkpoint: does "
     "the implicit reward track length?", plot_reward_length),
    ("training", "Training curves", "As logged by the trainer (train solid, eval dashed); for a `dpo-eval loop` "
     "run, global steps continue across rounds and a dotted line marks where each round ends.",
     plot_training_curves),
)


def draw_all(results: dict, tables: Tables) -> tuple[list[Plot], list[str]]:
    """Every plot that has data, and the titles of those that have none."""
    drawn, skipped = [], []
    for key, title, caption, function in PLOTS:
        png = function(results, tables)
        if png is None:
            skipped.append(title)
        else:
            drawn.append(Plot(key, title, caption, png))
    return drawn, skipped
