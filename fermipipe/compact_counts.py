"""Counts maps stored losslessly compact: a sparse FITS table that expands to the same bytes.

A weekly all-sky CCUBE (3600×1800×24 int32, 622 MB) holds ~1 M events, so > 99 % of its
voxels are 0. :func:`compact` writes it as a small, valid FITS file:

* HDU 0: an empty primary holding the marker ``FPCOMPAC = 'SPARSE'`` (:func:`is_compact`)
  and the form's version ``FPCVERS``;
* HDU 1 ``VOXELS``: one row per voxel whose bits are not all zero — ``INDEX`` (the flat,
  C-order index into the image: axis 1 fastest, as in the FITS data unit; int32, or int64
  for more than 2^31−1 voxels) and ``VALUE`` (the value, in the narrowest integer column
  that holds every value — B, I, J or K — or, for a float image, its own float type, the
  bits unchanged). Rows are in increasing ``INDEX``. Cards ORIGSIZE/ORIGCRC give the size and
  CRC-32 of the original file, checked by :func:`expand`;
* HDU 2 ``PRIMARY_HEADER``: the original primary header, byte for byte (one row of one
  byte-vector column);
* HDU 3…: the original extensions (EBOUNDS, GTI, …), copied byte for byte, so they are read
  like any FITS extension (their CHECKSUM/DATASUM stay valid).

Measured on a generated 2 M-event week binned as configs/mission.yaml bins it
(benchmarks/compact_counts.py, figures in its docstring): 797,429 nonzero voxels, a 4.0 MB
compact file (155× smaller; 934 weeks ≈ 3.8 GB), written in 0.7–3 s (quiet–loaded
machine) and added to a merge's running sum in 0.1–0.2 s by scatter-adding its rows
(:mod:`fermipipe.merge`). Lossless FITS tile compression is 10 % smaller with GZIP but
5–20× slower to write and 25–60× slower to add (every read decodes all 155 M voxels); RICE_1
writes as fast but is 35 % larger and 12× slower to add.

Only unscaled primary images (no BSCALE/BZERO/BLANK, ≥ 2 axes) are compacted
(:func:`can_compact`); HEALPix counts tables (a ``SKYMAP`` table of nside² rows) are stored
as they are. A file that would not expand to the same bytes — bytes after the last HDU,
non-zero data padding, a header that is not printable ASCII — is refused, never stored
approximately.

From a shell: ``python -m fermipipe.compact_counts compact|expand SRC DEST``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from astropy.io import fits
from zlib_ng.zlib_ng import crc32  # zlib's CRC-32, faster (SIMD)

from fermipipe.errors import ToolError, os_error_text
from fermipipe.fits.writing import atomic_output

__all__ = [
    "CompactCountsError",
    "CompactMap",
    "can_compact",
    "compact",
    "expand",
    "is_compact",
    "open_compact",
]

#: The marker card of a compact counts file and the version of the form.
MARKER = "FPCOMPAC"
FORM = "SPARSE"
VERSION = 1
_BLOCK = 2880
#: Voxels handled per step when scanning or writing a dense image (bounded memory).
_CHUNK = 1 << 23

_IMAGE_DTYPES = {8: "u1", 16: "i2", 32: "i4", 64: "i8", -32: "f4", -64: "f8"}


class CompactCountsError(ToolError):
    """A counts map cannot be compacted, or a compact file is damaged: one line naming it."""

    def __init__(self, message: str, file: str | os.PathLike[str]) -> None:
        super().__init__("compact_counts", message, os.fspath(file))


# ------------------------------------------------------------------------- helpers


def _image_dtype(header: fits.Header) -> np.dtype[Any]:
    """The big-endian dtype of the primary data unit (from BITPIX)."""
    return np.dtype(">" + _IMAGE_DTYPES[int(header["BITPIX"])])


def _shape(header: fits.Header) -> tuple[int, ...]:
    """The image's numpy (C-order) shape: (NAXISn, …, NAXIS1)."""
    return tuple(int(header[f"NAXIS{i}"]) for i in range(int(header["NAXIS"]), 0, -1))


