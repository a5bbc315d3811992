"""Exceptions shared by the whole package.

Every error a user can cause carries enough context (tool, file, what is wrong) to be shown
as one line, without a traceback from deep inside astropy.
"""

from __future__ import annotations

import errno
import os

_FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}


def os_error_text(exc: OSError) -> str:
    """One line for an OSError: the file, what went wrong, and "disk full" when it is."""
    what = exc.strerror or str(exc)
    full = _FULL.get(exc.errno or 0)
    if full is None and "not enough space" in what.lower():  # astropy's own check
        full = "disk full"
    if full is not None:
        what = f"{what} ({full})"
    if exc.filename is None:
        return what
    return f"{os.fsdecode(exc.filename)}: {what}"


class FermipipeError(Exception):
    """Base class of all errors raised on purpose by fermipipe."""


class ConfigError(FermipipeError):
    """The pipeline configuration is invalid: one line per problem (exit code 2).

    ``problems`` holds every line; a config is checked whole and all its problems are
    reported together.
    """

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(problems))


class ToolError(FermipipeError):
    """A tool (native or Fermitools) failed because of its input or parameters."""

    def __init__(self, tool: str, message: str, file: str | None = None) -> None:
        self.tool = tool
        self.file = file
        self.detail = message
        where = f" ({file})" if file else ""
        super().__init__(f"{tool}{where}: {message}")


class EmptyProductError(ToolError):
    """The Fermitools' 'empty' outcomes: no GTIs, zero FT2 rows for the filter, no events.

    The pipeline records such a file as ``empty`` (not failed) and leaves it out of merges.
    """
