"""Turn preference pairs into token ids: a shared prompt and two responses.

Chat pairs go through the tokenizer's chat template: the prompt is rendered with
``add_generation_prompt=True`` and a response's tokens are the full conversation's tokens past
the prompt's (a clear error when the prompt is not a token prefix). Plain-text pairs follow TRL's
convention: response tokens are ``tok(prompt + response)`` past the prompt's tokens, with EOS
appended when missing (where a token merges across the boundary, the boundary moves left so
each sequence is exactly ``tok(prompt + response)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dpo_eval.errors import UserError

if TYPE_CHECKING:
    from dpo_eval.data.pairs import PreferencePair

TEMPLATES = ("auto", "chat", "plain")
TRUNCATIONS = ("keep_end", "keep_start")


@dataclass(frozen=True)
class TokenizerSettings:
    """How pairs become tokens; part of every cache key.

    template: "chat" uses the tokenizer's chat template, "plain" concatenates strings,
        "auto" picks chat for message data when the tokenizer has a template.
    max_length: cap on prompt + response tokens of each sequence (None: no cap).
    truncation: "keep_end" drops prompt tokens from the left first; "keep_start" cuts
        responses at the end first.
    add_eos: append EOS to plain-text responses that lack it.
    """

    template: str = "auto"
    max_length: int | None = None
    truncation: str = "keep_end"
    add_eos: bool = True

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise UserError(f"template {self.template!r} is not one of {', '.join(TEMPLATES)}")
        if self.truncation not in TRUNCATIONS:
            raise UserError(f"truncation {self.truncation!r} is not one of {', '.join(TRUNCATIONS)}")
        if self.max_length is not None and self.max_length < 2:
            raise UserError(f"max_length must be at least 2 tokens, got {self.max_length}")


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one pair: prompt shared by both responses."""

    id: str
    subset: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    is_truncated: bool = False

    @property
    def packed_length(self) -> int:
        """Tokens when prompt, chosen and rejected share one row."""
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    def content_key(self) -> str:
        """Fingerprint of the exact token ids (data and tokenization settings both)."""
        h = hashlib.blake2b(digest_size=16)
        for part in (self.prompt_ids, self.chosen_ids, self.rejected_ids):
            h.update(len(part).to_bytes(4, "little"))
            h.update(b"".join(t.to_bytes(4, "little") for t in part))
        return h.hexdigest()


@dataclass(frozen=True)
class TokenizedPairs:
    pairs: list[TokenizedPair]
    mode: str  # "chat" | "plain"
    n_truncated: int
    n_skipped: int = 0  # pairs that could not be tokenized (only with skip_invalid)
    skip_reasons: tuple[str, ...] = ()  # the first 20 reasons


def padding_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else EOS, else 0 (padding is masked anyway)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def choose_mode(pairs: Sequence[PreferencePair], tokenizer, template: str) -> str:
    """Resolve "auto" to "chat" or "plain" for this data and tokenizer."""
    is_chat = bool(pairs) and pairs[0].is_chat
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if template == "plain":
        if is_chat and any(p.text_form is None for p in pairs):
            raise UserError("--template plain needs plain-text pairs, but the data holds chat messages; "
                            "use --template chat")
        return "plain"
    if template == "chat" or (template == "auto" and is_chat and has_template):
        if not has_template:
            raise UserError("the tokenizer has no chat template; use --template plain with plain-text data")
        if not is_chat:
            raise UserError("--template chat needs chat-message data; this data is plain text")
        return "chat"
    if is_chat and any(p.text_form is None for p in pairs):
        raise UserError("the data holds chat messages but the tokenizer has no chat template; "
                        "use a tokenizer with a chat template")
    return "plain"


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


class InvalidPairError(UserError):
    """A pair whose content cannot be scored (empty tokens, unstable template): skippable with skip_invalid."""


def as_messages(prompt: str | Sequence[dict]) -> list[dict]:
    """A prompt as chat messages: a string becomes one user message."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def chat_ids(tokenizer, messages: Sequence[dict], *, add_generation_prompt: bool) -> list[int]:
    """The one chat renderer: messages through the tokenizer's chat template, then encoded without
    adding special tokens (the template writes its own BOS / turn markers)."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    return _encode(tokenizer, text, add_special_tokens=False)


def _chat_ids(tokenizer, prompt: list[dict], response: list[dict], where: str) -> tuple[list, list]:
    prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
    full_ids = chat_ids(tokenizer, prompt + response, add_generation_prompt=False)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise InvalidPairError(f"{where}: the chat template's prompt is not a token prefix of the full "
                               "conversation; use --template plain or a tokenizer whose template is prefix-stable")
    return prompt_ids, full_ids[len(prompt_ids):]


