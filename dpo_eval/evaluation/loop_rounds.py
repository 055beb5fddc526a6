"""A `dpo-eval loop` OUTPUT_DIR in the report: each checkpoint's round, the round ends, a per-round section.

A run is a loop when its manifest has a `loop` entry (dpo_eval.loop.view writes it) and its folder holds
loop.json. From loop.json, per finished round R (in order):

    first_step, last_step    the round's global steps: offset_R + 1 .. offset_R + its final step, with
                             offset_R the sum of the earlier rounds' final steps (dpo_eval.loop.view)
    counts                   the round's counts as the loop wrote them (prompts, samples, unscored, ties,
                             skipped_prompts, pairs, mean_chosen_label, mean_rejected_label, ...)
    labeller, label_sources  the loop's labeller setting and the sources its pairs' labels name
    agreement                with --judge, unless the labeller is the judge itself or the loop is online: the report's judge on the
                             round's training pairs (chosen vs rejected, judged as every other judge call of the
                             report: its mode, both orders in verdict mode), summarised by
                             metrics.label_agreement (share preferring the loop's chosen response, ties and
                             unscored apart, 95% CI clustered by prompt); else null with agreement_reason

The pairs are judged into the run store (kind `agreement`, keyed by the pairs file's sha256 and the
judge's identity), so a rerun judges nothing again. A checkpoint's round is the round whose global steps
hold its step; the reference row (step 0) has none. An `online: true` loop (OAIF) is one run with one
entry in loop.json: runs[].loop says `online`, its counts are the steps' sums, and its checkpoints have no round.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_eval.evaluation.discover import Run, read_json_file
from dpo_eval.evaluation.store import path_sha256
from dpo_eval.jsonio import write_jsonl
from dpo_eval.metrics.label_agreement import label_agreement

LOOP_FILE = "loop.json"
"""dpo_eval.loop.run.LOOP_FILE, named here so the report does not import the loop (and its trainer)."""
AGREEMENT = "agreement"
"""The run-store kind (and Paths slot) of a round's judged pairs."""
PAIRS_FILE = Path("pairs") / "pairs.jsonl"
NO_JUDGE = "no judge: add --judge to measure the labeller's agreement with it"
SAME_JUDGE = "the loop's labeller is the report's judge: its agreement with itself measures nothing"
ONLINE_NO_PAIRS = ("online (OAIF): each step trains on its pairs as sampled and saves only their counts "
                   "(online/steps/step-T.json), so the judge's agreement with the labels cannot be measured")


def round_label(round_index: int) -> str:
    """The Paths label of a round's agreement artifact."""
    return f"round-{round_index}"


def read_loop(run: Run) -> dict | None:
    """The run's loop.json when it is a loop OUTPUT_DIR (manifest `loop` entry and loop.json), else None."""
    if not (run.manifest or {}).get("loop") or not (run.path / LOOP_FILE).is_file():
        return None
    record = read_json_file(run.path / LOOP_FILE, "loop record", "restore it or rerun `dpo-eval loop`")
    return record if isinstance(record, dict) and record.get("rounds") else None


def _final_step(entry: dict) -> int:
    return int(Path(entry["final_checkpoint"]).name.removeprefix("checkpoint-"))


def round_ends(record: dict) -> list[int]:
    """The global step at which each finished round ends, in round order."""
    ends, total = [], 0
    for entry in record["rounds"]:
        total += _final_step(entry)
        ends.append(total)
    return ends


def checkpoint_round(step: int, ends: list[int]) -> int | None:
    """The round (1-based) whose global steps hold `step`; None for step 0 (the reference) or past the last."""
    if step <= 0:
        return None
    return next((r for r, end in enumerate(ends, start=1) if step <= end), None)


def pairs_path(run: Run, entry: dict) -> Path | None:
    """The round's pairs.jsonl: under the run folder (round-R/), else under loop.json's run_dir; None if gone."""
    for folder in (run.path / f"round-{entry['round']}", Path(entry.get("run_dir", ""))):
        if (folder / PAIRS_FILE).is_file():
            return folder / PAIRS_FILE
    return None


def agreement_skip_reason(record: dict, judge: dict | None) -> str | None:
    """Why a loop's labeller agreement is not measured (no judge, the labeller is the judge), else None."""
    if judge is None:
        return NO_JUDGE
    if (record.get("config") or {}).get("labeller") == judge.get("spec"):
        return SAME_JUDGE
    return None


def agreement_parts(pairs: Path, judge: dict) -> dict:
    return {"pairs_sha256": path_sha256(pairs), "judge": judge}


