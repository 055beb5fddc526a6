"""Rule judges used by the tests (importable as `rules:NAME` with tests/judge on sys.path)."""

from __future__ import annotations


def longer_wins(instruction: str, output_a: str, output_b: str) -> str:
    if len(output_a) == len(output_b):
        return "tie"
    return "A" if len(output_a) > len(output_b) else "B"


def always_a(instruction: str, output_a: str, output_b: str) -> str:
    return "A"


def prob_of_first(instruction: str, output_a: str, output_b: str) -> float:
    return 0.8


def broken(instruction: str, output_a: str, output_b: str) -> str:
    raise RuntimeError("verifier crashed")


def gold_answer(instruction: str, output_a: str, output_b: str) -> str:
    """A verifier: the output containing the gold answer after '=' in the instruction wins."""
    gold = instruction.split("=")[-1].strip()
    a, b = gold in output_a, gold in output_b
    return "tie" if a == b else ("A" if a else "B")