def _common_prefix_length(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _plain_ids(tokenizer, prompt: str, chosen: str, rejected: str, add_eos: bool) -> tuple[list, list, list]:
    """Shared prompt ids and both responses' ids, TRL's plain-text convention.

    Responses are tok(prompt + response) past the prompt. Where a token merges across the
    prompt/response boundary, the boundary moves left to the longest prefix that tok(prompt) and
    both full tokenizations share, so each sequence stays exactly tok(prompt + response).
    """
    prompt_ids = _encode(tokenizer, prompt, add_special_tokens=True)
    full = [_encode(tokenizer, prompt + response, add_special_tokens=True) for response in (chosen, rejected)]
    cut = min(_common_prefix_length(prompt_ids, ids) for ids in full)
    eos = tokenizer.eos_token_id
    responses = []
    for ids in full:
        response = ids[cut:]
        if add_eos and eos is not None and (not response or response[-1] != eos):
            response.append(eos)
        responses.append(response)
    return prompt_ids[:cut], responses[0], responses[1]


def truncate(prompt: list, chosen: list, rejected: list, max_length: int | None,
             truncation: str) -> tuple[list, list, list, bool]:
    """Cap prompt+chosen and prompt+rejected at max_length; at least 1 prompt token remains.

    keep_end: drop prompt tokens from the left, then cut responses at the end if still too long.
    keep_start: cut responses at the end, then the prompt at the end (keeping one response token).
    """
    longest = max(len(chosen), len(rejected))
    if max_length is None or len(prompt) + longest <= max_length:
        return prompt, chosen, rejected, False
    if truncation == "keep_end":
        keep_prompt = max(1, max_length - longest)
        prompt = prompt[len(prompt) - keep_prompt:]
    else:
        prompt = prompt[: max(1, min(len(prompt), max_length - 1))]
    room = max_length - len(prompt)
    return prompt, chosen[:room], rejected[:room], True


def tokenize_pair(pair: PreferencePair, tokenizer, mode: str, settings: TokenizerSettings) -> TokenizedPair:
    """Tokenize one pair in the given mode ("chat" or "plain")."""
    if mode == "chat":
        prompt_ids, chosen_ids = _chat_ids(tokenizer, list(pair.prompt), list(pair.chosen), pair.location)
        _, rejected_ids = _chat_ids(tokenizer, list(pair.prompt), list(pair.rejected), pair.location)
    else:
        prompt, chosen, rejected = pair.text_form or (pair.prompt, pair.chosen, pair.rejected)
        prompt_ids, chosen_ids, rejected_ids = _plain_ids(tokenizer, prompt, chosen, rejected, settings.add_eos)
    if not prompt_ids:
        raise InvalidPairError(f"{pair.location}: the prompt has no tokens, so the first response token has no "
                               "context; give a non-empty prompt or a tokenizer that adds a BOS token")
    if not chosen_ids or not rejected_ids:
        side = "chosen" if not chosen_ids else "rejected"
        raise InvalidPairError(f"{pair.location}: field '{side}' tokenizes to nothing; fix the row")
    prompt_ids, chosen_ids, rejected_ids, cut = truncate(
        prompt_ids, chosen_ids, rejected_ids, settings.max_length, settings.truncation)
    return TokenizedPair(pair.id, pair.subset, tuple(prompt_ids), tuple(chosen_ids), tuple(rejected_ids), cut)


def tokenize_pairs(pairs: Sequence[PreferencePair], tokenizer, settings: TokenizerSettings,
                   skip_invalid: bool = False) -> TokenizedPairs:
    """Tokenize every pair; the mode (chat or plain) is decided once for the whole dataset.

    skip_invalid: pairs that cannot be tokenized for scoring are skipped and counted (their first
    reasons kept) instead of raising; none left is still an error.
    """
    mode = choose_mode(pairs, tokenizer, settings.template)
    out, reasons = [], []
    for pair in pairs:
        try:
            out.append(tokenize_pair(pair, tokenizer, mode, settings))
        except InvalidPairError as err:
            if not skip_invalid:
                raise InvalidPairError(f"{err}, or pass --skip-invalid (a train config: skip_invalid: true) "
                                       "to skip such pairs") from None
            reasons.append(str(err))
    if not out:
        raise UserError(f"no pair could be tokenized ({len(reasons)} skipped; first: {reasons[0]})")
    return TokenizedPairs(out, mode, sum(p.is_truncated for p in out), len(reasons), tuple(reasons[:20]))
