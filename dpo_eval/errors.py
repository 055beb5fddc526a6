"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input (file, flag, model) with what is wrong, where, and how to fix it."""
