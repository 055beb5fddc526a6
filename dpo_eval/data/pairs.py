"""Load preference pairs (prompt, chosen, rejected) and normalise them to `PreferencePair`.

Three row formats are understood, detected from the first valid row unless one is forced:

- "text": string columns `prompt`, `chosen`, `rejected`.
- "chat": `chosen`/`rejected` are lists of {"role", "content"} messages (TRL, UltraFeedback-binarized);
  an optional `prompt` is a string or a message list. Responses keep only the messages after the prompt.
- "hh": HH-RLHF transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") in `chosen`/`rejected`, no `prompt`;
  split at the last "\\n\\nAssistant:" into chat messages, keeping the raw text in `text_form`.

Optional columns: `id` (default: the 0-based row index) and `subset` (default "default").
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dpo_eval.data.formats import read_records, read_source
from dpo_eval.errors import UserError

__all__ = ["DATA_FORMATS", "LoadedPairs", "Message", "PreferencePair", "load_pairs", "read_records"]

Message = dict[str, str]

DATA_FORMATS = ("auto", "text", "chat", "hh")
DEFAULT_SUBSET = "default"
_MAX_REASONS = 20
_SKIP_HINT = "pass --skip-invalid (a train config: skip_invalid: true) to skip bad rows"
_HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class PreferencePair:
    """One preference example: a prompt with a preferred (`chosen`) and a dispreferred (`rejected`) response."""

    id: str
    """Unique within a file: the `id` column, or the 0-based row index."""
    subset: str
    """The `subset` column, or "default"."""
    prompt: str | list[Message]
    """Text pairs: the prompt string. Chat pairs: the conversation before the responses (may be empty)."""
    chosen: str | list[Message]
    """Text pairs: the response string. Chat pairs: the message(s) after the prompt, ending with the assistant's."""
    rejected: str | list[Message]
    """Same shape as `chosen`."""
    text_form: tuple[str, str, str] | None = None
    """Plain-text (prompt, chosen, rejected) when the file had one (HH-RLHF), exactly as written."""
    where: str = dataclasses.field(default="", compare=False)
    """Where the pair came from, for error messages: "FILE: row N" (1-based), or "" when built in code."""

    @property
    def location(self) -> str:
        """"FILE: row N" when known, else "pair 'ID'"."""
        return self.where or f"pair {self.id!r}"

    @property
    def is_chat(self) -> bool:
        """True when prompt and responses are message lists rather than strings."""
        return not isinstance(self.chosen, str)


@dataclass(frozen=True)
class LoadedPairs:
    """The pairs read from one source and how they were read."""

    pairs: list[PreferencePair]
    """Valid pairs, in file order."""
    format: str
    """"text", "chat" or "hh"."""
    source: str
    """The path as given."""
    n_skipped: int
    """Rows skipped because they were invalid (only with skip_invalid)."""
    skip_reasons: tuple[str, ...]
    """The first 20 reasons for skipping, like "row 7: field 'rejected' is empty"."""


class _RowError(Exception):
    """A problem with one row: `what` is wrong (naming the field) and how to `fix` it."""

    def __init__(self, what: str, fix: str = "fix the row") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix


def load_pairs(
    path: str | Path,
    *,
    data_format: str = "auto",
    skip_invalid: bool = False,
    limit: int | None = None,
    split: str | None = None,
    subset: str | None = None,
) -> LoadedPairs:
    """Read preference pairs from `path` (any file `read_records` accepts).

    `data_format` forces "text", "chat" or "hh" instead of detecting it from the first valid row.
    With `skip_invalid`, bad rows are skipped and counted instead of raising; a source with no
    valid row is still an error. `limit` keeps the first N valid pairs. `split` picks a split of a
    saved `DatasetDict` or Hub dataset, `subset` a Hub dataset's config (``read_source``); a Hub dataset's
    `source` is ``org/name@<commit>[/subset]:split``. Every user-fixable problem raises `UserError` naming file,
    row and field; rows without `chosen` and `rejected` columns, one line naming the columns found and expected.
    """
    if data_format not in DATA_FORMATS:
        raise UserError(f"unknown data format {data_format!r}; use one of: {', '.join(DATA_FORMATS)}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of pairs, got {limit}")
    rows, source = read_source(path, split=split, subset=subset)
    if not rows:
        raise UserError(f"{source}: has no rows; give a file with at least one prompt/chosen/rejected row")
    _check_layout(rows, source)
    return _collect_pairs(rows, source, data_format, skip_invalid, limit)


