"""Run as a script by tests/hub/test_hub_data.py, in a fresh process (datasets and huggingface_hub read
HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when imported): argv[1] is a JSON list of calls
{"pairs"|"prompts": path, "split", "subset"}; prints one JSON result per call: the pairs' source, format and
rows as dicts, the prompts, or {"error": the UserError line}."""

from __future__ import annotations

import dataclasses
import json
import sys

from dpo_eval.data.pairs import load_pairs
from dpo_eval.errors import UserError
from dpo_eval.generate import read_prompts


def run(call: dict) -> dict:
    try:
        if "pairs" in call:
            loaded = load_pairs(call["pairs"], split=call.get("split"), subset=call.get("subset"))
            return {"source": loaded.source, "format": loaded.format,
                    "pairs": [{k: v for k, v in dataclasses.asdict(p).items() if k != "where"} for p in loaded.pairs]}
        return {"prompts": [[p.id, p.text] for p in read_prompts(call["prompts"])]}
    except UserError as error:
        return {"error": str(error)}


if __name__ == "__main__":
    print(json.dumps([run(call) for call in json.loads(sys.argv[1])]))
