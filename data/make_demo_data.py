"""Make the demo's verifiable preference task under data/demo/ (deterministic: seed below).

Task: short questions with one checkable answer (arithmetic, unit conversions, calendar order,
capitals), each ending in an instruction on the format ("Reply with the number only.").

- chosen: the correct answer alone ("21", "Canberra").
- rejected, one of two kinds (the pair's `subset`):
  `wrong_short`: a plausible wrong answer alone ("22", "Sydney");
  `wrong_long`: a wordy answer in the style SmolLM2-135M-Instruct itself writes, reaching a wrong
  answer ("To convert 7 kilograms to grams, you multiply 7 by 100. So ... 700 grams.").
  No rejected response contains the gold answer (checked with the gold judge's own matcher).

Split by question (each question is in exactly one file, so held-out means unseen questions):
- train.jsonl: training pairs;  heldout.jsonl: held-out pairs (`eval_data` of train.yaml);
- prompts.jsonl: evaluation prompts (`prompt_id`, `prompt`) for `dpo-eval generate`;
- answers.jsonl: `prompt`, `answer` for every held-out and evaluation prompt (`--judge gold:...`).

Run: python data/make_demo_data.py  (writes data/demo/; same files every time).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from dpo_eval.judge.gold import answer_tokens, contains_answer

SEED = 20261128
N_TRAIN, N_HELDOUT, N_PROMPTS = 320, 64, 32
OUT = Path(__file__).resolve().parent / "demo"

NUMBER_ONLY = "Reply with the number only."
ONE_WORD = "Reply with one word."
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
# country -> (capital, a tempting wrong answer: usually the largest or best-known city)
CAPITALS = {
    "France": ("Paris", "Lyon"), "Japan": ("Tokyo", "Osaka"), "Canada": ("Ottawa", "Toronto"),
    "Australia": ("Canberra", "Sydney"), "Italy": ("Rome", "Milan"), "Spain": ("Madrid", "Barcelona"),
    "Germany": ("Berlin", "Munich"), "Turkey": ("Ankara", "Istanbul"), "Brazil": ("Brasilia", "Rio"),
    "Egypt": ("Cairo", "Alexandria"), "Russia": ("Moscow", "Petersburg"), "China": ("Beijing", "Shanghai"),
    "India": ("Delhi", "Mumbai"), "Kenya": ("Nairobi", "Mombasa"), "Peru": ("Lima", "Cusco"),
    "Poland": ("Warsaw", "Krakow"), "Greece": ("Athens", "Thessaloniki"), "Norway": ("Oslo", "Bergen"),
    "Sweden": ("Stockholm", "Gothenburg"), "Portugal": ("Lisbon", "Porto"), "Austria": ("Vienna", "Salzburg"),
    "Ireland": ("Dublin", "Cork"), "Morocco": ("Rabat", "Casablanca"), "Vietnam": ("Hanoi", "Saigon"),
    "Switzerland": ("Bern", "Zurich"), "Nigeria": ("Abuja", "Lagos"), "Chile": ("Santiago", "Valparaiso"),
    "Cuba": ("Havana", "Santiago"), "Finland": ("Helsinki", "Turku"), "Denmark": ("Copenhagen", "Aarhus"),
    "Hungary": ("Budapest", "Debrecen"), "Scotland": ("Edinburgh", "Glasgow"),
}
# unit conversion: (from unit, to unit, factor, a wrong factor a careless answer uses)
CONVERSIONS = [("meters", "centimeters", 100, 10), ("kilograms", "grams", 1000, 100),
               ("hours", "minutes", 60, 100), ("minutes", "seconds", 60, 100),
               ("days", "hours", 24, 12), ("kilometers", "meters", 1000, 100),
               ("liters", "milliliters", 1000, 100), ("weeks", "days", 7, 5)]

Question = tuple[str, str, str, list[str]]  # (key, question text, answer, wrong answers)


def _near_misses(rng: random.Random, answer: int) -> list[str]:
    """Wrong numbers a careless solver gives: off by one or two, or by ten."""
    deltas = rng.sample([-10, -2, -1, 1, 2, 10], 3)
    return [str(answer + d) for d in deltas if answer + d >= 0]


def arithmetic_questions(rng: random.Random) -> list[Question]:
    questions = []
    for a in range(2, 40):
        for b in range(2, 40):
            questions.append((f"add {a} {b}", f"What is {a} + {b}?", str(a + b), _near_misses(rng, a + b)))
            if a > b:
                questions.append((f"sub {a} {b}", f"What is {a} minus {b}?", str(a - b),
                                  _near_misses(rng, a - b)))
            if a <= 12 and b <= 12:
                questions.append((f"mul {a} {b}", f"What is {a} times {b}?", str(a * b),
                                  _near_misses(rng, a * b)))
    by_op = {op: [q for q in questions if q[0].startswith(op)] for op in ("add", "sub", "mul")}
    # as many sums and differences as products (about 110), so no operation dominates
    return by_op["mul"] + rng.sample(by_op["add"], 120) + rng.sample(by_op["sub"], 120)


def conversion_questions(rng: random.Random) -> list[Question]:
    questions = []
    for src, dst, factor, wrong in CONVERSIONS:
        for n in range(2, 13):
            answers = [str(n * wrong), str(n * factor + factor), str(n + factor)]
            questions.append((f"conv {src} {n}", f"How many {dst} are in {n} {src}?", str(n * factor), answers))
    return questions


def calendar_questions(rng: random.Random) -> list[Question]:
    questions = []
    for kind, names in (("day", DAYS), ("month", MONTHS)):
        for i, name in enumerate(names):
            after, before = names[(i + 1) % len(names)], names[i - 1]
            others = [n for n in names if n not in (name, after, before)]
            questions.append((f"{kind} after {name}", f"Which {kind} comes after {name}?", after,
                              [before, *rng.sample(others, 2)]))
            questions.append((f"{kind} before {name}", f"Which {kind} comes before {name}?", before,
                              [after, *rng.sample(others, 2)]))
    return questions


def capital_questions(rng: random.Random) -> list[Question]:
    cities = [capital for capital, _ in CAPITALS.values()]
    return [(f"capital {country}", f"What is the capital of {country}?", capital,
             [decoy, *rng.sample([c for c in cities if c != capital], 2)])
            for country, (capital, decoy) in CAPITALS.items()]


def wordy_wrong(rng: random.Random, key: str, question: str, wrong: str) -> str:
    """A rambling answer that reaches `wrong`, in the reference model's own style."""
    kind, *rest = key.split()
    if kind in ("add", "sub", "mul"):
        a, b = rest
        op = {"add": "+", "sub": "-", "mul": "*"}[kind]
        return rng.choice([
            f"To solve this problem, we need to {'add' if kind == 'add' else 'calculate'} the two numbers. "
            f"{a} {op} {b} gives us {wrong}, so the answer is {wrong}.",
            f"Let's work it out step by step. We start with {a} and apply the operation with {b}. "
            f"The result is {wrong}.",
            f"{a} {op} {b} = {wrong}\n\nThe answer is {wrong}. I hope this helps!",
        ])
    if kind == "conv":
        words = question.split()
        return rng.choice([
            f"To convert {words[-2]} {words[-1].rstrip('?')} to {words[2]}, you multiply by the conversion "
            f"factor. So, {words[-2]} {words[-1].rstrip('?')} is equal to {wrong} {words[2]}.",
            f"Converting units is easy once you know the factor. In this case the answer is {wrong} {words[2]}.",
        ])
    if kind == "capital":
        return rng.choice([
            f"The capital of {rest[0]} is {wrong}, which is one of the largest and best-known cities in the country.",
            f"{wrong} is the capital. It is famous for its history, culture and beautiful architecture.",
        ])
    return rng.choice([
        f"The {kind} you are looking for is {wrong}. It is a common question about the order of the calendar.",
        f"Great question! When we think about the order of the {kind}s, the answer is {wrong}.",
    ])


