"""Directions of gtexpcube2's output pixels and their livetime-cube cells (spec §14.2).

How the Fermitools get there (astro SkyProj/SkyDir/HealpixProj, healpix Healpix::Pixel):

* WCS pixel (i, j): wcslib ``wcsp2s`` at (i+1, j+1) on a wcsprm built from CTYPE, CRPIX,
  CRVAL (CRVAL1 > 180 shifted by −360), CDELT and CROTA2; longitude folded into [0, 360); a
  pixel wcslib cannot map stays 0. Then ``SkyDir(lon, lat, GAL|EQU)``: radians as
  ``x·π/180``, unit vector, rotated to equatorial by the transpose of the astro
  equatorial→galactic rotation for galactic maps.
* HEALPix pixel: ``pix2ang``; lon = φ·R2D, lat = (π/2 − θ)·R2D (astro's constants), radians
  again as ``x·D2R`` with D2R = 1/(180/π), vector, rotation as above.
* RA = atan2(y, x)·180/π folded into [0, 360], Dec = asin(z)·180/π; the livetime-cube cell is
  HEALPix ``ang2pix`` at the cube's NSIDE/ORDERING with θ = π/2 − Dec·π/180, φ = (π/180)·RA.

The rotation is composed like CLHEP's ``HepRotation().rotateZ(ψ).rotateX(θ).rotateZ(φ)``
(each step a left multiplication) from :data:`fermipipe.fits.skycoords.GAL_ANGLES`, and the
matrix–vector products are written out term by term in CLHEP's order, so that the numbers
agree with the C++ to the last bit as far as the elementary functions allow.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from fermipipe.fits.skycoords import GAL_ANGLES

__all__ = [
    "WcsGeometry",
    "equatorial_from_lonlat",
    "gal_to_equ_matrix",
    "healpix_cells",
    "healpix_directions",
    "livetime_cells",
    "wcs_cells",
    "wcs_directions",
]

#: astro's ProjBase constants (ASTRO_R2D, ASTRO_PIOVER2) and SkyDir's D2R = 1/(180/π).
ASTRO_R2D = 57.29577951308232
ASTRO_PIOVER2 = 1.5707963267948966
SKYDIR_D2R = 1.0 / (180.0 / math.pi)


def _extension(package: str, subdir: str, stem: str) -> ModuleType | None:
    """Load a compiled extension of an installed package without running the package's
    ``__init__`` (healpy's imports matplotlib, astropy.wcs's astropy.coordinates: ~1.5 s of a
    3 s run). None when that fails; the caller then imports the package normally."""
    try:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        base = os.path.join(spec.submodule_search_locations[0], subdir)
        found = sorted(glob.glob(os.path.join(base, f"{stem}.*so")))
        if not found:
            return None
        name = ".".join(p for p in (package, subdir.replace("/", "."), stem) if p)
        # A second instance of an extension re-initialises its static types: astropy.wcs
        # then rejects its own Wcsprm objects ("Arg 3 must be Wcsprm object"). So reuse the
        # loaded one, and register ours for the package's own later import.
        if name in sys.modules:
            return sys.modules[name]
        ext_spec = importlib.util.spec_from_file_location(name, found[0])
        if ext_spec is None or ext_spec.loader is None:
            return None
        module = importlib.util.module_from_spec(ext_spec)
        ext_spec.loader.exec_module(module)
        sys.modules[name] = module
        return module
    except (ImportError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def _healpix_lib() -> Any:
    """healpy's pixel ufuncs (the functions ``healpy.ang2pix``/``pix2ang`` call)."""
    lib = _extension("healpy", "", "_healpy_pixel_lib")
    if lib is None:
        from healpy import pixelfunc

        lib = pixelfunc.pixlib
    return lib


@functools.lru_cache(maxsize=1)
def _wcsprm_class() -> Any:
    """astropy's ``Wcsprm`` (wcslib's wcsprm), loaded once."""
    mod = _extension("astropy", "wcs", "_wcs")
    if mod is None:
        from astropy.wcs import Wcsprm

        return Wcsprm
    return mod.Wcsprm


def _wcsprm() -> Any:
    """A fresh 2-axis wcslib ``wcsprm``."""
    return _wcsprm_class()(naxis=2)


