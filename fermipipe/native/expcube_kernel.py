"""Exposure of livetime-cube cells × energies × event types (spec §14.3), the fast path of §14.7.

The exposure at a sky pixel depends only on its (nearest) livetime-cube cell and the energy,
so it is computed once per distinct cell hit by the output grid and gathered onto the grid.

Per cell, energy E and event type t (Likelihood ExposureCube / healpix CosineBinner):

* no phi bins: S1_t = Σ_{i<n} L_i·A_t(E, c_i) in double, in order of i, with the bin centre
  c_i = 1 − ((i + ½)/n)²·(1 − COSMIN) (``THETABIN`` SQRT(1-COSTHETA); without the square
  for COSTHETA); S2_t the same with the WEIGHTED_EXPOSURE entries W_i;
* PHIBINS = m > 0: only the entries n … n(m+1)−1 are summed, entry (k+1)·n + i at c_i and
  φ_k = ((π/4)·(k + ½)/m)·(180/π) degrees; the phi modulation is applied unless
  ``ignorephi`` (the sum over the phi entries is kept either way, as in the C++);
* A_t is 0 outside [cos θmax, cos θmin] (gtexpcube2 thmin/thmax);
* value_t = f1(E)·S1_t (+ f2(E)·S2_t when f2 ≠ 0 and the weighted table exists), with the
  efficiency factors of the *first* event type;
* the result is float32, accumulated type by type as float32(out + value_t).

Each product L·A is rounded before its addition (numpy element-wise arithmetic, no fused
multiply-add), which is what the C++ loop does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.gti import Gti, read_gti
from fermipipe.fits.header import Header
from fermipipe.fits.table import HduInfo, TruncatedTableError, dtype_from_header
from fermipipe.irf.aeff import EffectiveArea

if TYPE_CHECKING:
    from fermipipe.fits.stream import FitsStream

__all__ = [
    "LivetimeCubeData",
    "cell_exposures",
    "cos_bin_centres",
    "distinct_cells",
    "phi_bin_centres",
    "read_livetime_cube",
]

TOOL = "gtexpcube2"
T = TypeVar("T")


@dataclass
class LivetimeCubeData:
    """What gtexpcube2 takes from a livetime cube."""

    path: str
    header: Header  # of the exposure table
    nside: int
    nest: bool
    nbins: int
    cosmin: float
    sqrt_weight: bool
    phibins: int
    exposure: np.ndarray  # (npix, ncells) float32
    weighted: np.ndarray | None
    gti: Gti


def read_livetime_cube(path: str, table: str = "EXPOSURE") -> LivetimeCubeData:
    """Read the exposure table ``table``, WEIGHTED_EXPOSURE (if present) and the GTI.

    The file is read front to back (:class:`~fermipipe.fits.stream.FitsStream`) and only the
    COSBINS columns are kept, as float32: a gzipped cube is never decompressed whole into
    memory (that, plus its parsed columns, was most of a HEALPix run's peak memory).
    """
    import zlib

    from fermipipe.fits.stream import FitsStream

    exp_info = None
    exposure = weighted = None
    gti = None
    seen: set[str] = set()  # the first HDU of each name is the one read (as FitsFile.hdu)
    try:
        with FitsStream(path) as fs:
            for info in fs.hdus():
                name = info.extname.upper()
                if name in seen:
                    continue
                seen.add(name)
                if name == table.upper():
                    exp_info = info
                    exposure = _cosbins(fs, info, table, path)
                elif name == "WEIGHTED_EXPOSURE":
                    weighted = _optional(lambda i=info: fs.column(i, "COSBINS", np.float32))
                    weighted = None if weighted is None else weighted.reshape(len(weighted), -1)
                elif name == "GTI":
                    rows = _optional(lambda i=info: fs.table(i))
                    gti = None if rows is None else read_gti(rows, tool=TOOL, file=path)
    except ToolError:
        raise
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise ToolError(TOOL, f"cannot read livetime cube ({exc})", path) from None
    if exp_info is None or exposure is None:
        raise ToolError(TOOL, f"no {table} table in the livetime cube", path)
    if gti is None:
        raise ToolError(TOOL, "no GTI extension in the livetime cube", path)
    h = exp_info.header
    ordering = str(h.get("ORDERING", "NESTED")).strip().upper()
    return LivetimeCubeData(
        path=path,
        header=h,
        nside=int(h["NSIDE"]),
        nest=ordering.startswith("NEST"),
        nbins=int(h["NBRBINS"]),
        cosmin=float(h.get("COSMIN", 0.0) or 0.0),
        sqrt_weight=str(h.get("THETABIN", "SQRT(1-COSTHETA)")).strip().upper().startswith("SQRT"),
        phibins=int(h.get("PHIBINS", 0) or 0),
        exposure=exposure,
        weighted=weighted,
        gti=gti,
    )


def _optional(read: Callable[[], T]) -> T | None:
    """``read()``, or None when the HDU is not a table of the expected kind (a file cut
    short inside it is still an error)."""
    try:
        return read()
    except TruncatedTableError:
        raise
    except (KeyError, ValueError):
        return None


def _cosbins(fs: FitsStream, info: HduInfo, table: str, path: str) -> np.ndarray | None:
    """The COSBINS column of the exposure table as (rows, entries) float32, checked against
    NSIDE/NBRBINS/PHIBINS; None when the HDU is not a binary table."""
    if not info.is_bintable:
        return None
    h = info.header
    missing = [k for k in ("NSIDE", "NBRBINS", "TSTART", "TSTOP") if k not in h]
    try:
        has_cosbins = "COSBINS" in {n.upper() for n in dtype_from_header(h).names or ()}
    except (KeyError, ValueError):
        return None
    if missing or not has_cosbins:
        what = ", ".join(missing) or "COSBINS"
        raise ToolError(TOOL, f"{table} is not a livetime cube table (no {what})", path)
    nbins = int(h["NBRBINS"])
    phibins = int(h.get("PHIBINS", 0) or 0)
    exposure = fs.column(info, "COSBINS", np.float32)
    exposure = exposure.reshape(len(exposure), -1)
    if exposure.shape[1] != nbins * (1 + phibins):
        raise ToolError(
            TOOL,
            f"{table}: COSBINS has {exposure.shape[1]} entries, expected "
            f"NBRBINS x (1 + PHIBINS) = {nbins * (1 + phibins)}",
            path,
        )
    return exposure


def cos_bin_centres(nbins: int, cosmin: float = 0.0, sqrt_weight: bool = True) -> np.ndarray:
    """CosineBinner::costheta of each bin: 1 − f·(1 − cosmin), f = ((i+½)/n)² (or (i+½)/n)."""
    f = (np.arange(nbins, dtype=np.float64) + 0.5) / nbins
    if sqrt_weight:
        f = f * f
    return 1.0 - f * (1.0 - cosmin)


def phi_bin_centres(phibins: int) -> np.ndarray:
    """φ of each phi bin in degrees: CosineBinner::phi (π/4·(k+½)/m radians) × 180/π."""
    f = (np.arange(phibins, dtype=np.float64) + 0.5) / phibins
    return (math.pi / 4.0 * f) * (180.0 / math.pi)


def _aeff_table(
    aeff: EffectiveArea,
    energies: np.ndarray,
    costh: np.ndarray,
    phi_deg: np.ndarray | None,
    cos_limits: tuple[float, float],
) -> np.ndarray:
    """A(E, c_i[, φ_k]) as (entries, nE): entries = n, or m·n (k-major) with phi."""
    lo, hi = cos_limits
    inside = (costh >= lo) & (costh <= hi)
    if phi_deg is None:
        a = aeff.value(energies[None, :], costh[:, None])
        return np.where(inside[:, None], a, 0.0)
    c = np.tile(costh, phi_deg.size)
    phi = np.repeat(phi_deg, costh.size)
    a = aeff.value(energies[None, :], c[:, None], phi[:, None])
    return np.where(np.tile(inside, phi_deg.size)[:, None], a, 0.0)


def _ordered_sum_block(cells: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The ordered sum for a block of rows, in sub-blocks small enough to stay in cache."""
    nrows, nout = cells.shape[0], table.shape[1]
    out = np.zeros((nrows, nout))
    step = max(64, 32768 // max(1, nout))  # ~256 KB of partial sums per sub-block
    prod = np.empty((min(step, nrows), nout))
    for r0 in range(0, nrows, step):
        r1 = min(r0 + step, nrows)
        acc = out[r0:r1]
        tmp = prod[: r1 - r0]
        sub = cells[r0:r1]
        for e in range(table.shape[0]):
            np.multiply(sub[:, e, None], table[e][None, :], out=tmp, dtype=np.float64)
            acc += tmp
    return out


#: Cells per work unit of :func:`cell_exposures`: its temporaries (a few (block, nE) double
#: arrays per thread) stay around a megabyte while the Python overhead stays negligible.
BLOCK_CELLS = 2048


def cell_exposures(
    cube: LivetimeCubeData,
    cells: np.ndarray,
    energies: Sequence[float] | np.ndarray,
    aeffs: Sequence[EffectiveArea],
    *,
    ignorephi: bool = False,
    cos_limits: tuple[float, float] = (-1.0, 1.0),
    workers: int = 2,
) -> np.ndarray:
    """Exposure (cm² s) of livetime-cube pixels ``cells`` at ``energies``: (ncells, nE)
    float32, summed over the event types ``aeffs`` in order (spec §14.3).

    Computed in blocks of cells written into the result, so that the only full-size array is
    the float32 result (the sums in double exist one block at a time). Blocks are independent
    and run in ``workers`` threads (numpy releases the GIL); every element goes through the
    same operations in the same order as a whole-array computation.
    """
    energies = np.asarray(energies, dtype=np.float64)
    costh = cos_bin_centres(cube.nbins, cube.cosmin, cube.sqrt_weight)
    n = cube.nbins
    if cube.phibins > 0:
        first, phi = n, phi_bin_centres(cube.phibins)
        # ignorephi turns the modulation off but the phi entries are still the ones summed.
        phi_arg: np.ndarray | None = None if ignorephi else phi
        last = n * (1 + cube.phibins)
    else:
        first, last, phi, phi_arg = 0, n, None, None
    eff = aeffs[0].efficiency if aeffs else None
    if eff is not None:
        f1, f2 = eff.factors(energies)
    else:
        f1, f2 = np.ones(energies.size), np.zeros(energies.size)
    use_w = (f2 != 0) & (cube.weighted is not None)
    any_w = bool(np.any(use_w))
    f2w = f2[use_w]
    tables = []
    for aeff in aeffs:
        if phi is not None:
            if phi_arg is None:
                base = _aeff_table(aeff, energies, costh, None, cos_limits)
                table = np.tile(base, (cube.phibins, 1))
            else:
                table = _aeff_table(aeff, energies, costh, phi_arg, cos_limits)
        else:
            table = _aeff_table(aeff, energies, costh, None, cos_limits)
        tables.append((table, np.ascontiguousarray(table[:, use_w]) if any_w else None))
    out = np.zeros((cells.size, energies.size), dtype=np.float32)

    def block(r0: int) -> None:
        sub = cells[r0 : r0 + BLOCK_CELLS]
        live = cube.exposure[sub, first:last]
        weighted = cube.weighted[sub, first:last] if any_w and cube.weighted is not None else None
        acc = out[r0 : r0 + BLOCK_CELLS]
        for table, table_w in tables:
            value = _ordered_sum_block(live, table)
            value *= f1  # = f1·S1 (the product is commutative, bit for bit)
            if weighted is not None and table_w is not None:
                s2 = _ordered_sum_block(weighted, table_w)
                s2 *= f2w
                value[:, use_w] += s2
            if np.any(value < 0):
                raise ToolError(TOOL, "negative exposure (ExposureCube::value: exposure < 0)")
            value += acc  # float32 + double: the float32 is widened exactly
            acc[...] = value  # rounded to float32 once per type, as in the C++ accumulation

    starts = range(0, cells.size, BLOCK_CELLS)
    if workers > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(block, starts):
                pass
    else:
        for r0 in starts:
            block(r0)
    return out


def distinct_cells(cell_of_pixel: np.ndarray, npix: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct cells in ascending order, index of each pixel's cell in that list)."""
    used = np.zeros(npix, dtype=bool)
    used[cell_of_pixel] = True
    cells = np.flatnonzero(used)
    # int32 where it fits: the index has one entry per output pixel (6.5 M on the mission grid)
    lookup = np.zeros(npix, dtype=np.int32 if cells.size < 2**31 else np.int64)
    lookup[cells] = np.arange(cells.size)
    return cells, lookup[cell_of_pixel]
