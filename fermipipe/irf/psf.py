"""Pass 8 point-spread function of one event type ("Psf3", PSFVER = 3).

Facts (from the public fermi-lat/irfs sources, latResponse Psf3/PsfBase/Psf2/Bilinear, and
the FSSC "LAT PSF" documentation of the King-function PSF):

* Table ``RPSF_<TYPE>``: ENERG_LO/HI, CTHETA_LO/HI, then NCORE, NTAIL, SCORE, STAIL, GCORE,
  GTAIL, each (n_costh, n_energy). Nodes at log10 √(E_lo·E_hi) and (c_lo + c_hi)/2; an outer
  ring of nodes is added at log10 E = 0 and 10 and cosθ = −1 and 1 with the values of the
  nearest edge node (the tables' values are float32, used as double).
* ``PSF_SCALING_PARAMS_<TYPE>``: PSFSCALE = (p0, p1, index); the scale factor
  S(E) = √((p0·(E/100)^index)² + p1²) multiplies SCORE and STAIL (radians) at a node's energy.
* King function K(u, γ) = (1 − 1/γ)·(1 + u/γ)^(−γ) with u = (x/σ)²/2 (γ = 1 is read as
  1.001); a node's PSF is NCORE·K(u_core, GCORE) + NTAIL·NCORE·K(u_tail, GTAIL), x in radians.
* Every node's NCORE is divided by the integral of its PSF out to 90°: analytic,
  Σ n·(1 − (1 + u/γ)^(1−γ))·2π·σ², for node energies ≥ 120 MeV; below, numerically
  (DGAUS8, rel. 1e-5, of PSF(x)·sin x·2π·π/180 over x ∈ [0°, 90°]) on the *interpolated*
  PSF at the node's (E, θ), the nodes being normalised one after the other in table order —
  so a node's integral may see the already-normalised neighbours, which we reproduce.
* Evaluation at (x, E, θ): the four surrounding nodes in (log10 E, cosθ) are each evaluated
  at their own node energy (scale factor included) and the four PSF *values* are combined
  bilinearly: (1−t)(1−u)·y₀ + t(1−u)·y₁ + t·u·y₂ + (1−t)·u·y₃ (corners (i−1, j−1), (i, j−1),
  (i, j), (i−1, j)); the cell is found with upper_bound, the last node belonging to the cell
  below it and anything at or below the first node to the first cell.
* FISHEYE_CORRECTION_<TYPE> is not used by the PSF value (it matters only for simulations).

Transcendental functions go through numba (the C library's pow/log10/cos/sin, as the
Fermitools), never numpy's vectorised versions, which may differ in the last bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from astropy.io import fits

from fermipipe.irf.caldb import IrfComponent
from fermipipe.irf.quadrature import integrate

__all__ = ["Psf3", "UnsupportedPsfError", "psf_value", "read_psf3"]

#: Node energies below this are normalised numerically (latResponse Psf3::normalize_pars).
_NUMERIC_NORM_BELOW_MEV = 120.0
#: Radius of the normalisation integral, degrees.
_NORM_RADIUS_DEG = 90.0
#: Relative error asked of the quadrature (irfInterface IPsf::angularIntegral).
_NORM_REL_ERR = 1e-5
#: The parameter columns, in the order the LAT code takes them (by position).
_PAR_COLUMNS = ("NCORE", "NTAIL", "SCORE", "STAIL", "GCORE", "GTAIL")


@dataclass(frozen=True)
class Psf3:
    """Normalised node tables of one event type's PSF.

    ``log_e``/``energies`` (nx) and ``costh``/``thetas`` (ny) include the outer ring of nodes;
    ``pars`` is (ny·nx, 6), node (i, j) at row j·nx + i; ``scaling`` is (p0, p1, index).
    """

    log_e: np.ndarray
    energies: np.ndarray
    costh: np.ndarray
    thetas: np.ndarray
    pars: np.ndarray
    scaling: np.ndarray

    def value(self, sep_deg: float, energy: float, theta_deg: float) -> float:
        """PSF density (sr⁻¹) at separation ``sep_deg`` for energy (MeV) and inclination."""
        return float(
            psf_value(
                sep_deg, energy, theta_deg, self.log_e, self.energies, self.costh, self.pars,
                self.scaling,
            )
        )  # fmt: skip


@numba.njit(cache=True)
def _find_index(xx: np.ndarray, x: float) -> int:
    """Upper cell index as Psf3::findIndex: upper_bound, last node → last cell, ≤ first → 1."""
    n = xx.size
    i = np.searchsorted(xx, x, side="right")
    if i == n and x != xx[n - 1]:
        raise ValueError("PSF table: value out of range")
    if x == xx[n - 1]:
        i = n - 1
    elif x <= xx[0]:
        i = 1
    return i


@numba.njit(cache=True)
def _king(u: float, gamma: float) -> float:
    if gamma == 1.0:
        gamma = 1.001
    return (1.0 - 1.0 / gamma) * math.pow(1.0 + u / gamma, -gamma)


@numba.njit(cache=True)
def _scale(energy: float, scaling: np.ndarray) -> float:
    tt = math.pow(energy / 100.0, scaling[2])
    a = scaling[0] * tt
    b = scaling[1]
    return math.sqrt(a * a + b * b)


@numba.njit(cache=True)
def _node_value(
    energy: float, sep: float, pars: np.ndarray, row: int, scaling: np.ndarray
) -> float:
    """PSF of one node at its energy, separation in radians."""
    s = _scale(energy, scaling)
    ncore = pars[row, 0]
    ntail = pars[row, 1]
    score = pars[row, 2] * s
    stail = pars[row, 3] * s
    rc = sep / score
    uc = rc * rc / 2.0
    rt = sep / stail
    ut = rt * rt / 2.0
    return ncore * _king(uc, pars[row, 4]) + ntail * ncore * _king(ut, pars[row, 5])


@numba.njit(cache=True)
def psf_value(
    sep_deg: float,
    energy: float,
    theta_deg: float,
    log_e: np.ndarray,
    energies: np.ndarray,
    costh: np.ndarray,
    pars: np.ndarray,
    scaling: np.ndarray,
) -> float:
    """Bilinear combination of the four corner nodes' PSF values (module docstring)."""
    loge = math.log10(energy)
    c = math.cos(theta_deg * math.pi / 180.0)
    i = _find_index(log_e, loge)
    j = _find_index(costh, c)
    tt = (loge - log_e[i - 1]) / (log_e[i] - log_e[i - 1])
    uu = (c - costh[j - 1]) / (costh[j] - costh[j - 1])
    nx = energies.size
    sep = sep_deg * math.pi / 180.0
    y0 = _node_value(energies[i - 1], sep, pars, nx * (j - 1) + (i - 1), scaling)
    y1 = _node_value(energies[i], sep, pars, nx * (j - 1) + i, scaling)
    y2 = _node_value(energies[i], sep, pars, nx * j + i, scaling)
    y3 = _node_value(energies[i - 1], sep, pars, nx * j + (i - 1), scaling)
    return (1.0 - tt) * (1.0 - uu) * y0 + tt * (1.0 - uu) * y1 + tt * uu * y2 + (1.0 - tt) * uu * y3


