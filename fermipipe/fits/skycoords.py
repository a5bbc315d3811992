"""Equatorial (J2000) → Galactic rotation as the Fermitools' astro package does it (spec 5.3).

astro builds the rotation from three elementary rotations (active, right-handed, as CLHEP's
``HepRotation::rotateZ/rotateX``): first Rz(ψ), then Rx(θ), then Rz(φ), i.e. the matrix
R = Rz(φ)·Rx(θ)·Rz(ψ) applied to the equatorial unit vector. Angles:

* current (astro commit 3ea60e7, 2016-03, "taken from astropy"): φ = 32.9319185680026°,
  θ = −62.871748819143775°, ψ = −282.85948120653484°;
* before that: 32.93224°, −62.8717°, −282.8592° — these reproduce the L/B columns of FT1
  files and the 2015 gtbin reference cube.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "GAL_ANGLES",
    "GAL_ANGLES_PRE2016",
    "cel_to_gal",
    "gal_to_cel",
    "rotation_matrix",
]

GAL_ANGLES: tuple[float, float, float] = (
    32.9319185680026,
    -62.871748819143775,
    -282.85948120653484,
)
GAL_ANGLES_PRE2016: tuple[float, float, float] = (32.93224, -62.8717, -282.8592)


def _rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rx(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_matrix(*, pre2016: bool = False) -> np.ndarray:
    """R = Rz(φ)·Rx(θ)·Rz(ψ) mapping equatorial unit vectors to galactic ones."""
    phi, theta, psi = GAL_ANGLES_PRE2016 if pre2016 else GAL_ANGLES
    return _rz(phi) @ _rx(theta) @ _rz(psi)


def _to_vec(lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    cl = np.cos(lat)
    return np.stack([cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)])


def _from_vec(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = v
    lon = np.degrees(np.arctan2(y, x))
    lon = np.where(lon < 0, lon + 360.0, lon)
    lon = np.where(lon >= 360.0, lon - 360.0, lon)
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return lon, lat


def cel_to_gal(
    ra_deg: np.ndarray | float, dec_deg: np.ndarray | float, *, pre2016: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) in degrees → (l, b) in degrees (float64), l in [0, 360).

    Inputs are promoted to float64 first (float32 FT1 columns included), as the C++ does.
    """
    v = _to_vec(ra_deg, dec_deg)
    r = rotation_matrix(pre2016=pre2016)
    return _from_vec(np.tensordot(r, v, axes=1))


def gal_to_cel(
    l_deg: np.ndarray | float, b_deg: np.ndarray | float, *, pre2016: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`cel_to_gal` (transpose of the rotation)."""
    v = _to_vec(l_deg, b_deg)
    r = rotation_matrix(pre2016=pre2016)
    return _from_vec(np.tensordot(r.T, v, axes=1))
