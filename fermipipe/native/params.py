"""Fermitools-style parameters for the native tools.

Mirrors what the Fermitools' parameter (.par) files give a tool: each parameter has a name, a
kind and a default; values arrive as ``key=value`` strings (or already typed, from a pipeline
config). ``INDEF`` means "not given" and becomes ``None``; booleans accept yes/no/true/false/
y/n/1/0 like APE does.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fermipipe.errors import ToolError

Kind = Literal["file", "str", "real", "int", "bool"]

_TRUE = {"yes", "y", "true", "t", "1"}
_FALSE = {"no", "n", "false", "f", "0"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a tool, as in its .par file."""

    name: str
    kind: Kind
    default: Any = None  # None = INDEF / no default
    choices: tuple[str, ...] | None = None  # case-insensitive, for enumerated strings
    required: bool = False  # mode "a" with no usable default


@dataclass
class ToolOutcome:
    """What a native tool reports back to its caller."""

    outputs: list[str] = field(default_factory=list)
    n_rows: int | None = None
    messages: list[str] = field(default_factory=list)


def _names_a_file(spec: ParamSpec, raw: str) -> bool:
    """An output name, or the name of an existing input (after an ``@``)."""
    return spec.name.lower().startswith("outfile") or os.path.lexists(raw.removeprefix("@"))


def convert_value(tool: str, spec: ParamSpec, raw: Any) -> Any:
    """``raw`` as the kind ``spec`` declares (None for INDEF); ToolError when it is not one."""
    if raw is None:
        return None
    if isinstance(raw, str):
        text = raw.strip()
        if text.upper() == "INDEF" or (text == "" and spec.kind in ("real", "int")):
            return None
        # Names are data: blanks around an output name, or around an existing input's name,
        # are part of it (other values are trimmed, as APE does).
        if spec.kind == "file" and text and text != raw and _names_a_file(spec, raw):
            return raw
    else:
        text = str(raw)
    try:
        if spec.kind == "real":
            return float(raw) if not isinstance(raw, str) else float(text)
        if spec.kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, int):
                return raw
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if spec.kind == "bool":
            if isinstance(raw, bool):
                return raw
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
    except (TypeError, ValueError):
        raise ToolError(tool, f"parameter {spec.name}={raw!r} is not a valid {spec.kind}") from None
    # file / str
    if spec.choices is not None:
        for choice in spec.choices:
            if text.upper() == choice.upper():
                return choice
        raise ToolError(
            tool,
            f"parameter {spec.name}={raw!r} must be one of {', '.join(spec.choices)}",
        )
    return text


def resolve(specs: Sequence[ParamSpec], given: Mapping[str, Any], tool: str) -> dict[str, Any]:
    """Type-convert ``given`` against ``specs``, filling defaults.

    Unknown names are an error with a "did you mean" suggestion; a required parameter that is
    missing is an error naming it.
    """
    by_name = {s.name.lower(): s for s in specs}
    out: dict[str, Any] = {s.name: s.default for s in specs}
    for key, raw in given.items():
        spec = by_name.get(key.lower())
        if spec is None:
            close = difflib.get_close_matches(key.lower(), by_name, n=1)
            hint = f" (did you mean {by_name[close[0]].name}?)" if close else ""
            raise ToolError(tool, f"unknown parameter {key!r}{hint}")
        out[spec.name] = convert_value(tool, spec, raw)
    for spec in specs:
        if spec.required and out[spec.name] in (None, ""):
            raise ToolError(tool, f"parameter {spec.name} is required")
    return out


def parse_argv(
    args: Iterable[str], tool: str, positional: Sequence[str] | None = None
) -> dict[str, str]:
    """Parse command-line words (Fermitools/ftools syntax) into a dict of strings.

    ``name=value`` words set a parameter by name. A word without ``=`` is positional, as in
    HEASARC's parameter interface (``farith a.fits b.fits out.fits DIV``): the n-th such word
    sets the n-th name of ``positional``. ``positional`` defaults to the order the tool
    declares (:data:`fermipipe.native.POSITIONAL_PARAMS`); tools that declare none accept
    only ``name=value``.
    """
    if positional is None:
        from fermipipe.native import positional_order

        positional = positional_order(tool)
    out: dict[str, str] = {}
    n_positional = 0
    for word in args:
        key, sep, value = word.partition("=")
        if not sep:
            if n_positional >= len(positional):
                if not positional:
                    raise ToolError(tool, f"argument {word!r} is not of the form name=value")
                raise ToolError(
                    tool,
                    f"too many positional arguments at {word!r} "
                    f"(takes {len(positional)}: {' '.join(positional)})",
                )
            key, value = positional[n_positional], word
            n_positional += 1
        elif not key:
            raise ToolError(tool, f"argument {word!r} is not of the form name=value")
        if key in out:
            raise ToolError(tool, f'parameter "{key}" duplicated on command line')
        out[key] = value
    return out


def is_none(value: str | None) -> bool:
    """True for the Fermitools' 'no file' spellings: empty, NONE, INDEF (any case)."""
    return value is None or value.strip().upper() in ("", "NONE", "INDEF")


def expand_file_list(value: str, tool: str, param: str) -> list[str]:
    """Resolve a file parameter of a dataSubselector tool (spec 1.1): the FITS files it names.

    ``@name`` is a text list (one name per line, blank lines and ``#`` comments skipped;
    relative names are taken relative to the current directory, as the Fermitools do), or
    the one file ``name`` when it is FITS; a bare name must be a FITS file (``.gz`` allowed).
    Names are data: nothing is expanded. Every file is checked to be FITS
    (:func:`fermipipe.native.tool_files.input_file_list`).
    """
    from fermipipe.native.tool_files import input_file_list

    return input_file_list(value, tool, param, comments=True, fits_list_file=True)
