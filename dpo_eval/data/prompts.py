"""The one reader of a prompt field: `prompt` (a string or chat messages) or `instruction`.

Used by every file that carries prompts: `generate`'s prompts, `judge`'s generations files and the
gold judge's answers file, so they accept the same rows and agree on a chat prompt's text form.
"""

from __future__ import annotations

from dpo_eval.errors import UserError

Prompt = str | list[dict]


def _is_message_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def prompt_field(row: dict, where: str) -> Prompt:
    """The row's `prompt` (non-empty string, or chat messages [{"role", "content"}]) or `instruction`.

    where: "FILE: row N" for the one-line error when neither is usable."""
    value = row.get("prompt", row.get("instruction"))
    if (isinstance(value, str) and value.strip()) or _is_message_list(value):
        return value
    raise UserError(f"{where}: needs a non-empty 'prompt' (a string or chat messages) or 'instruction'; "
                    "add it or fix its type")


def prompt_text(prompt: Prompt) -> str:
    """A prompt as one string: a string unchanged, chat messages as "role: content" blocks."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)