LAYOUTS = ("prompt, chosen, rejected (strings: RewardBench, TRL; or message lists: UltraFeedback-binarized)",
           "chosen, rejected (HH-RLHF transcripts)")


def _check_layout(rows: list[dict[str, Any]], source: str) -> None:
    """A source whose columns match no pair layout (no row has `chosen` and `rejected`) is one line naming the
    columns found (the first row's) and the layouts expected."""
    if any("chosen" in row and "rejected" in row for row in rows):
        return
    found = ", ".join(map(str, rows[0])) or "none"
    raise UserError(f"{source}: columns {found} match no preference-pair layout; expected {' or '.join(LAYOUTS)}: "
                    "rename the columns, or pass a file in one of these layouts")


def _collect_pairs(
    rows: list[dict[str, Any]], source: str, data_format: str, skip_invalid: bool, limit: int | None
) -> LoadedPairs:
    """Convert rows to pairs, fixing the format at the first valid row; skip or raise on bad rows."""
    fmt = None if data_format == "auto" else data_format
    pairs: list[PreferencePair] = []
    seen_ids: dict[str, int] = {}
    reasons: list[str] = []
    n_skipped = 0
    for index, row in enumerate(rows):
        if limit is not None and len(pairs) >= limit:
            break
        try:
            row_format = fmt or _detect_format(row)
            pair = replace(_CONVERTERS[row_format](row, index), where=f"{source}: row {index + 1}")
        except _RowError as e:
            reason = f"row {index + 1}: {e.what}"
            if not skip_invalid:
                raise UserError(f"{source}: {reason}; {e.fix} or {_SKIP_HINT}") from None
            n_skipped += 1
            if len(reasons) < _MAX_REASONS:
                reasons.append(reason)
            continue
        fmt = row_format
        _check_unique_id(pair.id, index, seen_ids, source)
        pairs.append(pair)
    if not pairs or fmt is None:
        raise UserError(
            f"{source}: no valid rows ({n_skipped} skipped; first: {reasons[0] if reasons else 'none'}); "
            "fix the data or pass the right --format (a train config: data_format)"
        )
    return LoadedPairs(pairs=pairs, format=fmt, source=source, n_skipped=n_skipped, skip_reasons=tuple(reasons))


def _check_unique_id(pair_id: str, index: int, seen_ids: dict[str, int], source: str) -> None:
    """Record `pair_id` for row `index`, raising if an earlier row used it."""
    if pair_id in seen_ids:
        raise UserError(
            f"{source}: row {index + 1}: field 'id' value {pair_id!r} repeats row {seen_ids[pair_id] + 1}; "
            "ids must be unique: fix them or drop the 'id' column to number rows automatically"
        )
    seen_ids[pair_id] = index


def _detect_format(row: dict[str, Any]) -> str:
    """Guess "chat", "text" or "hh" from one row's `chosen` and `prompt` values."""
    chosen = _get(row, "chosen")
    if isinstance(chosen, list):
        return "chat"
    if not isinstance(chosen, str):
        raise _RowError(
            f"field 'chosen' must be a string or a list of messages, got {type(chosen).__name__}"
        )
    if row.get("prompt") is not None:
        return "text"
    if _HH_ASSISTANT in chosen:
        return "hh"
    raise _RowError(
        "field 'prompt' is missing and 'chosen' is neither a message list nor an HH-RLHF transcript",
        "add a 'prompt' column",
    )


