"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class UserError(Exception):
    """A mistake in the user's input (file, flag, model) with what is wrong, where, and how to fix it."""


def read_yaml_file(path: str | Path, flag: str, missing_hint: str, kind: str = "YAML") -> Any:
    """The YAML document at ``path`` (a flag's file), or a one-line UserError naming the flag: "{flag} PATH
    does not exist: {missing_hint}", or "{flag} PATH is not readable {kind} (the parser's first line): fix
    the file"."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{flag} {path} does not exist: {missing_hint}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{flag} {path} is not readable {kind} ({first}): fix the file") from None
