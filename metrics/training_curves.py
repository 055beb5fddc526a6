"""Training curves from logs already read from disk: one tidy frame, and where logps/chosen starts falling.

The caller reads the files (this module does no I/O) and passes:
- `log_history` of an HF `trainer_state.json` (a list of dicts; this project's trainer and TRL write
  the same names: loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
  logps/chosen, logps/rejected, learning_rate, grad_norm, and eval_-prefixed ones for held-out data);
- the rows of LLaMA-Factory's `trainer_log.jsonl` (its LogCallback writes current_steps, total_steps,
  loss, eval_loss, predict_loss, reward, accuracy (= rewards/accuracies), lr, epoch, percentage,
  elapsed_time, remaining_time, and optionally throughput, total_tokens, vram_*).

- the text lines of torchtune's DiskLogger files (``log_<time>.txt``: ``Step N | name:value name:value``);
  its DPO recipes log loss, lr, rewards/*, log_probs/* (named logps/* here, as TRL does), logits/*.

Tidy frame: CURVE_COLUMNS = step (int), metric (str, without the eval_ prefix), value (float; NaN kept
when one was logged), split ("train" or "eval"); sorted by split, metric, step; a (step, metric, split)
logged twice keeps its last value.

One source per point: a run can carry the same figures twice (LLaMA-Factory copies each log_history
entry into trainer_log.jsonl). ``merge_sources`` keeps, for each (step, metric, split), the point of the
first source that has it, and names that source in a ``source`` column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

CURVE_COLUMNS = ("step", "metric", "value", "split")
HF_SKIPPED = frozenset({"step", "epoch", "round", "total_flos", "train_loss", "train_runtime",
                        "train_samples_per_second", "train_steps_per_second"})
"""Coordinates (`round`: the record's round in a `dpo-eval loop` OUTPUT_DIR's merged log) and the end-of-run
summary that HF's Trainer appends: not per-step metrics."""
TIMING_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")
"""Evaluation timing keys (eval_runtime, ...): skipped."""
LLAMAFACTORY_FIELDS = {"loss": ("loss", "train"), "eval_loss": ("loss", "eval"),
                       "accuracy": ("rewards/accuracies", "train"), "reward": ("reward", "train"),
                       "lr": ("learning_rate", "train")}
"""trainer_log.jsonl field -> (metric, split). Every other field (progress, timing, epoch, predict_loss) is
skipped. LLaMA-Factory copies `accuracy` from the un-prefixed rewards/accuracies only: a train figure."""


@dataclass(frozen=True)
class Decline:
    """Where a curve starts falling for good (see find_decline for the rule)."""

    peak_step: int
    """Last step at which the smoothed curve reached the maximum it falls from: the fall starts after it."""
    peak_value: float
    """Smoothed value there."""
    confirmed_step: int
    """First step from which the smoothed curve stays more than `threshold` below that maximum."""
    confirmed_value: float
    threshold: float
    """Drop used (given, or noise_k times the estimated noise)."""
    window: int


def hf_log_history_frame(log_history: Sequence[Mapping]) -> pd.DataFrame:
    """Tidy frame of an HF trainer_state.json's log_history: numeric keys other than HF_SKIPPED and timing
    keys; eval_<name> becomes metric <name> with split "eval", every other key split "train"."""
    rows = []
    for i, record in enumerate(log_history):
        step = _step(record, "step", f"log_history[{i}]")
        for key, value in record.items():
            if key in HF_SKIPPED or key.endswith(TIMING_SUFFIXES) or not _is_number(value):
                continue
            metric, split = (key[len("eval_"):], "eval") if key.startswith("eval_") else (key, "train")
            rows.append((step, metric, float(value), split))
    return _tidy(rows)