def _image_problem(header: fits.Header) -> str | None:
    """Why this primary header is not a counts image this form stores (None: it is)."""
    if not header.get("SIMPLE", False):
        return "not a FITS file with a standard primary header"
    if header.get("BITPIX") not in _IMAGE_DTYPES:
        return f"unsupported BITPIX {header.get('BITPIX')!r}"
    if int(header.get("NAXIS", 0)) < 2:
        return "no counts map/cube in the primary HDU (NAXIS < 2)"
    for key in ("BSCALE", "BZERO", "BLANK"):
        if (
            key in header
            and not (key == "BSCALE" and header[key] == 1)
            and not (key == "BZERO" and header[key] == 0)
        ):
            return f"a scaled image ({key} = {header[key]!r}) is stored as it is"
    if (
        header.get("GROUPS")
        or int(header.get("PCOUNT", 0) or 0)
        or int(header.get("GCOUNT", 1) or 1) != 1
    ):
        return "random-groups primary HDU"
    return None


def _value_format(values: np.ndarray, dtype: np.dtype[Any]) -> tuple[str, np.dtype[Any]]:
    """The FITS column format and dtype holding ``values`` exactly, narrowest first."""
    if dtype.kind == "f":
        return ("E" if dtype.itemsize == 4 else "D"), dtype
    lo = int(values.min(initial=0))
    hi = int(values.max(initial=0))
    if lo >= 0 and hi <= 255:
        return "B", np.dtype("u1")
    if lo >= -(2**15) and hi < 2**15:
        return "I", np.dtype(">i2")
    if lo >= -(2**31) and hi < 2**31:
        return "J", np.dtype(">i4")
    return "K", np.dtype(">i8")


@dataclass(frozen=True)
class _Layout:
    """Where the parts of an original counts file are (byte offsets)."""

    header_end: int  # = start of the data unit
    data_bytes: int  # the image, without padding
    data_end: int  # end of the padded data unit = start of the first extension
    size: int  # the file's size


def _layout(hdul: fits.HDUList, path: Path) -> _Layout:
    """Check that the file is exactly header + padded image + extensions, nothing else."""
    info0 = hdul.fileinfo(0)
    header = hdul[0].header
    data_bytes = int(np.prod(_shape(header))) * abs(int(header["BITPIX"])) // 8
    data_end = int(info0["datLoc"]) + int(info0["datSpan"])
    size = path.stat().st_size
    end = data_end
    for i in range(1, len(hdul)):
        info = hdul.fileinfo(i)
        if int(info["hdrLoc"]) != end:
            raise CompactCountsError(f"HDU {i} does not follow the previous one", path)
        end = int(info["datLoc"]) + int(info["datSpan"])
    if info0["hdrLoc"] != 0 or end != size:
        raise CompactCountsError(
            f"{size - end} bytes after the last HDU: would not expand to the same file", path
        )
    return _Layout(int(info0["datLoc"]), data_bytes, data_end, size)


def _read_at(fh: BinaryIO, offset: int, n: int) -> bytes:
    fh.seek(offset)
    data = fh.read(n)
    if len(data) != n:
        raise EOFError(f"{n - len(data)} bytes missing at offset {offset}")
    return data


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[Path]:
    """:func:`atomic_output` into a directory made if needed; a failed write (a full disk)
    is one line naming ``path``, the temporary removed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            yield Path(tmp)
    except OSError as exc:
        raise CompactCountsError(f"cannot write: {os_error_text(exc)}", path) from None


def _open_fits(path: Path, **kwargs: Any) -> fits.HDUList:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's notes on odd headers: not ours
            hdul = fits.open(path, lazy_load_hdus=False, **kwargs)
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise CompactCountsError(f"cannot read: {exc}", path) from None
    return hdul


# -------------------------------------------------------------------------- public


def can_compact(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` holds a counts map/cube in its primary HDU that :func:`compact`
    stores (an unscaled image with ≥ 2 axes). HEALPix tables and compact files: False."""
    try:
        header = fits.getheader(path, 0)
    except (OSError, ValueError, IndexError, KeyError):
        return False
    return MARKER not in header and _image_problem(header) is None