def _analytic_norm(energy: float, pars: np.ndarray, row: int, scaling: np.ndarray) -> float:
    """∫ PSF dΩ out to 90° of one node (small-angle form, as the LAT code)."""
    s = float(_scale(energy, scaling))
    ncore, ntail = float(pars[row, 0]), float(pars[row, 1])
    score, stail = float(pars[row, 2]) * s, float(pars[row, 3]) * s
    gcore, gtail = float(pars[row, 4]), float(pars[row, 5])
    sep = _NORM_RADIUS_DEG * math.pi / 180.0
    rc = sep / score
    uc = rc * rc / 2.0
    rt = sep / stail
    ut = rt * rt / 2.0
    if gcore < 0 or gtail < 0:
        raise ValueError("PSF table: negative gamma")
    core = 1.0 - math.pow(1.0 + uc / gcore, 1.0 - gcore)
    tail = 1.0 - math.pow(1.0 + ut / gtail, 1.0 - gtail)
    return ncore * core * 2.0 * math.pi * (score * score) + ntail * ncore * tail * 2.0 * math.pi * (
        stail * stail
    )


def _normalise(table: Psf3) -> None:
    """Divide every node's NCORE by its 90° integral, in table order (module docstring)."""
    pars = table.pars
    nx = table.energies.size
    for j, theta in enumerate(table.thetas):
        for k, energy in enumerate(table.energies):
            row = j * nx + k
            if energy < _NUMERIC_NORM_BELOW_MEV:
                e, th = float(energy), float(theta)

                def cone(x: float, e: float = e, th: float = th) -> float:
                    # IPsf::coneIntegrand: PSF(x)·sin(x·π/180)·2·π·π/180, in this order.
                    v = psf_value(
                        x, e, th, table.log_e, table.energies, table.costh, pars, table.scaling
                    )
                    return v * math.sin(x * math.pi / 180.0) * 2.0 * math.pi * math.pi / 180.0

                norm = integrate(cone, 0.0, _NORM_RADIUS_DEG, _NORM_REL_ERR)
            else:
                norm = _analytic_norm(float(energy), pars, row, table.scaling)
            pars[row, 0] /= norm


