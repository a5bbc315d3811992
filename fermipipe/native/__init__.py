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
    "gtselect", "gtmktime", "gtbin", "gtltcube", "gtltsum", "gtexpcube2", "gtpsf",
)  # fmt: skip

#: Version of the native engine: part of every cache key, bump when an output changes.
ENGINE_VERSION = "1"


def get_tool(name: str) -> Callable[[Mapping[str, Any]], ToolOutcome]:
    """Return the ``run`` function of native tool ``name`` (KeyError if there is none)."""
    if name not in NATIVE_TOOLS:
        raise KeyError(name)
    module = importlib.import_module(f"fermipipe.native.{name}")
    return module.run


def run_tool(name: str, params: Mapping[str, Any]) -> ToolOutcome:
    """Run native tool ``name`` in-process with Fermitools-style parameters."""
    return get_tool(name)(params)
