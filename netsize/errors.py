"""User-facing errors: one sentence plus the fix, turned into exit code 2 at the CLI edge."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave us (recipe, file, option). Never shown as a traceback."""

    exit_code = 2
