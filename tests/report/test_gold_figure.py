"""The gold quality figure comes from metrics.quality.quality_difference: the same numbers, bit for bit, as
the mean and SE of the per-prompt differences that assemble computed itself before (written out here)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dpo_eval.evaluation.quality import gold_correct, gold_figure, gold_quality, row_quality
from dpo_eval.judge.gold import contains_answer
from dpo_eval.metrics.quality import quality_difference

ANSWERS = {f"q{i}": [str(i)] for i in range(12)}  # q12..q14 have no gold answer


def samples(rng: np.random.Generator, prompts: list[int]) -> pd.DataFrame:
    """1 to 6 samples per prompt (unequal counts), each correct with probability 1/2, rows shuffled."""
    rows = [{"prompt_id": str(p), "prompt": f"q{p}", "output": f"it is {p}" if rng.random() < 0.5 else "no idea"}
            for p in prompts for _ in range(int(rng.integers(1, 7)))]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=int(rng.integers(1 << 30)), ignore_index=True)


def former_figure(mine: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """assemble's own figure before it used quality_difference: per-prompt accuracies aligned by prompt id,
    unshared prompts (NaN after the subtraction) dropped, mean, std(ddof=1) / sqrt(P), None where not > 0."""
    def accuracy(frame: pd.DataFrame) -> pd.Series:
        known = frame[frame["prompt"].isin(ANSWERS)]
        correct = [contains_answer(o, ANSWERS[p]) for o, p in zip(known["output"], known["prompt"])]
        return pd.Series(correct, index=known.index, dtype=float).groupby(known["prompt_id"]).mean()

    diff = (accuracy(mine) - accuracy(reference)).dropna().to_numpy(np.float64)
    se = float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return {"source": "gold accuracy - reference's", "value": float(diff.mean()) if diff.size else None,
            "se": se if math.isfinite(se) and se > 0 else None}


@pytest.mark.parametrize("seed", range(20))
def test_gold_figure_is_the_former_figure_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    mine = samples(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13])  # 8, 9: the checkpoint's only
    reference = samples(rng, [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 14])  # 10, 11: the reference's only
    got = gold_quality(mine, reference, ANSWERS)
    assert got == former_figure(mine, reference)  # ==: identical floats, not approximately equal
    a, b = gold_correct(mine, ANSWERS), gold_correct(reference, ANSWERS)
    direct = quality_difference(a["correct"], a["prompt_id"], b["correct"], b["prompt_id"], source="gold")
    assert (got["value"], got["se"]) == (direct.value, direct.se)
    figure, table = row_quality("c", {"c": pd.DataFrame()}, mine, reference, ANSWERS)
    assert figure == got and table["prompt_id"].tolist() == [str(p) for p in range(8)]
    assert table["quality"].mean() == pytest.approx(got["value"], abs=1e-15)


def test_gold_figure_edges_match_the_former_figure():
    one = pd.DataFrame({"prompt_id": ["1", "1"], "prompt": ["q1", "q1"], "output": ["1", "0"]})
    other = pd.DataFrame({"prompt_id": ["2"], "prompt": ["q2"], "output": ["2"]})
    none_known = pd.DataFrame({"prompt_id": ["13"], "prompt": ["q13"], "output": ["13"]})
    same = pd.concat([one, other], ignore_index=True)
    for mine, reference, expected in [
            (one, one, (0.0, None)),  # one shared prompt: no SE
            (same, same, (0.0, None)),  # every difference 0: SE 0 is null
            (one, other, (None, None)),  # no shared prompt: quality_difference would raise, the figure is null
            (none_known, one, (None, None)), (one, none_known.iloc[:0], (None, None))]:  # no sample with an answer
        got = gold_quality(mine, reference, ANSWERS)
        assert (got["value"], got["se"]) == expected and got == former_figure(mine, reference)


def test_gold_figure_pairs_prompt_ids_by_their_text():
    """The documented difference (gold_figure's docstring): ids 1 and "1" are one prompt for the metrics
    function, two for the per-prompt table. A samples frame's ids are always text, so reports never see it."""
    mine = pd.DataFrame({"prompt_id": [1, 2], "prompt": ["q1", "q2"], "output": ["1", "no"]})
    reference = mine.assign(prompt_id=["1", "2"], output=["no", "no"])
    figure = gold_figure(gold_correct(mine, ANSWERS), gold_correct(reference, ANSWERS))
    assert (figure["value"], figure["se"]) == (0.5, pytest.approx(0.5))  # d = (1, 0): mean 1/2, std 1/sqrt(2) / sqrt(2)
    assert former_figure(mine, reference)["value"] is None
