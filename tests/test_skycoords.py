"""Tests of fermipipe.fits.skycoords (equatorial → galactic rotation of the astro package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits

from fermipipe.fits.skycoords import cel_to_gal, gal_to_cel, rotation_matrix


def _arcsec(l1: np.ndarray, b1: np.ndarray, l2: np.ndarray, b2: np.ndarray) -> float:
    dl = (l1 - l2 + 180.0) % 360.0 - 180.0
    return float(max(np.abs(dl * np.cos(np.radians(b1))).max(), np.abs(b1 - b2).max()) * 3600)


def test_pre2016_angles_reproduce_ft1_l_b(shared_data: Path) -> None:
    with fits.open(shared_data / "gammalib/p8v2/ft1.fits.gz") as h:
        d = h["EVENTS"].data
        ra, dec, l_col, b_col = d["RA"], d["DEC"], d["L"], d["B"]
        old = _arcsec(*cel_to_gal(ra, dec, pre2016=True), l_col, b_col)
        new = _arcsec(*cel_to_gal(ra, dec), l_col, b_col)
    assert old < 0.1  # float32 columns: ~0.03″
    assert new > 0.5  # the current angles differ by ~1–2″: the flag matters


def test_current_angles_equal_astropy_fk5() -> None:
    rng = np.random.default_rng(3)
    ra = rng.uniform(0, 360, 2000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    c = SkyCoord(ra, dec, unit="deg", frame="fk5").galactic
    assert _arcsec(*cel_to_gal(ra, dec), c.l.deg, c.b.deg) < 1e-6


def test_rotation_properties() -> None:
    for pre in (False, True):
        r = rotation_matrix(pre2016=pre)
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-15)
        assert np.isclose(np.linalg.det(r), 1.0)
    # Galactic centre and north pole (J2000 values).
    l_gc, b_gc = cel_to_gal(266.40499, -28.93617)
    assert abs(((l_gc + 180) % 360) - 180) < 1e-3 and abs(b_gc) < 1e-3
    _, b_np = cel_to_gal(192.85948, 27.12825)
    assert b_np > 90 - 1e-4
    ra, dec = gal_to_cel(*cel_to_gal([10.0, 350.0], [20.0, -80.0]))
    assert np.allclose(ra, [10.0, 350.0]) and np.allclose(dec, [20.0, -80.0])
    lon, _ = cel_to_gal(np.linspace(0, 359, 50), np.linspace(-89, 89, 50))
    assert ((lon >= 0) & (lon < 360)).all()
