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

import math
from dataclasses import dataclass

import numpy as np

from fermipipe.fits.skycoords import GAL_ANGLES

__all__ = [
    "WcsGeometry",
    "equatorial_from_lonlat",
    "gal_to_equ_matrix",
    "healpix_directions",
    "livetime_cells",
    "wcs_directions",
]

#: astro's ProjBase constants (ASTRO_R2D, ASTRO_PIOVER2) and SkyDir's D2R = 1/(180/π).
ASTRO_R2D = 57.29577951308232
ASTRO_PIOVER2 = 1.5707963267948966
SKYDIR_D2R = 1.0 / (180.0 / math.pi)


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

    @property
    def all_sky(self) -> bool:
        return abs(self.cdelt[0] * self.nx) >= 360.0 and abs(self.cdelt[1] * self.ny) >= 180.0


def wcs_directions(geom: WcsGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RA, Dec, valid) of every pixel centre, row-major (j, i) as in the image, flattened."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    lon, lat = ("GLON", "GLAT") if geom.galactic else ("RA", "DEC")
    w.wcs.ctype = [
        f"{lon}{'-' if geom.galactic else '---'}{geom.proj}",
        f"{lat}{'-' if geom.galactic else '--'}{geom.proj}",
    ]
    crval1 = geom.crval[0] - 360.0 if geom.crval[0] > 180 else geom.crval[0]
    w.wcs.crpix = list(geom.crpix)
    w.wcs.crval = [crval1, geom.crval[1]]
    w.wcs.cdelt = list(geom.cdelt)
    w.wcs.crota = [0.0, geom.crota2]  # CROTA2: wcslib altlin |= 4, as astro SkyProj sets
    w.wcs.set()
    j, i = np.divmod(np.arange(geom.nx * geom.ny, dtype=np.int64), geom.nx)
    with np.errstate(invalid="ignore"):
        world = w.wcs.p2s(np.stack([i + 1.0, j + 1.0], axis=1), 1)  # origin 1: pixel (i+1, j+1)
    del i, j
    valid = world["stat"] == 0
    coords = world["world"]
    del world
    s1 = coords[:, 0]
    s2 = coords[:, 1]
    valid &= np.isfinite(s1) & np.isfinite(s2)
    s1 = np.where(valid, s1, 0.0)
    s2 = np.where(valid, s2, 0.0)
    s1 = np.mod(s1, 360.0)  # "while (s1 < 0) s1 += 360; while (s1 >= 360) s1 -= 360"
    s1 = np.where(s1 >= 360.0, s1 - 360.0, s1)
    ra, dec = equatorial_from_lonlat(s1 * math.pi / 180, s2 * math.pi / 180, geom.galactic)
    return ra, dec, valid


def healpix_directions(nside: int, nest: bool, galactic: bool) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) of every HEALPix pixel centre of the output map, in pixel order."""
    import healpy as hp

    theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside, dtype=np.int64), nest=nest)
    lon = phi * ASTRO_R2D
    lat = (ASTRO_PIOVER2 - theta) * ASTRO_R2D
    return equatorial_from_lonlat(lon * SKYDIR_D2R, lat * SKYDIR_D2R, galactic)


def livetime_cells(ra: np.ndarray, dec: np.ndarray, nside: int, nest: bool) -> np.ndarray:
    """Livetime-cube pixel of each direction (healpix ``Healpix::Pixel``)."""
    import healpy as hp

    theta = math.pi / 2 - dec * math.pi / 180.0
    phi = (math.pi / 180.0) * ra
    return hp.ang2pix(nside, theta, phi, nest=nest)
