"""Output-file rules shared by the native tools that write with :func:`write_fits`.

* ``clobber=no`` refuses an existing output before any work is done (the Fermitools check it
  when the parameters are read, so a refused run costs nothing);
* a failed write (disk full, directory gone, permissions) is the user's problem to fix, so it
  is reported as a one-line :class:`ToolError` naming the output, not as an OSError
  traceback. :func:`write_fits` writes atomically, so nothing is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fermipipe.errors import ToolError
from fermipipe.fits.table import HduSpec, write_fits

__all__ = ["refuse_existing_output", "write_tool_output"]


def refuse_existing_output(tool: str, path: str | os.PathLike[str], clobber: bool) -> None:
    """ToolError when ``path`` exists and ``clobber`` is off."""
    if Path(path).exists() and not clobber:
        raise ToolError(tool, "output file exists and clobber=no", os.fspath(path))


def write_tool_output(
    tool: str,
    path: str | os.PathLike[str],
    hdus: Sequence[HduSpec],
    *,
    add_filename: bool = True,
) -> Path:
    """:func:`write_fits` with an OSError reported as ToolError (``cannot write output``)."""
    try:
        return write_fits(path, hdus, add_filename=add_filename)
    except OSError as exc:
        raise ToolError(tool, f"cannot write output: {exc}", os.fspath(path)) from None
