"""World → pixel for the common gtbin projections in numpy, arbitrated by wcslib.

Why: importing astropy.wcs pulls in astropy.coordinates and astropy.table, which costs more
CPU than binning a million events; gtbin runs as one process per file in the pipeline.

How it stays exact: gtbin only needs the *pixel index* floor(p − 0.5) (spec 5.3). The
formulas below (Calabretta & Greisen 2002, the ones wcslib implements, with wcslib's default
LONPOLE/LATPOLE) agree with wcslib to ~1e-12 pixel. Every event whose pixel coordinate lies
within ``EPS`` of a pixel edge, or that sits near a place where the mapping is discontinuous
or undefined (native longitude ±180° for cylindrical projections, the native poles, the
horizon of TAN/SIN/STG/MER), is *suspect* and is recomputed with astropy.wcs
(wcslib) itself. So the indices are wcslib's by construction; the tests check that the
numpy values agree with wcslib far below ``EPS`` for every implemented projection.

Projections without a numpy formula here (MOL, CEA, PAR, …) go through astropy.wcs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Pixel-edge distance below which wcslib decides (numpy agrees to ~1e-12 pixel).
EPS = 1e-8
#: Angular margin (deg) around discontinuities and horizons that also defers to wcslib.
ANG_EPS = 1e-7

ZENITHAL = {"TAN", "SIN", "STG", "ARC", "ZEA"}
CYLINDRICAL = {"CAR", "MER", "AIT"}
FAST = ZENITHAL | CYLINDRICAL

_D2R = math.pi / 180.0
_R2D = 180.0 / math.pi


@dataclass(frozen=True)
class FastWcs:
    """Celestial → pixel (1-based) for CTYPE ``???-PPP``, CRPIX, CRVAL, CDELT, CROTA2."""

    proj: str
    crpix: tuple[float, float]
    crval: tuple[float, float]
    cdelt: tuple[float, float]
    crota: float

    def native_pole(self) -> tuple[float, float, float]:
        """(αp, δp, φp) in degrees with wcslib's defaults (LONPOLE, LATPOLE = 90)."""
        a0, d0 = self.crval
        if self.proj in ZENITHAL:  # fiducial point = native pole (θ0 = 90°)
            return a0, d0, (0.0 if d0 >= 90.0 else 180.0)
        # θ0 = 0, φ0 = 0: C&G eqs. 8-10 with the solution nearest LATPOLE = +90°
        # (at δ0 = +90° eq. 9 is singular; wcslib then takes αp = α0).
        if d0 >= 90.0:
            return a0, 0.0, 0.0
        if d0 >= 0.0:
            return a0 - 180.0, 90.0 - d0, 0.0
        return a0, 90.0 + d0, 180.0

    def world2pix(
        self, lon: np.ndarray, lat: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1-based pixel coordinates (NaN where undefined) and a mask of suspect events."""
        ap, dp, php = self.native_pole()
        dlng = np.radians(np.asarray(lon, dtype=np.float64) - ap)
        lat_r = np.radians(np.asarray(lat, dtype=np.float64))
        sinlat, coslat = np.sin(lat_r), np.cos(lat_r)
        sdp, cdp = math.sin(dp * _D2R), math.cos(dp * _D2R)
        coslng = np.cos(dlng)
        # Native direction: (cos θ cos φ', cos θ sin φ', sin θ) with φ = φp + φ' (C&G eq. 5).
        xn = sinlat * cdp - coslat * sdp * coslng
        yn = -coslat * np.sin(dlng)
        zn = sinlat * sdp + coslat * cdp * coslng
        del sinlat, coslat, coslng, dlng
        rho = np.hypot(xn, yn)  # cos θ
        suspect = rho < ANG_EPS * _D2R  # at a native pole the longitude is undefined
        sign = -1.0 if php == 180.0 else 1.0  # φp is 0 or 180 with wcslib's defaults
        with np.errstate(divide="ignore", invalid="ignore"):
            cphi = sign * xn / rho  # cos φ
            sphi = sign * yn / rho  # sin φ
            px, py, bad, near = self._project(xn, yn, zn, rho, cphi, sphi, sign)
        suspect |= near
        # Intermediate world coordinates → pixel: inverse of CDi_j from CDELT and CROTA2.
        rot = self.crota * _D2R
        c, s = math.cos(rot), math.sin(rot)
        p1 = (c * px + s * py) / self.cdelt[0] + self.crpix[0]
        p2 = (-s * px + c * py) / self.cdelt[1] + self.crpix[1]
        p1[bad] = np.nan
        p2[bad] = np.nan
        for p in (p1, p2):
            q = p - 0.5
            frac = q - np.floor(q)
            suspect |= (frac < EPS) | (frac > 1.0 - EPS)
        return p1, p2, suspect

    def _project(
        self,
        xn: np.ndarray,
        yn: np.ndarray,
        zn: np.ndarray,
        rho: np.ndarray,
        cphi: np.ndarray,
        sphi: np.ndarray,
        sign: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Projection-plane (x, y) in degrees, invalid mask, near-discontinuity mask.

        sin θ = zn and cos θ = rho; φ enters through cos φ / sin φ, so only CAR and MER need
        the angles themselves.
        """
        proj = self.proj
        none = np.zeros(rho.shape, dtype=bool)
        horizon = ANG_EPS * _D2R
        if proj in ZENITHAL:
            if proj == "TAN":
                r = _R2D * rho / zn
                bad, near = zn <= 0.0, np.abs(zn) < horizon
            elif proj == "SIN":
                r = _R2D * rho
                bad, near = zn < 0.0, np.abs(zn) < horizon
            elif proj == "STG":
                r = 2.0 * _R2D * rho / (1.0 + zn)
                bad, near = zn <= -1.0, zn < -1.0 + horizon
            elif proj == "ARC":
                r = 90.0 - np.degrees(np.arctan2(zn, rho))
                bad, near = none, none
            else:  # ZEA: 2 sin((90° − θ)/2) = √(2(1 − sin θ))
                r = _R2D * np.sqrt(2.0 * (1.0 - zn))
                bad, near = none, none
            # wcslib: x = r sin φ, y = −r cos φ; at a native pole (rho = 0) r = 0 too.
            x = np.where(rho > 0.0, r * sphi, 0.0)
            y = np.where(rho > 0.0, -r * cphi, 0.0)
            return x, y, bad, near
        # Cylindrical: the seam φ = ±180° is where the image tears apart.
        near = (np.abs(sphi) < horizon) & (cphi < 0.0)
        if proj in ("CAR", "MER"):
            phi = np.degrees(np.arctan2(sphi, cphi))
            theta = np.degrees(np.arctan2(zn, rho))
            if proj == "CAR":
                return phi, theta, none, near
            y = _R2D * np.log(np.tan((90.0 + theta) * _D2R / 2.0))
            bad = np.abs(theta) >= 90.0
            return phi, y, bad, near | (np.abs(theta) > 90.0 - ANG_EPS)
        # AIT with half angles: cos(φ/2) = √((1 + cos φ)/2) ≥ 0, sin(φ/2) = sin φ / (2 cos(φ/2)).
        # Near the seam 1 + cos φ cancels; sin²φ / (1 − cos φ) is the same number, accurately.
        onepc = np.where(cphi < 0.0, sphi * sphi / (1.0 - cphi), 1.0 + cphi)
        chalf = np.sqrt(0.5 * onepc)
        shalf = sphi / (2.0 * chalf)
        w = _R2D * np.sqrt(2.0 / (1.0 + rho * chalf))
        return 2.0 * w * rho * shalf, w * zn, none, near
