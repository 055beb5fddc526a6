"""Ranked-response data for listwise DPO: rows of one prompt and K >= 2 responses in a known order.

Accepted rows (jsonl / json / parquet / csv / a saved dataset; optional `id`, `subset`)::

    {"prompt": ..., "responses": [r_a, r_b, r_c], "ranks": [2, 1, 3]}   # full ranking, 1 = best
    {"prompt": ..., "chosen": r, "rejected": [r_1, r_2, ...]}          # the chosen beats each rejected
    {"prompt": ..., "chosen": r, "rejected": r'}                       # a plain pair: K = 2, i.e. DPO

A response is a string (in chat mode an assistant message) or a list of chat messages; the prompt a
string or a list of messages. Ranks must be distinct numbers (lower is better): Plackett-Luce needs
a strict order. Each row becomes a RankedGroup with its responses sorted best first and n_ranked =
K - 1 (full ranking) or 1 (chosen vs rejected). Tokenization follows dpo_eval.tokenization for every
response at once, so the K responses share one prompt: chat rows through the chat template, plain
rows as tok(prompt + response) past a prompt boundary common to all K (EOS appended); max_length
caps prompt + each response (keep_end drops prompt tokens first, keep_start cuts responses first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpo_eval.data.formats import read_source
from dpo_eval.data.pairs import PreferencePair
from dpo_eval.engine.multi import ResponseGroup
from dpo_eval.errors import UserError
from dpo_eval.tokenization import (
    TokenizerSettings,
    _chat_ids,
    _common_prefix_length,
    _encode,
    as_messages,
    chat_ids,
    choose_mode,
    truncate,
)


@dataclass(frozen=True)
class RankedGroup:
    """One prompt and its responses, best first; n_ranked leading Plackett-Luce choices are known."""

    id: str
    prompt_ids: tuple[int, ...]
    responses: tuple[tuple[int, ...], ...]
    n_ranked: int
    row: int = 0  # 0-based row of the source file

    @property
    def packed_length(self) -> int:
        return len(self.prompt_ids) + sum(len(r) for r in self.responses)

    def as_group(self) -> ResponseGroup:
        return ResponseGroup(self.prompt_ids, self.responses)


@dataclass(frozen=True)
class _RankedRow:
    id: str
    prompt: Any
    responses: list  # best first
    n_ranked: int
    where: str


def _response(value: Any, where: str, field: str) -> Any:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 for m in value):
        return [{"role": m.get("role", "assistant"), "content": m["content"]} for m in value]
    raise UserError(f"{where}: field {field!r} must be a non-empty string or a list of chat messages; fix the row")


def _ordered(row: dict, where: str) -> tuple[list, int]:
    """(responses best first, n_ranked) from `responses` + `ranks` or `chosen` + `rejected`."""
    if "responses" in row:
        responses, ranks = row["responses"], row.get("ranks")
        if not isinstance(responses, list) or len(responses) < 2:
            raise UserError(f"{where}: field 'responses' must be a list of at least 2 responses; fix the row")
        if (not isinstance(ranks, list) or len(ranks) != len(responses)
                or not all(isinstance(r, int | float) and not isinstance(r, bool) for r in ranks)):
            raise UserError(f"{where}: field 'ranks' must be a list of {len(responses)} numbers (1 = best), one "
                            "per response; add or fix it")
        if len(set(ranks)) != len(ranks):
            raise UserError(f"{where}: field 'ranks' has ties {ranks}: Plackett-Luce needs a strict order; "
                            "break the ties or drop tied responses")
        order = sorted(range(len(ranks)), key=lambda k: ranks[k])
        return [_response(responses[k], where, f"responses[{k}]") for k in order], len(responses) - 1
    if "chosen" in row and "rejected" in row:
        rejected = row["rejected"]
        is_one = isinstance(rejected, str) or (isinstance(rejected, list) and rejected and isinstance(rejected[0], dict))
        rejected = [rejected] if is_one else rejected
        if not isinstance(rejected, list) or not rejected:
            raise UserError(f"{where}: field 'rejected' must be a response or a non-empty list of responses")
        chosen = _response(row["chosen"], where, "chosen")
        return [chosen] + [_response(r, where, f"rejected[{k}]") for k, r in enumerate(rejected)], 1
    raise UserError(f"{where}: a listwise row needs 'responses' and 'ranks', or 'chosen' and 'rejected'; "
                    f"found fields {sorted(row)}")


def _read_rows(path: str, limit: int | None) -> tuple[list[_RankedRow], str]:
    """The ranked rows of ``path`` and its source's name (a Hub dataset pinned to its commit)."""
    rows, (records, source) = [], read_source(path)
    for index, row in enumerate(records[:limit] if limit else records):
        where = f"{path}: row {index + 1}"
        if not isinstance(row.get("prompt"), str | list):
            raise UserError(f"{where}: field 'prompt' must be a string or a list of chat messages; add it")
        responses, n_ranked = _ordered(row, where)
        rows.append(_RankedRow(str(row.get("id", index)), row["prompt"], responses, n_ranked, where))
    if not rows:
        raise UserError(f"{path}: no rows; a listwise file needs at least one ranked group")
    return rows, source


