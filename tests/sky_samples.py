"""Sky positions for the cone-boundary tests (gtselect's cone, the filter's ``angsep``)."""

from __future__ import annotations

import numpy as np


def points_on_cone_edge(
    ra0: float, dec0: float, rad: float, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (RA, Dec) in degrees at distance ``rad`` ± a few ulps from (ra0, dec0), along
    random bearings (destination-point formula), so about half fall on each side of the edge."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    d = np.radians(rad + rng.normal(0, 2e-14, theta.size))
    d0, r0 = np.radians(dec0), np.radians(ra0)
    dec_r = np.arcsin(np.sin(d0) * np.cos(d) + np.cos(d0) * np.sin(d) * np.cos(theta))
    ra_r = r0 + np.arctan2(
        np.sin(theta) * np.sin(d) * np.cos(d0), np.cos(d) - np.sin(d0) * np.sin(dec_r)
    )
    return np.degrees(ra_r), np.degrees(dec_r)
