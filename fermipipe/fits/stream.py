"""Sequential reading of a FITS file, gzipped or not, HDU by HDU, never holding it whole.

:class:`fermipipe.fits.table.FitsFile` decompresses a ``.gz`` into memory once, for random
access to every HDU. A reader that needs only some columns of a large table (gtexpcube2's
livetime cube: one column of two tables) reads the stream in order instead: a header, the
rows of its data in chunks of which only the wanted column is kept, the next header, and so
on. The peak memory is then the kept arrays plus one chunk, not the decompressed file plus
the arrays.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fermipipe.fits.table import (
    BLOCK,
    HduInfo,
    RawTable,
    TruncatedTableError,
    data_size,
    dtype_from_header,
    header_at,
)

__all__ = ["FitsStream"]

#: Bytes of rows read at a time by :meth:`FitsStream.column`.
CHUNK_BYTES = 1 << 20


class FitsStream:
    """A FITS file read front to back: :meth:`hdus` yields each HDU's header and place;
    the data of the HDU just yielded can be read with :meth:`column` or :meth:`table`
    before asking for the next one (the stream never goes back)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._raw: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        try:
            gzipped = self._raw.read(2) == b"\x1f\x8b"
            self._raw.seek(0)
            self._f: BinaryIO = (
                gzip.GzipFile(fileobj=self._raw, mode="rb") if gzipped else self._raw
            )
        except BaseException:
            self._raw.close()
            raise
        self._gzipped = gzipped
        self._pos = 0

    def __enter__(self) -> FitsStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._f is not self._raw:
            self._f.close()
        self._raw.close()

    def _read_into(self, buf: memoryview) -> int:
        """Fill ``buf`` from the current position; fewer bytes only at the end of the file."""
        got = 0
        while got < len(buf):
            n = self._f.readinto(buf[got:])  # type: ignore[attr-defined]
            if not n:
                break
            got += n
        self._pos += got
        return got

    def _skip_to(self, offset: int) -> None:
        if offset < self._pos:
            raise ValueError(f"{self.path}: cannot go back to byte {offset} (at {self._pos})")
        if not self._gzipped:
            self._f.seek(offset)
            self._pos = offset
            return
        scratch = memoryview(bytearray(min(CHUNK_BYTES, offset - self._pos) or 1))
        while self._pos < offset:
            if not self._read_into(scratch[: min(len(scratch), offset - self._pos)]):
                return  # end of file: the next read finds nothing

    def _reader(self, offset: int, n: int) -> bytes:
        self._skip_to(offset)
        buf = bytearray(n)
        got = self._read_into(memoryview(buf))
        return bytes(buf[:got])

    def hdus(self) -> Iterator[HduInfo]:
        """Each HDU in file order (the previous one's unread data is skipped)."""
        offset, index = 0, 0
        while True:
            try:
                found = header_at(self._reader, offset, index == 0)
            except ValueError as exc:
                raise ValueError(f"{self.path}: {exc}") from None
            if found is None:
                return
            header, data_offset = found
            size = data_size(header)
            yield HduInfo(index, header, offset, data_offset, size)
            offset = data_offset + -(-size // BLOCK) * BLOCK
            index += 1

    def _rows(self, info: HduInfo) -> tuple[np.dtype, int]:
        if not info.is_bintable:
            raise ValueError(f"{self.path}[{info.index}] is not a binary table")
        self._skip_to(info.data_offset)
        return dtype_from_header(info.header), int(info.header["NAXIS2"])

    def column(self, info: HduInfo, name: str, dtype: np.dtype | type) -> np.ndarray:
        """Column ``name`` (case-insensitive) of the table ``info`` as a native array of
        ``dtype``, shape (rows, *cell shape), read in chunks of rows."""
        rowtype, nrows = self._rows(info)
        field = {n.upper(): n for n in rowtype.names or ()}.get(name.upper())
        if field is None:
            raise KeyError(f"{self.path}: no column {name!r} in HDU {info.index}")
        out = np.empty((nrows, *rowtype[field].shape), dtype=dtype)
        per_chunk = max(1, CHUNK_BYTES // max(1, rowtype.itemsize))
        buf = bytearray(min(per_chunk, nrows) * rowtype.itemsize)
        for start in range(0, nrows, per_chunk):
            n = min(per_chunk, nrows - start)
            part = memoryview(buf)[: n * rowtype.itemsize]
            if self._read_into(part) != len(part):
                raise TruncatedTableError(
                    f"{self.path}: file is truncated inside table HDU {info.index}"
                )
            out[start : start + n] = np.frombuffer(part, dtype=rowtype)[field]
        return out

    def table(self, info: HduInfo) -> RawTable:
        """All rows of the table ``info`` (for small tables: GTI, EBOUNDS)."""
        rowtype, nrows = self._rows(info)
        buf = bytearray(nrows * rowtype.itemsize)
        if self._read_into(memoryview(buf)) != len(buf):
            raise TruncatedTableError(
                f"{self.path}: file is truncated inside table HDU {info.index}"
            )
        rows = np.frombuffer(buf, dtype=rowtype) if buf else np.empty(0, dtype=rowtype)
        return RawTable(info.header, rows, info, self.path)
