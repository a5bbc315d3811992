"""cfitsio's ``angsep`` — the one implementation of the package (spec 1.2).

Both users need cfitsio's result to the last bit: gtselect's cone term
``angsep(RA,DEC,ra,dec) < rad`` and gtmktime's ROI zenith term in the FT2 row filter
(:mod:`fermipipe.fits.filterexpr`). cfitsio (eval.y ``angsep_calc``) works in degrees scaled by
``deg = 4·atan(1)/180``:

    a = sin²((dec2 − dec1)·deg/2) + cos(dec1·deg)·cos(dec2·deg)·sin²((ra2 − ra1)·deg/2)
    a = clip(a, 0, 1);  sep = 2·atan2(√a, √(1 − a)) / deg

:func:`angsep` follows that operation order with numpy. numpy's float64 sin/cos/sqrt agree bit
for bit with the C library, but its ``arctan2`` may differ in the last ulp, so a strict
comparison with a limit can flip for values within a few ulps of it. :func:`angsep_below`
therefore re-evaluates those rows with the C library (Python's ``math``, :func:`angsep_scalar`)
— the exact decision for the cost of a handful of scalar evaluations. :func:`refine_near` does
the same for any comparison of angsep values (the filter evaluator uses it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "DEG",
    "angsep",
    "angsep_below",
    "angsep_scalar",
    "refine_near",
]

#: cfitsio's degree → radian factor, 4·atan(1)/180 (the same double as pi/180).
DEG = 4.0 * math.atan(1.0) / 180.0

#: Relative distance to a limit below which numpy's result is re-checked with libm. numpy's
#: atan2 is within 1–2 ulps (~2e-16 relative) of libm's; 1e-12 leaves a wide margin.
_NEAR = 1e-12


def angsep_scalar(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """cfitsio ``angsep`` for one pair (degrees), with the C library's functions."""
    sra = math.sin((ra2 - ra1) * DEG / 2.0)
    sdec = math.sin((dec2 - dec1) * DEG / 2.0)
    a = sdec * sdec + math.cos(dec1 * DEG) * math.cos(dec2 * DEG) * sra * sra
    a = min(max(a, 0.0), 1.0)
    return 2.0 * math.atan2(math.sqrt(a), math.sqrt(1.0 - a)) / DEG


def angsep(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> Any:
    """cfitsio ``angsep`` (degrees in and out), vectorised; inputs promoted to float64 and
    broadcast. Equal to :func:`angsep_scalar` except possibly in the last ulp (atan2)."""
    ra1, dec1, ra2, dec2 = (np.asarray(v, dtype=np.float64) for v in (ra1, dec1, ra2, dec2))
    sra = np.sin((ra2 - ra1) * DEG / 2.0)
    sdec = np.sin((dec2 - dec1) * DEG / 2.0)
    a = sdec * sdec + np.cos(dec1 * DEG) * np.cos(dec2 * DEG) * sra * sra
    a = np.clip(a, 0.0, 1.0)
    return 2.0 * np.arctan2(np.sqrt(a), np.sqrt(1.0 - a)) / DEG


def refine_near(
    sep: np.ndarray,
    limit: Any,
    args: tuple[Any, Any, Any, Any],
) -> np.ndarray:
    """``sep`` (from :func:`angsep` on ``args``) with the elements within a few ulps of
    ``limit`` recomputed by :func:`angsep_scalar`, so that any comparison with ``limit``
    decides as cfitsio does. Returns ``sep`` itself when nothing needs refining."""
    sep = np.asarray(sep, dtype=np.float64)
    lim = np.asarray(limit, dtype=np.float64)
    if sep.ndim == 0:
        return sep
    scale = np.maximum(np.abs(lim), 1.0)
    near = np.flatnonzero(np.broadcast_to(np.abs(sep - lim) <= _NEAR * scale, sep.shape))
    if near.size == 0:
        return sep
    cols = [np.broadcast_to(np.asarray(v, dtype=np.float64), sep.shape) for v in args]
    out = sep.copy()
    for i in near:
        out[i] = angsep_scalar(*(float(c[i]) for c in cols))
    return out


def angsep_below(
    ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float, limit: float
) -> np.ndarray:
    """``angsep(ra, dec, ra0, dec0) < limit`` exactly as cfitsio decides it (boolean mask).

    The argument order is cfitsio's for the filter ``angsep(RA,DEC,ra0,dec0)``: the column
    values are the first point.
    """
    args = (ra, dec, ra0, dec0)
    return refine_near(angsep(*args), limit, args) < limit
