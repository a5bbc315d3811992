"""Good Time Intervals: the algebra of the Fermitools' ``Gti`` class and GTI HDU I/O.

Facts (spec 1.3, evtbin:src/Gti.cxx, dataSubselector:src/Gti.cxx):

* A GTI is a map start → stop. Building or union inserts intervals into that map (an
  interval whose START equals an existing START is *ignored* — ``std::map::insert`` keeps the
  first — we reproduce this), then consolidates: sorted by start, ``next.start <= cur.stop``
  merges (touching intervals become one).
* Intersection walks both lists; pieces overlapping by zero length produce nothing.
* ONTIME = Σ(stop − start) summed in ascending order (sequential, not pairwise).
* cfitsio ``gtifilter()`` accepts a time iff START ≤ t ≤ STOP for some row (closed).
* The fraction of an FT2 row [s, e] inside the GTI = Σ overlap / (e − s), capped at 1.

A :class:`Gti` is immutable and always consolidated, so membership tests and overlap sums are
``searchsorted`` lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.header import Card, Header
from fermipipe.fits.keywords import bintable_keywords, set_card

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = [
    "Gti",
    "find_gti_hdu",
    "gti_hdu",
    "gti_header_rows",
    "gti_rows",
    "read_gti",
    "union",
    "update_gti_hdu",
]


def _consolidate(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert (starts, stops) in order into a start→stop map, then consolidate.

    Duplicate starts keep the first inserted stop (``std::map::insert`` semantics). Then a
    single sweep merges every interval whose start is ≤ the running stop.
    """
    starts = np.asarray(starts, dtype=np.float64).ravel()
    stops = np.asarray(stops, dtype=np.float64).ravel()
    if starts.size == 0:
        return np.empty(0), np.empty(0)
    # np.unique returns the index of the first occurrence of each sorted unique start.
    ustarts, first = np.unique(starts, return_index=True)
    ustops = stops[first]
    running = np.maximum.accumulate(ustops)
    # A new group begins where the start lies strictly after everything before it.
    new_group = np.empty(ustarts.size, dtype=bool)
    new_group[0] = True
    new_group[1:] = ustarts[1:] > running[:-1]
    group_first = np.flatnonzero(new_group)
    group_last = np.append(group_first[1:] - 1, ustarts.size - 1)
    return ustarts[group_first].copy(), running[group_last].copy()


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Gti:
    """An immutable, consolidated list of good time intervals (MET seconds).

    ``start`` and ``stop`` are read-only float64 arrays, sorted, with
    ``start[i] <= stop[i] < start[i + 1]``.
    """

    start: np.ndarray
    stop: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _readonly(self.start))
        object.__setattr__(self, "stop", _readonly(self.stop))
        if self.start.shape != self.stop.shape or self.start.ndim != 1:
            raise ValueError("Gti start/stop must be 1-d arrays of equal length")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_intervals(cls, starts: Iterable[float], stops: Iterable[float]) -> Gti:
        """Build from (possibly unsorted, overlapping) intervals, consolidating them.

        Raises ValueError if any START > STOP (the Fermitools refuse such a GTI).
        """
        s = np.asarray(list(starts) if not isinstance(starts, np.ndarray) else starts, float)
        e = np.asarray(list(stops) if not isinstance(stops, np.ndarray) else stops, float)
        if s.shape != e.shape:
            raise ValueError(f"GTI has {s.size} START values but {e.size} STOP values")
        bad = np.flatnonzero(~(s <= e))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"GTI row {i + 1} is invalid: START {s.ravel()[i]!r} > STOP {e.ravel()[i]!r}"
            )
        return cls(*_consolidate(s, e))

    @classmethod
    def empty(cls) -> Gti:
        """A GTI without intervals (ONTIME 0, rejects every time)."""
        return cls(np.empty(0), np.empty(0))

    # ------------------------------------------------------------------ algebra
    def union(self, *others: Gti) -> Gti:
        """Union with other GTIs (insert into this map, then consolidate)."""
        if not others:
            return self
        s = np.concatenate([self.start, *(o.start for o in others)])
        e = np.concatenate([self.stop, *(o.stop for o in others)])
        return Gti(*_consolidate(s, e))

    def __or__(self, other: Gti) -> Gti:
        return self.union(other)

    def intersect(self, other: Gti) -> Gti:
        """Intersection; zero-length pieces are dropped, touching pieces merged."""
        if len(self) == 0 or len(other) == 0:
            return Gti.empty()
        # For every interval i of self, the intervals j of other with
        # other.stop[j] > self.start[i] and other.start[j] < self.stop[i] overlap it.
        j0 = np.searchsorted(other.stop, self.start, side="right")
        j1 = np.searchsorted(other.start, self.stop, side="left")
        counts = np.maximum(j1 - j0, 0)
        i_idx = np.repeat(np.arange(len(self)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        j_idx = np.repeat(j0, counts) + offsets
        s = np.maximum(self.start[i_idx], other.start[j_idx])
        e = np.minimum(self.stop[i_idx], other.stop[j_idx])
        keep = e > s
        return Gti(*_consolidate(s[keep], e[keep]))

    def __and__(self, other: Gti) -> Gti:
        return self.intersect(other)

    def clip(self, t1: float, t2: float) -> Gti:
        """``applyTimeRangeCut``: intersection with the single interval [t1, t2]."""
        if t1 > t2:
            raise ValueError(f"time range [{t1}, {t2}] has start > stop")
        return self.intersect(Gti(np.array([t1], float), np.array([t2], float)))

    # ------------------------------------------------------------------ summaries
    def __len__(self) -> int:
        return int(self.start.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Gti):
            return NotImplemented
        return np.array_equal(self.start, other.start) and np.array_equal(self.stop, other.stop)

    def __hash__(self) -> int:
        return hash((self.start.tobytes(), self.stop.tobytes()))

    def __repr__(self) -> str:
        if len(self) <= 4:
            body = ", ".join(f"[{a!r}, {b!r}]" for a, b in zip(self.start, self.stop, strict=True))
        else:
            body = f"{len(self)} intervals [{self.tstart!r} .. {self.tstop!r}]"
        return f"Gti({body})"

    @property
    def ontime(self) -> float:
        """Σ(stop − start), summed sequentially in ascending order like the C++ loop."""
        if len(self) == 0:
            return 0.0
        return float(np.cumsum(self.stop - self.start)[-1])

    @property
    def tstart(self) -> float:
        """Start of the first interval (ValueError when empty)."""
        if len(self) == 0:
            raise ValueError("empty GTI has no start")
        return float(self.start[0])

    @property
    def tstop(self) -> float:
        """Stop of the last interval (ValueError when empty)."""
        if len(self) == 0:
            raise ValueError("empty GTI has no stop")
        return float(self.stop[-1])

    @property
    def telapse(self) -> float:
        """Last stop − first start (0 for an empty GTI)."""
        return 0.0 if len(self) == 0 else self.tstop - self.tstart

    # ------------------------------------------------------------------ row operations
    def contains(self, times: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """cfitsio ``gtifilter()``: True where START ≤ t ≤ STOP for some interval.

        Closed at both ends; an empty GTI rejects everything; NaN is rejected.
        """
        t = np.asarray(times, dtype=np.float64)
        if len(self) == 0:
            return np.zeros(t.shape, dtype=bool)
        i = np.searchsorted(self.start, t, side="right") - 1
        ok = i >= 0
        ic = np.where(ok, i, 0)
        return ok & (t <= self.stop[ic])

    def overlap_fraction(
        self,
        row_start: np.ndarray | Sequence[float],
        row_stop: np.ndarray | Sequence[float],
        *,
        per_piece: bool = False,
    ) -> np.ndarray:
        """Fraction of each row [s, e] lying inside the GTI (float64, capped at 1).

        Spec 1.3/6.4: Σ overlap / (e − s), the overlaps added in ascending GTI order; rows with
        e ≤ s give 0. ``per_piece=True`` instead adds overlap/(e − s) piece by piece, as
        evtbin's ``Gti::getFraction`` does (identical except in the last ulp for rows split
        over several intervals). Cost O((n + m) log m) for sorted rows: two binary searches per
        row, then one addition per (row, overlapping interval) pair.
        """
        s = np.asarray(row_start, dtype=np.float64)
        e = np.asarray(row_stop, dtype=np.float64)
        s, e = np.broadcast_arrays(s, e)
        shape = s.shape
        s, e = s.ravel(), e.ravel()
        out = np.zeros(s.shape, dtype=np.float64)
        if len(self) == 0 or s.size == 0:
            return out.reshape(shape)
        valid = e > s
        # First interval with stop > s, first interval with start >= e.
        i0 = np.searchsorted(self.stop, s, side="right")
        i1 = np.searchsorted(self.start, e, side="left")
        n = np.where(valid, i1 - i0, 0)
        duration = np.where(valid, e - s, 1.0)
        total = np.zeros(s.shape, dtype=np.float64)
        # Pass k adds the k-th overlapping interval of every row that has one, so each row
        # sums its pieces in ascending order and the total work is the number of
        # (row, interval) overlaps — O(n + m) for sorted rows — plus the two lookups.
        active = np.flatnonzero(n > 0)
        k = 0
        while active.size:
            idx = i0[active] + k
            piece = np.minimum(e[active], self.stop[idx]) - np.maximum(s[active], self.start[idx])
            total[active] += piece / duration[active] if per_piece else piece
            k += 1
            active = active[n[active] > k]
        frac = total if per_piece else total / duration
        np.minimum(frac, 1.0, out=out, where=valid)
        return out.reshape(shape)


def union(gtis: Iterable[Gti]) -> Gti:
    """Union of any number of GTIs (empty input → empty GTI)."""
    items = list(gtis)
    if not items:
        return Gti.empty()
    return items[0].union(*items[1:])


# ---------------------------------------------------------------------- HDU I/O


def read_gti(
    hdu_or_header_and_data: fits.BinTableHDU | tuple[Any, Any] | Any,
    *,
    tool: str = "fits",
    file: str | None = None,
) -> Gti:
    """Read a GTI from a BinTableHDU, a ``(header, data)`` pair or anything with START/STOP.

    ``data`` may be an astropy FITS_rec, a numpy structured array or a ``RawTable``. Missing
    START/STOP columns or START > STOP raise ToolError (tool/file used in the message).
    """
    obj = hdu_or_header_and_data
    if isinstance(obj, tuple):
        data = obj[1]
    elif hasattr(obj, "column"):
        data = obj  # a table.RawTable
    else:
        data = getattr(obj, "data", obj)
    try:
        if data is None:
            return Gti.empty()
        if hasattr(data, "column"):
            start = np.asarray(data.column("START"), dtype=np.float64)
            stop = np.asarray(data.column("STOP"), dtype=np.float64)
        else:
            start = np.asarray(data["START"], dtype=np.float64)
            stop = np.asarray(data["STOP"], dtype=np.float64)
    except (KeyError, ValueError) as exc:
        raise ToolError(tool, f"GTI extension lacks START/STOP columns ({exc})", file) from None
    try:
        return Gti.from_intervals(start, stop)
    except ValueError as exc:
        raise ToolError(tool, f"invalid GTI extension: {exc}", file) from None


def find_gti_hdu(hdul: Sequence[Any]) -> Any | None:
    """First HDU after the primary, not an image, whose upper-cased EXTNAME contains "GTI".

    This is how cfitsio's ``gtifilter()`` locates the GTI (eval.y ``New_GTI``). Returns None
    when there is none.
    """
    for hdu in list(hdul)[1:]:
        header = hdu.header
        if str(header.get("XTENSION", "")).strip().upper() == "IMAGE":
            continue
        if "GTI" in str(header.get("EXTNAME", "")).upper():
            return hdu
    return None


# Keyword set, order and comments of a Fermitools GTI HDU (FT1 template, as found in the
# gammalib/p8v2 FT1 and Fermitools 2.4 gtmktime outputs). ``None`` default = only written
# when given in ``time_keys``. kind: s string, d double, b logical, i integer.
_GTI_TEMPLATE: tuple[tuple[str, str, Any, str], ...] = (
    ("TELESCOP", "s", "GLAST", "name of telescope generating data"),
    ("INSTRUME", "s", "LAT", "name of instrument generating data"),
    ("EQUINOX", "d", 2000.0, "equinox for ra and dec"),
    ("RADECSYS", "s", "FK5", "world coord. system for this file (FK5 or FK4)"),
    ("DATE", "s", None, "file creation date (YYYY-MM-DDThh:mm:ss UTC)"),
    ("DATE-OBS", "s", None, "start date and time of the observation (UTC)"),
    ("DATE-END", "s", None, "end date and time of the observation (UTC)"),
    ("OBSERVER", "s", "Peter Michelson", "GLAST/LAT PI"),
    ("ORIGIN", "s", None, "name of organization making file"),
    ("EXTNAME", "s", "GTI", "name of this binary table extension"),
    ("HDUCLASS", "s", "OGIP", "format conforms to OGIP standard"),
    ("HDUCLAS1", "s", "GTI", "extension contains good time intervals"),
    ("HDUCLAS2", "s", "ALL", "extension contains all science time"),
    ("TSTART", "d", None, "mission time of the start of the observation"),
    ("TSTOP", "d", None, "mission time of the end of the observation"),
    ("MJDREFI", "d", 51910.0, "Integer part of MJD corresponding to SC clock start"),
    (
        "MJDREFF",
        "d",
        7.428703703703703e-4,
        "Fractional part of MJD corresponding to SC clock start",
    ),
    ("TIMEUNIT", "s", "s", "units for the time related keywords"),
    ("TIMEZERO", "d", 0.0, "clock correction"),
    ("TIMESYS", "s", "TT", "type of time system that is used"),
    ("TIMEREF", "s", "LOCAL", "reference frame used for times"),
    ("CLOCKAPP", "b", False, "whether a clock drift correction has been applied"),
    ("GPS_OUT", "b", False, "whether GPS time was unavailable at any time during this interval"),
    ("ONTIME", "d", None, "sum of GTI lengths"),
    ("TELAPSE", "d", None, "TSTOP - TSTART"),
)

# Keys describing the HDU itself, never copied from ``time_keys``.
_GTI_FIXED = frozenset({"EXTNAME", "HDUCLASS", "HDUCLAS1", "HDUCLAS2"})

_GTI_DTYPE = np.dtype([("START", ">f8"), ("STOP", ">f8")])


def _coerce(kind: str, value: Any) -> Any:
    if kind == "d":
        return float(str(value).replace("D", "E")) if isinstance(value, str) else float(value)
    if kind == "b":
        return bool(value)
    if kind == "i":
        return int(value)
    return str(value)


def _undefined(value: Any) -> bool:
    # None (our Header, undefined value) or astropy's Undefined
    return value is None or type(value).__name__ == "Undefined"


def gti_rows(gti: Gti) -> np.ndarray:
    """The GTI as big-endian START/STOP rows (the GTI table's raw data)."""
    data = np.empty(len(gti), dtype=_GTI_DTYPE)
    data["START"] = gti.start
    data["STOP"] = gti.stop
    return data


def gti_header_rows(
    gti: Gti, time_keys: Mapping[str, Any] | Header | fits.Header | None = None
) -> tuple[Header, np.ndarray]:
    """A Fermitools-style GTI extension as (header, rows), without astropy.

    START/STOP 'D' in s, TLMIN 0, TLMAX 1e10. Keyword order and comments follow the
    Fermitools FT1 template. Values of TELESCOP, DATE, DATE-OBS/END, TSTART/TSTOP, MJDREF*,
    TIME* … come from ``time_keys`` (typically the EVENTS header) when present there, else
    template defaults; keys with no default and not given are omitted. ONTIME is computed from
    ``gti``; TELAPSE = TSTOP − TSTART when both are known, else the GTI span. Doubles are
    formatted like cfitsio (``%.15G``). The rows are ready for ``table.write_fits``.
    """
    keys: Mapping[str, Any] = time_keys if time_keys is not None else {}
    card = Card.from_value
    cards: list[Card] = [
        *(card(key, value, comment) for key, value, comment in bintable_keywords(16, len(gti), 2)),
        card("TTYPE1", "START", "start time of good time intervals"),
        card("TFORM1", "D", "data format of field: 8-byte DOUBLE"),
        card("TTYPE2", "STOP", "stop time of good time intervals"),
        card("TFORM2", "D", "data format of field: 8-byte DOUBLE"),
    ]
    values: dict[str, Any] = {}
    for key, kind, default, _comment in _GTI_TEMPLATE:
        if key in _GTI_FIXED:
            values[key] = default
        elif key in keys and not _undefined(keys[key]):
            values[key] = _coerce(kind, keys[key])
        elif default is not None:
            values[key] = default
    values["ONTIME"] = gti.ontime
    if "TSTART" in values and "TSTOP" in values:
        values["TELAPSE"] = values["TSTOP"] - values["TSTART"]
    else:
        values["TELAPSE"] = gti.telapse
    for key, _kind, _default, comment in _GTI_TEMPLATE:
        if key in values:
            cards.append(card(key, values[key], comment))
    for n in (1, 2):
        cards.append(card(f"TUNIT{n}", "s", "physical unit of field"))
        cards.append(card(f"TLMIN{n}", 0.0, "minimum value"))
        cards.append(card(f"TLMAX{n}", 1e10, "maximum value"))
    cards.append(card("EXTVER", 1, "auto assigned by template parser"))
    return Header(cards), gti_rows(gti)


def gti_hdu(
    gti: Gti, time_keys: Mapping[str, Any] | Header | fits.Header | None = None
) -> fits.BinTableHDU:
    """:func:`gti_header_rows` as an astropy BinTableHDU (imports astropy)."""
    from astropy.io import fits

    header, data = gti_header_rows(gti, time_keys)
    return _table_hdu(fits.Header.fromstring(header.tostring()), data)


def _table_hdu(header: fits.Header, data: np.ndarray) -> fits.BinTableHDU:
    """BinTableHDU from a complete header and raw rows, keeping the header's card order."""
    from astropy.io import fits

    hdu = fits.BinTableHDU(data=data, header=header)
    # astropy may append/reorder column keywords; restore the given order and values.
    out = header.copy()
    out["NAXIS2"] = len(data)
    hdu.header = out
    return hdu


def update_gti_hdu(hdu: fits.BinTableHDU, gti: Gti) -> fits.BinTableHDU:
    """A copy of ``hdu`` with its rows replaced by ``gti`` and ONTIME set.

    Like dataSubselector ``Gti::writeExtension``: only the rows and ONTIME change (appended
    if absent). TELAPSE/TSTART/TSTOP are left alone — gtmktime's reference output keeps the
    old TELAPSE; tools that move TSTART/TSTOP update TELAPSE through
    ``dates.write_date_keywords``.
    """
    header = hdu.header.copy()
    set_card(header, "ONTIME", gti.ontime, "sum of GTI lengths")
    data = gti_rows(gti)
    names = [str(n).upper() for n in (hdu.columns.names if hdu.columns is not None else [])]
    if names != ["START", "STOP"] or any(
        str(f).upper() not in ("D", "1D") for f in hdu.columns.formats
    ):
        raise ValueError(f"GTI HDU must have exactly START, STOP (D) columns, has {names}")
    return _table_hdu(header, data)