def _is_chat(row: _RankedRow) -> bool:
    return isinstance(row.prompt, list) or any(isinstance(r, list) for r in row.responses)


def _chat_group(tokenizer, row: _RankedRow) -> tuple[list, list[list]]:
    prompt = as_messages(row.prompt)
    as_turn = lambda r: [{"role": "assistant", "content": r}] if isinstance(r, str) else r  # noqa: E731
    responses = [_chat_ids(tokenizer, prompt, as_turn(r), row.where)[1] for r in row.responses]
    return chat_ids(tokenizer, prompt, add_generation_prompt=True), responses


def _plain_group(tokenizer, row: _RankedRow, add_eos: bool) -> tuple[list, list[list]]:
    """tok(prompt + response) past the longest prefix tok(prompt) shares with every full sequence."""
    prompt_ids = _encode(tokenizer, row.prompt, add_special_tokens=True)
    full = [_encode(tokenizer, row.prompt + r, add_special_tokens=True) for r in row.responses]
    cut = min(_common_prefix_length(prompt_ids, ids) for ids in full)
    eos, responses = tokenizer.eos_token_id, []
    for ids in full:
        response = ids[cut:]
        if add_eos and eos is not None and (not response or response[-1] != eos):
            response.append(eos)
        responses.append(response)
    return prompt_ids[:cut], responses


def _tokenize(tokenizer, row: _RankedRow, mode: str, settings: TokenizerSettings, index: int) -> RankedGroup:
    if mode == "chat":
        prompt, responses = _chat_group(tokenizer, row)
    else:
        if _is_chat(row):
            raise UserError(f"{row.where}: chat messages in a plain-text listwise file; use one form for every row")
        prompt, responses = _plain_group(tokenizer, row, settings.add_eos)
    if not prompt or not all(responses):
        raise UserError(f"{row.where}: the prompt or a response tokenizes to nothing; fix the row")
    longest = max(responses, key=len)
    prompt, _, _, cut = truncate(prompt, longest, longest, settings.max_length, settings.truncation)
    if cut:
        room = settings.max_length - len(prompt)
        responses = [r[:room] for r in responses]
    return RankedGroup(row.id, tuple(prompt), tuple(tuple(r) for r in responses), row.n_ranked, index)


def load_ranked(path: str, tokenizer, settings: TokenizerSettings, *, limit: int | None = None,
                sources: dict[str, str] | None = None) -> tuple[list[RankedGroup], str]:
    """Read and tokenize a listwise file; returns (groups, mode) with mode "chat" or "plain".

    ``sources["train"]`` gets the source's name: the path as given, a Hub dataset pinned to its commit."""
    rows, source = _read_rows(path, limit)
    if sources is not None:
        sources["train"] = source
    probe = rows[0]
    as_chat = _is_chat(probe)
    turn = [{"role": "assistant", "content": "."}]  # only the form matters to choose_mode
    sample = PreferencePair(probe.id, "", as_messages(probe.prompt) if as_chat else probe.prompt,
                            turn if as_chat else probe.responses[0], turn if as_chat else probe.responses[1])
    mode = choose_mode([sample], tokenizer, settings.template)
    return [_tokenize(tokenizer, row, mode, settings, i) for i, row in enumerate(rows)], mode
