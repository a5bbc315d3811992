"""LAT effective area A_t(E, cosθ, φ) and efficiency factors, as latResponse computes them.

Facts (spec §14.3–14.4; irfs:latResponse/src/{Aeff,FitsTable,Bilinear,ParTables,
EfficiencyFactor}.cxx):

* A table (EFFAREA, PHIDEP0/1) holds float32 values on energy bins (ENERG_LO/HI, MeV) ×
  cosθ bins (CTHETA_LO/HI); they are promoted to double. Nodes: x = log10 √(ELO·EHI),
  y = (CLO + CHI)/2. Interpolation is bilinear in (log10 E, cosθ) on the nodes padded with
  x = 0 and 10, y = −1 and 1 (edge values replicated); a cosθ above the last node is clamped
  to it. The "nearest" lookup (phi parameters) takes the bin holding the point.
* Aeff(E, c): the caller's c is turned into θ = acos(c)·180/π and back, c' = cos(θ·π/180);
  c' < CTHETA_LO[0] → 0; c' > 0.99999 → 0.99999; value = table·1e4 (m² → cm²) × the phi
  modulation (1 when the IRF has no PHI_DEPENDENCE or phi dependence is off).
* Phi modulation with (p0, p1) of the bin holding (log10 E, c'):
  norm·(1 + p0·xx^p1), norm = 1/(1 + p0/(1 + p1)), φ_pv = fmod(φ·π/180, π) − π/2,
  xx = 2·|(2/π)·|φ_pv| − ½|.
* Efficiency factors: EFFICIENCY_PARS rows 0 and 1 are piecewise-linear functions p0, p1 of
  log10 E with two breaks; the livetime-cube exposure is p1·S(livetime) + p0·S(weighted).
  All-zero parameters mean no correction (factors 1, 0).

Transcendental functions (log10, acos, cos, fmod, pow) are evaluated with the C library
through :mod:`math`, element by element on the distinct inputs: numpy's SIMD versions can
differ from libm in the last bit on AVX-512 machines, and the Fermitools use libm.
Arithmetic is plain numpy (IEEE, no fused multiply-add), in the C++ operation order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fermipipe.irf.caldb import EventTypeIrf, IrfComponent

__all__ = [
    "MAX_COSTHETA",
    "EffectiveArea",
    "EfficiencyFactor",
    "IrfTable",
    "cos_theta_limits",
    "libm",
    "load_effective_area",
    "phi_modulation",
    "read_irf_table",
]

#: latResponse clamps cosθ to this before interpolating ("blech." in Aeff.cxx).
MAX_COSTHETA = 0.99999


def libm(fn: Callable[..., float], *args: np.ndarray | float) -> np.ndarray:
    """``fn`` (a :mod:`math` function) applied element-wise over broadcast arrays, float64.

    Each distinct argument tuple is evaluated once, so large inputs with few distinct values
    (energies, cosθ bin centres) stay cheap.
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in args))
    shape = arrays[0].shape
    if len(arrays) == 1:
        uniq, inv = np.unique(arrays[0].ravel(), return_inverse=True)
        vals = np.fromiter((fn(float(u)) for u in uniq), np.float64, uniq.size)
        return vals[inv].reshape(shape)
    stacked = np.stack([a.ravel() for a in arrays], axis=1)
    uniq, inv = np.unique(stacked, axis=0, return_inverse=True)
    vals = np.fromiter((fn(*map(float, row)) for row in uniq), np.float64, uniq.shape[0])
    return vals[inv.ravel()].reshape(shape)


