"""The one reader of a prompt field: `prompt` (a string or chat messages), `instruction` or Arena-Hard's `turns`.

Used by every file that carries prompts: `generate`'s prompts, `judge`'s generations files and the
gold judge's answers file, so they accept the same rows and agree on a chat prompt's text form.
"""

from __future__ import annotations

from dpo_eval.errors import UserError

Prompt = str | list[dict]


def _is_message_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def _arena_hard_turn(row: dict) -> str | None:
    """Arena-Hard's question text: the one turn of ``turns: [{"content": ...}]``; None when absent."""
    turns = row.get("turns")
    if not (isinstance(turns, list) and turns and all(isinstance(t, dict) for t in turns)):
        return None
    if len(turns) > 1:
        return None  # a later turn needs the model's earlier answer: not a single prompt
    content = turns[0].get("content")
    return content if isinstance(content, str) else None


def prompt_field(row: dict, where: str) -> Prompt:
    """The row's `prompt` (non-empty string, or chat messages [{"role", "content"}]), `instruction`
    (AlpacaEval), or the single turn of `turns` (Arena-Hard questions).

    where: "FILE: row N" for the one-line error when none is usable, naming the row's columns."""
    value = row.get("prompt", row.get("instruction", _arena_hard_turn(row)))
    if (isinstance(value, str) and value.strip()) or _is_message_list(value):
        return value
    raise UserError(f"{where}: needs a non-empty 'prompt' (a string or chat messages) or 'instruction', or one "
                    f"'turns' entry (Arena-Hard); columns found: {', '.join(map(str, row)) or 'none'}; "
                    "add it or fix its type")


def prompt_id_field(row: dict, index: int) -> str:
    """The row's prompt id: `prompt_id`, `id`, `question_id` (Arena-Hard v0.1) or `uid` (v2), else the row index."""
    for key in ("prompt_id", "id", "question_id", "uid"):
        if row.get(key) is not None:
            return str(row[key])
    return str(index)


def prompt_text(prompt: Prompt) -> str:
    """A prompt as one string: a string unchanged, chat messages as "role: content" blocks."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)
