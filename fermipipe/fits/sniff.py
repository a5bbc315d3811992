"""What a file is, from its first bytes: FITS, gzipped FITS, or something else."""

from __future__ import annotations

from pathlib import Path

_GZIP_MAGIC = b"\x1f\x8b"
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".evt", ".fits.gz", ".fit.gz", ".fts.gz")


def looks_like_fits_name(path: Path) -> bool:
    """True when the name says FITS (``.fits``, ``.fit``, ``.fts``, ``.evt``, maybe ``.gz``)."""
    return path.name.lower().endswith(_FITS_SUFFIXES)


def not_a_fits_file(path: Path) -> str | None:
    """Why ``path`` is not a FITS file the tools can read (None: it is one, maybe gzipped).

    The pipeline's inputs and common files must be FITS: a text file is never taken for a
    file list there (that is the command line's ``@list`` syntax)."""
    if path.is_symlink() and not path.exists():
        return "a dangling symbolic link"
    if path.is_dir():
        return "a folder, not a file"
    if not path.is_file():
        return "not a regular file (a FIFO, socket or device)"
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if head.startswith(b"SIMPLE  =") or head.startswith(b"SIMPLE ="):
        return None
    if head.startswith(_GZIP_MAGIC):
        return None if path.name.lower().endswith(".gz") else "gzip-compressed: name it .gz"
    return "empty (0 bytes), not a FITS file" if not head else "not a FITS file"
