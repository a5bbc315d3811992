"""Merging per-file products into one: image sums, pairwise trees, event concatenation.

* :func:`image_sum` — pixel sum of counts maps/cubes (primary image) or HEALPix ``SKYMAP``
  tables, streaming: the accumulator plus one input (read in chunks), whatever their number.
  Inputs whose WCS (or HEALPix grid) or EBOUNDS differ from the first are refused. The GTI is
  the union of the inputs' GTIs; EXPOSURE and ONTIME keywords are summed. Inputs may be
  compact counts files (:mod:`fermipipe.compact_counts`): their nonzero voxels are
  scatter-added, no dense copy is made. ``subtract`` takes maps back out (a changed week).
  An integer image is summed in its own type (every add checked for overflow) and streamed
  to disk from the accumulator (:func:`fermipipe.fits.table.write_fits`), with no copy.
* :func:`next_level` / :func:`pair_invocation` — one level of a tree reduction with a pairwise
  tool (gtltsum): the caller runs each level's independent pairs in parallel.
* :func:`event_merge` — event lists concatenated with a GTI union: the native
  ``fermipipe.native.evmerge`` or HEASoft's ``ftmerge``.
* :func:`annotate` — records in a merged product which files were left out and why.

Every product is written under a temporary name in its directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from fermipipe.cache import StoreObjectDamagedError, content_hash, verify_stored
from fermipipe.compact_counts import CompactMap, is_compact, open_compact
from fermipipe.errors import ToolError, os_error_text
from fermipipe.fermitools_argv import fermitools_argv
from fermipipe.fits.gti import Gti, find_gti_hdu, read_gti, union, update_gti_hdu
from fermipipe.fits.keywords import ascii_text, set_card
from fermipipe.fits.table import data_size, write_fits
from fermipipe.fits.writing import atomic_output, temporary_name
from fermipipe.manifest import Manifest, header_cards, write_manifest
from fermipipe.plan import Engine, Invocation, tool_invocation

#: The keywords that define a celestial/energy image grid: two maps can be added pixel by
#: pixel only if all of these agree exactly.
_WCS_KEY = re.compile(
    r"^(NAXIS\d*|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CROTA\d|CUNIT\d|PC\d_\d|CD\d_\d|PV\d_\d+"
    r"|LONPOLE|LATPOLE|EQUINOX|RADESYS|RADECSYS|WCSAXES)$"
)
#: The keywords that define a HEALPix grid.
_HPX_KEYS = ("NSIDE", "ORDERING", "COORDSYS", "INDXSCHM", "FIRSTPIX", "LASTPIX", "NAXIS2")
_SUMMED_KEYS = ("EXPOSURE", "ONTIME")
#: The largest magnitude up to which a float type holds every integer (2^(mantissa bits + 1)):
#: integer counts in a float32 map are exact up to 2^24 = 16,777,216 per pixel, in float64 up
#: to 2^53. gtbin's count maps are int32 (spec: BITPIX 32), exact to 2^31 − 1 (an int32
#: overflow is refused); a float map's sum beyond this is rounded, and a subtraction from it
#: is refused.
EXACT_INTEGER_LIMIT = {4: 2**24, 8: 2**53}


@dataclass
class MergeInfo:
    """What a merge did (for the run summary)."""

    output: Path
    inputs: int
    left_out: dict[str, str] = field(default_factory=dict)  # file id → reason
    ontime: float | None = None
    exposure: float | None = None
    #: False when a float image's summed counts went beyond :data:`EXACT_INTEGER_LIMIT`
    #: (rounded where they are stored); True otherwise (HEALPix tables: None).
    counts_exact: bool | None = None


# ------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _atomic(path: Path, copy_of: Path | None = None) -> Iterator[Path]:
    """``atomic_output`` into a directory made if needed (the output folder may be new);
    a failed write (a full disk) is one line naming the product, the temporary removed."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, copy_of=copy_of) as tmp:
            yield Path(tmp)
    except OSError as exc:
        raise ToolError("merge", f"cannot write the product: {os_error_text(exc)}") from None


def annotate(hdul: fits.HDUList, left_out: Mapping[str, str], n_inputs: int, how: str) -> None:
    """Record the merge in the primary header: NMERGED, NLEFTOUT, one HISTORY per left-out file.

    Left-out files are those that failed (``on_failure: skip``) or were empty; a user reading
    the product must be able to tell it does not cover the whole data set.
    """
    header = hdul[0].header
    header["NMERGED"] = (n_inputs, "number of files merged by fermipipe")
    header["NLEFTOUT"] = (len(left_out), "input files left out of this merge")
    header.add_history(f"fermipipe {how} of {n_inputs} files")
    for file_id, reason in sorted(left_out.items()):
        header.add_history(ascii_text(f"fermipipe left out {file_id}: {reason}"))


def _annotate_file(
    path: Path, left_out: Mapping[str, str], n_inputs: int, how: str, name: str
) -> None:
    # astropy updates the CHECKSUM/DATASUM cards a file already has when it flushes.
    with fits.open(path, mode="update") as hdul:
        annotate(hdul, left_out, n_inputs, how)
        if "FILENAME" in hdul[0].header:  # the tool wrote its scratch name there
            hdul[0].header["FILENAME"] = ascii_text(name)


# ----------------------------------------------------------------------- image_sum


def _grid_keys(header: fits.Header, keys: Sequence[str] | None = None) -> dict[str, Any]:
    if keys is None:
        return {k: header[k] for k in header if _WCS_KEY.match(k)}
    return {k: header.get(k) for k in keys}


def _compare(kind: str, ref: Mapping[str, Any], other: Mapping[str, Any], path: Path) -> None:
    for key in sorted(set(ref) | set(other)):
        if ref.get(key) != other.get(key):
            raise ToolError(
                "image_sum",
                f"{kind} differs from the first input: {key} = {other.get(key)!r}, "
                f"expected {ref.get(key)!r}",
                str(path),
            )


def _ebounds(hdul: fits.HDUList) -> tuple[np.ndarray, ...] | None:
    if "EBOUNDS" not in hdul:
        return None
    data = hdul["EBOUNDS"].data
    return tuple(np.asarray(data[c]).copy() for c in data.columns.names)


def _skymap(hdul: fits.HDUList) -> fits.BinTableHDU | None:
    for hdu in hdul[1:]:
        if isinstance(hdu, fits.BinTableHDU) and (
            hdu.name == "SKYMAP" or str(hdu.header.get("PIXTYPE", "")).upper() == "HEALPIX"
        ):
            return hdu
    return None


def _channels(hdu: fits.BinTableHDU) -> list[str]:
    return [c for c in hdu.columns.names if c.upper().startswith("CHANNEL")]


