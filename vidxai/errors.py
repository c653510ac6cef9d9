"""User-facing errors: the entry points print these as one line and exit with code 2.

Only :class:`UserError` (and its subclasses) becomes a one-line message; any other exception is a bug and
keeps its traceback. The subclasses also derive from the built-in exception a library caller would expect
(``ValueError`` for a bad value, ``FileNotFoundError`` for a missing path), so plain-Python callers can
catch them the usual way.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a path, a config value, a checkpoint); the message names it and the fix."""


class ConfigError(UserError, ValueError):
    """A configuration value the user set is invalid (names the key and the fix)."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user pointed at does not exist (names the path and the fix)."""


__all__ = ["ConfigError", "MissingPathError", "UserError"]