@dataclass(frozen=True)
class IrfTable:
    """One parameter of an IRF table (latResponse ``FitsTable``), double precision."""

    log_energies: np.ndarray  # bin centres, log10 √(ELO·EHI)
    ebounds: np.ndarray  # log10 ELO…, log10 EHI[-1]
    mus: np.ndarray  # cosθ bin centres (CLO + CHI)/2
    tbounds: np.ndarray  # CLO…, CHI[-1]
    values: np.ndarray  # (n cosθ, n E)
    min_cos_theta: float  # CTHETA_LO[0]

    @property
    def nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bilinear nodes x, y and the edge-replicated value grid (ny + 2, nx + 2)."""
        x = np.concatenate(([0.0], self.log_energies, [10.0]))
        y = np.concatenate(([-1.0], self.mus, [1.0]))
        return x, y, np.pad(self.values, 1, mode="edge")

    def interpolate(self, log_energy: np.ndarray | float, costh: np.ndarray | float) -> np.ndarray:
        """Bilinear value at (log10 E, cosθ), cosθ above the last centre clamped to it
        (``FitsTable::value`` with interpolate=true, ``Bilinear::operator()``)."""
        xq, yq = np.broadcast_arrays(
            np.asarray(log_energy, dtype=np.float64), np.asarray(costh, dtype=np.float64)
        )
        yq = np.minimum(yq, self.mus[-1])
        x, y, grid = self.nodes
        i = _node_index(x, xq, "log energy")
        j = _node_index(y, yq, "cos theta")
        tt = (xq - x[i - 1]) / (x[i] - x[i - 1])
        uu = (yq - y[j - 1]) / (y[j] - y[j - 1])
        z0 = grid[j - 1, i - 1]
        z1 = grid[j - 1, i]
        z2 = grid[j, i]
        z3 = grid[j, i - 1]
        # Bilinear::evaluate, summed left to right.
        return (
            (1.0 - tt) * (1.0 - uu) * z0
            + tt * (1.0 - uu) * z1
            + tt * uu * z2
            + (1.0 - tt) * uu * z3
        )

    def nearest(self, log_energy: np.ndarray | float, costh: np.ndarray | float) -> np.ndarray:
        """Value of the bin holding (log10 E, cosθ), clamped to the table
        (``FitsTable::value`` with interpolate=false)."""
        xq, yq = np.broadcast_arrays(
            np.asarray(log_energy, dtype=np.float64), np.asarray(costh, dtype=np.float64)
        )
        ix = np.searchsorted(self.ebounds, xq, side="right")
        ix = np.where(ix == self.ebounds.size, ix - 1, ix)
        ix = np.maximum(ix, 1)
        iy = np.searchsorted(self.tbounds, yq, side="right")
        iy = np.clip(iy, 1, self.mus.size)
        return self.values[iy - 1, ix - 1]


def _node_index(nodes: np.ndarray, q: np.ndarray, what: str) -> np.ndarray:
    """``Bilinear::getCorners`` cell index: upper_bound, the last node maps to the last cell,
    points at or below the first node to the first cell; above the last node is an error."""
    i = np.searchsorted(nodes, q, side="right")
    beyond = (i == nodes.size) & (q != nodes[-1])
    if np.any(beyond):
        raise ValueError(f"{what} {q[beyond].flat[0]!r} above the IRF table range")
    i = np.where(q == nodes[-1], nodes.size - 1, i)
    return np.where(q <= nodes[0], 1, i)


def _row_values(component: IrfComponent, column: str, row: int = 0) -> np.ndarray:
    from fermipipe.fits.table import FitsFile

    with FitsFile(component.path) as ff:
        table = ff.table(component.hdu)
        return np.asarray(table.column(column)[row], dtype=np.float64).ravel()


def _column_names(component: IrfComponent) -> list[str]:
    from fermipipe.fits.table import FitsFile

    with FitsFile(component.path) as ff:
        return list(ff.table(component.hdu).columns)


def read_irf_table(component: IrfComponent, column: str, row: int = 0) -> IrfTable:
    """The ``column`` table of an IRF HDU (energy/cosθ bounds from the same HDU and row)."""
    elo = _row_values(component, "ENERG_LO", row)
    ehi = _row_values(component, "ENERG_HI", row)
    clo = _row_values(component, "CTHETA_LO", row)
    chi = _row_values(component, "CTHETA_HI", row)
    values = _row_values(component, column, row)
    if values.size != elo.size * clo.size:
        raise ValueError(
            f"{component.path}[{component.extname}] {column}: {values.size} values for "
            f"{elo.size} energies x {clo.size} cos theta bins"
        )
    log_e = libm(math.log10, libm(math.sqrt, elo * ehi))
    ebounds = libm(math.log10, np.concatenate((elo, ehi[-1:])))
    return IrfTable(
        log_energies=log_e,
        ebounds=ebounds,
        mus=(clo + chi) / 2.0,
        tbounds=np.concatenate((clo, chi[-1:])),
        values=values.reshape(clo.size, elo.size),
        min_cos_theta=float(clo[0]),
    )


def phi_modulation(p0: np.ndarray, p1: np.ndarray, phi_deg: np.ndarray | float) -> np.ndarray:
    """``Aeff::phi_modulation(par0, par1, phi)`` with φ in degrees (negative φ + 360)."""
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    phi = np.asarray(phi_deg, dtype=np.float64)
    phi = np.where(phi < 0, phi + 360.0, phi)
    norm = 1.0 / (1.0 + p0 / (1.0 + p1))
    phi_pv = libm(math.fmod, phi * math.pi / 180.0, math.pi) - math.pi / 2.0
    xx = 2.0 * np.abs(2.0 / math.pi * np.abs(phi_pv) - 0.5)
    return norm * (1.0 + p0 * libm(math.pow, xx, p1))


@dataclass(frozen=True)
class EfficiencyFactor:
    """Efficiency-correction parameters p0 (row 0) and p1 (row 1) of EFFICIENCY_PARS."""

    p0: tuple[float, ...]
    p1: tuple[float, ...]

    @staticmethod
    def _eval(pars: tuple[float, ...], log_e: np.ndarray) -> np.ndarray:
        a0, b0, a1, loge_b1, a2, loge_b2 = pars
        b1 = (a0 - a1) * loge_b1 + b0
        b2 = (a1 - a2) * loge_b2 + b1
        return np.where(
            log_e < loge_b1,
            a0 * log_e + b0,
            np.where(log_e < loge_b2, a1 * log_e + b1, a2 * log_e + b2),
        )

    def factors(self, energy: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(factor on the livetime sum, factor on the weighted sum) = (p1(log E), p0(log E))."""
        log_e = libm(math.log10, energy)
        return self._eval(self.p1, log_e), self._eval(self.p0, log_e)


