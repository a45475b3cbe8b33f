"""The one error type the CLI turns into a sentence and exit status 2."""

from __future__ import annotations


class CliError(Exception):
    """A problem with what the user asked for; the message names it and the fix."""
