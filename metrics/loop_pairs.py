"""Pair rules of `dpo-eval loop`: from K labelled samples of one prompt, the (chosen, rejected) pairs.

Scores are one float per sample, or None for a sample its labeller could not score (excluded, never
coerced). Every rule returns `PromptPairs`: the pairs as (chosen index, rejected index) into the
prompt's samples, and how many candidate pairs were dropped as ties. A prompt with no pair left is
skipped by the caller and counted.

| rule         | chosen                      | rejected                                   | source                         |
|--------------|-----------------------------|--------------------------------------------|--------------------------------|
| `max_min`    | highest score (first such)  | lowest score (first such)                  | Xiong et al. 2024 (RLHFlow)    |
| `max_random` | highest score (first such)  | one other scored sample, drawn uniformly   | Xiong et al. 2024; Llama 3     |
| `rso`        | statistical rejection sampling of `accept` samples, then first-round or tournament ranking | | Liu et al. 2023 |

A pair whose two scores are equal is a tie: dropped and counted (`max_min` on an all-equal prompt,
`max_random` drawing a sample that ties the best).

RSO (Liu et al. 2023, "Statistical Rejection Sampling Improves Preference Optimization",
arXiv:2309.06657, Algorithm 1): repeat passes over the remaining candidates, in their order; in a
pass, with r_max the highest reward among the candidates remaining at the pass's start, candidate y
is accepted when a fresh u ~ U(0, 1) satisfies

    u < exp((r(y) - r_max) / beta)

and is then removed (sampling without replacement); stop once `accept` are taken. beta -> 0 accepts
only the best remaining each pass (best-of-K, in reward order); beta -> infinity accepts every
candidate in turn (plain sampling). The accepted list, in acceptance order, is then paired:
first-round ranking pairs (1, 2), (3, 4), ...; tournament ranking plays those first-round games,
then the winners of each round against each other (a bye for an odd one out, which advances), until
one is left: the paper's n-1 comparisons for n = 2^k. A tied game is dropped and counted and its
first player advances.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

PAIR_RULES = ("max_min", "max_random", "rso")
RSO_RANKINGS = ("first_round", "tournament")


@dataclass(frozen=True)
class PromptPairs:
    """The pairs formed from one prompt's samples."""

    pairs: tuple[tuple[int, int], ...]
    """(chosen index, rejected index) into the prompt's samples; chosen scores strictly higher."""
    n_ties: int
    """Candidate pairs dropped because both scores were equal."""


def _scored(scores: Sequence[float | None]) -> list[int]:
    return [i for i, s in enumerate(scores) if s is not None and not math.isnan(s)]


def max_min_pairs(scores: Sequence[float | None]) -> PromptPairs:
    """The best against the worst scored sample (first occurrence of each); equal: one tie, no pair."""
    scored = _scored(scores)
    if len(scored) < 2:
        return PromptPairs((), 0)
    best = max(scored, key=lambda i: (scores[i], -i))
    worst = min(scored, key=lambda i: (scores[i], i))
    if scores[best] == scores[worst]:
        return PromptPairs((), 1)
    return PromptPairs(((best, worst),), 0)


def max_random_pairs(scores: Sequence[float | None], rng: np.random.Generator) -> PromptPairs:
    """The best scored sample (first occurrence) against one other scored sample drawn uniformly;
    a draw that ties the best is one tie, no pair."""
    scored = _scored(scores)
    if len(scored) < 2:
        return PromptPairs((), 0)
    best = max(scored, key=lambda i: (scores[i], -i))
    others = [i for i in scored if i != best]
    other = others[int(rng.integers(len(others)))]
    if scores[other] == scores[best]:
        return PromptPairs((), 1)
    return PromptPairs(((best, other),), 0)


def rso_accept(rewards: Sequence[float], beta: float, accept: int, uniform: Callable[[], float]) -> list[int]:
    """Indices accepted by statistical rejection sampling (module docstring), in acceptance order.

    `uniform()` gives the next u ~ U(0, 1) (one per candidate visit); `accept` is capped at
    len(rewards). beta must be positive.
    """
    if not beta > 0:
        raise ValueError(f"rso beta must be positive, got {beta}")
    remaining = list(range(len(rewards)))
    accepted: list[int] = []
    wanted = min(accept, len(rewards))
    while len(accepted) < wanted:
        r_max = max(rewards[i] for i in remaining)
        taken = []
        for i in remaining:
            if uniform() < math.exp((rewards[i] - r_max) / beta):
                accepted.append(i)
                taken.append(i)
                if len(accepted) == wanted:
                    break
        remaining = [i for i in remaining if i not in taken]
    return accepted


def _game(a: int, b: int, scores: Sequence[float]) -> tuple[int, tuple[int, int] | None]:
    """(winner, pair or None for a tie); a tie advances the first player."""
    if scores[a] == scores[b]:
        return a, None
    return (a, (a, b)) if scores[a] > scores[b] else (b, (b, a))


def rank_pairs(order: Sequence[int], scores: Sequence[float], ranking: str) -> PromptPairs:
    """Pairs from the accepted samples `order` by first-round or tournament ranking (module docstring)."""
    if ranking not in RSO_RANKINGS:
        raise ValueError(f"ranking must be one of {RSO_RANKINGS}, got {ranking!r}")
    pairs: list[tuple[int, int]] = []
    ties = 0
    players = list(order)
    while len(players) > 1:
        winners = []
        for k in range(0, len(players) - 1, 2):
            winner, pair = _game(players[k], players[k + 1], scores)
            winners.append(winner)
            if pair is None:
                ties += 1
            else:
                pairs.append(pair)
        if len(players) % 2:
            winners.append(players[-1])
        if ranking == "first_round":
            break
        players = winners
    return PromptPairs(tuple(pairs), ties)


def rso_pairs(scores: Sequence[float | None], beta: float, accept: int, ranking: str,
              rng: np.random.Generator) -> PromptPairs:
    """RSO on the scored samples: rejection-sample `accept` of them with u drawn from rng, then rank."""
    scored = _scored(scores)
    if len(scored) < 2:
        return PromptPairs((), 0)
    rewards = [float(scores[i]) for i in scored]
    chosen = rso_accept(rewards, beta, accept, lambda: float(rng.random()))
    ranked = rank_pairs(chosen, rewards, ranking)
    return PromptPairs(tuple((scored[a], scored[b]) for a, b in ranked.pairs), ranked.n_ties)