def _sum_keys(
    hdul: fits.HDUList, sums: dict[tuple[int, str], float], counts: dict[tuple[int, str], int]
) -> None:
    for i, hdu in enumerate(hdul):
        for key in _SUMMED_KEYS:
            value = hdu.header.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                sums[(i, key)] = sums.get((i, key), 0.0) + float(value)
                counts[(i, key)] = counts.get((i, key), 0) + 1


_Times = list[tuple[float, str | None]]  # (TSTART, DATE-OBS) or (TSTOP, DATE-END) per HDU


@dataclass
class _HeaderFacts:
    """What :func:`image_sum` takes from one input's headers besides its grid: its GTI, its
    summed keywords (by HDU index and keyword) and its HDUs' start and stop times."""

    gti: Gti | None
    sums: dict[tuple[int, str], float]
    starts: _Times
    stops: _Times


def _header_facts(hdul: fits.HDUList, path: Path) -> _HeaderFacts:
    gti_hdu = find_gti_hdu(hdul)
    gti = read_gti(gti_hdu, tool="image_sum", file=str(path)) if gti_hdu is not None else None
    sums: dict[tuple[int, str], float] = {}
    _sum_keys(hdul, sums, {})
    starts: _Times = []
    stops: _Times = []
    _times(hdul, starts, stops)
    return _HeaderFacts(gti, sums, starts, stops)


Pixels = np.ndarray | dict[str, np.ndarray]  # a primary image, or SKYMAP CHANNELn columns
#: (summed image, product's primary header, product's image type): see :func:`image_sum`.
ImageHook = Callable[[np.ndarray, fits.Header, np.dtype[Any]], object]


@dataclass
class _Reference:
    """What every input of one image sum must share with the first input (the template)."""

    first: Path
    sky: bool  # a HEALPix SKYMAP table rather than a primary image
    grid: dict[str, Any]
    dtype: np.dtype[Any] | None = None  # of the primary image
    channels: list[str] = field(default_factory=list)
    pix: np.ndarray | None = None  # an explicit PIX column (partial-sky HEALPix)
    ebounds: tuple[np.ndarray, ...] | None = None


def _reference(
    template: fits.HDUList, first: Path, compact: CompactMap | None = None
) -> _Reference:
    if compact is not None:  # the original primary header, its image not expanded
        ref = _Reference(first, False, _grid_keys(compact.header), compact.dtype)
        ref.ebounds = _ebounds(template)
        return ref
    sky = _skymap(template)
    if sky is None and (template[0].data is None or template[0].header.get("NAXIS", 0) < 2):
        raise ToolError(
            "image_sum",
            "neither a counts map/cube (primary image) nor a HEALPix SKYMAP",
            str(first),
        )
    if sky is None:
        ref = _Reference(first, False, _grid_keys(template[0].header), template[0].data.dtype)
    else:
        pix = np.array(sky.data["PIX"]) if "PIX" in sky.columns.names else None
        ref = _Reference(first, True, _grid_keys(sky.header, _HPX_KEYS), None, _channels(sky), pix)
    ref.ebounds = _ebounds(template)
    return ref


def _check(ref: _Reference, hdul: fits.HDUList, path: Path) -> None:
    """Refuse an input whose grid or EBOUNDS differ from the first input's."""
    if not ref.sky:
        _compare("WCS", ref.grid, _grid_keys(hdul[0].header), path)
    else:
        other = _skymap(hdul)
        if other is None:
            raise ToolError("image_sum", "no HEALPix SKYMAP table", str(path))
        _compare("HEALPix grid", ref.grid, _grid_keys(other.header, _HPX_KEYS), path)
        if _channels(other) != ref.channels:
            raise ToolError(
                "image_sum", "its SKYMAP channels differ from the first input", str(path)
            )
        if ref.pix is not None and not np.array_equal(ref.pix, other.data["PIX"]):
            raise ToolError("image_sum", "its explicit PIX list differs", str(path))
    if not _same_ebounds(ref.ebounds, _ebounds(hdul)):
        raise ToolError("image_sum", "its EBOUNDS differ from the first input's", str(path))


def _same_ebounds(a: tuple[np.ndarray, ...] | None, b: tuple[np.ndarray, ...] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _check_running(ref: _Reference, running: _Reference) -> None:
    """Refuse a running sum whose maps do not share ``ref``'s grid and EBOUNDS: each of them
    was checked (:func:`_check`) against ``running``, the reference of the running sum's
    first map, so this one comparison checks them all against the merge's first input."""
    where = str(running.first)
    kind = "HEALPix grid" if ref.sky else "WCS"
    if ref.sky != running.sky:
        raise ToolError("image_sum", f"the running sum's maps are not of the {kind} kind", where)
    _compare(kind, ref.grid, running.grid, running.first)
    if ref.channels != running.channels:
        raise ToolError("image_sum", "its SKYMAP channels differ from the first input", where)
    if ref.pix is not None and (running.pix is None or not np.array_equal(ref.pix, running.pix)):
        raise ToolError("image_sum", "its explicit PIX list differs", where)
    if not _same_ebounds(ref.ebounds, running.ebounds):
        raise ToolError("image_sum", "its EBOUNDS differ from the first input's", where)


def _pixels(ref: _Reference, hdul: fits.HDUList) -> Pixels:
    """The input's pixel data (memory-mapped where astropy can: read once, never held twice)."""
    if not ref.sky:
        return hdul[0].data
    sky = _skymap(hdul)
    assert sky is not None  # _check ran first
    return {c: sky.data[c] for c in ref.channels}


#: Voxels per step of a checked dense add and of a streamed write: bounded temporaries
#: (a 4 M-voxel int64 chunk is 32 MB; a 622 MB cube has 38 such steps).
_STEP = 1 << 22


def _accumulator_dtype(ref: _Reference) -> np.dtype[Any]:
    """An image's accumulator type: its own integer type in native byte order (every add is
    checked for overflow, so the sum is exact or refused, and the product is written from it
    without a conversion), float64 for a float image."""
    assert ref.dtype is not None
    return np.dtype(np.float64) if ref.dtype.kind == "f" else ref.dtype.newbyteorder("=")


def _overflow(acc: np.ndarray, file: Path) -> ToolError:
    return ToolError("image_sum", f"the summed counts overflow {acc.dtype.name}", str(file))


def _in_range(
    current: np.ndarray, values: np.ndarray, sign: int, dtype: np.dtype[Any]
) -> np.ndarray | None:
    """``current ± values`` computed exactly, or None when any of it leaves ``dtype``'s range.

    Types narrower than 64 bits are widened to int64 (then cast back by the caller's
    assignment); 64-bit sums are computed in their type and a wrap-around detected from the
    signs (two's complement: a signed sum overflows iff both operands differ in sign from it).
    """
    info = np.iinfo(dtype)
    if dtype.itemsize < 8:
        new = current.astype(np.int64)
        if sign > 0:
            new += values
        else:
            new -= values
        if new.size and (new.min() < info.min or new.max() > info.max):
            return None
        return new
    other = np.asarray(values).astype(dtype)
    if np.any(other != values):  # a value that is not of this type
        return None
    with np.errstate(over="ignore"):
        new = current + other if sign > 0 else current - other
    if dtype.kind == "u":
        wrapped = new < current if sign > 0 else other > current
    elif sign > 0:
        wrapped = ((current ^ new) & (other ^ new)) < 0
    else:
        wrapped = ((current ^ other) & (current ^ new)) < 0
    return None if wrapped.any() else new


class _ImageFile:
    """The unscaled primary image of a plain FITS file, read with ordinary reads into native
    byte order: a pass over a big image (an incremental merge's previous product) keeps none
    of the file's pages mapped, as a pass over a memmap would (they count in the RSS)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype[Any]):
        self.path, self.offset, self.shape = path, offset, shape
        self.dtype = dtype  # the file's (big-endian)
        self.size = int(np.prod(shape))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Voxels ``start``…``stop`` − 1 (flat, C order), native byte order: one read into a
        new array, byteswapped in place."""
        stop = min(stop, self.size)
        out = np.empty(max(stop - start, 0), self.dtype.newbyteorder("="))
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * out.itemsize)
            if out.nbytes and fh.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise ToolError("image_sum", "the file ends inside its image", str(self.path))
        if out.dtype != self.dtype:  # a little-endian host
            out.byteswap(inplace=True)
        return out


