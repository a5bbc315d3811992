"""The files a native tool reads and writes: list expansion and the checks shared by all tools.

* File names are data: no environment-variable or ``~`` expansion anywhere, any bytes a
  POSIX name can hold (a name that is not UTF-8 arrives as a str with surrogate escapes and
  goes back to the same bytes).
* A text file is read as a list of files only when written ``@file``; a bare name must be a
  FITS file (plain, or gzip-compressed and named ``.gz``). Anything else — empty, text, HTML,
  binary, gzip content under another name, a folder — is one line: ``<file>: not a FITS
  file`` (with the reason), never "file list is empty" or a decoding traceback.
* :func:`check_tool_files` runs before every native tool (``fermipipe.native.run_tool``): it
  refuses an output that is one of the inputs (after resolving symlinks, ``..`` and hard
  links), an output that is a folder or whose folder is missing, and unreadable inputs.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fermipipe.errors import ToolError
from fermipipe.native.params import ParamSpec, is_none

__all__ = [
    "check_tool_files",
    "display_name",
    "fits_problem",
    "input_file_list",
    "one_line",
]

_GZIP_MAGIC = b"\x1f\x8b"
#: The first card of every FITS file: keyword SIMPLE padded to 8 columns, then "= ".
_FITS_START = b"SIMPLE  ="


def one_line(text: str) -> str:
    """``text`` with control characters (a newline or tab in a file name) escaped, so a
    message stays one line; other characters, undecodable bytes included, are kept."""
    if text.isprintable():
        return text
    return "".join(
        f"\\x{ord(c):02x}" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in text
    )


def display_name(name: str | os.PathLike[str]) -> str:
    """``name`` for a one-line message: as given, control characters escaped."""
    return one_line(os.fspath(name))


def fits_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a FITS file, or None when it can be opened as one."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a FITS file"
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read below forever
        return "not a FITS file (not a regular file)"
    try:
        with open(name, "rb") as fh:
            head = fh.read(len(_FITS_START))
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if head[:2] == _GZIP_MAGIC:
        if not name.endswith(".gz"):
            return "not a FITS file (gzip-compressed: name it .gz)"
        try:
            with gzip.open(name, "rb") as gz:
                head = gz.read(len(_FITS_START))
        except (OSError, EOFError, zlib.error):
            return "not a FITS file (damaged gzip data)"
        if head.startswith(_FITS_START):
            return None
        return "not a FITS file (gzip content is not FITS)"
    if not head:
        return "not a FITS file (empty file)"
    if not head.startswith(_FITS_START):
        return "not a FITS file"
    return None


def _problem_error(tool: str, param: str, name: str, problem: str) -> ToolError:
    return ToolError(tool, f"{param} {display_name(name)}: {problem}")


def _read_list(tool: str, param: str, listname: str) -> list[str]:
    """The lines of an @list file, as names (bytes decoded like the OS decodes names)."""
    path = Path(listname)
    if path.is_dir():
        raise _problem_error(tool, param, listname, "is a folder, not a file list")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _problem_error(tool, param, listname, "file list not found") from None
    except OSError as exc:
        raise _problem_error(tool, param, listname, f"cannot read it: {exc.strerror}") from None
    if raw[:2] == _GZIP_MAGIC or raw.startswith(_FITS_START) or b"\0" in raw:
        raise _problem_error(tool, param, listname, "is not a text list of file names")
    return [os.fsdecode(line) for line in raw.splitlines()]


def input_file_list(
    value: Any, tool: str, param: str, *, comments: bool, fits_list_file: bool = True
) -> list[str]:
    """The FITS files named by an input parameter; every one is checked to be FITS.

    ``@name``: ``name`` is a text list, one file per line (blank lines skipped; ``#`` lines
    skipped when ``comments`` — the dataSubselector convention; evtbin keeps them as names).
    For the dataSubselector tools ``@x.fits`` naming a FITS file is that one file
    (``fits_list_file``, spec 1.1). Otherwise ``value`` is one file name, used as given.
    """
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if text.strip() != text and not os.path.lexists(text.removeprefix("@")):
        text = text.strip()  # a value padded by a config or a shell, not part of the name
    if text.startswith("@"):
        listname = text[1:]
        if fits_list_file and fits_problem(listname) is None:
            return [listname]
        # Lines are trimmed (as the Fermitools do) unless the untrimmed line names a file.
        entries = [
            line if line.strip() != line and os.path.lexists(line) else line.strip()
            for line in _read_list(tool, param, listname)
        ]
        files = [e for e in entries if e and not (comments and e.startswith("#"))]
        if not files:
            raise _problem_error(tool, param, listname, "file list is empty")
        for entry in files:
            problem = fits_problem(entry)
            if problem is not None:
                where = f"{param} (in list {display_name(listname)})"
                raise _problem_error(tool, where, entry, problem)
        return files
    if not text:
        raise ToolError(tool, f"{param}: no file given")
    problem = fits_problem(text)
    if problem is not None:
        raise _problem_error(tool, param, text, problem)
    return [text]


# --------------------------------------------------------------- checks before running


def _is_output(spec: ParamSpec) -> bool:
    return spec.name.lower().startswith("outfile")


def _same_file(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` are one file: same real path (symlinks, ``..``) or the same
    inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_output(tool: str, param: str, name: str) -> None:
    if os.path.isdir(name):
        raise _problem_error(tool, param, name, "is a folder, not an output file name")
    folder = os.path.dirname(name) or "."
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise _problem_error(tool, param, name, f"its folder {display_name(folder)} {what}")


#: File parameters that also take a keyword naming no file: gtexpcube2 ``cmap=hpx`` asks for
#: HEALPix output (spec §14.2), as ``cmap=none`` asks for WCS output.
_KEYWORD_VALUES: dict[tuple[str, str], tuple[str, ...]] = {("gtexpcube2", "cmap"): ("hpx",)}


def check_tool_files(
    tool: str,
    specs: Sequence[ParamSpec],
    params: Mapping[str, Any],
    *,
    list_comments: bool,
    fits_list_file: bool,
) -> None:
    """Refuse, before any work, what would damage an input or leave a traceback.

    Every output must be writable where asked and must not be any input file (named
    directly or in an @list, or the list file itself) — otherwise the atomic rename would
    silently replace the input.
    """
    by_name = {k.lower(): v for k, v in params.items()}
    inputs: list[tuple[str, str]] = []  # (param, file)
    outputs: list[tuple[str, str]] = []
    for spec in specs:
        if spec.kind != "file":
            continue
        raw = by_name.get(spec.name.lower(), spec.default)
        if raw is None or is_none(str(raw)):
            continue
        if str(raw).strip().lower() in _KEYWORD_VALUES.get((tool, spec.name), ()):
            continue
        value = os.fspath(raw) if isinstance(raw, os.PathLike) else str(raw)
        if _is_output(spec):
            outputs.append((spec.name, value))
            continue
        files = input_file_list(
            value, tool, spec.name, comments=list_comments, fits_list_file=fits_list_file
        )
        inputs.extend((spec.name, f) for f in files)
        if value.startswith("@"):
            inputs.append((spec.name, value[1:]))
    for out_param, out in outputs:
        _check_output(tool, out_param, out)
        for in_param, name in _unique(inputs):
            if _same_file(out, name):
                raise ToolError(
                    tool,
                    f"{out_param} {display_name(out)} is the input {in_param} "
                    f"{display_name(name)}: refusing to overwrite an input "
                    "(choose another output name)",
                )


def _unique(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