# ---------------------------------------------------------------- shared field helpers


def _get(row: dict[str, Any], field: str) -> Any:
    """The value of a required field; missing or null raises."""
    if field not in row:
        raise _RowError(f"field '{field}' is missing", f"add a '{field}' value")
    value = row[field]
    if value is None:
        raise _RowError(f"field '{field}' is null", f"give '{field}' a value")
    return value


def _get_str(row: dict[str, Any], field: str, *, allow_empty: bool = False) -> str:
    """A required string field; unless `allow_empty`, whitespace-only raises."""
    value = _get(row, field)
    if not isinstance(value, str):
        raise _RowError(f"field '{field}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _RowError(f"field '{field}' is empty")
    return value


def _optional_scalar(row: dict[str, Any], field: str) -> str | None:
    """An optional scalar field as a string; None when absent, null or blank."""
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, (dict, list, tuple)):
        raise _RowError(f"field '{field}' must be a string or number, got {type(value).__name__}")
    text = str(value)
    return text if text.strip() else None


def _make_pair(
    row: dict[str, Any],
    index: int,
    prompt: str | list[Message],
    chosen: str | list[Message],
    rejected: str | list[Message],
    text_form: tuple[str, str, str] | None = None,
) -> PreferencePair:
    """Attach the row's id (default: row index) and subset (default "default") to a converted pair."""
    pair_id = _optional_scalar(row, "id")
    subset = _optional_scalar(row, "subset")
    return PreferencePair(
        id=str(index) if pair_id is None else pair_id,
        subset=DEFAULT_SUBSET if subset is None else subset,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        text_form=text_form,
    )


# ---------------------------------------------------------------- text


def _text_pair(row: dict[str, Any], index: int) -> PreferencePair:
    """A row with string `prompt` (may be empty), `chosen` and `rejected`."""
    prompt = _get_str(row, "prompt", allow_empty=True)
    chosen = _get_str(row, "chosen")
    rejected = _get_str(row, "rejected")
    return _make_pair(row, index, prompt, chosen, rejected)


# ---------------------------------------------------------------- chat


def _chat_pair(row: dict[str, Any], index: int) -> PreferencePair:
    """A row whose responses are message lists; the prompt is given, or inferred as the common prefix."""
    chosen = _to_messages(_get(row, "chosen"), "chosen")
    rejected = _to_messages(_get(row, "rejected"), "rejected")
    prompt = _chat_prompt(row)
    if prompt:
        chosen = _strip_prefix(chosen, prompt)
        rejected = _strip_prefix(rejected, prompt)
    else:
        prompt, chosen, rejected = _split_common_prefix(chosen, rejected)
    _check_response(chosen, "chosen")
    _check_response(rejected, "rejected")
    return _make_pair(row, index, prompt, chosen, rejected)


def _to_messages(value: Any, field: str) -> list[Message]:
    """Validate a list of {"role", "content"} messages and copy it (other keys are dropped)."""
    if not isinstance(value, list):
        raise _RowError(f"field '{field}' must be a list of messages, got {type(value).__name__}")
    messages = []
    for k, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not all(
            isinstance(message.get(key), str) for key in ("role", "content")
        ):
            raise _RowError(
                f"field '{field}': message {k} must be an object with string 'role' and 'content'",
                'write each message as {"role": ..., "content": ...}',
            )
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _chat_prompt(row: dict[str, Any]) -> list[Message]:
    """The optional `prompt` as messages: a string becomes one user message; absent or blank is []."""
    value = row.get("prompt")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value.strip() else []
    return _to_messages(value, "prompt")


def _same_message(a: Message, b: Message) -> bool:
    """Messages match when roles are equal and contents are equal up to surrounding whitespace."""
    return a["role"] == b["role"] and a["content"].strip() == b["content"].strip()


def _shared_prefix_len(a: list[Message], b: list[Message]) -> int:
    """How many leading messages `a` and `b` share."""
    n = 0
    while n < min(len(a), len(b)) and _same_message(a[n], b[n]):
        n += 1
    return n


