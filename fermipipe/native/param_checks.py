"""Tool parameters checked when a config is loaded, from the native tools' definitions.

A parameter that cannot work (an unknown name such as ``emn``, ``emin: abc``, ``emin`` above
``emax``, ``nxpix: 0``) is a config error before anything runs, not a failure of every file
hours later. The names and kinds come from each native tool's ``PARAMS`` (the Fermitools'
.par files); the value rules below are the Fermitools' own conventions for these names,
checked only where a value is given (INDEF and placeholders are left alone).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from fermipipe.errors import ToolError
from fermipipe.native import NATIVE_TOOLS
from fermipipe.native.params import ParamSpec, convert_value

__all__ = ["check_params"]

#: Counts and sizes that must be at least 1.
_AT_LEAST_ONE = frozenset({"nxpix", "nypix", "enumbins", "nenergies", "ntheta", "tbinsz"})
#: Sizes that must be positive.
_POSITIVE = frozenset({"binsz", "dcostheta", "thetamax", "deltatime"})
#: (low, high) pairs where low < high when both are given.
_ORDERED = (("emin", "emax"), ("tmin", "tmax"), ("zmin", "zmax"), ("tstart", "tstop"))


def _specs(tool: str) -> list[ParamSpec]:
    return list(importlib.import_module(f"fermipipe.native.{tool}").PARAMS)


def check_params(tool: str, params: Mapping[str, str], templated: set[str]) -> list[str]:
    """Problems with ``params`` of ``tool`` (empty if none, or if there is no native
    definition of ``tool``). ``templated`` names parameters whose values are placeholders
    filled per file (not checked). Each problem is ``(name, message)`` text ``name: msg``."""
    if tool not in NATIVE_TOOLS:
        return []
    by_name = {s.name.lower(): s for s in _specs(tool)}
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, raw in params.items():
        spec = by_name.get(key.lower())
        if spec is None:
            close = difflib.get_close_matches(key.lower(), list(by_name), n=1)
            hint = f" (did you mean {by_name[close[0]].name}?)" if close else ""
            problems.append(f"{key}: {tool} has no parameter {key!r}{hint}")
            continue
        if key in templated or spec.kind == "file":
            continue
        try:
            values[spec.name] = convert_value(tool, spec, raw)
        except ToolError as exc:
            problems.append(f"{key}: {exc.detail}")
    for name, value in values.items():
        if value is None or isinstance(value, bool):
            continue
        if name in _AT_LEAST_ONE and value < 1:
            problems.append(f"{name}: must be at least 1 (got {value:g})")
        elif name in _POSITIVE and not value > 0:
            problems.append(f"{name}: must be positive (got {value:g})")
    for low, high in _ORDERED:
        a, b = values.get(low), values.get(high)
        if isinstance(a, int | float) and isinstance(b, int | float) and not a < b:
            problems.append(f"{low}: {low}={a:g} is not below {high}={b:g}")
    return problems
