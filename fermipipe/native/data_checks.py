"""Data-quality findings of the native tools: inputs a tool accepts but a user must hear about.

The Fermitools process such data without a word (or with a vague "EXPOSURE keyword
calculation may not be accurate", spec §5.2), and so do the native tools: products stay
identical to the Fermitools'. What is added is one line per finding, naming the file and the
size of the problem, in :attr:`fermipipe.native.params.ToolOutcome.warnings`; the pipeline
logs them, carries them into the run summary and, with ``on_data_warning: fail``, fails the
step on them.

Findings:

* spacecraft (FT2) rows covering only part of the events' good time: "spacecraft data
  cover 8.1 % of the GTI" (exposure and livetime are then too small by that much);
* rows with NaN or infinite values in an event column (gtselect: how many, and whether the
  selection dropped or kept them);
* an event table with 0 rows that still yields a product carrying exposure (a week of
  livetime with no counts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fermipipe.fits.gti import Gti
from fermipipe.fits.table import FitsFile

#: Below this fraction of the events' good time covered by FT2 rows, a warning is given.
#: FSSC weekly FT2 files cover their events' GTI completely (30 s rows, each STOP equal to
#: the next START), so anything short of full coverage means a cut or wrong FT2 file; the
#: 0.1 % slack is for rounding at the edges.
MIN_COVERAGE = 0.999

#: Event columns whose non-finite values are reported (those the tools select or bin on).
CHECKED_COLUMNS: tuple[str, ...] = (
    "ENERGY",
    "RA",
    "DEC",
    "L",
    "B",
    "THETA",
    "PHI",
    "ZENITH_ANGLE",
    "EARTH_AZIMUTH_ANGLE",
    "TIME",
)


def bisect_column(col: np.ndarray, x: float, right: bool) -> int:
    """Binary search on a (strided, big-endian) memmap column without converting it all
    (``np.searchsorted`` would convert the whole column first: 160 MB for a mission FT2)."""
    lo, hi = 0, col.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        v = float(col[mid])
        if v < x or (right and v == x):
            lo = mid + 1
        else:
            hi = mid
    return lo


def ft2_intervals(scfiles: Sequence[str], sctable: str, gti: Gti) -> Gti:
    """The union of the [START, STOP] rows of the FT2 file(s) near ``gti``'s span.

    Only the rows around the span are read when the file is time ordered (binary search),
    so a mission-long FT2 costs a few reads; otherwise every row is read.
    """
    pieces: list[Gti] = []
    for path in scfiles:
        try:
            ff = FitsFile(path)
            table = ff.table(sctable)
            start = table.column("START")
            stop = table.column("STOP")
        except (OSError, ValueError, KeyError):
            continue  # an unreadable FT2 is the tool's own error to report, not a finding
        with ff:
            lo = bisect_column(stop, gti.tstart, right=False) if len(gti) else 0
            hi = bisect_column(start, gti.tstop, right=True) if len(gti) else 0
            s = np.asarray(start[max(lo - 1, 0) : hi + 1], dtype=np.float64)
            e = np.asarray(stop[max(lo - 1, 0) : hi + 1], dtype=np.float64)
            if np.any(np.diff(s) < 0):  # not time ordered: the search above means nothing
                s = np.asarray(start, dtype=np.float64)
                e = np.asarray(stop, dtype=np.float64)
            ok = e >= s  # a broken row is the tools' own error to report, not ours
            pieces.append(Gti.from_intervals(s[ok], e[ok]))
    return Gti.empty().union(*pieces)


def coverage_warning(
    scfiles: Sequence[str], sctable: str, gti: Gti, what: str = "the GTI"
) -> str | None:
    """ "spacecraft data <file> cover N % of the GTI …" when FT2 rows cover too little of
    ``gti`` (None when enough, or when ``gti`` is empty: that has its own message)."""
    if len(gti) == 0 or gti.ontime <= 0:
        return None
    covered = (ft2_intervals(scfiles, sctable, gti) & gti).ontime
    fraction = covered / gti.ontime
    if fraction >= MIN_COVERAGE:
        return None
    names = ", ".join(scfiles)
    return (
        f"spacecraft data {names} cover {100 * fraction:.1f} % of {what} "
        f"({covered:.0f} s of {gti.ontime:.0f} s): exposure/livetime for the rest is missing"
    )


def empty_events_warning(evfile: str, evtable: str, gti: Gti, consequence: str) -> str | None:
    """The line for an event table with 0 rows but good time (None when it has rows, cannot
    be read — the tool reports that — or has no good time)."""
    if gti.ontime <= 0 or event_rows(evfile, evtable) != 0:
        return None
    return (
        f"event file {evfile} has 0 rows in {evtable} but {gti.ontime:.0f} s of good time "
        f"({consequence})"
    )


def event_rows(evfile: str, evtable: str) -> int | None:
    """The number of rows of ``evtable`` (None when it cannot be read: not ours to report)."""
    try:
        with FitsFile(evfile) as ff:
            return ff.table(evtable).nrows
    except (OSError, ValueError, KeyError):
        return None


@dataclass
class NonFiniteTally:
    """Rows with NaN/infinite values per column of one input file, and how many were kept."""

    path: str
    rows: int = 0
    nan: dict[str, int] = field(default_factory=dict)
    inf: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # of the non-finite rows, per column
    judged: bool = True  # False: the tool does not select rows, so no "dropped"/"kept"

    def add(self, chunk: np.ndarray, accepted: np.ndarray | None) -> None:
        """Count ``chunk``'s rows (a record array) and its non-finite values, per column;
        ``accepted`` is the selection's mask of the chunk (None: the tool selects nothing)."""
        names = {n.upper(): n for n in chunk.dtype.names or ()}
        columns = {}
        for column in CHECKED_COLUMNS:
            name = names.get(column)
            if name is not None and chunk.dtype[name].kind == "f" and not chunk.dtype[name].shape:
                columns[column] = chunk[name]
        self.add_columns(len(chunk), columns, accepted)

    def add_columns(
        self, rows: int, columns: Mapping[str, np.ndarray], accepted: np.ndarray | None
    ) -> None:
        """As :meth:`add`, for ``rows`` rows given as columns (name → values)."""
        self.rows += rows
        if accepted is None:
            self.judged = False
        for column, values in columns.items():
            bad = ~np.isfinite(values)
            if not bad.any():
                continue
            n_nan = int(np.count_nonzero(np.isnan(values)))
            self.nan[column] = self.nan.get(column, 0) + n_nan
            self.inf[column] = self.inf.get(column, 0) + int(np.count_nonzero(bad)) - n_nan
            if accepted is not None:
                kept = int(np.count_nonzero(bad & accepted))
                self.kept[column] = self.kept.get(column, 0) + kept

    def warnings(self) -> list[str]:
        """One line per column with non-finite values."""
        out = []
        for column in dict.fromkeys([*CHECKED_COLUMNS, *self.nan]):
            n_nan, n_inf = self.nan.get(column, 0), self.inf.get(column, 0)
            if not n_nan and not n_inf:
                continue
            kinds = " or ".join(k for k, n in (("NaN", n_nan), ("infinite", n_inf)) if n)
            bad, kept = n_nan + n_inf, self.kept.get(column, 0)
            fate = (
                "dropped"
                if kept == 0
                else "kept"
                if kept == bad
                else f"{bad - kept} dropped, {kept} kept"
            )
            text = f"{self.path}: {bad} of {self.rows} rows have {kinds} {column}"
            out.append(f"{text} ({fate})" if self.judged else text)
        return out
