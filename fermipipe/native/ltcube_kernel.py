"""Compiled (numba) accumulation kernel for livetime cubes (gtltcube, spec §6.3–6.4).

For every FT2 row and every HEALPix pixel centre ``p``: cosθ = p·scz; if cosθ > 0 (COSMIN 0)
and the pixel passes the zenith cut (z = p·zenith, kept iff cos(zmax) < z < cos(zmin)), the
row's livetime goes to bin trunc(√(1−cosθ)·nbins) (clamped to nbins−1), and for phibins > 0
also to the same bin of phi block k (entry (k+1)·nbins + bin). With phibins > 0, "scz" is the
Z axis of the re-orthogonalised instrument frame (:func:`instrument_axes`), not SCZ itself.

Two accumulation modes, one loop structure:

* exact: float32 storage and every addition is ``float32(float64(cell) + value)`` in FT2-row
  order — gtltcube's ``float += double`` (spec §6.4). Plain float32 addition differs in the
  last ulp for about a quarter of the cells.
* fast: float64 accumulators (converted to float32 by the caller at the end).

Layout and why it is both exact and fast: pixels are grouped in blocks of P consecutive
NESTED pixels (a parent pixel, so a small cap of the sky). The parallel loop runs over blocks;
inside a block, rows are visited in file order and, for each row, all P pixels of the block
(an inner loop that the compiler vectorises). Each pixel therefore sees its additions in FT2
row order whatever the thread count — bit-identical — while consecutive additions go to
different pixels, so there is no read-after-write chain on one cell. A block whose cap lies
entirely more than 90° from SCZ (or entirely outside the zenith cut) for a row is skipped for
that row: the cap radius carries a 1e-6 rad margin, far above the ~1e-16 rounding of the dot
products, so no pixel that the per-pixel test would keep is ever skipped.

Row arrays are passed in chunks (the caller bounds memory); the accumulators persist between
calls, so chunking does not change the order of additions.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np

__all__ = ["PixelBlocks", "accumulate", "instrument_axes", "radec_to_unit"]

_QUARTER_PI = math.pi / 4.0
_HALF_PI = math.pi / 2.0
_TWO_PI = 2.0 * math.pi
#: Safety margin (radians) added to every block radius used for culling.
_CULL_MARGIN = 1e-6
#: Kernel launches are serialised: each already uses every core, and numba's fallback
#: "workqueue" threading layer aborts the process on concurrent launches from two threads
#: (e.g. two in-process tool runs in a threaded Dask worker).
_LAUNCH_LOCK = threading.Lock()
#: Largest block of NESTED pixels (64 = one nside/8 parent pixel; measured best at nside 64).
_MAX_BLOCK = 64


def radec_to_unit(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 3) from RA/Dec in degrees, computed in float64.

    Degrees are converted as ``x·π/180`` (multiply, then divide) and the vector is
    (cos δ cos α, cos δ sin α, sin δ), as astro::SkyDir builds it — so cosθ values that fall
    on a bin edge round as in the Fermitools.
    """
    ra = np.asarray(ra_deg, dtype=np.float64) * math.pi / 180.0
    dec = np.asarray(dec_deg, dtype=np.float64) * math.pi / 180.0
    cd = np.cos(dec)
    out = np.empty((ra.shape[0], 3), dtype=np.float64)
    out[:, 0] = np.cos(ra) * cd
    out[:, 1] = np.sin(ra) * cd
    out[:, 2] = np.sin(dec)
    return out


