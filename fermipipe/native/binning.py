"""One-dimensional binners of gtbin (evtbin LinearBinner, LogBinner, OrderedBinner).

Facts (spec 5.2, evtbin:src/LinearBinner.cxx, LogBinner.cxx, OrderedBinner.cxx,
BinConfig.cxx): a binner maps a value to a bin index or -1 and knows its intervals.

* LIN(begin, end, Δ): n = ceil((end − begin)/Δ); index = trunc((v − begin)/Δ) for
  begin ≤ v < end; interval i = [begin + iΔ, begin + (i+1)Δ], the *last* one ending at
  ``end`` — except that bin 0 is always [begin, begin + Δ] (the C++ tests ``index == 0``
  first, so a single bin is not truncated).
* LOG(begin, end, n): index = trunc(n·ln(v/begin)/ln(end/begin)) for begin ≤ v < end;
  interval i = begin·exp(i·ln(end/begin)/n) …, with bin 0 starting exactly at ``begin`` and
  the last bin ending exactly at ``end`` (bin 0 tested first again, so n = 1 gives
  [begin, begin·exp(ln(end/begin))]).
* FILE: intervals from a table (energies in keV → ×1e-3 MeV); v in bin k iff
  lo_k ≤ v < hi_k; intervals must be sorted and must not overlap.

The C++ uses the C library's ``log``/``exp``. numpy's vectorised ``log``/``exp`` differ from
glibc in the last ulp for a few values, which can move an event that sits exactly on a bin
edge; so edges are computed with :mod:`math` (glibc) and indices that land within a hair of
an integer are recomputed with :mod:`math` too. Comparisons and divisions are IEEE-exact in
numpy, so LIN and FILE need no such care.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Binner", "file_binner", "lin_binner", "log_binner"]

# Relative distance to an integer below which a vectorised log result is re-done with libm.
_EDGE_GUARD = 1e-9


@dataclass(frozen=True)
class Binner:
    """A 1-d binner: ``kind`` LIN/LOG/FILE, its intervals (float64) and parameters."""

    kind: str
    lo: np.ndarray
    hi: np.ndarray
    begin: float = 0.0
    end: float = 0.0
    size: float = 0.0  # Δ of LIN
    nbins: int = 0

    def __len__(self) -> int:
        return self.nbins

    def index(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value (int64), −1 where the value is outside every bin."""
        v = np.asarray(values, dtype=np.float64)
        out = np.full(v.shape, -1, dtype=np.int64)
        if self.nbins == 0 or v.size == 0:
            return out
        if self.kind == "LIN":
            ok = (v >= self.begin) & (v < self.end)
            idx = np.trunc((v[ok] - self.begin) / self.size).astype(np.int64)
        elif self.kind == "LOG":
            ok = (v >= self.begin) & (v < self.end)
            idx = _log_index(v[ok], self.begin, self.end, self.nbins)
        else:
            k = np.searchsorted(self.lo, v, side="right") - 1
            kc = np.clip(k, 0, self.nbins - 1)
            ok = (k >= 0) & (v < self.hi[kc])
            idx = k[ok]
        # The C++ histogram ignores indices outside [0, n) (possible only through round-off).
        idx = np.where((idx >= 0) & (idx < self.nbins), idx, -1)
        out[ok] = idx
        return out


def _log_index(v: np.ndarray, begin: float, end: float, n: int) -> np.ndarray:
    """trunc(n·ln(v/begin)/ln(end/begin)) exactly as computed with the C library."""
    denom = math.log(end / begin)
    x = n * np.log(v / begin) / denom
    idx = np.trunc(x).astype(np.int64)
    near = np.abs(x - np.rint(x)) <= _EDGE_GUARD * np.maximum(1.0, np.abs(x))
    for i in np.flatnonzero(near):
        idx[i] = int(n * math.log(float(v[i]) / begin) / denom)
    return idx


def lin_binner(begin: float, end: float, size: float) -> Binner:
    """LinearBinner(begin, end, Δ); ValueError for an empty or inverted range or Δ ≤ 0."""
    if not size > 0:
        raise ValueError(f"bin width must be positive, got {float(size)!r}")
    if not end > begin:
        raise ValueError(
            f"interval end {float(end)!r} must be greater than its start {float(begin)!r}"
        )
    n = int(math.ceil((end - begin) / size))
    lo = np.empty(n)
    hi = np.empty(n)
    for i in range(n):
        if i == 0:
            lo[i], hi[i] = begin, begin + (1 + i) * size
        elif i == n - 1:
            lo[i], hi[i] = begin + i * size, end
        else:
            lo[i], hi[i] = begin + i * size, begin + (1 + i) * size
    return Binner("LIN", lo, hi, begin=begin, end=end, size=size, nbins=n)


def log_binner(begin: float, end: float, n: int) -> Binner:
    """LogBinner(begin, end, n); ValueError unless 0 < begin < end and n ≥ 1."""
    if n is None or n < 1:
        raise ValueError(f"number of bins must be at least 1, got {n!r}")
    if not begin > 0:
        raise ValueError(f"logarithmic binning needs a positive start, got {float(begin)!r}")
    if not end > begin:
        raise ValueError(
            f"interval end {float(end)!r} must be greater than its start {float(begin)!r}"
        )
    step = math.log(end / begin)
    lo = np.empty(n)
    hi = np.empty(n)
    for i in range(n):
        if i == 0:
            lo[i], hi[i] = begin, begin * math.exp((1 + i) * step / n)
        elif i == n - 1:
            lo[i], hi[i] = begin * math.exp(i * step / n), end
        else:
            lo[i] = begin * math.exp(i * step / n)
            hi[i] = begin * math.exp((1 + i) * step / n)
    return Binner("LOG", lo, hi, begin=begin, end=end, nbins=n)


def file_binner(lo: np.ndarray, hi: np.ndarray) -> Binner:
    """OrderedBinner from explicit intervals; ValueError if unsorted, overlapping or empty."""
    lo = np.asarray(lo, dtype=np.float64).ravel()
    hi = np.asarray(hi, dtype=np.float64).ravel()
    if lo.size == 0:
        raise ValueError("the bin definition table has no rows")
    if np.any(hi < lo):
        i = int(np.flatnonzero(hi < lo)[0])
        raise ValueError(f"bin {i + 1} ends ({float(hi[i])!r}) before it starts ({float(lo[i])!r})")
    if lo.size > 1 and np.any(lo[1:] < hi[:-1]):
        i = int(np.flatnonzero(lo[1:] < hi[:-1])[0])
        raise ValueError(f"bins {i + 1} and {i + 2} are out of order or overlap")
    return Binner("FILE", lo, hi, begin=float(lo[0]), end=float(hi[-1]), nbins=int(lo.size))
