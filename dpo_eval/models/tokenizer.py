"""Find a model's tokenizer (next to it, in a checkpoint's parent, with an adapter's base) and compare two."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from dpo_eval.errors import UserError
from dpo_eval.models.locate import Located, locate

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def _tokenizer_candidates(located: Located) -> list[Path]:
    """Folders that may hold this model's tokenizer, best first."""
    candidates = [located.resolved]
    if located.kind == "checkpoint":
        candidates.append(located.resolved.parent)
    if located.base is not None:
        candidates.extend(_tokenizer_candidates(located.base))
    return candidates


def _has_tokenizer_files(folder: Path) -> bool:
    """Whether a folder holds any tokenizer file."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _first_tokenizer_folder(located: Located) -> Path | None:
    """The first candidate folder with tokenizer files, or None."""
    return next((folder for folder in _tokenizer_candidates(located) if _has_tokenizer_files(folder)), None)


def tokenizer_next_to(located: Located, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase | None:
    """The tokenizer found with a located model, or None."""
    folder = _first_tokenizer_folder(located)
    if folder is None:
        return None
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


def load_tokenizer(
    *paths: str, cache_dir: Path, allow_pickle: bool = False, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer of the first given model path that has one (a checkpoint also looks in its parent).

    allow_pickle: accepted so every loader takes the same flags; no tokenizer file is unpickled.
    trust_remote_code: lets a tokenizer with its own Python code run it.
    """
    del allow_pickle  # tokenizers are read from JSON / sentencepiece files, never unpickled
    if not paths:
        raise UserError("no model path given to find a tokenizer in: pass at least one model")
    searched: list[str] = []
    for path in paths:
        located = locate(path, Path(cache_dir))
        tokenizer = tokenizer_next_to(located, trust_remote_code=trust_remote_code)
        if tokenizer is not None:
            return tokenizer
        searched.extend(str(candidate) for candidate in _tokenizer_candidates(located))
    raise UserError(
        f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {', '.join(dict.fromkeys(searched))}: "
        "save the tokenizer next to the model with tokenizer.save_pretrained(<model folder>)"
    )


def check_same_vocabulary(
    tok_a: PreTrainedTokenizerBase, tok_b: PreTrainedTokenizerBase, name_a: str, name_b: str
) -> None:
    """Raise a UserError unless both tokenizers map the same tokens to the same ids."""
    vocab_a, vocab_b = tok_a.get_vocab(), tok_b.get_vocab()
    if vocab_a == vocab_b:
        return
    differing = len(set(vocab_a.items()) ^ set(vocab_b.items()))
    raise UserError(
        f"{name_a} and {name_b} have different vocabularies ({len(vocab_a)} vs {len(vocab_b)} tokens, "
        f"{differing} token/id pairs not shared), so their log-probabilities cannot be compared: "
        "compare models of the same family, or pass a policy fine-tuned from the reference"
    )