class PixelBlocks:
    """Pixel unit vectors grouped into blocks of consecutive NESTED pixels, with cull radii.

    ``xyz`` has shape (nblocks, 3, P); ``centre`` (nblocks, 3) is the normalised mean of each
    block's vectors; ``radius`` (nblocks,) the largest angle from the centre to a pixel of the
    block plus a margin. ``P`` is a power of 4 no larger than nside² (pixels of one parent
    never straddle two base pixels), so blocks tile the NESTED order exactly.
    """

    def __init__(self, pix: np.ndarray, nside: int) -> None:
        npix = pix.shape[0]
        size = 1
        while size * 4 <= min(_MAX_BLOCK, nside * nside):
            size *= 4
        if npix % size:
            raise ValueError(f"{npix} pixels cannot be split into blocks of {size}")
        self.size = size
        self.nblocks = npix // size
        grouped = pix.reshape(self.nblocks, size, 3)
        self.xyz = np.ascontiguousarray(grouped.transpose(0, 2, 1), dtype=np.float64)
        centre = grouped.sum(axis=1)
        centre /= np.linalg.norm(centre, axis=1)[:, None]
        self.centre = np.ascontiguousarray(centre)
        cosr = np.einsum("kpj,kj->kp", grouped, centre).min(axis=1)
        self.radius = np.arccos(np.clip(cosr, -1.0, 1.0)) + _CULL_MARGIN

    def cull_thresholds(
        self, cos_zmax: float | None, zmax_rad: float | None, zmin_rad: float | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-block thresholds on centre·scz and centre·zenith below/above which a whole
        block fails the cosθ > 0 test or the zenith cut (−2/+2 = never)."""
        r = self.radius
        # All pixels have cosθ <= 0 iff the centre is >= 90° + r from SCZ.
        cull_c = np.where(r < _HALF_PI, -np.sin(np.minimum(r, _HALF_PI)), -2.0)
        if cos_zmax is None or zmax_rad is None or zmin_rad is None:
            return cull_c, np.full_like(r, -2.0), np.full_like(r, 2.0)
        # All pixels fail z > cos(zmax) iff the centre is >= zmax + r from the zenith.
        lim = zmax_rad + r
        cull_zmax = np.where(lim < math.pi, np.cos(np.minimum(lim, math.pi)), -2.0)
        # All pixels fail z < cos(zmin) iff the centre is <= zmin − r from the zenith.
        low = zmin_rad - r
        cull_zmin = np.where(low > 0.0, np.cos(np.maximum(low, 0.0)), 2.0)
        return cull_c, cull_zmax, cull_zmin

    def to_pixel_major(self, cube: np.ndarray) -> np.ndarray:
        """(nblocks, nbtot, P) accumulator → (npix, nbtot) in NESTED pixel order."""
        nb, nbtot, size = cube.shape
        return np.ascontiguousarray(cube.transpose(0, 2, 1).reshape(nb * size, nbtot))


#: CLHEP Hep4RotationInterface::tolerance (ToleranceTicks 100 × 1e-8): columns whose dot
#: product is within this of ±1 are "parallel" and get an arbitrary frame.
_PARALLEL_TOLERANCE = 1e-6


@numba.njit(inline="always")
def _unit(a0: float, a1: float, a2: float) -> tuple[float, float, float]:
    """CLHEP Hep3Vector::unit: scale by 1/√(x²+y²+z²) (a reciprocal, then products)."""
    tot = a0 * a0 + a1 * a1 + a2 * a2
    if tot > 0.0:
        s = 1.0 / math.sqrt(tot)
        return a0 * s, a1 * s, a2 * s
    return a0, a1, a2


@numba.njit(inline="always")
def _cross(
    a0: float, a1: float, a2: float, b0: float, b1: float, b2: float
) -> tuple[float, float, float]:
    return a1 * b2 - b1 * a2, a2 * b0 - b2 * a0, a0 * b1 - b0 * a1


@numba.njit(inline="always")
def _set_cols(
    u: tuple[float, float, float], w: tuple[float, float, float], uw: float
) -> tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]:
    """First vector kept, second made orthogonal to it and normalised, third = their cross
    product (CLHEP HepRotation::setCols; the "reflection" case only warns there)."""
    if 1.0 - abs(uw) <= _PARALLEL_TOLERANCE:
        # All columns parallel (CLHEP setArbitrarily): any frame around u.
        a = _unit(u[0], u[1], u[2])
        b = _cross(a[0], a[1], a[2], 0.0, 0.0, 1.0)
        if b[0] * b[0] + b[1] * b[1] + b[2] * b[2] != 0.0:
            b = _unit(b[0], b[1], b[2])
        else:
            b = (1.0, 0.0, 0.0)
        return a, b, _cross(a[0], a[1], a[2], b[0], b[1], b[2])
    b = _unit(w[0] - uw * u[0], w[1] - uw * u[1], w[2] - uw * u[2])
    return u, b, _cross(u[0], u[1], u[2], b[0], b[1], b[2])


@numba.njit(cache=True, error_model="numpy")
def _instrument_axes(scz: np.ndarray, scx: np.ndarray, out: np.ndarray) -> None:
    for r in range(scz.shape[0]):
        z = (scz[r, 0], scz[r, 1], scz[r, 2])
        x = (scx[r, 0], scx[r, 1], scx[r, 2])
        # Columns X = SCX, Y = SCZ × SCX, Z = SCZ, each normalised.
        ux = _unit(x[0], x[1], x[2])
        y = _cross(z[0], z[1], z[2], x[0], x[1], x[2])
        uy = _unit(y[0], y[1], y[2])
        uz = _unit(z[0], z[1], z[2])
        d12 = ux[0] * uy[0] + ux[1] * uy[1] + ux[2] * uy[2]
        d13 = ux[0] * uz[0] + ux[1] * uz[1] + ux[2] * uz[2]
        d23 = uy[0] * uz[0] + uy[1] * uz[1] + uy[2] * uz[2]
        f12, f13, f23 = abs(d12), abs(d13), abs(d23)
        # The most nearly orthogonal pair is kept as it is (CLHEP HepRotation::set).
        if f12 <= f13 and f12 <= f23:
            vx, vy, vz = _set_cols(ux, uy, d12)
        elif f13 <= f23:
            vz, vx, vy = _set_cols(uz, ux, d13)
        else:
            vy, vz, vx = _set_cols(uy, uz, d23)
        for j in range(3):
            out[r, 0, j] = vx[j]
            out[r, 1, j] = vy[j]
            out[r, 2, j] = vz[j]


def instrument_axes(scz: np.ndarray, scx: np.ndarray) -> np.ndarray:
    """Instrument axes (n, 3, 3): [:, 0] = X, [:, 1] = Y, [:, 2] = Z, per FT2 row.

    With phibins > 0 gtltcube (map_tools Exposure::Filler) rotates each pixel direction into
    the instrument frame and takes cosθ from its z component and φ from its x, y components.
    The frame is CLHEP HepRotation(X=SCX, Y=SCZ×SCX, Z=SCZ) (astro PointingTransform), whose
    constructor normalises the columns and re-orthogonalises them: SCX and SCZ are stored in
    float32 and are not exactly orthogonal, so the Z axis used differs from SCZ by ~1e-7 rad
    and cosθ bins differ from the phibins=0 cube's for pixels on a bin edge. The same
    arithmetic, in the same order, is done here (CLHEP Vector/src/RotationC.cc,
    ThreeVector.icc).
    """
    n = scz.shape[0]
    out = np.empty((n, 3, 3), dtype=np.float64)
    if n:
        _instrument_axes(
            np.ascontiguousarray(scz, dtype=np.float64),
            np.ascontiguousarray(scx, dtype=np.float64),
            out,
        )
    return out


@numba.njit(inline="always")
def _phi_block(
    px: float,
    py: float,
    pz: float,
    x0: float,
    x1: float,
    x2: float,
    y0: float,
    y1: float,
    y2: float,
    phibins: int,
) -> int:
    """Phi block k = trunc(f·phibins) of a pixel (spec §6.3).

    φ = atan2(p·Y, p·X) with X, Y the instrument axes of :func:`instrument_axes` (CLHEP
    Hep3Vector::phi, 0 when both components are 0), folded to [0, 2π); then
    f = 1 − |π/4 − fmod(φ, π/2)|/(π/4) (healpix CosineBinner::folded_phi). f = 1 exactly
    gives k = phibins, which the Fermitools index with vector::at (an out_of_range abort of
    gtltcube); our choice is to clamp k to phibins − 1.
    """
    ix = px * x0 + py * x1 + pz * x2
    iy = px * y0 + py * y1 + pz * y2
    phi = 0.0 if ix == 0.0 and iy == 0.0 else math.atan2(iy, ix)
    if phi < 0.0:
        phi += _TWO_PI
    f = 1.0 - abs(_QUARTER_PI - np.fmod(phi, _HALF_PI)) / _QUARTER_PI
    k = int(f * phibins)
    if k >= phibins:
        k = phibins - 1
    if k < 0:
        k = 0
    return k


@numba.njit(inline="always")
def _add_row(
    e: np.ndarray, we: np.ndarray, cell: int, pixel: int, v: float, w: float, exact: bool
) -> None:
    """Add one FT2 row's livetime ``v`` and weighted livetime ``w`` to one cell of both cubes.

    ``exact``: gtltcube adds a double to a float cell (float += double), i.e. widens the stored
    float32, adds in double and rounds back — done the same way here to stay bit-identical.
    Otherwise the cubes are float64 and the sum is plain.
    """
    if exact:
        e[cell, pixel] = np.float32(np.float64(e[cell, pixel]) + v)
        we[cell, pixel] = np.float32(np.float64(we[cell, pixel]) + w)
    else:
        e[cell, pixel] += v
        we[cell, pixel] += w


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _kernel(
    bxyz: np.ndarray,
    centre: np.ndarray,
    cull_c: np.ndarray,
    cull_zmax: np.ndarray,
    cull_zmin: np.ndarray,
    scz: np.ndarray,
    zen: np.ndarray,
    scx: np.ndarray,
    scy: np.ndarray,
    value: np.ndarray,
    wvalue: np.ndarray,
    nbins: int,
    phibins: int,
    zcut: bool,
    cos_zmax: float,
    cos_zmin: float,
    exact: bool,
    exp: np.ndarray,
    wexp: np.ndarray,
) -> None:
    nblocks = bxyz.shape[0]
    size = bxyz.shape[2]
    nrows = scz.shape[0]
    fnb = float(nbins)
    top = nbins - 1
    for k in numba.prange(nblocks):
        px = bxyz[k, 0]
        py = bxyz[k, 1]
        pz = bxyz[k, 2]
        c0 = centre[k, 0]
        c1 = centre[k, 1]
        c2 = centre[k, 2]
        e = exp[k]
        we = wexp[k]
        key = np.empty(size, np.int32)
        for r in range(nrows):
            s0 = scz[r, 0]
            s1 = scz[r, 1]
            s2 = scz[r, 2]
            if c0 * s0 + c1 * s1 + c2 * s2 <= cull_c[k]:
                continue
            z0 = zen[r, 0]
            z1 = zen[r, 1]
            z2 = zen[r, 2]
            if zcut:
                zc = c0 * z0 + c1 * z1 + c2 * z2
                if zc <= cull_zmax[k] or zc >= cull_zmin[k]:
                    continue
            # Pass 1 (vectorised): bin of every pixel of the block, −1 where not filled.
            for i in range(size):
                c = px[i] * s0 + py[i] * s1 + pz[i] * s2
                # cosθ can exceed 1 by an ulp; the Fermitools would take sqrt of a
                # negative number there (undefined bin) — we put it in bin 0.
                b = min(int(math.sqrt(max(1.0 - c, 0.0)) * fnb), top)
                ok = c > 0.0
                if zcut:
                    zv = px[i] * z0 + py[i] * z1 + pz[i] * z2
                    ok = ok and zv > cos_zmax and zv < cos_zmin
                key[i] = b if ok else -1
            # Pass 2: scatter the row's values (no two pixels share a cell).
            v = value[r]
            w = wvalue[r]
            for i in range(size):
                b = key[i]
                if b < 0:
                    continue
                _add_row(e, we, b, i, v, w, exact)
                if phibins > 0:
                    kb = _phi_block(
                        px[i],
                        py[i],
                        pz[i],
                        scx[r, 0],
                        scx[r, 1],
                        scx[r, 2],
                        scy[r, 0],
                        scy[r, 1],
                        scy[r, 2],
                        phibins,
                    )
                    _add_row(e, we, (kb + 1) * nbins + b, i, v, w, exact)


def accumulate(
    blocks: PixelBlocks,
    culls: tuple[np.ndarray, np.ndarray, np.ndarray],
    scz: np.ndarray,
    zen: np.ndarray | None,
    scx: np.ndarray | None,
    value: np.ndarray,
    wvalue: np.ndarray,
    nbins: int,
    phibins: int,
    cos_zmax: float | None,
    cos_zmin: float | None,
    exp: np.ndarray,
    wexp: np.ndarray,
) -> None:
    """Add one chunk of FT2 rows (in file order) to the block accumulators in place.

    ``exp``/``wexp`` have shape (nblocks, nbins·(1+phibins), P) and dtype float32 (exact mode)
    or float64 (fast mode). ``zen`` is None when there is no zenith cut; ``scx`` is only read
    when phibins > 0. ``culls`` comes from :meth:`PixelBlocks.cull_thresholds`.
    """
    if scz.shape[0] == 0:
        return
    zcut = zen is not None
    f64 = np.float64
    scz = np.ascontiguousarray(scz, dtype=f64)
    scy = scz
    if phibins > 0:
        if scx is None:
            raise ValueError("phibins > 0 needs the SCX directions")
        # cosθ, φ and the culling all use the instrument frame's axes (see instrument_axes).
        axes = instrument_axes(scz, scx)
        scx = np.ascontiguousarray(axes[:, 0])
        scy = np.ascontiguousarray(axes[:, 1])
        scz = np.ascontiguousarray(axes[:, 2])
    with _LAUNCH_LOCK:
        _kernel(
            blocks.xyz,
            blocks.centre,
            culls[0],
            culls[1],
            culls[2],
            scz,
            np.ascontiguousarray(zen, dtype=f64) if zen is not None else scz,
            np.ascontiguousarray(scx, dtype=f64) if scx is not None else scz,
            scy,
            np.ascontiguousarray(value, dtype=f64),
            np.ascontiguousarray(wvalue, dtype=f64),
            int(nbins),
            int(phibins),
            zcut,
            float(cos_zmax) if cos_zmax is not None else -2.0,
            float(cos_zmin) if cos_zmin is not None else 2.0,
            exp.dtype == np.float32,
            exp,
            wexp,
        )


def load_kernels() -> None:
    """Load the compiled kernel (numba's on-disk cache, else a compilation) now, with tiny
    inputs of the types a real run passes — exact (float32) and fast (float64) modes — so
    that a worker process's first gtltcube does not pay it (~2 s on this project's
    machines)."""
    pix = np.zeros((12, 3))
    pix[:, 2] = 1.0
    blocks = PixelBlocks(pix, 1)
    culls = blocks.cull_thresholds(None, None, None)
    scz = pix[:1].copy()
    one = np.ones(1)
    for dtype in (np.float32, np.float64):
        exp = np.zeros((blocks.nblocks, 1, blocks.size), dtype)
        accumulate(blocks, culls, scz, None, None, one, one, 1, 0, None, None, exp, exp.copy())