def _image(ref: _Reference, hdul: fits.HDUList) -> Pixels | _ImageFile:
    """An input's pixels (:func:`_pixels`); a primary image read from its file
    (:class:`_ImageFile`) when it is a plain file's unscaled image of a FITS type."""
    if ref.sky or hdul.filename() is None:
        return _pixels(ref, hdul)
    path, data = Path(hdul.filename()), hdul[0].data
    if data is None or not _streamable(hdul[0].header, data.dtype):
        return data
    if _gzipped(path):  # astropy's offsets are not the file's
        return data
    return _ImageFile(path, int(hdul.fileinfo(0)["datLoc"]), data.shape, data.dtype)


def _integer_values(acc: np.ndarray, values: np.dtype[Any], file: Path) -> None:
    """Refuse float values going into an integer sum (they would be truncated)."""
    if values.kind not in "iub":
        raise ToolError(
            "image_sum", f"a float map cannot be summed into {acc.dtype.name} counts", str(file)
        )


def _dense_add(
    acc: np.ndarray, pixels: np.ndarray | _ImageFile, sign: int, file: Path, stop: int = -1
) -> None:
    """``acc ±= pixels`` (their first ``stop`` voxels; −1: all) in chunks of :data:`_STEP`
    voxels; for an integer accumulator each chunk is checked for overflow: one whose extremes
    cannot leave the range is added in place, any other computed exactly (:func:`_in_range`).
    An overflow is refused (``file`` named) and the chunks already added are taken back out:
    the accumulator is left as it was."""
    flat = acc.reshape(-1)  # a view: accumulators are C-contiguous
    if isinstance(pixels, _ImageFile):
        size, read = pixels.size, pixels.read
    else:
        src = np.asarray(pixels).reshape(-1)
        size = src.size

        def read(start: int, stop: int) -> np.ndarray:
            return src[start:stop]

    if size != flat.size:
        raise ToolError("image_sum", "its image size differs from the first input's", str(file))
    stop = flat.size if stop < 0 else stop
    if acc.dtype.kind == "f":
        for start in range(0, stop, _STEP):
            part, values = flat[start : start + _STEP], read(start, start + _STEP)
            if sign > 0:
                part += values
            else:
                part -= values
        return
    _integer_values(acc, pixels.dtype, file)
    info = np.iinfo(acc.dtype)
    for start in range(0, stop, _STEP):
        part, values = flat[start : start + _STEP], read(start, start + _STEP)
        lo, hi = int(part.min()), int(part.max())
        vlo, vhi = int(values.min()), int(values.max())
        low, high = (lo + vlo, hi + vhi) if sign > 0 else (lo - vhi, hi - vlo)
        if info.min <= low and high <= info.max:
            # in range (checked above): the cast back to the accumulator's type is exact
            if sign > 0:
                np.add(part, values, out=part, casting="unsafe")
            else:
                np.subtract(part, values, out=part, casting="unsafe")
            continue
        new = _in_range(part, values, sign, acc.dtype)
        if new is None:
            if start:  # exact: the chunks before were added without overflow
                _dense_add(acc, pixels, -sign, file, stop=start)
            raise _overflow(acc, file)
        part[...] = new


def _scatter_add(acc: np.ndarray, compact: CompactMap, sign: int, file: Path) -> None:
    """A compact map's nonzero voxels added (``sign`` −1: subtracted) into ``acc``: its
    indices are unique, so a gather, an exact add and a scatter touch each voxel once; for an
    integer accumulator only the touched voxels are checked for overflow (refused, ``acc``
    unchanged)."""
    flat = acc.reshape(-1)  # a view: accumulators are C-contiguous
    index, values = compact.index, compact.values
    if acc.dtype.kind == "f":
        if sign > 0:
            flat[index] += values
        else:
            flat[index] -= values
        return
    _integer_values(acc, values.dtype, file)
    new = _in_range(flat[index], values, sign, acc.dtype)
    if new is None:
        raise _overflow(acc, file)
    flat[index] = new


def _accumulator(ref: _Reference, pixels: Pixels | _ImageFile, file: Path) -> Pixels:
    """A new accumulator holding ``pixels`` (:func:`_accumulator_dtype`; HEALPix channels:
    float64). Pixels of the accumulator's type are copied in one (byteswapping) read; wider
    ones (an int64 partial sum) are added into zeros, checked (``file`` named on overflow)."""
    if isinstance(pixels, dict):
        return {c: np.array(v, dtype=np.float64) for c, v in pixels.items()}
    dtype = _accumulator_dtype(ref)
    if isinstance(pixels, _ImageFile) and pixels.dtype.newbyteorder("=") == dtype:
        return pixels.read(0, pixels.size).reshape(pixels.shape)
    if isinstance(pixels, _ImageFile):  # a float image into float64
        acc = np.zeros(pixels.shape, dtype)
        _dense_add(acc, pixels, 1, file)
        return acc
    if dtype.kind == "f" or np.can_cast(pixels.dtype, dtype, "safe"):
        return np.array(pixels, dtype=dtype)
    acc = np.zeros(pixels.shape, dtype)
    _dense_add(acc, pixels, 1, file)
    return acc


def _add(acc: Pixels, pixels: Pixels | _ImageFile, file: Path, sign: int = 1) -> None:
    if isinstance(acc, dict):
        for c, column in acc.items():
            if sign > 0:
                column += pixels[c]  # type: ignore[index]
            else:
                column -= pixels[c]  # type: ignore[index]
    else:
        _dense_add(acc, pixels, sign, file)  # type: ignore[arg-type]