def read_efficiency(component: IrfComponent) -> EfficiencyFactor | None:
    """EFFICIENCY_PARS rows as an :class:`EfficiencyFactor`; None if all parameters are 0."""
    from fermipipe.fits.table import FitsFile

    with FitsFile(component.path) as ff:
        table = ff.table(component.hdu)
        rows = [
            np.asarray(table.column("EFFICIENCY_PARS")[i], dtype=np.float64)
            for i in range(table.nrows)
        ]
    if not rows or all(not np.any(r) for r in rows):
        return None
    return EfficiencyFactor(tuple(map(float, rows[0][:6])), tuple(map(float, rows[1][:6])))


def cos_theta_limits(thmin: float = 0.0, thmax: float = 180.0) -> tuple[float, float]:
    """(cosθ min, cosθ max) of gtexpcube2's thmin/thmax (BinnedExposureBase): cos(thmax) only
    when thmax < 180, cos(thmin) only when thmin > 0, else −1 and 1."""
    lo = math.cos(thmax * math.pi / 180.0) if thmax < 180.0 else -1.0
    hi = math.cos(thmin * math.pi / 180.0) if thmin > 0.0 else 1.0
    return lo, hi


@dataclass(frozen=True)
class EffectiveArea:
    """Effective area of one event type of an IRF (cm²)."""

    irf: str
    event_type: str
    bit: int
    table: IrfTable
    phi_pars: tuple[IrfTable, IrfTable] | None = None
    efficiency: EfficiencyFactor | None = None

    def value(
        self,
        energy: np.ndarray | float,
        costheta: np.ndarray | float,
        phi_deg: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """A(E, cosθ, φ) in cm², broadcast over the inputs.

        ``costheta`` is the caller's cosθ (a livetime-cube bin centre); it goes through the
        θ round trip of ``ExposureCube::Aeff`` first. ``phi_deg`` None = no phi modulation
        (livetime cube without phi bins, or ignorephi).
        """
        c = np.asarray(costheta, dtype=np.float64)
        theta = libm(math.acos, c) * 180.0 / math.pi
        cp = libm(math.cos, theta * math.pi / 180.0)
        zero = cp < self.table.min_cos_theta
        cp = np.where(cp > MAX_COSTHETA, MAX_COSTHETA, cp)
        log_e = libm(math.log10, energy)
        log_e, cp = np.broadcast_arrays(log_e, cp)
        val = self.table.interpolate(log_e, cp) * 1e4
        if phi_deg is not None and self.phi_pars is not None:
            p0 = self.phi_pars[0].nearest(log_e, cp)
            p1 = self.phi_pars[1].nearest(log_e, cp)
            val = val * phi_modulation(p0, p1, phi_deg)
        return np.where(np.broadcast_to(zero, val.shape), 0.0, val)


def load_effective_area(irf: EventTypeIrf) -> EffectiveArea:
    """Read EFF_AREA (+ PHI_DEP, EFFICIENCY_PARS when the CALDB has them) of one event type."""
    table = read_irf_table(irf.aeff, "EFFAREA")
    phi = None
    comp = irf.get("PHI_DEP")
    if comp is not None:
        names = _column_names(comp)
        # ParTables: the first four columns are the bounds; the parameters follow in order.
        pars = names[4:6]
        if len(pars) == 2:
            phi = (read_irf_table(comp, pars[0]), read_irf_table(comp, pars[1]))
    eff_comp = irf.get("EFFICIENCY_PARS")
    efficiency = read_efficiency(eff_comp) if eff_comp is not None else None
    return EffectiveArea(irf.irf, irf.event_type, irf.bit, table, phi, efficiency)