def llamafactory_log_frame(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Tidy frame of LLaMA-Factory trainer_log.jsonl rows (parsed JSON objects) via LLAMAFACTORY_FIELDS."""
    out = []
    for i, row in enumerate(rows):
        step = _step(row, "current_steps", f"trainer_log.jsonl row {i + 1}")
        for field, (metric, split) in LLAMAFACTORY_FIELDS.items():
            if _is_number(row.get(field)):
                out.append((step, metric, float(row[field]), split))
    return _tidy(out)


TORCHTUNE_LINE = re.compile(r"^Step (\d+) \| (.*)$")
TORCHTUNE_RENAMED = {"log_probs/": "logps/", "lr": "learning_rate"}
"""torchtune metric name (prefix) -> the name TRL and this project use."""


def torchtune_log_frame(lines: Iterable[str]) -> pd.DataFrame:
    """Tidy frame of torchtune DiskLogger lines ``Step N | name:value ...`` (split "train"; other lines
    skipped); names per TORCHTUNE_RENAMED; a value that is not a number is skipped."""
    out = []
    for line in lines:
        match = TORCHTUNE_LINE.match(line.strip())
        if match is None:
            continue
        for item in match.group(2).split():
            name, _, text = item.rpartition(":")
            try:
                value = float(text)
            except ValueError:
                continue
            if name:
                out.append((int(match.group(1)), _torchtune_name(name), value, "train"))
    return _tidy(out)


def _torchtune_name(name: str) -> str:
    for old, new in TORCHTUNE_RENAMED.items():
        if name == old or (old.endswith("/") and name.startswith(old)):
            return new + name[len(old):] if old.endswith("/") else new
    return name


def merge_sources(frames: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """One point per (step, metric, split) from several tidy frames, in the given order of preference.

    ``frames``: (source name, tidy frame) pairs. A point is taken from the first frame that has its
    (step, metric, split); later frames only add points the earlier ones lack. Result: CURVE_COLUMNS plus
    ``source``, sorted by split, metric, step.
    """
    parts = [frame.assign(source=name) for name, frame in frames if len(frame)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             (("step", "int64"), ("metric", "object"), ("value", "float64"),
                              ("split", "object"), ("source", "object"))})
    merged = pd.concat(parts, ignore_index=True).drop_duplicates(subset=["step", "metric", "split"], keep="first")
    return merged.sort_values(["split", "metric", "step"], kind="stable").reset_index(drop=True)


def find_decline(steps: ArrayLike, values: ArrayLike, *, window: int = 5, threshold: float | None = None,
                 noise_k: float = 3.0, min_points: int = 3) -> Decline | None:
    """Where the curve (values at steps) starts falling for good; None if it never does, or not yet.

    Rule. Points with a NaN are dropped and the rest sorted by step (a repeated step keeps its last value).
    1. s = centred rolling median of the values over `window` points (fewer at the two ends).
    2. M_t = max(s_0..s_t), the running maximum; gap_t = M_t - s_t.
    3. threshold, if not given: noise_k * sigma, sigma = 1.4826 * MAD(first differences) / sqrt(2)
       (the noise SD of one point, robust to outliers and to a steady trend).
    4. confirmed = the first t with gap_u > threshold for every u >= t, provided at least `min_points`
       points lie in [t, end] (a fall seen only in the last few points is not yet confirmed).
    5. peak = the last index before confirmed where s equals M_confirmed.
    """
    if window < 1 or min_points < 1:
        raise ValueError(f"window and min_points must be >= 1, got {window} and {min_points}")
    x, y = _clean_curve(steps, values)
    if x.size < 2:
        return None
    smooth = pd.Series(y).rolling(window, center=True, min_periods=1).median().to_numpy()
    limit = noise_k * noise_sd(y) if threshold is None else float(threshold)
    if not limit >= 0:
        raise ValueError(f"threshold must be >= 0, got {limit}")
    running_max = np.maximum.accumulate(smooth)
    below = running_max - smooth > limit
    not_below = np.flatnonzero(~below)
    start = int(not_below[-1]) + 1 if not_below.size else 0
    if x.size - start < min_points:
        return None
    peak = int(np.flatnonzero(smooth[:start] == running_max[start])[-1])
    return Decline(peak_step=int(x[peak]), peak_value=float(smooth[peak]), confirmed_step=int(x[start]),
                   confirmed_value=float(smooth[start]), threshold=limit, window=window)


def find_chosen_logp_decline(curves: pd.DataFrame, *, split: str = "train", metric: str = "logps/chosen",
                             **kwargs) -> Decline | None:
    """find_decline on one metric of a tidy frame (default: the policy's chosen log-probs in training)."""
    rows = curves[(curves["metric"] == metric) & (curves["split"] == split)]
    if rows.empty:
        raise ValueError(f"no {metric!r} rows with split {split!r} in the curves; logged metrics: "
                         f"{sorted(curves['metric'].unique())} (LLaMA-Factory's trainer_log.jsonl has no "
                         "log-probs: read its trainer_state.json instead)")
    return find_decline(rows["step"].to_numpy(), rows["value"].to_numpy(), **kwargs)


def noise_sd(values: ArrayLike) -> float:
    """One point's noise SD from first differences d: 1.4826 * median|d - median(d)| / sqrt(2); 0 if no d."""
    d = np.diff(np.asarray(values, dtype=np.float64))
    if d.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def _clean_curve(steps: ArrayLike, values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"steps {x.shape} and values {y.shape} must be 1-D of one length")
    keep = ~(np.isnan(x) | np.isnan(y))
    curve = pd.Series(y[keep], index=x[keep]).groupby(level=0).last().sort_index()
    return curve.index.to_numpy(np.float64), curve.to_numpy(np.float64)


def _step(record: Mapping, key: str, where: str) -> int:
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} is {type(record).__name__}, expected a JSON object")
    value = record.get(key)
    if not _is_number(value) or not np.isfinite(value) or float(value) != int(value):
        raise ValueError(f"{where} has no integer {key!r} (got {value!r}): is this the right log file?")
    return int(value)


def _is_number(value) -> bool:
    is_bool = isinstance(value, bool | np.bool_)
    return isinstance(value, int | float | np.integer | np.floating) and not is_bool


def _tidy(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    frame = frame.drop_duplicates(subset=["step", "metric", "split"], keep="last")
    frame = frame.sort_values(["split", "metric", "step"], kind="stable").reset_index(drop=True)
    return frame.astype({"step": "int64", "metric": "object", "value": "float64", "split": "object"})