def _add_input(
    ref: _Reference,
    acc: Pixels,
    hdul: fits.HDUList,
    compact: CompactMap | None,
    file: Path,
    sign: int = 1,
) -> None:
    """Add (``sign`` −1: subtract) one checked input into ``acc``: a dense image in checked
    chunks, a compact map's nonzero voxels scatter-added (nothing dense is built). An integer
    overflow is refused naming ``file`` (the product, or the running sum's map)."""
    if compact is None:
        _add(acc, _image(ref, hdul), file, sign)
        return
    assert isinstance(acc, np.ndarray)  # _check refused a compact map against a SKYMAP
    _scatter_add(acc, compact, sign, file)


def _template(hdul: fits.HDUList, compact: CompactMap | None) -> fits.HDUList:
    """The product's HDUs, copied from the first input. A primary image is made as
    ``hdu.copy()`` makes it (astropy rewrites the structural cards' comments then), over a
    zero-stride stand-in for the image: the same header, no copy of the pixels (which the
    sum replaces; a 622 MB cube cost 2 s to copy)."""
    if compact is not None:
        shape, dtype, header = compact.shape, compact.dtype, compact.header
        rest = list(hdul[1:])
    elif hdul[0].header.get("NAXIS", 0) >= 2 and _skymap(hdul) is None:
        shape, dtype, header = hdul[0].data.shape, hdul[0].data.dtype, hdul[0].header
        rest = [hdu.copy() for hdu in hdul[1:]]
    else:  # a HEALPix SKYMAP (its table columns become the sum) or no image
        return fits.HDUList([hdu.copy() for hdu in hdul])
    stand_in = np.broadcast_to(np.zeros((), dtype), shape)
    primary = fits.PrimaryHDU(data=stand_in, header=header.copy())
    return fits.HDUList([primary, *rest])


def _sparse_accumulator(ref: _Reference, compact: CompactMap, file: Path) -> np.ndarray:
    """:func:`_accumulator` for a compact first input (zeros, its voxels scattered in)."""
    acc = np.zeros(compact.shape, _accumulator_dtype(ref))
    _scatter_add(acc, compact, 1, file)
    return acc


def _verified(path: Path) -> Path:
    """``path``, re-verified if it is a product-store object (merge inputs come from there):
    a stored product edited after it was stored never goes into a merge."""
    try:
        return verify_stored(path)
    except StoreObjectDamagedError as exc:
        raise ToolError("merge", str(exc)) from None


