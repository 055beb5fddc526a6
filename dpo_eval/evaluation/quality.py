"""A checkpoint's quality figure and its per-prompt table, from its judgments or its gold-answer accuracy.

    quality = win rate - 0.5,   se clustered by prompt (metrics.quality.quality_from_preferences)   (LLM or rule judge)
    quality = mean over prompts of (accuracy - reference's accuracy),  se = std / sqrt(n prompts)   (gold:
              metrics.quality.quality_difference, paired by prompt)

where a prompt's accuracy is the share of its samples that contain the gold answer (judge.gold). Each
judged row also gets a per-prompt quality table (quality/{run}/{label}: its mean scored preference - 0.5,
or its accuracy - the reference's), the table the past-peak test pairs (evaluation.fits). A quality SE that
is 0 or undefined is null for that row only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dpo_eval.metrics.quality import quality_difference, quality_from_preferences

JUDGE_SOURCE = "judge win rate - 0.5"
GOLD_SOURCE = "gold accuracy - reference's"


def _positive_or_none(se: float) -> float | None:
    """An SE as results.json holds it: None when it is not a positive finite number."""
    return se if math.isfinite(se) and se > 0 else None


def judge_quality(judgments: pd.DataFrame) -> dict:
    """Win rate - 0.5 over the scored preferences of one checkpoint, its SE clustered by prompt
    (metrics.quality.quality_from_preferences: a prompt's judgments are not independent)."""
    if not judgments["preference"].notna().any():
        return {"source": JUDGE_SOURCE, "value": None, "se": None}
    found = quality_from_preferences(judgments["preference"], judgments["prompt_id"])
    return {"source": JUDGE_SOURCE, "value": found.value, "se": _positive_or_none(found.se)}


def judge_prompt_quality(judgments: pd.DataFrame) -> pd.Series:
    """Per prompt id: the mean of its scored preferences - 0.5 (prompts with none scored left out)."""
    scored = judgments[judgments["preference"].notna()]
    return (scored["preference"].astype(np.float64).groupby(scored["prompt_id"].astype(str)).mean() - 0.5).rename(
        "quality")


def gold_correct(samples: pd.DataFrame, answers: dict[str, list[str]]) -> pd.DataFrame:
    """prompt_id, correct (1.0 when the sample contains its prompt's gold answer, else 0.0): one row per sample
    of the prompts with an answer, in the samples' order."""
    from dpo_eval.judge.gold import contains_answer

    known = samples[samples["prompt"].isin(answers)]
    correct = [contains_answer(o, answers[p]) for o, p in zip(known["output"], known["prompt"])]
    return pd.DataFrame({"prompt_id": known["prompt_id"].to_numpy(), "correct": np.asarray(correct, np.float64)},
                        index=known.index)


def gold_accuracy(samples: pd.DataFrame, answers: dict[str, list[str]]) -> pd.Series:
    """Per prompt id: the share of its samples containing the gold answer (prompts with an answer only)."""
    return _accuracy(gold_correct(samples, answers))


def _accuracy(correct: pd.DataFrame) -> pd.Series:
    return correct["correct"].groupby(correct["prompt_id"]).mean()


def gold_prompt_quality(samples: pd.DataFrame, ref_samples: pd.DataFrame, answers: dict[str, list[str]]) -> pd.Series:
    """Per prompt id both have: accuracy - the reference's accuracy."""
    return _prompt_difference(gold_correct(samples, answers), gold_correct(ref_samples, answers))


def _prompt_difference(mine: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    diff = (_accuracy(mine) - _accuracy(reference)).dropna()
    return diff.set_axis(diff.index.astype(str)).rename("quality")


def gold_quality(samples: pd.DataFrame, ref_samples: pd.DataFrame, answers: dict[str, list[str]]) -> dict:
    """Mean over prompts of accuracy - the reference's accuracy, and its SE (gold_figure)."""
    return gold_figure(gold_correct(samples, answers), gold_correct(ref_samples, answers))


def gold_figure(mine: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """The gold quality figure of two gold_correct frames: metrics.quality.quality_difference over the prompts
    both have (value = mean_p d_p, se = std(d, ddof=1) / sqrt(P), d_p = a_p - b_p the per-prompt accuracies);
    value None when no prompt is shared, se None when it is not a positive finite number (P < 2, all d_p alike).

    The same numbers as the mean and SE of gold_prompt_quality's table, bit for bit, for the string prompt ids
    a samples frame holds (tests/report/test_gold_figure.py). For other ids, quality_difference pairs prompts
    by their text (str(id)) where the table pairs by the ids themselves: 1 and "1" are one prompt here, two
    there, and integer ids are averaged in text order ("10" before "2"), which may change the mean's last bit.
    """
    shared = set(mine["prompt_id"].astype(str)) & set(reference["prompt_id"].astype(str))
    if not shared:  # quality_difference raises here; results.json holds a null figure
        return {"source": GOLD_SOURCE, "value": None, "se": None}
    found = quality_difference(mine["correct"], mine["prompt_id"], reference["correct"], reference["prompt_id"],
                               source="gold")
    return {"source": GOLD_SOURCE, "value": found.value, "se": _positive_or_none(found.se)}


def prompt_quality_table(per_prompt: pd.Series) -> pd.DataFrame:
    """The quality/{run}/{label} table: prompt_id, quality (the per-prompt figure the past-peak test pairs)."""
    return pd.DataFrame({"prompt_id": per_prompt.index.astype(str), "quality": per_prompt.to_numpy(np.float64)})


def row_quality(label: str, judged: dict[str, pd.DataFrame], samples: pd.DataFrame | None,
                ref_samples: pd.DataFrame | None,
                answers: dict[str, list[str]] | None) -> tuple[dict | None, pd.DataFrame | None]:
    """A row's quality figure and its per-prompt table (None, None without judgments): with gold answers,
    its accuracy against the reference's samples; else its judgments' win rate - 0.5."""
    if label not in judged:
        return None, None
    if answers is not None:
        mine, reference = gold_correct(samples, answers), gold_correct(ref_samples, answers)
        return gold_figure(mine, reference), prompt_quality_table(_prompt_difference(mine, reference))
    return judge_quality(judged[label]), prompt_quality_table(judge_prompt_quality(judged[label]))


def gold_answers(judge: str) -> dict[str, list[str]] | None:
    """prompt -> gold answer tokens when the judge is gold:ANSWERS, else None."""
    if not judge.startswith("gold:"):
        return None
    from dpo_eval.judge.gold import read_gold_answers

    return read_gold_answers(judge.partition(":")[2])