def gal_to_equ_matrix() -> list[list[float]]:
    """Inverse (transpose) of astro's equatorial→galactic rotation, built like CLHEP."""
    m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]

    def rotate_z(a: float) -> None:
        c, s = math.cos(a), math.sin(a)
        x1, y1, z1 = m[0]
        m[0] = [c * x1 - s * m[1][0], c * y1 - s * m[1][1], c * z1 - s * m[1][2]]
        m[1] = [s * x1 + c * m[1][0], s * y1 + c * m[1][1], s * z1 + c * m[1][2]]

    def rotate_x(a: float) -> None:
        c, s = math.cos(a), math.sin(a)
        x1, y1, z1 = m[1]
        m[1] = [c * x1 - s * m[2][0], c * y1 - s * m[2][1], c * z1 - s * m[2][2]]
        m[2] = [s * x1 + c * m[2][0], s * y1 + c * m[2][1], s * z1 + c * m[2][2]]

    phi, theta, psi = GAL_ANGLES
    rotate_z(psi * math.pi / 180)
    rotate_x(theta * math.pi / 180)
    rotate_z(phi * math.pi / 180)
    return [[m[c][r] for c in range(3)] for r in range(3)]


def equatorial_from_lonlat(
    lon_rad: np.ndarray, lat_rad: np.ndarray, galactic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) in degrees of directions given in radians (SkyDir ra()/dec())."""
    cl = np.cos(lat_rad)
    x = np.cos(lon_rad) * cl
    y = np.sin(lon_rad) * cl
    z = np.sin(lat_rad)
    del cl
    if galactic:
        r = gal_to_equ_matrix()
        x, y, z = (
            r[0][0] * x + r[0][1] * y + r[0][2] * z,
            r[1][0] * x + r[1][1] * y + r[1][2] * z,
            r[2][0] * x + r[2][1] * y + r[2][2] * z,
        )
    ra = np.arctan2(y, x) * 180.0 / math.pi
    ra = np.where(ra < 0, ra + 360.0, ra)
    ra = np.where(ra > 360, ra - 360.0, ra)
    dec = np.arcsin(np.clip(z, -1.0, 1.0)) * 180.0 / math.pi
    return ra, dec


@dataclass(frozen=True)
class WcsGeometry:
    """The WCS grid of a gtexpcube2 map (values as the tool uses them)."""

    nx: int
    ny: int
    proj: str
    galactic: bool
    crpix: tuple[float, float]
    crval: tuple[float, float]
    cdelt: tuple[float, float]
    crota2: float = 0.0


def _wcs_world(
    geom: WcsGeometry, w: Any, j0: int, j1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RA, Dec of the valid pixels, valid mask) for the pixel centres of image rows j0 … j1−1."""
    ny = j1 - j0
    pix = np.empty((ny, geom.nx, 2))
    pix[:, :, 0] = np.arange(1, geom.nx + 1, dtype=np.float64)[None, :]
    pix[:, :, 1] = np.arange(j0 + 1, j1 + 1, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore"):
        world = w.p2s(pix.reshape(-1, 2), 1)  # origin 1: pixel (i+1, j+1)
    del pix
    valid = world["stat"] == 0
    coords = world["world"]
    del world
    s1 = coords[:, 0]
    s2 = coords[:, 1]
    valid &= np.isfinite(s1) & np.isfinite(s2)
    s1 = s1[valid]
    s2 = s2[valid]
    # "while (s1 < 0) s1 += 360; while (s1 >= 360) s1 -= 360" for wcslib's [-360, 720) range
    s1 = np.where(s1 < 0, s1 + 360.0, s1)
    s1 = np.where(s1 >= 360.0, s1 - 360.0, s1)
    ra, dec = equatorial_from_lonlat(s1 * math.pi / 180, s2 * math.pi / 180, geom.galactic)
    return ra, dec, valid


def _make_wcsprm(geom: WcsGeometry) -> Any:
    """The wcsprm astro::SkyProj builds for the map (see the module docstring)."""
    w = _wcsprm()
    lon, lat = ("GLON", "GLAT") if geom.galactic else ("RA", "DEC")
    w.ctype = [
        f"{lon}{'-' if geom.galactic else '---'}{geom.proj}",
        f"{lat}{'-' if geom.galactic else '--'}{geom.proj}",
    ]
    crval1 = geom.crval[0] - 360.0 if geom.crval[0] > 180 else geom.crval[0]
    w.crpix = list(geom.crpix)
    w.crval = [crval1, geom.crval[1]]
    w.cdelt = list(geom.cdelt)
    w.crota = [0.0, geom.crota2]  # CROTA2: wcslib altlin |= 4, as astro SkyProj sets
    w.set()
    return w


def wcs_directions(geom: WcsGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RA, Dec of the valid pixels, valid mask over all pixels, row-major (j, i))."""
    return _wcs_world(geom, _make_wcsprm(geom), 0, geom.ny)


#: Pixels per work unit of :func:`wcs_cells` (bounds the temporaries to ~25 MB per worker;
#: 4× more cost 100 MB more peak memory on the mission grid for no speed).
CHUNK_PIXELS = 1 << 18


def wcs_cells(
    geom: WcsGeometry, nside: int, nest: bool, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(livetime-cube cell of every valid pixel, valid mask), in image order.

    The grid is cut into row blocks handled by ``workers`` threads: wcslib's ``p2s`` holds
    the GIL but the numpy trigonometry and ``ang2pix`` release it, so one block's projection
    overlaps another block's rotation — the same numbers, about half the wall time.
    """
    from concurrent.futures import ThreadPoolExecutor

    _healpix_lib()  # load the extensions once, before any thread needs them
    _wcsprm_class()
    rows = max(1, CHUNK_PIXELS // max(1, geom.nx))
    cell_type = _cell_type(nside)
    blocks = [(j, min(j + rows, geom.ny)) for j in range(0, geom.ny, rows)]

    def work(block: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        ra, dec, valid = _wcs_world(geom, _make_wcsprm(geom), *block)
        return livetime_cells(ra, dec, nside, nest).astype(cell_type), valid

    if workers > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(work, blocks))
    else:
        parts = [work(b) for b in blocks]
    cells = np.concatenate([c for c, _ in parts])
    valid = np.concatenate([v for _, v in parts])
    return cells, valid


def healpix_directions(
    nside: int, nest: bool, galactic: bool, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) of the HEALPix pixel centres ``start`` … ``stop``−1 of the output map (all
    pixels by default), in pixel order."""
    lib = _healpix_lib()
    npix = 12 * nside * nside
    pixels = np.arange(start, npix if stop is None else stop, dtype=np.int64)
    theta, phi = (lib._pix2ang_nest if nest else lib._pix2ang_ring)(nside, pixels)
    lon = phi * ASTRO_R2D
    lat = (ASTRO_PIOVER2 - theta) * ASTRO_R2D
    return equatorial_from_lonlat(lon * SKYDIR_D2R, lat * SKYDIR_D2R, galactic)


#: Pixels per step of :func:`healpix_cells` (~10 double temporaries of this size at a time).
HPX_CHUNK = 1 << 15


def healpix_cells(
    nside: int, nest: bool, galactic: bool, cube_nside: int, cube_nest: bool
) -> np.ndarray:
    """Livetime-cube cell of every output HEALPix pixel, in pixel order, computed in chunks
    of pixels (element-wise, so the same numbers as all at once, without the full-size
    direction temporaries)."""
    npix = 12 * nside * nside
    out = np.empty(npix, dtype=_cell_type(cube_nside))
    for start in range(0, npix, HPX_CHUNK):
        stop = min(start + HPX_CHUNK, npix)
        ra, dec = healpix_directions(nside, nest, galactic, start, stop)
        out[start:stop] = livetime_cells(ra, dec, cube_nside, cube_nest)
    return out


def _cell_type(nside: int) -> type:
    """int32 for the cells of a cube of that NSIDE when they fit (halves the per-pixel
    arrays: 6.5 M pixels on the mission grid)."""
    return np.int32 if 12 * nside * nside < 2**31 else np.int64


def livetime_cells(ra: np.ndarray, dec: np.ndarray, nside: int, nest: bool) -> np.ndarray:
    """Livetime-cube pixel of each direction (healpix ``Healpix::Pixel``)."""
    lib = _healpix_lib()
    theta = math.pi / 2 - dec * math.pi / 180.0
    phi = (math.pi / 180.0) * ra
    if np.any((theta < 0) | (theta > math.pi)):
        raise ValueError("colatitude out of [0, pi]")
    return (lib._ang2pix_nest if nest else lib._ang2pix_ring)(nside, theta, phi)
