"""Per-file spacecraft (FT2) slices of a merged mission file.

A mission FT2 holds ~16 million 30-s rows and grows every week. Giving each weekly chain a
slice with only the rows of its time range (plus a margin) means no tool scans the multi-GB
file, and — because a slice's bytes depend only on its own rows — the weekly cache keys stay
the same when next week's rows are appended to the mission file.

The margin exceeds every look-beyond the tools do (gtltcube keeps rows up to 60 s outside the
GTI, spec §6.4; gtmktime's row walk needs the first row ending after TSTART and the first
starting after TSTOP, §4.2), so a tool gives the same output on the slice as on the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.dates import met_to_date
from fermipipe.fits.table import FitsFile, write_fits

#: Seconds kept on either side of the events' [TSTART, TSTOP].
MARGIN = 600.0
#: A spacecraft file is sliced when it spans more than this many times the events' span.
SLICE_RATIO = 1.5


@dataclass(frozen=True)
class TimeRange:
    start: float
    stop: float

    @property
    def span(self) -> float:
        return self.stop - self.start


def event_time_range(path: Path) -> TimeRange:
    """[TSTART, TSTOP] from an event file's EVENTS header (no rows read)."""
    try:
        with FitsFile(path) as fh:
            header = fh.hdu("EVENTS").header
            return TimeRange(float(header["TSTART"]), float(header["TSTOP"]))
    except (KeyError, ValueError, OSError) as exc:
        raise ToolError(
            "slice", f"cannot read EVENTS TSTART/TSTOP: {exc}", file=str(path)
        ) from None


def spacecraft_time_range(path: Path) -> TimeRange:
    """First START and last STOP of an FT2's SC_DATA rows."""
    try:
        with FitsFile(path) as fh:
            table = fh.table("SC_DATA")
            if table.nrows == 0:
                raise ValueError("SC_DATA has no rows")
            start, stop = table.column("START"), table.column("STOP")
            return TimeRange(float(start[0]), float(stop[-1]))
    except (KeyError, ValueError, OSError) as exc:
        raise ToolError("slice", f"not a readable spacecraft file: {exc}", file=str(path)) from None


def wants_slice(events: TimeRange, spacecraft: TimeRange) -> bool:
    """True when the spacecraft file covers much more than the events need."""
    return spacecraft.span > SLICE_RATIO * (events.span + 2 * MARGIN)


def slice_name(ft2: Path, events: TimeRange) -> str:
    stem = ft2.name.removesuffix(".gz").removesuffix(".fits")
    return f"{stem}_slice_{int(np.floor(events.start))}_{int(np.ceil(events.stop))}.fits"


def write_slice(ft2: Path, events: TimeRange, out: Path, *, margin: float = MARGIN) -> Path:
    """Write the rows of ``ft2`` overlapping [start − margin, stop + margin] to ``out``.

    The output is a pure function of those rows and the FT2 header: DATE-OBS/DATE-END,
    TSTART/TSTOP describe the slice, DATE is set to DATE-END and the checksum comments carry
    no wall-clock time, so slicing again gives the same bytes (and the same cache key).
    """
    lo, hi = events.start - margin, events.stop + margin
    try:
        fh = FitsFile(ft2)
        table = fh.table("SC_DATA")
    except (KeyError, ValueError, OSError) as exc:
        raise ToolError("slice", f"not a readable spacecraft file: {exc}", file=str(ft2)) from None
    start = table.column("START").astype(np.float64)
    stop = table.column("STOP").astype(np.float64)
    if np.all(np.diff(start) >= 0):  # the normal, time-ordered FT2: two binary searches
        first = int(np.searchsorted(stop, lo, side="right")) if np.all(np.diff(stop) >= 0) else 0
        last = int(np.searchsorted(start, hi, side="left"))
        rows = table.rows[first:last]
        keep = (stop[first:last] > lo) & (start[first:last] < hi)
        if not keep.all():
            rows = rows[keep]
    else:
        rows = table.rows[(stop > lo) & (start < hi)]
    if len(rows) == 0:
        raise ToolError(
            "slice",
            f"no spacecraft rows within {lo:.1f}–{hi:.1f} (the events' time range ± margin)",
            file=str(ft2),
        )
    t0, t1 = float(rows["START"][0]), float(rows["STOP"][-1])
    date_obs, date_end = met_to_date(t0), met_to_date(t1)
    specs = []
    for info in fh.hdus:
        header = info.header.copy()
        for key, value in (("DATE", date_end), ("DATE-OBS", date_obs), ("DATE-END", date_end)):
            if key in header:
                header[key] = value
        if info.extname.upper() == "SC_DATA":
            for key, value in (("TSTART", t0), ("TSTOP", t1)):
                if key in header:
                    header[key] = value
            specs.append((header, rows))
        else:
            specs.append((header, fh.data_bytes(info.index).tobytes()))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_fits(out, specs, checksum_stamp=date_end)
    return out
