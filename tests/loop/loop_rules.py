"""Pointwise rules for the loop tests (importable as `loop_rules:NAME` with tests/loop on sys.path)."""

from __future__ import annotations

GOOD = ("good", "yes", "sure", "here", "you", "go")
BAD = ("bad", "no", "sorry", "not", "can", "help")


def good_minus_bad(prompt: str, output: str) -> float:
    """Words from GOOD minus words from BAD: the synthetic task of tests/conftest.py as a reward."""
    words = output.split()
    return float(sum(w in GOOD for w in words) - sum(w in BAD for w in words))


def constant(prompt: str, output: str) -> float:
    return 1.0


def refuses(prompt: str, output: str) -> str:
    return "no idea"


def longer_wins(instruction: str, output_a: str, output_b: str) -> str:
    """A pairwise judge rule: the longer output wins (equal length: a tie)."""
    if len(output_a) == len(output_b):
        return "tie"
    return "A" if len(output_a) > len(output_b) else "B"


def first_shown(instruction: str, output_a: str, output_b: str) -> float:
    """A position-biased judge: 0.8 for whichever output is shown first."""
    return 0.8


def pairwise_broken(instruction: str, output_a: str, output_b: str) -> str:
    raise RuntimeError("verifier crashed")
