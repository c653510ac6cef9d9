"""User-facing errors: the entry points print these as one line and exit with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a path, a config value, a checkpoint); the message names it and the fix."""
