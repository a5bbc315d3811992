"""Exposure-weighted mean PSF at one sky position (gtpsf's numbers, spec §14.6).

Facts from Likelihood (MeanPsf, ExposureCube) and healpix (CosineBinner), public sources:

* The livetime cell of the position gives L_i (EXPOSURE.COSBINS) and W_i
  (WEIGHTED_EXPOSURE.COSBINS) at c_i = 1 − f_i·(1 − COSMIN), f_i = ((i + ½)/n)² for the
  SQRT(1-COSTHETA) binning ((i + ½)/n otherwise); inclination θ_i = acos(c_i)·180/π. With
  PHIBINS = m > 0 only the n·m phi entries are summed (bin i of block k at φ_k), and the
  effective area carries its phi modulation.
* Per energy E and event type t: S1 = Σ_i L_i·g(c_i), S2 = Σ_i W_i·g(c_i), summed in bin order
  in double, with g = A_t(E, θ_i) for the exposure and g = A_t(E, θ_i)·PSF_t(x, E, θ_i) for
  the PSF at offset x; value_t = f1(E)·S1 (+ f2(E)·S2 when f2 ≠ 0; without a weighted table
  S1 is used again) with the livetime-efficiency factors (f1, f2) of the first event type;
  the types are added in ascending order.
* Offsets: 0 and 400 log-spaced values from 1e-4° to 70°. PSF(E, x) = Σ_t value_t / exposure(E)
  (0 where the exposure is 0), then divided by ∫2π·sinθ·PSF dθ taken piecewise linearly in
  y = 2π·PSF·sinθ between offsets (slope/intercept form, as the LAT code).
* Output values: bilinear interpolation in (energy, offset) of that table.

Sums in bin order and the PSF evaluations run in numba (C-library transcendental functions,
plain double additions), so every number is the double the Fermitools compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from fermipipe.irf.psf import Psf3, psf_value
from fermipipe.native.expcube_kernel import cos_bin_centres, phi_bin_centres

__all__ = [
    "CellLivetime",
    "MeanPsf",
    "bilinear",
    "log_energies",
    "mean_psf",
    "output_thetas",
    "separations",
    "type_exposure",
]

#: Internal offset grid of MeanPsf (degrees): 0, then 400 log-spaced values 1e-4 … 70.
_SEP_MIN, _SEP_MAX, _SEP_N = 1e-4, 70.0, 400


@dataclass(frozen=True)
class CellLivetime:
    """The livetime-cube entries of one cell that the exposure sums run over.

    ``livetime``/``weighted`` (None without a WEIGHTED_EXPOSURE table), and per entry its
    cosθ, inclination θ = acos(cosθ)·180/π and, for a phi-binned cube, azimuth φ (degrees).
    """

    livetime: np.ndarray
    weighted: np.ndarray | None
    costh: np.ndarray
    inclination: np.ndarray
    phi_deg: np.ndarray | None

    @classmethod
    def from_row(
        cls,
        livetime: np.ndarray,
        weighted: np.ndarray | None,
        nbins: int,
        phibins: int,
        cosmin: float,
        sqrt_binning: bool,
    ) -> CellLivetime:
        """Entries of one COSBINS row (CosineBinner): the n cosθ bins, or with m phi bins the
        n·m entries n … n(m+1)−1 (φ block k = index // n − 1), in storage order."""
        centres = cos_bin_centres(nbins, cosmin, sqrt_binning)
        if phibins > 0:
            first, last = nbins, nbins * (phibins + 1)
            costh = np.tile(centres, phibins)
            phi_deg: np.ndarray | None = np.repeat(phi_bin_centres(phibins), nbins)
        else:
            first, last = 0, nbins
            costh, phi_deg = centres, None
        incl = np.array([math.acos(c) * 180.0 / math.pi for c in costh])  # C library acos
        lt = np.asarray(livetime[first:last], dtype=np.float64)
        wt = None if weighted is None else np.asarray(weighted[first:last], dtype=np.float64)
        return cls(lt, wt, costh, incl, phi_deg)


@dataclass(frozen=True)
class MeanPsf:
    """Exposure (cm² s) per energy and the normalised PSF (sr⁻¹) on :func:`separations`."""

    energies: np.ndarray
    exposure: np.ndarray
    separations: np.ndarray
    psf: np.ndarray  # (n_energies, n_separations)

    def value(self, energy: float, theta: float) -> float:
        """MeanPsf::operator(): 0 outside the energy range or beyond the last offset."""
        if energy < self.energies[0] or energy > self.energies[-1]:
            return 0.0
        if theta > self.separations[-1]:
            return 0.0
        return bilinear(self.energies, energy, self.separations, theta, self.psf)


def log_energies(emin: float, emax: float, n: int) -> np.ndarray:
    """gtpsf's energies: emin·exp(i·ln(emax/emin)/(n − 1)), i = 0 … n−1."""
    step = math.log(emax / emin) / (n - 1.0)
    return np.array([emin * math.exp(step * i) for i in range(n)])


def output_thetas(thetamax: float, n: int) -> np.ndarray:
    """gtpsf's offsets: float32(j²)/float32(n²) (single precision), times thetamax (double)."""
    den = np.float32(n * n)
    return np.array([float(np.float32(j * j) / den) * thetamax for j in range(n)])


def separations() -> np.ndarray:
    """MeanPsf's internal offsets (degrees)."""
    step = math.log(_SEP_MAX / _SEP_MIN) / (_SEP_N - 1.0)
    return np.array([0.0] + [_SEP_MIN * math.exp(i * step) for i in range(_SEP_N)])


@numba.njit(cache=True)
def _weighted_sums(weights: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Σ_i weights[i]·g[k, i] for every row k, in bin order (CosineBinner::operator())."""
    out = np.empty(g.shape[0])
    for k in range(g.shape[0]):
        s = 0.0
        for i in range(weights.size):
            s += weights[i] * g[k, i]
        out[k] = s
    return out


@numba.njit(cache=True)
def _psf_sums(
    seps: np.ndarray,
    energies: np.ndarray,
    inclination: np.ndarray,
    aeff: np.ndarray,
    livetime: np.ndarray,
    weighted: np.ndarray,
    log_e: np.ndarray,
    node_e: np.ndarray,
    node_c: np.ndarray,
    pars: np.ndarray,
    scaling: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """S1, S2 of A·PSF for every (energy, offset) of one event type."""
    ne, ns, nb = energies.size, seps.size, livetime.size
    s1 = np.empty((ne, ns))
    s2 = np.empty((ne, ns))
    for k in range(ne):
        for j in range(ns):
            a = 0.0
            b = 0.0
            for i in range(nb):
                v = aeff[k, i] * psf_value(
                    seps[j], energies[k], inclination[i], log_e, node_e, node_c, pars, scaling
                )
                a += livetime[i] * v
                b += weighted[i] * v
            s1[k, j] = a
            s2[k, j] = b
    return s1, s2


def _combine(f1: np.ndarray, f2: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """ExposureCube::value with efficiency factors: f1·S1, plus f2·S2 where f2 ≠ 0."""
    f1 = f1.reshape(f1.shape + (1,) * (s1.ndim - 1))
    f2 = f2.reshape(f2.shape + (1,) * (s1.ndim - 1))
    out = f1 * s1
    return np.where(f2 != 0.0, out + f2 * s2, out)


def type_exposure(
    cell: CellLivetime, aeff: np.ndarray, factors: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Exposure (cm² s) of one event type per energy: f1·Σ L·A (+ f2·Σ W·A where f2 ≠ 0)."""
    a = np.ascontiguousarray(aeff, dtype=np.float64)
    wt = cell.weighted if cell.weighted is not None else cell.livetime
    f1, f2 = (np.asarray(f, dtype=np.float64) for f in factors)
    return _combine(f1, f2, _weighted_sums(cell.livetime, a), _weighted_sums(wt, a))


def mean_psf(
    cell: CellLivetime,
    energies: np.ndarray,
    psfs: list[Psf3],
    aeff: list[np.ndarray],
    factors: tuple[np.ndarray, np.ndarray],
) -> MeanPsf:
    """The exposure and normalised mean PSF of the event types in ``psfs`` (ascending ID).

    ``aeff[t]`` is A_t(E_k, entry i) (cm², shape (n_energies, n_entries)); ``factors`` the
    livetime-efficiency factors (f1, f2) per energy.
    """
    seps = separations()
    f1, f2 = (np.asarray(f, dtype=np.float64) for f in factors)
    lt = cell.livetime
    wt = cell.weighted if cell.weighted is not None else cell.livetime
    exposure = np.zeros(energies.size)
    total = np.zeros((energies.size, seps.size))
    for table, a in zip(psfs, aeff, strict=True):
        a = np.ascontiguousarray(a, dtype=np.float64)
        exposure = exposure + type_exposure(cell, a, (f1, f2))
        s1, s2 = _psf_sums(
            seps, energies, cell.inclination, a, lt, wt,
            table.log_e, table.energies, table.costh, table.pars, table.scaling,
        )  # fmt: skip
        total = total + _combine(f1, f2, s1, s2)
    with np.errstate(divide="ignore", invalid="ignore"):
        psf = np.where(exposure[:, None] > 0.0, total / exposure[:, None], 0.0)
    _normalise(seps, psf)
    return MeanPsf(energies=energies, exposure=exposure, separations=seps, psf=psf)


def _normalise(seps: np.ndarray, psf: np.ndarray) -> None:
    """Divide each energy's row by its integral (MeanPsf::computePartialIntegrals)."""
    theta = [s * math.pi / 180.0 for s in seps]
    sines = [math.sin(t) for t in theta]
    for k in range(psf.shape[0]):
        row = psf[k]
        total = 0.0
        for j in range(seps.size - 1):
            t1, t2 = theta[j], theta[j + 1]
            y1 = 2.0 * math.pi * float(row[j]) * sines[j]
            y2 = 2.0 * math.pi * float(row[j + 1]) * sines[j + 1]
            slope = (y2 - y1) / (t2 - t1)
            intercept = y1 - t1 * slope
            total += slope * (t2 * t2 - t1 * t1) / 2.0 + intercept * (t2 - t1)
        if total:
            row /= total


def _upper_index(xx: np.ndarray, x: float) -> int:
    """st_facilities findIndex + Util::bilinear's clamp: the upper node of x's cell."""
    i = int(np.searchsorted(xx, x, side="right"))
    if i == xx.size:
        i = 1 if x < xx[0] else xx.size - 1
    return max(i, 1)


def bilinear(xx: np.ndarray, x: float, yy: np.ndarray, y: float, z: np.ndarray) -> float:
    """st_facilities Util::bilinear on z[i, j] (x along axis 0)."""
    i = _upper_index(xx, x)
    j = _upper_index(yy, y)
    tt = (x - xx[i - 1]) / (xx[i] - xx[i - 1])
    uu = (y - yy[j - 1]) / (yy[j] - yy[j - 1])
    y1, y2, y3, y4 = z[i - 1, j - 1], z[i, j - 1], z[i, j], z[i - 1, j]
    return float(
        (1.0 - tt) * (1.0 - uu) * y1 + tt * (1.0 - uu) * y2 + tt * uu * y3 + (1.0 - tt) * uu * y4
    )
