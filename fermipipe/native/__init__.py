"""Native (numpy/astropy) implementations of Fermitools.

``TOOLS`` maps a Fermitools name to its implementation; each takes the raw ``key=value``
parameters and returns a :class:`~fermipipe.native.params.ToolOutcome`. Modules are imported
lazily so that importing the registry stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from fermipipe.native.params import ToolOutcome

NATIVE_TOOLS: tuple[str, ...] = (
    "gtselect",
    "gtmktime",
    "gtbin",
    "gtltcube",
    "gtltsum",
    "gtexpcube2",
    "gtpsf",
    "farith",
    "hpx_divide",
)

#: Tools run ftools-style with positional words (HEASARC parameter interface): the n-th word
#: without ``=`` sets the n-th name here. Kept here (not in the modules) so parsing a command
#: line imports no tool.
POSITIONAL_PARAMS: dict[str, tuple[str, ...]] = {
    "farith": ("infil1", "infil2", "outfil", "ops"),
    "hpx_divide": ("counts", "exposure", "outfile"),
}

#: Version of the native engine: part of every cache key, bump when an output changes.
ENGINE_VERSION = "2"


def get_tool(name: str) -> Callable[[Mapping[str, Any]], ToolOutcome]:
    """Return the ``run`` function of native tool ``name`` (KeyError if there is none)."""
    if name not in NATIVE_TOOLS:
        raise KeyError(name)
    module = importlib.import_module(f"fermipipe.native.{name}")
    return module.run


def file_params(name: str) -> frozenset[str]:
    """Names of the file parameters of native tool ``name`` (empty if there is none)."""
    if name not in NATIVE_TOOLS:
        return frozenset()
    module = importlib.import_module(f"fermipipe.native.{name}")
    return frozenset(spec.name for spec in module.PARAMS if spec.kind == "file")


def overwrites_by_default(name: str) -> bool:
    """True unless native tool ``name`` declares ``clobber`` off by default (farith)."""
    if name not in NATIVE_TOOLS:
        return True
    module = importlib.import_module(f"fermipipe.native.{name}")
    return all(bool(spec.default) for spec in module.PARAMS if spec.name == "clobber")


def positional_order(name: str) -> tuple[str, ...]:
    """Parameter names that positional command-line words fill, in order (empty for tools
    that take only ``name=value``, and for unknown names)."""
    return POSITIONAL_PARAMS.get(name, ())


def run_tool(name: str, params: Mapping[str, Any]) -> ToolOutcome:
    """Run native tool ``name`` in-process with Fermitools-style parameters.

    Every tool's files are checked first, in one place (:mod:`fermipipe.native.tool_files`:
    an output never replaces an input; unreadable or non-FITS inputs, a missing output
    folder are one-line errors); running out of memory or disk is a one-line ToolError too.
    """
    from fermipipe.native.tool_guard import guarded_run

    return guarded_run(name, get_tool(name), params)
