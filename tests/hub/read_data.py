"""Run as a script by tests/hub/test_hub_data.py, in a fresh process (datasets and huggingface_hub read
HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when imported): argv[1] is a JSON list of calls
{"pairs"|"prompts"|"unpaired"|"ranked": path, "split", "subset"}; prints one JSON result per call: the pairs'
source, format and rows as dicts, the prompts, the source and count of KTO/NPO examples or listwise groups as
the trainer reads them, or {"error": the UserError line}."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from dpo_eval.data.pairs import load_pairs
from dpo_eval.errors import UserError
from dpo_eval.generate import read_prompts
from dpo_eval.tokenization import TokenizerSettings
from dpo_eval.train.kto import load_unpaired
from dpo_eval.train.listwise_data import load_ranked

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: conftest's word tokenizer
from conftest import word_tokenizer  # noqa: E402


def run(call: dict) -> dict:
    try:
        if "pairs" in call:
            loaded = load_pairs(call["pairs"], split=call.get("split"), subset=call.get("subset"))
            return {"source": loaded.source, "format": loaded.format,
                    "pairs": [{k: v for k, v in dataclasses.asdict(p).items() if k != "where"} for p in loaded.pairs]}
        if "unpaired" in call or "ranked" in call:
            sources: dict[str, str] = {}
            if "unpaired" in call:
                items = load_unpaired(call["unpaired"], word_tokenizer(), TokenizerSettings(), sources=sources)
            else:
                items, _ = load_ranked(call["ranked"], word_tokenizer(), TokenizerSettings(), sources=sources)
            return {"source": sources["train"], "n": len(items)}
        return {"prompts": [[p.id, p.text] for p in read_prompts(call["prompts"])]}
    except UserError as error:
        return {"error": str(error)}


if __name__ == "__main__":
    print(json.dumps([run(call) for call in json.loads(sys.argv[1])]))
