"""Pointwise rules for the loop tests (importable as `rules:NAME` with tests/loop on sys.path)."""

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