def _gzipped(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _open(path: Path) -> fits.HDUList:
    """``path`` opened memory-mapped; a plain file that ends inside a data unit is refused
    (astropy would fail only when the data are read, with a traceback)."""
    try:
        with warnings.catch_warnings():  # a truncated file is said below, in one line
            warnings.filterwarnings("ignore", message="File may have been truncated")
            hdul = fits.open(path, memmap=True)
            if _gzipped(path):
                return hdul
            ends = [hdul.fileinfo(i)["datLoc"] + data_size(h.header) for i, h in enumerate(hdul)]
    except (OSError, ValueError) as exc:
        raise ToolError("image_sum", f"cannot read: {exc}", str(path)) from None
    if max(ends) > path.stat().st_size:
        hdul.close()
        raise ToolError("image_sum", "the file ends inside its data", str(path))
    return hdul


def _load(path: Path, voxels: bool = True) -> tuple[fits.HDUList, CompactMap | None]:
    """An input's HDUs, and its voxels when it is a compact counts file (whose HDU list is
    then the original file's: its primary header without data and its extensions; without
    ``voxels``, for a map already summed, its headers only). A damaged compact file raises
    a one-line CompactCountsError naming it."""
    if is_compact(path):
        compact = open_compact(path, voxels=voxels)
        return compact.hdul, compact
    return _open(path), None


#: Where a partial sum records the inputs it covers (checked when the parts are combined).
_PART_INPUTS = "__inputs__"


def partial_image_sum(inputs: Sequence[Path], output: Path, *, first: Path) -> Path:
    """The pixel sum of ``inputs`` (a contiguous part of one merge whose first input is
    ``first``), each checked against ``first``, saved as a NumPy ``.npz`` at ``output``.

    :func:`image_sum` with ``partials=`` adds the parts and builds the product; the parts
    run in parallel. Accumulators are the image's integer type (every add checked: an
    overflow is refused, so counts are exact in any grouping) or float64. Inputs may be
    compact counts files (scatter-added).
    """
    if not inputs:
        raise ToolError("image_sum", "a partial sum needs at least one input", str(output))
    template, compact = _load(Path(first))
    with template:
        ref = _reference(template, Path(first), compact)
    acc: Pixels | None = None
    for path in map(Path, inputs):
        _verified(path)
        hdul, compact = _load(path)
        with hdul:
            _check(ref, hdul, path)
            if acc is None:
                acc = (
                    _accumulator(ref, _image(ref, hdul), Path(output))
                    if compact is None
                    else _sparse_accumulator(ref, compact, Path(output))
                )
            else:
                _add_input(ref, acc, hdul, compact, Path(output))
    arrays = acc if isinstance(acc, dict) else {"image": acc}
    with _atomic(Path(output)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays, **{_PART_INPUTS: np.array([str(p) for p in inputs])})
    return Path(output)


class NotWholeCounts(ToolError):
    """A map with a fractional pixel: its sum would depend on the order of additions."""


def _whole(pixels: Pixels | np.ndarray) -> bool:
    columns = pixels.values() if isinstance(pixels, dict) else [pixels]
    return all(np.asarray(c).dtype.kind != "f" or np.array_equal(c, np.trunc(c)) for c in columns)


class RunningSum:
    """The pixels of an image_sum, summed as the maps come (streaming merges).

    Counts are whole numbers, and whole numbers add exactly whatever the order — in the
    image's own integer type (every add checked: a sum beyond it is refused, naming the map
    that overflowed it; non-negative counts reach their final sum through smaller partial
    sums, so no order overflows where another would not) or in float64 (below 2**53) — so
    each map is added as soon as its file is done: the product equals a one-pass merge. A
    map with a fractional pixel is refused (:class:`NotWholeCounts`): the merge then sums
    the maps in plan order. Adders are serialized (one accumulator: a compact weekly map
    adds in ~0.1 s). :func:`image_sum` takes it as ``presummed``. What the product's headers
    need from each map (GTI, summed keywords, start and stop times) is read here too, while
    the map is open, and kept by map: :func:`image_sum` does not open the maps it holds, and
    combines these in the merge's input order (summed keywords in the order of additions of
    a one-pass merge: bit for bit the same)."""

    def __init__(self, first: Path) -> None:
        template, compact = _load(Path(first))
        with template:
            self.ref = _reference(template, Path(first), compact)
        self.pixels: Pixels | None = None
        self.paths: list[Path] = []
        #: Each added map's header facts, by ``str(path)`` (a few intervals and numbers).
        self.facts: dict[str, _HeaderFacts] = {}
        self._lock = threading.Lock()

    def add(self, path: Path) -> None:
        path = _verified(Path(path))
        hdul, compact = _load(path)
        with hdul:
            _check(self.ref, hdul, path)
            values = compact.values if compact is not None else _pixels(self.ref, hdul)
            if not _whole(values):
                raise NotWholeCounts("image_sum", "a map with fractional counts", str(path))
            facts = _header_facts(hdul, path)
            with self._lock:
                if self.pixels is None:
                    self.pixels = (
                        _accumulator(self.ref, _image(self.ref, hdul), path)
                        if compact is None
                        else _sparse_accumulator(self.ref, compact, path)
                    )
                else:
                    _add_input(self.ref, self.pixels, hdul, compact, path)
                self.paths.append(path)
                self.facts[str(path)] = facts


def _combine(
    ref: _Reference, inputs: Sequence[Path], partials: Sequence[Path], output: Path
) -> Pixels:
    """Sum the partial sums, in order, after checking they cover exactly ``inputs`` (an
    integer part, e.g. an int64 one, is range-checked into the image type's accumulator)."""
    covered: list[str] = []
    acc: Pixels | None = None
    for part in partials:
        with np.load(part, allow_pickle=False) as npz:
            covered += [str(p) for p in npz[_PART_INPUTS]]
            pixels: Pixels = {c: npz[c] for c in ref.channels} if ref.sky else npz["image"]
            if acc is None:
                acc = _accumulator(ref, pixels, output)
            else:
                _add(acc, pixels, output)
    if covered != [str(p) for p in inputs] or acc is None:
        raise ToolError(
            "image_sum", "the partial sums do not cover exactly the inputs", str(partials[0])
        )
    return acc


def image_sum(
    inputs: Sequence[Path],
    output: Path,
    *,
    left_out: Mapping[str, str] | None = None,
    partials: Sequence[Path] | None = None,
    manifest: Manifest | None = None,
    how: str = "image_sum",
    subtract: Sequence[Path] = (),
    presummed: RunningSum | None = None,
    image_hook: ImageHook | None = None,
) -> MergeInfo:
    """Sum counts maps/cubes (or HEALPix SKYMAP tables) pixel by pixel into ``output``.

    The first input is the template: its headers are kept, its image (or CHANNEL columns)
    becomes the accumulator, and every other input must have the same grid and EBOUNDS.
    The GTI HDU gets the union of all GTIs (its ONTIME is then set to the sum of the inputs'
    ONTIME, as are EXPOSURE keywords wherever the first input has them); TSTART/TSTOP become
    min/max with DATE-OBS/DATE-END from the inputs that hold them.

    Any input may be a compact counts file (:mod:`fermipipe.compact_counts`): its nonzero
    voxels are scatter-added into the sum (no dense array per input) and its original
    headers read; the product is the one the expanded files give, bit for bit.

    With ``partials`` (from :func:`partial_image_sum` over consecutive parts of ``inputs``)
    the pixels are the sum of the parts; headers, GTIs and the summed keywords are still read
    from every input, in order, so the product is the same either way (summed keywords in
    the same order of additions: an incremental merge stays equal to a full one).
    With ``manifest`` the product appears with its manifest cards and sidecar, together
    (:func:`_commit_manifest`). ``presummed``: the pixels of some of the inputs, already
    summed while they were made (a :class:`RunningSum`, whole counts: exact in any order),
    with their header facts, read as they were added: those inputs are not opened again
    (but the first, the template), their facts are combined with the others' in input
    order; the other inputs are read and added here.

    ``image_hook`` is called, just before a primary image is streamed to disk, with the
    summed image (the accumulator, in its own type: to be read before the hook returns, the
    write byteswaps it in place after), a copy of the product's primary header and the
    product's image type: a quick-look is computed from it and drawn while the product is
    written (the product exists only when this returns). It is not called for HEALPix tables
    or images astropy writes (scaled), nor when the merge fails before its write.

    ``subtract`` (count maps, dense or compact) takes maps back out of the **first** input,
    the previous product they were summed into — a changed week: ``inputs=[previous, new
    week], subtract=[old week]``. Pixels: exact for integer counts (summed in the image's
    integer type, every step checked: a sum beyond it is refused, even one the subtraction
    would bring back; a float map only while every value is an integer within
    :data:`EXACT_INTEGER_LIMIT`, else refused), and a pixel going negative (a map that was
    not in the product) is refused. GTI: the subtracted maps' GTIs are cut out of the first
    input's, then the others' are united in — the GTI a full merge gives when the weeks do
    not overlap. TSTART/TSTOP: a subtracted map holding the product's first start (last
    stop) must be replaced by an input starting (stopping) no later (earlier), else the span
    is unknown and the merge is refused. Summed
    keywords (EXPOSURE): (sum of inputs) − (sum of subtracted), equal to a full merge's to
    float64 rounding, not bit for bit.
    """
    left_out = dict(left_out or {})
    if not inputs:
        raise ToolError("image_sum", "no input files to merge", str(output))
    paths = [Path(p) for p in inputs]
    minus = [Path(p) for p in subtract]
    # The running sum's maps were verified, checked and read when they were added: their
    # pixels and header facts are taken from it, the files are not opened again (but the
    # first input, whose HDUs are the product's template: verified again, as it is read).
    done = _presummed_of(presummed, paths, output)
    if not partials:  # with partials, each part verified its inputs
        for index, path in enumerate(paths):
            if not index or str(path) not in done:
                _verified(path)
    for path in minus:
        _verified(path)
    first = paths[0]
    hdul, compact = _load(first, voxels=str(first) not in done)
    with hdul:  # the first input's pixels are read from it, the template holds none
        template = _template(hdul, compact)
        ref = _reference(template, first, compact)
        if presummed is not None and done:
            _check_running(ref, presummed.ref)
        if partials:
            acc = _combine(ref, paths, partials, Path(output))
        elif presummed is not None and presummed.pixels is not None:
            acc, presummed.pixels = presummed.pixels, None  # taken over: no second copy
            if str(first) not in done:
                _add_input(ref, acc, hdul, compact, Path(output))
        elif compact is not None:
            acc = _sparse_accumulator(ref, compact, Path(output))
        else:  # e.g. the previous product of an incremental merge: one byteswapping read
            acc = _accumulator(ref, _image(ref, hdul), Path(output))
    gtis = []
    sums: dict[tuple[int, str], float] = {}
    counts: dict[tuple[int, str], int] = {}
    tstarts: _Times = []
    tstops: _Times = []
    first_span = (0, 0)  # how many tstarts/tstops the first input gave
    for index, path in enumerate(paths):
        if not index:
            facts = _header_facts(template, path)
        elif presummed is not None and str(path) in done:
            facts = presummed.facts[str(path)]
        else:
            hdul, compact = _load(path)
            with hdul:
                _check(ref, hdul, path)
                if not partials:
                    _add_input(ref, acc, hdul, compact, Path(output))
                facts = _header_facts(hdul, path)
        if facts.gti is not None:
            gtis.append(facts.gti)
        for key, value in facts.sums.items():  # in input order: the same float sums
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
        tstarts += facts.starts
        tstops += facts.stops
        if not index:
            first_span = (len(tstarts), len(tstops))
    # A keyword is a sum only when every input has it: an incremental merge starts from a
    # previous product whose GTI carries ONTIME while fresh per-file maps may not, and the
    # union GTI's own ONTIME is then the right value.
    sums = {k: v for k, v in sums.items() if counts[k] == len(paths)}
    gti_index = next((i for i, h in enumerate(template) if h is find_gti_hdu(template)), None)
    if minus:
        times_seen = (tstarts, tstops)
        gti = _subtract(ref, acc, minus, sums, gtis, times_seen, first_span, gti_index, output)
    else:
        gti = union(gtis)

    counts_exact: bool | None = None
    streamed: tuple[np.ndarray, np.dtype[Any]] | None = None  # for _write_streamed
    if isinstance(acc, dict):
        sky = _skymap(template)
        assert sky is not None
        for c in ref.channels:
            sky.data[c] = acc[c]
    else:
        dtype = ref.dtype
        assert dtype is not None
        # an integer sum is in range: every add was checked (_dense_add, _scatter_add)
        counts_exact = dtype.kind in "iu" or bool(
            np.abs(acc).max(initial=0) <= EXACT_INTEGER_LIMIT[dtype.itemsize]
        )
        # write_fits would count a table's heap as rows (NAXIS2): such a file goes to astropy
        heaps = any(int(hdu.header.get("PCOUNT", 0) or 0) for hdu in template[1:])
        if _streamable(template[0].header, dtype) and not heaps:
            streamed = acc, dtype
        else:  # scaled (BSCALE/BZERO), an unusual type or a heap: astropy writes it
            template[0].data = acc.astype(dtype.newbyteorder("="))
    if gti_index is not None:
        template[gti_index] = update_gti_hdu(template[gti_index], gti)
    for (i, key), total in sums.items():
        template[i].header[key] = total
    if tstarts or tstops:
        t0 = min(tstarts, default=None)
        t1 = max(tstops, default=None)
        for hdu in template:
            h = hdu.header
            if t0 is not None and "TSTART" in h:
                h["TSTART"] = t0[0]
                if t0[1] is not None and "DATE-OBS" in h:
                    h["DATE-OBS"] = t0[1]
            if t1 is not None and "TSTOP" in h:
                h["TSTOP"] = t1[0]
                if t1[1] is not None and "DATE-END" in h:
                    h["DATE-END"] = t1[1]
            if "TELAPSE" in h and "TSTART" in h and "TSTOP" in h:
                h["TELAPSE"] = float(h["TSTOP"]) - float(h["TSTART"])
    annotate(template, left_out, len(paths), "image_sum")
    if "FILENAME" in template[0].header:
        template[0].header["FILENAME"] = ascii_text(Path(output).name)
    if manifest is not None:  # before the first write: no rewrite to make room for them
        _stamp_header(template[0].header, manifest, how)
    if streamed is not None and image_hook is not None:
        image_hook(streamed[0], template[0].header.copy(), streamed[1])
    with _atomic(Path(output)) as tmp:
        if streamed is None:
            template.writeto(tmp, checksum=True, overwrite=True)
        else:  # the accumulator is byteswapped in place: it is not read after this
            _write_streamed(template, *streamed, tmp)
        _commit_manifest(tmp, Path(output), manifest, how, stamped=True)
    ontime = template[gti_index].header.get("ONTIME") if gti_index is not None else None
    exposure = next((v for (_, k), v in sums.items() if k == "EXPOSURE"), None)
    return MergeInfo(Path(output), len(paths), left_out, ontime, exposure, counts_exact)


#: BITPIX of the image types :func:`_write_streamed` writes (FITS standard, table 8).
_BITPIX = {"u1": 8, "i2": 16, "i4": 32, "i8": 64, "f4": -32, "f8": -64}


def _streamable(header: fits.Header, dtype: np.dtype[Any]) -> bool:
    """Whether a primary image of ``dtype`` is written by :func:`_write_streamed`: an
    unscaled image (no BSCALE/BZERO: astropy's scaling is left to astropy) of a FITS type
    whose BITPIX the header holds."""
    key = dtype.newbyteorder("=").str[1:]
    return (
        "BSCALE" not in header
        and "BZERO" not in header
        and _BITPIX.get(key) is not None
        and header.get("BITPIX") == _BITPIX[key]
    )


def _big_endian_steps(acc: np.ndarray, dtype: np.dtype[Any]) -> Iterator[np.ndarray]:
    """The data unit of an image of ``dtype`` summed in ``acc``, :data:`_STEP` voxels at a
    time, big-endian: an accumulator already of that type is byteswapped in place (it is
    discarded after the write: no full-size copy), a float64 one converted step by step
    (the rounding of one ``astype``)."""
    target = dtype.newbyteorder(">")
    flat = acc.reshape(-1)
    for start in range(0, flat.size, _STEP):
        part = flat[start : start + _STEP]
        if part.dtype == target:  # big-endian host, or bytes
            yield part
        elif part.dtype.newbyteorder(">") == target:
            yield part.byteswap(inplace=True).view(target)
        else:
            yield part.astype(target)


def _write_streamed(
    template: fits.HDUList, acc: np.ndarray, dtype: np.dtype[Any], tmp: Path
) -> None:
    """Write ``template`` to ``tmp`` with its primary image (of ``dtype``) taken from
    ``acc``, byteswapped in place. The headers are the ones astropy's ``writeto`` writes
    (verified and completed as it does first); the image is streamed in big-endian steps by
    :func:`fermipipe.fits.table.write_fits`, which computes CHECKSUM/DATASUM as it goes and
    writes through a temporary of ``tmp`` renamed onto it (a writer killed mid-way leaves no
    ``tmp``, only its own PID-named temporary, removed like any dead writer's). The
    extensions (GTI, EBOUNDS) are serialised by astropy."""
    template.verify(option="exception")
    template.update_extend()
    primary = template[0]
    primary.update_header()  # the stand-in image has the product's type and shape
    steps = _big_endian_steps(acc, dtype)
    # FILENAME is already the product's name (image_sum): not added here.
    # Each step is a fresh view of the accumulator: written while the next is byteswapped.
    write_fits(tmp, [(primary.header, steps), *template[1:]], add_filename=False, write_behind=True)


def _presummed_of(presummed: RunningSum | None, paths: Sequence[Path], output: Path) -> set[str]:
    """The inputs a running sum holds (each once, and each an input of this merge)."""
    if presummed is None or presummed.pixels is None:
        return set()
    held = [str(p) for p in presummed.paths]
    if len(set(held)) != len(held) or not set(held) <= {str(p) for p in paths}:
        raise ToolError("image_sum", "the running sum holds maps that are not inputs", str(output))
    return set(held)


def _times(
    hdul: fits.HDUList,
    starts: list[tuple[float, str | None]],
    stops: list[tuple[float, str | None]],
) -> None:
    """Append each HDU's (TSTART, DATE-OBS) and (TSTOP, DATE-END)."""
    for hdu in hdul:
        h = hdu.header
        if isinstance(h.get("TSTART"), int | float):
            starts.append((float(h["TSTART"]), h.get("DATE-OBS")))
        if isinstance(h.get("TSTOP"), int | float):
            stops.append((float(h["TSTOP"]), h.get("DATE-END")))


def _exact_counts(ref: _Reference, values: np.ndarray, what: str, path: Path) -> None:
    """Refuse a subtraction on a float map whose values are not integers within the range
    where its type holds every integer (:data:`EXACT_INTEGER_LIMIT`)."""
    assert ref.dtype is not None
    if ref.dtype.kind != "f":
        return
    limit = EXACT_INTEGER_LIMIT[ref.dtype.itemsize]
    flat = values.reshape(-1)
    step = 1 << 22  # in chunks: no full-size temporaries
    for i in range(0, flat.size, step):
        part = flat[i : i + step]
        if np.abs(part).max() <= limit and np.array_equal(part, np.floor(part)):
            continue
        raise ToolError(
            "image_sum",
            f"cannot subtract exactly: {what} holds non-integer counts or counts beyond "
            f"{limit} (the largest integer {ref.dtype} holds exactly)",
            str(path),
        )


def _difference(gti: Gti, cut: Gti) -> Gti:
    """``gti`` without the intervals of ``cut`` (intersection with its complement;
    zero-length pieces dropped, as Gti.intersect does)."""
    if not len(cut):
        return gti
    starts = np.concatenate([[-np.inf], cut.stop])
    stops = np.concatenate([cut.start, [np.inf]])
    return gti.intersect(Gti.from_intervals(starts, stops))


def _subtract(
    ref: _Reference,
    acc: Pixels,
    minus: Sequence[Path],
    sums: dict[tuple[int, str], float],
    gtis: list[Gti],
    times: tuple[list[tuple[float, str | None]], list[tuple[float, str | None]]],
    first_span: tuple[int, int],
    gti_index: int | None,
    output: Path,
) -> Gti:
    """Take ``minus`` out of the sum (see :func:`image_sum`); return the product's GTI."""
    if isinstance(acc, dict):
        raise ToolError("image_sum", "subtract is for counts maps/cubes, not HEALPix tables")
    _exact_counts(ref, acc, "the sum", output)
    cut: list[Gti] = []
    sub_sums: dict[tuple[int, str], float] = {}
    sub_counts: dict[tuple[int, str], int] = {}
    sub_starts: list[tuple[float, str | None]] = []
    sub_stops: list[tuple[float, str | None]] = []
    for path in minus:
        hdul, compact = _load(path)
        with hdul:
            _check(ref, hdul, path)
            values = compact.values if compact is not None else np.asarray(_pixels(ref, hdul))
            _exact_counts(ref, values, "this map", path)
            _add_input(ref, acc, hdul, compact, output, sign=-1)
            touched = acc.reshape(-1)[compact.index] if compact is not None else acc
            if touched.min(initial=0) < 0:
                raise ToolError(
                    "image_sum",
                    "subtracting it leaves negative counts: it is not part of the first input",
                    str(path),
                )
            gti_hdu = find_gti_hdu(hdul)
            if gti_hdu is not None:
                cut.append(read_gti(gti_hdu, tool="image_sum", file=str(path)))
            _sum_keys(hdul, sub_sums, sub_counts)
            _times(hdul, sub_starts, sub_stops)
    for key in list(sums):
        if sub_counts.get(key, 0) != len(minus) and key == (gti_index, "ONTIME"):
            del sums[key]  # the GTI's ONTIME is then its union's (as for fresh weekly maps)
        elif sub_counts.get(key, 0) != len(minus):
            raise ToolError(
                "image_sum", f"a subtracted map lacks the summed keyword {key[1]}", str(output)
            )
        else:
            sums[key] -= sub_sums[key]
    tstarts, tstops = times
    n0, n1 = first_span
    first_t0 = min((t for t, _ in tstarts[:n0]), default=None)
    first_t1 = max((t for t, _ in tstops[:n1]), default=None)
    others_t0 = min((t for t, _ in tstarts[n0:]), default=np.inf)
    others_t1 = max((t for t, _ in tstops[n1:]), default=-np.inf)
    for t, _ in sub_starts:
        if first_t0 is not None and t <= first_t0 and others_t0 > t:
            raise ToolError(
                "image_sum",
                "a subtracted map holds the product's first start and no input replaces it: "
                "its new TSTART is unknown; merge all inputs instead",
                str(output),
            )
    for t, _ in sub_stops:
        if first_t1 is not None and t >= first_t1 and others_t1 < t:
            raise ToolError(
                "image_sum",
                "a subtracted map holds the product's last stop and no input replaces it: "
                "its new TSTOP is unknown; merge all inputs instead",
                str(output),
            )
    _exact_counts(ref, acc, "the result", output)
    if not gtis:
        return Gti.empty()
    return union([_difference(gtis[0], union(cut)), *gtis[1:]])


def split_parts(inputs: Sequence[Path], parts: int) -> list[list[Path]]:
    """``inputs`` in ``parts`` consecutive, near-equal runs (order kept: the parts add up in
    the inputs' order)."""
    n = len(inputs)
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [list(inputs[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


# -------------------------------------------------------------------- hierarchical


@dataclass(frozen=True)
class PairJob:
    """One pairwise merge of a tree level: ``left`` + ``right`` → ``output``."""

    left: Path
    right: Path
    output: Path
    label: str  # e.g. "L1-3": level 1, pair 3


def next_level(
    level: Sequence[Path], scratch: Path, name: str, depth: int
) -> tuple[list[PairJob], list[Path]]:
    """Pair up ``level`` (in order); return the jobs and the next level's inputs.

    Pairs are (0,1), (2,3), …; an odd last file goes up unchanged. The next level lists each
    pair's output in the position of its pair, so the final order follows the input order.
    """
    jobs: list[PairJob] = []
    upper: list[Path] = []
    for path in level:  # the first level's inputs are store objects
        _verified(Path(path))
    for i in range(0, len(level) - 1, 2):
        suffix = "".join(Path(level[i]).suffixes[-1:]) or ".fits"
        out = scratch / f"{name}-L{depth}-{i // 2}{suffix}"
        jobs.append(PairJob(Path(level[i]), Path(level[i + 1]), out, f"L{depth}-{i // 2}"))
        upper.append(out)
    if len(level) % 2:
        upper.append(Path(level[-1]))
    return jobs, upper


def pair_invocation(
    job: PairJob,
    tool: str,
    engine: Engine,
    *,
    step: str,
    timeout: float | None = None,
) -> Invocation:
    """The Invocation of a pairwise tool (gtltsum-style parameters infile1/infile2/outfile)."""
    params = {"infile1": str(job.left), "infile2": str(job.right), "outfile": str(job.output)}
    return tool_invocation(
        step,
        job.label,
        "native" if engine == "native" else "fermitools",
        tool,
        params,
        outputs={"outfile": job.output},
        timeout=timeout,
    )


def finish(
    final: Path,
    output: Path,
    left_out: Mapping[str, str],
    n_inputs: int,
    how: str,
    *,
    manifest: Manifest | None = None,
) -> MergeInfo:
    """Move (or copy, for a single original input) ``final`` to ``output``, annotated; with
    ``manifest``, together with its manifest (:func:`_commit_manifest`)."""
    output = Path(output)
    _verified(Path(final))  # a single input is copied straight from the store
    with _atomic(output, copy_of=final) as tmp:
        _annotate_file(tmp, left_out, n_inputs, how, output.name)
        _commit_manifest(tmp, output, manifest, how)
    return MergeInfo(output, n_inputs, dict(left_out))


# ---------------------------------------------------------------------- event lists


def ftmerge_argv(inputs: Sequence[Path], output: Path, listfile: Path) -> tuple[str, ...]:
    """HEASoft ftmerge over an @list (no shell: names with spaces stay intact)."""
    listfile.write_text("".join(f"{p}\n" for p in inputs))
    return fermitools_argv("ftmerge", {"infile": f"@{listfile}", "outfile": str(output)})


def use_ftmerge(engine: Engine) -> bool:
    """ftmerge is used for ``engine: fermitools`` when HEASoft is installed.

    Note (spec §8): ftmerge keeps only the first file's GTI, TSTART/TSTOP and DSS — fine for
    FT2, wrong for FT1 — so the native concatenation (GTI union) is the default.
    """
    return engine == "fermitools" and shutil.which("ftmerge") is not None


def native_event_merge(
    inputs: Sequence[Path],
    output: Path,
    *,
    left_out: Mapping[str, str] | None = None,
    manifest: Manifest | None = None,
) -> MergeInfo:
    """Concatenate event files with a GTI union through ``fermipipe.native.evmerge``."""
    from fermipipe.native.evmerge import merge_event_files

    left_out = dict(left_out or {})
    output = Path(output)
    if not inputs:
        raise ToolError("ftmerge", "no input files to merge", str(output))
    scratch = temporary_name(output)  # a dead writer's scratch is found by its PID
    for path in inputs:
        _verified(Path(path))
    try:
        merge_event_files([Path(p) for p in inputs], scratch)
        return finish(scratch, output, left_out, len(inputs), "event merge", manifest=manifest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()


# ------------------------------------------------------------------------ manifests

#: Cards fermipipe writes into a merged product's primary header (replaced, never stacked,
#: when an incremental merge starts from a previous product).
_OWN_KEYS = (
    "NMERGED",
    "NLEFTOUT",
    "FPVERS",
    "FPSTRAT",
    "FPCONFIG",
    "FPNINPUT",
    "FPNLEFT",
    "FPMANIF",
)


def _stamp_cards(path: Path, manifest: Manifest, how: str) -> None:
    """The manifest's cards into the primary header of the (temporary) file ``path``."""
    with fits.open(path, mode="update") as hdul:
        _stamp_header(hdul[0].header, manifest, how)


def _stamp_header(header: fits.Header, manifest: Manifest, how: str) -> None:
    """The manifest's cards into ``header`` (a product's primary header)."""
    for key in _OWN_KEYS:
        header.remove(key, ignore_missing=True, remove_all=True)
    own = [
        i
        for i, card in enumerate(header.cards)
        if card.keyword == "HISTORY" and str(card.value).startswith("fermipipe ")
    ]
    for i in reversed(own):
        del header[i]
    # Every fermipipe HISTORY line fits one card (72 characters), so that removing
    # the lines starting with "fermipipe " removes them whole (a longer value would
    # continue on cards that do not); the sidecar has the full text.
    header["NMERGED"] = (len(manifest.inputs), "number of files merged by fermipipe")
    header["NLEFTOUT"] = (len(manifest.left_out), "input files left out of this merge")
    header.add_history(f"fermipipe {how} of {len(manifest.inputs)} files"[:72])
    for key, value, comment in header_cards(manifest):
        if key == "HISTORY":
            header.add_history(str(value)[:72])
        else:  # a long value (a product's long name) leaves less room for the
            # comment: cut it as cfitsio does, not with astropy's VerifyWarning
            set_card(header, key, value, comment, replace_comment=True)


def _commit_manifest(
    tmp: Path, product: Path, manifest: Manifest | None, how: str, stamped: bool = False
) -> None:
    """Before the finished temporary ``tmp`` is renamed to ``product``: stamp the manifest
    into it and put its sidecar in place (written under a temporary name and renamed).

    ``stamped``: the cards are already in the header it was written with (a big image is
    then not rewritten to make room for them). The product's rename comes last and is the
    commit point: a reader never sees the new
    product without its cards and sidecar. A crash just before it leaves at most a sidecar
    whose ``product_blake3`` is not the product's — stale, and read as absent
    (``read_manifest(..., check_product=True)``; the incremental merge checks it too).
    """
    if manifest is None:
        return
    if not stamped:
        _stamp_cards(tmp, manifest, how)
    manifest.product_blake3 = content_hash(tmp)
    write_manifest(product, manifest)


def stamp_manifest(product: Path, manifest: Manifest, how: str) -> Path:
    """Write ``manifest`` into ``product``'s primary header and as its JSON sidecar.

    The header gets NMERGED/NLEFTOUT, one HISTORY line per left-out file (:func:`annotate`)
    and the manifest's summary cards; earlier fermipipe cards (a previous product that an
    incremental merge started from) are removed first, so an incremental product's header
    is the one a full merge of the same inputs writes. The sidecar records the final
    product's content hash, so a later run can prove the product is the one its manifest describes.
    Both are written under temporary names; the product is renamed last
    (:func:`_commit_manifest`). A new product should rather be written with its manifest in
    one go (``manifest=`` of :func:`image_sum`, :func:`finish`, :func:`native_event_merge`):
    then it never exists, even briefly, without it.
    """
    product = Path(product)
    with _atomic(product, copy_of=product) as tmp:
        _commit_manifest(tmp, product, manifest, how)
    return product
