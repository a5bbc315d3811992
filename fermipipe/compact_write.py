"""Write a counts map's compact form directly from its nonzero voxels, never the dense image.

:func:`write_compact_fits` takes what :func:`fermipipe.fits.table.write_fits` takes for a
counts-map product — the primary header with its image, here a :class:`SparseImage`, and
the extension HDUs — and writes the file :func:`fermipipe.compact_counts.compact` would make
from write_fits' dense output, byte for byte (given the same clock: DATE and the checksum
comments carry the time of writing). So :func:`fermipipe.compact_counts.expand` gives the
dense product back byte for byte, and the form (FPCVERS 1) is unchanged:

* the stored primary header is the dense file's, made by write_fits' own code
  (:func:`~fermipipe.fits.table.primary_header_bytes`): FILENAME = the ``filename`` given
  (gtbin gives its ``outfile``'s base name: the dense product's name had it been written
  there), and DATASUM/CHECKSUM of the dense data unit — the ones'-complement sum of its
  big-endian 32-bit words, i.e. of the nonzero voxels only (zero words and the padding add
  nothing);
* the extensions are write_fits' bytes, written to memory by the same code
  (:func:`~fermipipe.fits.table.extension_bytes`);
* ORIGSIZE/ORIGCRC are the dense file's size and CRC-32. The CRC needs the dense bytes: they
  are generated chunk by chunk into one reused buffer (only the nonzero voxels are set and
  reset) and fed to the CRC (zlib-ng's: the same CRC-32 as zlib's, computed with SIMD),
  never stored. That is far below the dense write it replaces, so the form keeps its
  full-file CRC rather than a cheaper, new integrity card (with zlib's own CRC it was a large
  part of gtbin's time in the mission chain). Skipping
  the all-zero stretches by combining CRCs mathematically would save at most about half of
  it: in that week only 45 % of the 64 KB pages, 20 % of the 1 MB ones, are all zero.

Memory is O(nonzero voxels) plus one 8 MB buffer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from zlib_ng.zlib_ng import crc32  # zlib's CRC-32, faster (SIMD)

from fermipipe.compact_counts import write_form
from fermipipe.fits.table import BLOCK, HduSpec, extension_bytes, primary_header_bytes
from fermipipe.fits.writing import checksum_words

__all__ = ["SparseImage", "write_compact_fits"]

#: Voxels per step when generating the dense bytes for the CRC (8 MB of int32).
_CHUNK = 1 << 21
_BIG = np.dtype(">i4")


@dataclass(frozen=True)
class SparseImage:
    """An int32 counts image as its nonzero voxels: ``index`` (int64, strictly increasing
    flat C-order indices: axis 1 fastest, as in the FITS data unit) and ``values``."""

    shape: tuple[int, ...]  # numpy order (NAXISn, …, NAXIS1)
    index: np.ndarray
    values: np.ndarray  # int32, native byte order, no zeros

    @classmethod
    def from_flat(cls, parts: Sequence[np.ndarray], shape: tuple[int, ...]) -> SparseImage:
        """Count the flat voxel indices in ``parts`` (one entry per event; repeats counted).

        Sorting the events (np.unique) costs O(events), whatever the size of the image.
        Counts are int32 like the dense image (wrapping the same way, past 2^31 − 1).
        """
        nvox = int(np.prod(shape))
        flat = np.concatenate(parts) if parts else np.empty(0, np.int64)
        if nvox < 2**31:
            flat = flat.astype(np.int32, copy=False)  # sorts faster, half the memory
        index, counts = np.unique(flat, return_counts=True)
        values = counts.astype(np.int32)
        keep = values != 0  # a count of exactly 2^32 wraps to 0 in int32, as the dense map
        return cls(shape, index[keep].astype(np.int64), values[keep])

    @property
    def nvox(self) -> int:
        return int(np.prod(self.shape))

    @property
    def total(self) -> int:
        """Sum of the counts (int64), as the dense path sums its image."""
        return int(self.values.sum(dtype=np.int64))

    def datasum(self) -> int:
        """The FITS DATASUM of the dense data unit: only nonzero words contribute."""
        return checksum_words(self.values.astype(_BIG))

    def dense_chunks(self) -> Iterator[memoryview]:
        """The dense image's big-endian bytes, chunk by chunk, in one reused buffer (a
        chunk is valid until the next one is asked for)."""
        buf = np.zeros(_CHUNK, _BIG)
        bounds = np.searchsorted(self.index, np.arange(0, self.nvox + _CHUNK, _CHUNK))
        for k, start in enumerate(range(0, self.nvox, _CHUNK)):
            a, b = int(bounds[k]), int(bounds[k + 1])
            at = self.index[a:b] - start
            buf[at] = self.values[a:b]
            yield memoryview(buf[: min(_CHUNK, self.nvox - start)]).cast("B")
            buf[at] = 0


def _image_header_checks(header: Any, image: SparseImage) -> None:
    naxis = int(header["NAXIS"])
    shape = tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
    if int(header["BITPIX"]) != 32 or shape != image.shape:
        raise ValueError(
            f"primary header describes BITPIX {header['BITPIX']} {shape}, "
            f"not the int32 image {image.shape}"
        )
    if image.index.size and (image.index[0] < 0 or image.index[-1] >= image.nvox):
        raise ValueError("voxel index outside the image")


def write_compact_fits(
    path: str | os.PathLike[str],
    hdus: Sequence[tuple[Any, SparseImage] | HduSpec],
    *,
    filename: str | None = None,
) -> Path:
    """Write the compact form of the product ``write_fits(path, hdus, filename=filename)``
    would write, ``hdus[0]`` being ``(primary header, SparseImage)``; atomically.

    Raises OSError (naming ``path``) when the file cannot be written, like write_fits.
    """
    final = Path(path)
    if not hdus:
        raise ValueError("write_compact_fits needs at least a primary HDU")
    header, image = hdus[0]  # type: ignore[misc]
    if not isinstance(image, SparseImage):
        raise TypeError("the primary HDU's data must be a SparseImage")
    head = primary_header_bytes(header, image.datasum(), filename=filename or final.name)
    _image_header_checks(fits.Header.fromstring(head.decode("ascii")), image)
    extensions = extension_bytes(hdus[1:])
    data_bytes = image.nvox * 4
    pad = b"\0" * (-data_bytes % BLOCK)
    crc = crc32(head)
    for chunk in image.dense_chunks():
        crc = crc32(chunk, crc)
    crc = crc32(extensions, crc32(pad, crc))
    size = len(head) + data_bytes + len(pad) + len(extensions)
    write_form(
        final, head, image.index, image.values, _BIG, image.nvox, size, crc, len(hdus),
        extensions,
    )  # fmt: skip
    return final