def _with_edges(values: np.ndarray) -> np.ndarray:
    """(ny, nx) node values → (ny+2, nx+2) with the edge values replicated outward."""
    return np.pad(values, 1, mode="edge")


class UnsupportedPsfError(ValueError):
    """The PSF table is not a Pass 8 (PSFVER = 3) King-function table."""


def read_psf3(rpsf: IrfComponent, scaling: IrfComponent | None) -> Psf3:
    """Read and normalise one event type's PSF from its RPSF and PSF_SCALING HDUs.

    Raises :class:`UnsupportedPsfError` for tables of another format (PSFVER ≠ 3, e.g. the
    Pass 6 PSF).
    """
    with fits.open(rpsf.path, memmap=False) as hdul:
        hdu = hdul[rpsf.hdu]
        version = hdu.header.get("PSFVER", 1)  # absent = version 1 (latResponse IrfLoader)
        if version != 3:
            raise UnsupportedPsfError(
                f"{rpsf.path}[{rpsf.extname}]: PSFVER {version}, only Pass 8 tables "
                "(PSFVER 3) are supported"
            )
        if scaling is None:
            raise UnsupportedPsfError(f"{rpsf.path}: no PSF_SCALING table for this event type")
        row = hdu.data[0]
        elo = np.asarray(row["ENERG_LO"], dtype=np.float64)
        ehi = np.asarray(row["ENERG_HI"], dtype=np.float64)
        clo = np.asarray(row["CTHETA_LO"], dtype=np.float64)
        chi = np.asarray(row["CTHETA_HI"], dtype=np.float64)
        shape = (clo.size, elo.size)
        # Psf3::readFits: the four bounds columns first, then the parameters by position.
        names = list(hdu.columns.names)
        if [n.upper() for n in names[:4]] != ["ENERG_LO", "ENERG_HI", "CTHETA_LO", "CTHETA_HI"]:
            raise UnsupportedPsfError(f"{rpsf.path}[{rpsf.extname}]: unexpected columns {names}")
        if len(names) != 4 + len(_PAR_COLUMNS):
            raise UnsupportedPsfError(
                f"{rpsf.path}[{rpsf.extname}]: {len(names) - 4} PSF parameters, expected 6"
            )
        cols = [np.asarray(row[c], dtype=np.float64).reshape(shape) for c in names[4:]]
    with fits.open(scaling.path, memmap=False) as hdul:
        pars = np.asarray(hdul[scaling.hdu].data[0]["PSFSCALE"], dtype=np.float64)
    # log10, sqrt, pow and acos through the C library (math), element by element.
    log_e = [0.0] + [math.log10(math.sqrt(lo * hi)) for lo, hi in zip(elo, ehi, strict=True)]
    log_e.append(10.0)
    costh = [-1.0] + [(lo + hi) / 2.0 for lo, hi in zip(clo, chi, strict=True)] + [1.0]
    table = Psf3(
        log_e=np.array(log_e),
        energies=np.array([math.pow(10.0, x) for x in log_e]),
        costh=np.array(costh),
        thetas=np.array([math.acos(c) * 180.0 / math.pi for c in costh]),
        pars=np.ascontiguousarray(np.stack([_with_edges(c).ravel() for c in cols], axis=1)),
        scaling=pars[:3].copy(),
    )
    _normalise(table)
    return table
