"""Atomic output files, FITS checksums and the FILENAME keyword (spec 1.5).

Every tool output is written to a hidden temporary name in the destination directory and
renamed over the final name with ``os.replace`` only when complete, so a crash or a
concurrent reader never sees a half-written product. All outputs carry CHECKSUM/DATASUM on
every HDU and the primary ``FILENAME`` = basename of the output (FitsUtil::writeChecksums).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fermipipe.fits.header import Header
from fermipipe.fits.keywords import ascii_text, set_card

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = [
    "add_checksums",
    "atomic_copy",
    "atomic_output",
    "checksum_words",
    "encode_checksum",
    "set_filename",
    "remove_dead_temporaries",
    "temporary_name",
    "write_hdul_atomic",
]

FILENAME_COMMENT = "name of this file"


#: ``.<name>.tmp-<pid>-<host tag>-<random>``: the writer's PID and host are in the name, so
#: the temporaries of a writer that died (SIGKILL, power loss) can be found and removed.
_TMP_RE = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-(?:(?P<host>[0-9a-f]{8})-)?[0-9a-f]+$")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """The hidden temporary name every writer uses next to ``path`` (same file system, so
    ``os.replace`` onto ``path`` is atomic): ``.<name>.tmp-<pid>-<host>-<random>``."""
    final = Path(path)
    name = final.name[:120]  # room for the suffix within NAME_MAX (255 bytes)
    return final.with_name(f".{name}.tmp-{os.getpid()}-{_host_tag()}-{secrets.token_hex(4)}")


_tmp_name = temporary_name  # the former private name


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this host (a PID of 0 or less never does)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(
    folder: str | os.PathLike[str], *, recursive: bool = False
) -> list[Path]:
    """Remove the temporaries (``.*.tmp-<pid>-…``) in ``folder`` whose writer is dead.

    A temporary is removed only when it was written on this host (host tag; names without
    one are from this version's predecessors, written locally) and its writer's PID is no
    longer running; a live writer's temporary is never touched. Call it at run start on the
    output folder and the cache store. Returns what was removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    here = _host_tag()
    found = root.rglob(".*.tmp-*") if recursive else root.glob(".*.tmp-*")
    removed: list[Path] = []
    for path in found:
        m = _TMP_RE.match(path.name)
        if m is None or (m["host"] is not None and m["host"] != here):
            continue
        if pid_alive(int(m["pid"])) or path.is_dir():
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _naming(exc: OSError, path: Path, tmp: Path) -> OSError:
    """``exc`` naming the output ``path`` when the OS named nothing (a write failing with
    ENOSPC) or only the hidden temporary: the caller's one-line message names the output."""
    if exc.filename not in (None, os.fspath(tmp)):
        return exc
    # astropy reports a short disk as a bare OSError("Not enough space on disk: …").
    return type(exc)(exc.errno, exc.strerror or str(exc), os.fspath(path))


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, copy_of: str | os.PathLike[str] | None = None
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary name is :func:`temporary_name` in the same directory. On any exception
    the temporary file is removed (a full disk is given its space back at once) and the
    exception propagates, an OSError naming ``path``; ``path`` is then untouched. The body
    must create the file, unless ``copy_of`` is given: then the temporary starts as a copy
    of that file, which the body may change (a product annotated on its way out).
    """
    final = Path(path)
    tmp = temporary_name(final)
    try:
        if copy_of is not None:
            shutil.copyfile(copy_of, tmp)
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_output: nothing was written to {tmp} for {final}")
        os.replace(tmp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        named = _naming(exc, final, tmp)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy ``src`` to ``dest`` through :func:`atomic_output` (a reader never sees half a
    file; a failed copy leaves ``dest`` untouched); ``dest``'s folder is made if needed."""
    final = Path(dest)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(final, copy_of=src):
        pass
    return final


# ---------------------------------------------------------------------- checksums


def checksum_words(data: bytes | bytearray | memoryview | np.ndarray, start: int = 0) -> int:
    """32-bit ones'-complement sum of big-endian words (the FITS checksum algorithm).

    ``data`` length must be a multiple of 4 (FITS blocks are). ``start`` continues a running
    sum, so large data can be summed block by block.
    """
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=">u4")
    # Sum in uint64: with < 2**32 words the total fits; then fold the carries.
    total = int(buf.sum(dtype=np.uint64)) + start
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


_EXCLUDE = frozenset(b":;<=>?@[\\]^_`")


def encode_checksum(value: int, complement: bool = True) -> str:
    """The 16-character ASCII encoding of a 32-bit checksum (FITS checksum convention)."""
    if complement:
        value = ~value & 0xFFFFFFFF
    asc = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = divmod(byte, 4)
        ch = [quotient + 0x30 + remainder] + [quotient + 0x30] * 3
        while True:
            changed = False
            for j in range(0, 4, 2):
                if ch[j] in _EXCLUDE or ch[j + 1] in _EXCLUDE:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    changed = True
            if not changed:
                break
        for j in range(4):
            asc[4 * j + i] = ch[j]
    # Rotate right by one character.
    out = asc[15:] + asc[:15]
    return bytes(out).decode("ascii")


def set_filename(header: Header | fits.Header, name: str) -> None:
    """Set primary ``FILENAME`` (in place if present, else appended); a name that is not
    printable ASCII is escaped (:func:`~fermipipe.fits.keywords.ascii_text`)."""
    set_card(header, "FILENAME", ascii_text(os.path.basename(name)), FILENAME_COMMENT)


def add_checksums(
    path_or_hdul: str | os.PathLike[str] | fits.HDUList,
    *,
    filename: str | None = None,
    set_filename_key: bool = True,
) -> None:
    """FILENAME on the primary, then CHECKSUM/DATASUM on every HDU.

    For a path the file is updated in place (use on the temporary file inside
    :func:`atomic_output`, passing the *final* name as ``filename``). For an HDUList the
    headers are updated in memory; ``filename`` defaults to ``hdul.filename()``.
    Spec 1.5 sets FILENAME after the checksums, but tip refreshes them on close, so the
    final state — valid checksums that cover FILENAME — is the same.
    """
    from astropy.io import fits

    if isinstance(path_or_hdul, fits.HDUList):
        hdul = path_or_hdul
        name = filename or hdul.filename()
        if set_filename_key and name:
            set_filename(hdul[0].header, name)
        for hdu in hdul:
            hdu.add_checksum()
        return
    path = Path(path_or_hdul)
    with fits.open(path, mode="update", memmap=True) as hdul:
        if set_filename_key:
            set_filename(hdul[0].header, filename or path.name)
        for hdu in hdul:
            hdu.add_checksum()
        hdul.flush(output_verify="silentfix")


def write_hdul_atomic(
    hdul: fits.HDUList,
    path: str | os.PathLike[str],
    *,
    filename_key: bool = True,
    checksum: bool = True,
    overwrite: bool = True,
) -> Path:
    """Write ``hdul`` to ``path`` atomically with FILENAME and checksums.

    ``overwrite=False`` refuses an existing ``path`` (FileExistsError) — the Fermitools'
    clobber=no.
    """
    final = Path(path)
    if not overwrite and final.exists():
        raise FileExistsError(f"{final} exists and clobber/overwrite is off")
    if filename_key:
        set_filename(hdul[0].header, final.name)
    with atomic_output(final) as tmp:
        hdul.writeto(tmp, checksum=checksum, output_verify="silentfix")
    return final