def make_pair(rng: random.Random, question: Question) -> dict:
    key, text, answer, wrongs = question
    instruction = NUMBER_ONLY if answer.isdigit() else ONE_WORD
    prompt = f"{text} {instruction}"
    wrong = rng.choice(wrongs)
    subset = rng.choice(["wrong_short", "wrong_long"])
    rejected = wrong if subset == "wrong_short" else wordy_wrong(rng, key, text, wrong)
    gold = answer_tokens(answer)
    if contains_answer(rejected, gold) or not contains_answer(answer, gold):
        raise AssertionError(f"rejected for {key!r} contains the gold answer: {rejected!r}")
    return {"id": key.replace(" ", "-"), "subset": subset, "prompt": prompt, "chosen": answer,
            "rejected": rejected, "answer": answer}


def pick(rng: random.Random, families: dict[str, list[Question]], n: int, share: dict[str, float]) -> list[Question]:
    """Draw n questions without replacement, family by family in the given shares (capped by what is
    left; the last family fills up to n); removes them from `families`."""
    chosen: list[Question] = []
    names = list(share)
    for i, name in enumerate(names):
        pool = families[name]
        count = n - len(chosen) if i == len(names) - 1 else min(round(n * share[name]), len(pool))
        rng.shuffle(pool)
        chosen += pool[:count]
        del pool[:count]
    rng.shuffle(chosen)
    return chosen


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main() -> None:
    rng = random.Random(SEED)
    builders: dict[str, Callable[[random.Random], list[Question]]] = {
        "arithmetic": arithmetic_questions, "conversion": conversion_questions,
        "calendar": calendar_questions, "capital": capital_questions}
    # a question whose text contains its answer ("38 minus 19") would credit an output that only
    # echoes the question, under the gold judge's contains-matching: leave those out
    families = {name: [q for q in build(rng) if not contains_answer(q[1], answer_tokens(q[2]))]
                for name, build in builders.items()}
    share = {"conversion": 0.25, "calendar": 0.2, "capital": 0.15, "arithmetic": 0.4}
    # held-out and eval first, so the small families (calendar: 38, capitals: 32) are not used up
    heldout = [make_pair(rng, q) for q in pick(rng, families, N_HELDOUT, share)]
    prompt_questions = pick(rng, families, N_PROMPTS, share)
    train = [make_pair(rng, q) for q in pick(rng, families, N_TRAIN, share)]
    OUT.mkdir(exist_ok=True)
    strip = [{k: v for k, v in pair.items() if k != "answer"} for pair in train]
    write_jsonl(OUT / "train.jsonl", strip)
    write_jsonl(OUT / "heldout.jsonl", [{k: v for k, v in p.items() if k != "answer"} for p in heldout])
    prompts = [{"prompt_id": key.replace(" ", "-"),
                "prompt": f"{text} {NUMBER_ONLY if answer.isdigit() else ONE_WORD}", "answer": answer}
               for key, text, answer, _ in prompt_questions]
    write_jsonl(OUT / "prompts.jsonl", [{"prompt_id": p["prompt_id"], "prompt": p["prompt"]} for p in prompts])
    write_jsonl(OUT / "answers.jsonl", [{"prompt": p["prompt"], "answer": p["answer"]} for p in heldout + prompts])
    print(f"wrote {len(train)} train pairs, {len(heldout)} held-out pairs, {len(prompts)} prompts to {OUT}")


if __name__ == "__main__":
    main()