def _strip_prefix(messages: list[Message], prompt: list[Message]) -> list[Message]:
    """Drop `prompt` from the start of `messages` when the full conversation was stored there."""
    if len(messages) > len(prompt) and _shared_prefix_len(messages, prompt) == len(prompt):
        return messages[len(prompt):]
    return messages


def _split_common_prefix(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[Message], list[Message]]:
    """(prompt, chosen, rejected) with the prompt the longest shared prefix of both conversations."""
    n = _shared_prefix_len(chosen, rejected)
    if n == len(chosen) and n == len(rejected):
        raise _RowError("fields 'chosen' and 'rejected' hold the same messages", "make the responses differ")
    for field, messages in (("chosen", chosen), ("rejected", rejected)):
        if n == len(messages):
            raise _RowError(
                f"field '{field}' has no messages left after the prompt it shares with the other response",
                "add a 'prompt' column",
            )
    return chosen[:n], chosen[n:], rejected[n:]


def _check_response(messages: list[Message], field: str) -> None:
    """A response must be non-empty and end with a non-blank assistant message."""
    if not messages:
        raise _RowError(f"field '{field}' has no response messages after the prompt")
    last = messages[-1]
    if last["role"] != "assistant":
        raise _RowError(
            f"field '{field}': the last message has role {last['role']!r}, expected 'assistant'",
            "end each response with the assistant's reply",
        )
    if not last["content"].strip():
        raise _RowError(f"field '{field}' is empty")


# ---------------------------------------------------------------- hh (HH-RLHF transcripts)


def _hh_pair(row: dict[str, Any], index: int) -> PreferencePair:
    """An HH-RLHF row: two transcripts that differ only after their last "\\n\\nAssistant:"."""
    prefix, chosen_rest = _split_transcript(_get_str(row, "chosen"), "chosen")
    rejected_prefix, rejected_rest = _split_transcript(_get_str(row, "rejected"), "rejected")
    if rejected_prefix != prefix:
        raise _RowError(
            "field 'rejected': the transcript up to its last '\\n\\nAssistant:' differs from 'chosen'",
            "make both transcripts share the conversation before the final assistant turn",
        )
    for field, rest in (("chosen", chosen_rest), ("rejected", rejected_rest)):
        if not rest.strip():
            raise _RowError(f"field '{field}' is empty after the last '\\n\\nAssistant:'")
    return _make_pair(
        row,
        index,
        prompt=_parse_transcript(prefix),
        chosen=[{"role": "assistant", "content": chosen_rest.strip()}],
        rejected=[{"role": "assistant", "content": rejected_rest.strip()}],
        text_form=(prefix, chosen_rest, rejected_rest),
    )


def _split_transcript(transcript: str, field: str) -> tuple[str, str]:
    """(text up to and including the last "\\n\\nAssistant:", the response after it)."""
    cut = transcript.rfind(_HH_ASSISTANT)
    if cut < 0:
        raise _RowError(
            f"field '{field}' has no '\\n\\nAssistant:' turn",
            "write HH-RLHF transcripts as '\\n\\nHuman: ...\\n\\nAssistant: ...' or add a 'prompt' column",
        )
    end = cut + len(_HH_ASSISTANT)
    return transcript[:end], transcript[end:]


def _parse_transcript(prefix: str) -> list[Message]:
    """Messages of a transcript prefix, dropping the empty final "Assistant:" turn."""
    parts = _HH_TURN.split(prefix)
    if parts[0].strip():
        raise _RowError(
            "field 'chosen': the transcript does not start with '\\n\\nHuman:' or '\\n\\nAssistant:'",
            "start the transcript with '\\n\\nHuman:'",
        )
    turns = [
        {"role": _HH_ROLES[speaker], "content": text.strip()}
        for speaker, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    return turns[:-1]


_CONVERTERS = {"text": _text_pair, "chat": _chat_pair, "hh": _hh_pair}