def _text(response: object) -> str:
    """A pairs-file response as text: the string, or the last message's content after a chat prompt."""
    if isinstance(response, list):
        return str(response[-1].get("content", "")) if response else ""
    return str(response)


def write_pair_sides(pairs: Path, work: Path) -> tuple[Path, Path]:
    """The pairs as two generations files the judge reads (chosen/, rejected/ samples.jsonl), one row per pair
    under its pair id, and pair_prompts.jsonl (pair id -> the pair's prompt id)."""
    rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines() if line.strip()]
    sides = []
    for side in ("chosen", "rejected"):
        folder = work / side
        folder.mkdir(parents=True, exist_ok=True)
        write_jsonl(folder / "samples.jsonl", [{"prompt_id": r["id"], "prompt": r["prompt"], "output": _text(r[side]),
                                                "model": f"loop {side}"} for r in rows])
        sides.append(folder)
    write_jsonl(work / "pair_prompts.jsonl", [{"pair_id": r["id"], "prompt_id": str(r["prompt_id"])} for r in rows])
    return sides[0], sides[1]


def agreement_result(folder: Path) -> dict:
    """metrics.label_agreement of a judged agreement artifact, as the results.json object."""
    prompts = {r["pair_id"]: r["prompt_id"] for r in _jsonl(folder / "pair_prompts.jsonl")}
    judged = _jsonl(folder / "judgments.jsonl")
    preference = [float("nan") if r["preference"] is None else float(r["preference"]) for r in judged]
    found = label_agreement(preference, [prompts[str(r["prompt_id"])] for r in judged])
    return {"n_pairs": found.n_pairs, "n_agree": found.n_agree, "n_disagree": found.n_disagree,
            "n_ties": found.n_ties, "n_unscored": found.n_unscored, "n_prompts": found.n_prompts,
            "agreement": found.agreement, "se": found.se, "ci": list(found.ci)}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _label_sources(pairs: Path | None) -> list[str]:
    if pairs is None:
        return []
    return sorted({r[k] for r in _jsonl(pairs) for k in ("chosen_source", "rejected_source") if r.get(k)})


def is_online(record: dict) -> bool:
    """Whether the loop ran `online: true` (OAIF): one run, no rounds, no saved pairs."""
    return bool((record.get("config") or {}).get("online"))


def loop_entry(run: Run, record: dict, judge: dict | None, agreement_dir) -> dict:
    """runs[].loop of results.json. agreement_dir(round) -> the judged artifact folder, or None.

    An online loop's one entry covers the whole run: round_ends is [] (no boundary to mark) and its
    agreement is null, as its pairs are trained on as sampled and never saved (ONLINE_NO_PAIRS)."""
    ends, config, online = round_ends(record), record.get("config") or {}, is_online(record)
    skip = ONLINE_NO_PAIRS if online else agreement_skip_reason(record, judge)
    rounds = []
    for entry, end, start in zip(record["rounds"], ends, [0, *ends], strict=False):
        pairs = None if online else pairs_path(run, entry)
        folder = None if online else agreement_dir(entry["round"])
        reason = skip or ("the round's pairs file is gone" if pairs is None else "the judge stage did not run")
        rounds.append({"round": entry["round"], "first_step": start + 1, "last_step": end,
                       "counts": entry.get("counts") or {}, "label_sources": _label_sources(pairs),
                       "agreement": None if folder is None else agreement_result(folder),
                       "agreement_reason": "" if folder is not None else reason})
    return {"labeller": config.get("labeller"), "pairs": None if online else config.get("pairs"),
            "reference": config.get("reference"), "online": online, "round_ends": [] if online else ends,
            "rounds": rounds}


def add_loop_figures(runs: list[dict], checkpoints: list[dict], loops: dict[str, tuple[Run, dict]],
                     judge: dict | None, agreement_dir) -> None:
    """Give each loop run (name -> (Run, loop.json)) its runs[].loop and its checkpoints their `round`;
    other runs are left as they are. agreement_dir(run name, round) -> the judged folder, or None."""
    for run in runs:
        if run["name"] not in loops:
            continue
        found, record = loops[run["name"]]
        run["loop"] = loop_entry(found, record, judge, lambda r, name=run["name"]: agreement_dir(name, r))
        if run["loop"]["online"]:
            continue  # one run with no rounds: its checkpoints carry none (no round column)
        for checkpoint in (c for c in checkpoints if c["run"] == run["name"]):
            checkpoint["round"] = checkpoint_round(checkpoint["step"], run["loop"]["round_ends"])