def is_compact(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a compact counts file (the marker card in its primary header).

    Reads only the first header; a file that is not FITS, or is absent, is not compact.
    """
    try:
        with open(path, "rb") as fh:
            block = fh.read(_BLOCK)
    except OSError:
        return False
    if not block.startswith(b"SIMPLE  ="):
        return False
    for i in range(0, len(block) - 79, 80):
        card = block[i : i + 80]
        if card.startswith(b"END     "):
            return False
        if card.startswith(MARKER.encode().ljust(8) + b"="):
            return card[10:].split(b"/")[0].strip().strip(b"'").strip() == FORM.encode()
    return False


def compact(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Write the compact form of counts map file ``src`` at ``dest`` (atomically); return it.

    ``src`` is read once (memory-mapped, scanned in chunks): memory stays bounded by the
    number of nonzero voxels. Raises :class:`CompactCountsError` (one line naming ``src``)
    for a file this form does not hold exactly (see the module docstring).
    """
    src, dest = Path(src), Path(dest)
    with _open_fits(src, memmap=True) as hdul:
        header = hdul[0].header
        problem = "already a compact counts file" if MARKER in header else _image_problem(header)
        if problem is not None:
            raise CompactCountsError(problem, src)
        layout = _layout(hdul, src)
        shape = _shape(header)
        dtype = _image_dtype(header)
    nvox = int(np.prod(shape))
    try:
        with open(src, "rb") as fh:
            head = _read_at(fh, 0, layout.header_end)
            pad = _read_at(fh, layout.header_end + layout.data_bytes,
                           layout.data_end - layout.header_end - layout.data_bytes)  # fmt: skip
            extensions = _read_at(fh, layout.data_end, layout.size - layout.data_end)
        if any(b < 0x20 or b > 0x7E for b in head):
            raise CompactCountsError("its primary header is not printable ASCII", src)
        if pad.strip(b"\0"):
            raise CompactCountsError("non-zero padding after the image", src)
        crc = crc32(head)
        data = np.memmap(src, dtype=dtype, mode="r", offset=layout.header_end, shape=(nvox,))
        bits = data.view(f"u{dtype.itemsize}")  # nonzero bits: -0.0 and NaN are kept too
        index_parts: list[np.ndarray] = []
        value_parts: list[np.ndarray] = []
        for start in range(0, nvox, _CHUNK):
            chunk = bits[start : start + _CHUNK]
            crc = crc32(memoryview(chunk).cast("B"), crc)
            nz = np.flatnonzero(chunk)
            index_parts.append(nz + start)
            value_parts.append(np.asarray(data[start : start + _CHUNK][nz]))
        del data, bits
    except (OSError, EOFError, ValueError) as exc:
        raise CompactCountsError(f"cannot read: {exc}", src) from None
    crc = crc32(extensions, crc32(pad, crc))
    index = np.concatenate(index_parts) if index_parts else np.empty(0, np.int64)
    values = np.concatenate(value_parts) if value_parts else np.empty(0, dtype)
    write_form(dest, head, index, values, dtype, nvox, layout.size, crc, len(hdul), extensions)
    return dest


def write_form(
    dest: Path,
    head: bytes,
    index: np.ndarray,
    values: np.ndarray,
    dtype: np.dtype[Any],
    nvox: int,
    size: int,
    crc: int,
    nhdu: int,
    extensions: bytes,
) -> None:
    """The compact file (FPCVERS 1) of an original with primary header ``head`` (bytes),
    nonzero voxels ``index``/``values`` of an image of ``nvox`` voxels of ``dtype``, ``size``
    bytes, CRC-32 ``crc``, ``nhdu`` HDUs and extensions ``extensions`` (bytes) — the one
    writer of the form (:func:`compact`; gtbin's direct writer, fermipipe.compact_write)."""
    vformat, vtype = _value_format(values, dtype)
    iformat = "J" if nvox < 2**31 else "K"
    primary = fits.PrimaryHDU()
    primary.header[MARKER] = (FORM, "fermipipe compact counts map (lossless)")
    primary.header["FPCVERS"] = (VERSION, "version of the compact form")
    primary.header.add_comment("Expand with fermipipe.compact_counts.expand: the original")
    primary.header.add_comment("file, byte for byte. VOXELS: flat C-order INDEX, VALUE.")
    voxels = fits.BinTableHDU.from_columns(
        [
            fits.Column("INDEX", iformat, array=index.astype(">i4" if iformat == "J" else ">i8")),
            fits.Column("VALUE", vformat, array=values.astype(vtype)),
        ],
        name="VOXELS",
    )
    vh = voxels.header
    vh["ORIGSIZE"] = (size, "[byte] size of the original file")
    vh["ORIGCRC"] = (crc, "CRC-32 of the original file")
    vh["ORIGHDU"] = (nhdu, "HDUs in the original file")
    head_hdu = fits.BinTableHDU.from_columns(
        # bytes (B), not characters (A): astropy would turn the trailing blanks into NULs
        [fits.Column("HEADER", f"{len(head)}B", array=np.frombuffer(head, np.uint8)[None, :])],
        name="PRIMARY_HEADER",
    )
    with _writing(dest) as tmp, open(tmp, "wb") as out:
        fits.HDUList([primary, voxels, head_hdu]).writeto(out, checksum=True)
        out.write(extensions)


@dataclass
class CompactMap:
    """A compact counts file, read: the original headers and the nonzero voxels."""

    path: Path
    #: ``[primary (the original header, verbatim, no data), *the original extensions]``:
    #: the original file's HDUs at their original positions, for header and table reads.
    hdul: fits.HDUList
    header_bytes: bytes
    shape: tuple[int, ...]  # numpy order (NAXISn, …, NAXIS1)
    dtype: np.dtype[Any]  # of the original image, native byte order
    index: np.ndarray  # int64 flat C-order indices, strictly increasing
    values: np.ndarray  # in ``dtype``
    size: int  # of the original file
    crc: int  # CRC-32 of the original file
    extension_bytes: bytes  # the original extensions, verbatim

    @property
    def header(self) -> fits.Header:
        return self.hdul[0].header

    def dense(self) -> np.ndarray:
        """The full image (native byte order)."""
        out = np.zeros(int(np.prod(self.shape)), self.dtype)
        out[self.index] = self.values
        return out.reshape(self.shape)


def open_compact(path: str | os.PathLike[str], *, voxels: bool = True) -> CompactMap:
    """Read a compact counts file, checking it whole (size, DATASUMs, rows, header).

    A truncated or damaged file raises :class:`CompactCountsError` naming it. Without
    ``voxels`` only the headers and extensions are read (``index``/``values`` empty): for a
    map whose voxels were already read and checked (a merge's running sum)."""
    path = Path(path)
    if not is_compact(path):
        raise CompactCountsError("not a compact counts file (no FPCOMPAC = 'SPARSE')", path)
    with _open_fits(path, memmap=False) as hdul:
        try:
            return _read_compact(path, hdul, voxels)
        except (KeyError, IndexError, ValueError, TypeError, OSError, EOFError) as exc:
            raise CompactCountsError(f"damaged compact file: {exc}", path) from None


def _read_compact(path: Path, hdul: fits.HDUList, with_voxels: bool = True) -> CompactMap:
    version = hdul[0].header.get("FPCVERS")
    if version != VERSION:
        raise CompactCountsError(f"compact form version {version!r}, expected {VERSION}", path)
    last = hdul.fileinfo(len(hdul) - 1)
    expected = int(last["datLoc"]) + int(last["datSpan"])
    size = path.stat().st_size
    if size != expected or len(hdul) < 3:
        raise CompactCountsError(f"truncated: {size} bytes, its HDUs need {expected}", path)
    voxels, head_hdu = hdul[1], hdul[2]
    if voxels.name != "VOXELS" or head_hdu.name != "PRIMARY_HEADER":
        raise CompactCountsError("no VOXELS and PRIMARY_HEADER tables in HDUs 1 and 2", path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for hdu in (voxels, head_hdu) if with_voxels else (head_hdu,):
            if hdu.verify_datasum() != 1:
                raise CompactCountsError(f"{hdu.name} data do not match their DATASUM", path)
    header_bytes = np.asarray(head_hdu.data).tobytes()
    primary = fits.PrimaryHDU.fromstring(header_bytes)  # verbatim: no card rewritten
    header = primary.header
    problem = _image_problem(header)
    if problem is not None or len(header_bytes) % _BLOCK:
        raise CompactCountsError(f"its stored primary header is damaged ({problem})", path)
    shape = _shape(header)
    dtype = _image_dtype(header).newbyteorder("=")
    if with_voxels:
        index = np.asarray(voxels.data["INDEX"], dtype=np.int64)
        values = np.asarray(voxels.data["VALUE"]).astype(dtype)
    else:
        index, values = np.empty(0, np.int64), np.empty(0, dtype)
    nvox = int(np.prod(shape))
    if index.size and (index[0] < 0 or index[-1] >= nvox or np.any(np.diff(index) <= 0)):
        raise CompactCountsError("VOXELS INDEX not increasing within the image", path)
    start = int(hdul.fileinfo(3)["hdrLoc"]) if len(hdul) > 3 else size
    with open(path, "rb") as fh:
        extension_bytes = _read_at(fh, start, size - start)
    extensions = [hdu.copy() for hdu in hdul[3:]]
    return CompactMap(
        path=path,
        hdul=fits.HDUList([primary, *extensions]),
        header_bytes=header_bytes,
        shape=shape,
        dtype=dtype,
        index=index,
        values=values,
        size=int(voxels.header["ORIGSIZE"]),
        crc=int(voxels.header["ORIGCRC"]),
        extension_bytes=extension_bytes,
    )


def expand(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Write the original counts file of compact file ``src`` at ``dest`` (atomically).

    The result is the original byte for byte (headers with their CHECKSUM/DATASUM cards,
    image, padding, extensions): checked against the size and CRC-32 recorded at
    :func:`compact` before the file is renamed into place. The image is written in chunks
    (bounded memory).
    """
    src, dest = Path(src), Path(dest)
    cm = open_compact(src)
    nvox = int(np.prod(cm.shape))
    big = cm.dtype.newbyteorder(">")
    with _writing(dest) as tmp, open(tmp, "wb") as out:
        crc = crc32(cm.header_bytes)
        out.write(cm.header_bytes)
        written = len(cm.header_bytes)
        bounds = np.searchsorted(cm.index, np.arange(0, nvox + _CHUNK, _CHUNK))
        for k, start in enumerate(range(0, nvox, _CHUNK)):
            chunk = np.zeros(min(_CHUNK, nvox - start), big)
            a, b = bounds[k], bounds[k + 1]
            chunk[cm.index[a:b] - start] = cm.values[a:b]
            raw = memoryview(chunk).cast("B")
            crc = crc32(raw, crc)
            out.write(raw)
            written += len(raw)
        pad = b"\0" * (-written % _BLOCK)
        out.write(pad)
        crc = crc32(cm.extension_bytes, crc32(pad, crc))
        out.write(cm.extension_bytes)
        written += len(pad) + len(cm.extension_bytes)
        if written != cm.size or crc != cm.crc:
            raise CompactCountsError(
                f"expands to {written} bytes with CRC-32 {crc}, not the original's {cm.size} "
                f"bytes with {cm.crc}: damaged",
                src,
            )
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m fermipipe.compact_counts compact|expand SRC DEST``: one line on error."""
    parser = argparse.ArgumentParser(
        prog="python -m fermipipe.compact_counts",
        description="Store a counts map compactly (lossless) or expand it to the original.",
    )
    parser.add_argument("action", choices=("compact", "expand"))
    parser.add_argument("src", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    try:
        (compact if args.action == "compact" else expand)(args.src, args.dest)
    except CompactCountsError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
