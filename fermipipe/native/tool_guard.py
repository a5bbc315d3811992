"""What every native tool run goes through: file checks before, one-line errors after.

A native tool's own code reports bad input as :class:`ToolError`. What it cannot foresee —
the machine running out of memory for a huge map, a full disk, a folder removed under it —
arrives as MemoryError or OSError; here they become one line naming the file and what is
wrong, never a traceback and never "internal error". Outputs are written atomically
(:func:`fermipipe.fits.writing.atomic_output`), so such a failure leaves no partial output.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from fermipipe.errors import ToolError, os_error_text
from fermipipe.native.params import ToolOutcome, resolve
from fermipipe.native.tool_files import check_tool_files

__all__ = ["guarded_run", "os_error_text"]

#: Tools following evtbin's list convention (``@`` always a list, ``#`` lines are names);
#: the others follow dataSubselector's (spec 1.1).
_EVTBIN_LISTS = frozenset({"gtbin"})


def guarded_run(
    tool: str, run: Callable[[Mapping[str, Any]], ToolOutcome], params: Mapping[str, Any]
) -> ToolOutcome:
    """Check ``tool``'s files, then ``run(params)`` with MemoryError/OSError as ToolError."""
    module = importlib.import_module(f"fermipipe.native.{tool}")
    specs = module.PARAMS
    resolved = resolve(specs, params, tool=tool)
    evtbin = tool in _EVTBIN_LISTS
    check_tool_files(tool, specs, resolved, list_comments=not evtbin, fits_list_file=not evtbin)
    try:
        return run(params)
    except MemoryError:
        raise ToolError(
            tool,
            "not enough memory for the product asked for "
            "(reduce its size: number of pixels, energy bins or time bins)",
        ) from None
    except OSError as exc:
        raise ToolError(tool, os_error_text(exc)) from None
