"""gtbin inputs: evtbin file lists, FT1 files as raw row memmaps, GTI union, keyword harvest,
FT2 rows and the EXPOSURE keyword (spec 1.1, 5.2).
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from fermipipe.errors import ToolError
from fermipipe.fits.gti import Gti, read_gti
from fermipipe.fits.table import FitsFile, RawTable
from fermipipe.native.gtbin_header import Harvest
from fermipipe.native.tool_files import input_file_list

TOOL = "gtbin"
CHUNK = 1 << 18  # events per chunk: bounds the float64 temporaries and resident pages
_MISSIONS = ("GLAST::LAT", "FERMI::LAT")


def expand_file_list(value: str, param: str) -> list[str]:
    """evtbin's list convention (st_facilities FileSys::expandFileList, spec 1.1).

    A list only when the value starts with ``@``: then every non-empty line of the text file
    is a file name (no comment handling: unlike dataSubselector's convention, ``#`` lines are
    file names). Otherwise the value is one file name. Names are data: unlike evtbin, no
    environment variable is expanded. Every file is checked to be FITS.
    """
    return input_file_list(value, TOOL, param, comments=False, fits_list_file=False)


@dataclass
class EventFile:
    """One FT1 file: its HDUs and the events table as a raw row memmap (fits.table).

    Columns are converted to float64 chunk by chunk; the file pages of a chunk are released
    from the process afterwards (MADV_DONTNEED), so the resident size stays bounded by the
    chunk, not by the file.
    """

    name: str
    file: FitsFile
    events: RawTable

    @property
    def nrows(self) -> int:
        return self.events.nrows

    def header(self, ext: str) -> fits.Header | None:
        """Header of the primary (``PRIMARY``) or of the first extension named ``ext``."""
        if ext == "PRIMARY":
            return self.file.hdus[0].header
        try:
            return self.file.hdu(ext).header
        except KeyError:
            return None

    def column(self, col: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of ``col`` as float64 (a converted copy)."""
        try:
            raw = self.events.column(col)
        except KeyError:
            raise ToolError(
                TOOL, f"column {col} not found in the events table", self.name
            ) from None
        return np.asarray(raw[start:stop], dtype=np.float64)

    def chunks(self) -> Iterator[tuple[int, int]]:
        n = self.nrows
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            yield start, stop
            self._release(stop)

    def _release(self, stop: int) -> None:
        rows = self.events.rows
        mm = getattr(rows, "_mmap", None)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        # Position in the mapping of the end of the processed rows, rounded down to a page.
        end = int(rows.offset) % mmap.ALLOCATIONGRANULARITY + stop * rows.dtype.itemsize
        end -= end % mmap.PAGESIZE
        if end > 0:
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED, 0, end)


def open_fits(name: str, what: str) -> FitsFile:
    try:
        return FitsFile(name)
    except (OSError, ValueError) as exc:
        raise ToolError(TOOL, f"cannot open {what} as FITS: {exc}", name) from None


def table_of(ff: FitsFile, ext: str, what: str) -> RawTable:
    try:
        return ff.table(ext)
    except KeyError:
        raise ToolError(TOOL, f"no {ext} extension in {what}", str(ff.path)) from None
    except ValueError as exc:
        raise ToolError(TOOL, f"{what}: cannot read {ext}: {exc}", str(ff.path)) from None


def open_events(files: Sequence[str], evtable: str) -> list[EventFile]:
    """Open every event file and check the mission (GLAST/FERMI LAT, BinConfig::create)."""
    out: list[EventFile] = []
    mission = instrument = ""
    for name in files:
        ff = open_fits(name, "event file")
        for info in ff.hdus:
            if "TELESCOP" in info.header and "INSTRUME" in info.header:
                mission = mission or str(info.header["TELESCOP"]).strip()
                instrument = instrument or str(info.header["INSTRUME"]).strip()
                break
        out.append(EventFile(name, ff, table_of(ff, evtable, "event file")))
    if not mission or not instrument:
        raise ToolError(TOOL, "unable to determine the mission/instrument (TELESCOP/INSTRUME)")
    if f"{mission}::{instrument}" not in _MISSIONS:
        raise ToolError(
            TOOL,
            f'no binning configuration for mission "{mission}", instrument "{instrument}" '
            "(only GLAST/FERMI LAT data are supported)",
            out[0].name,
        )
    return out


def input_gti(events: Sequence[EventFile]) -> Gti:
    """Union of the GTI extensions of all event files (evtbin Gti(evfile))."""
    gti = Gti.empty()
    for ev in events:
        table = table_of(ev.file, "GTI", "event file")
        gti = gti.union(read_gti(table, tool=TOOL, file=ev.name))
    return gti


def harvest_inputs(events: Sequence[EventFile], extensions: Sequence[str]) -> Harvest:
    """Harvest keywords and history extension by extension, each over all files (5.2)."""
    harvest = Harvest()
    for ext in extensions:
        for ev in events:
            header = ev.header(ext)
            if header is None:
                harvest.harvest_history(None, ev.name, ext)
                break  # the C++ exception stops this extension's loop over the files
            harvest.harvest(header)
            if ext != "PRIMARY":
                harvest.harvest_history(header, ev.name, ext)
    return harvest


@dataclass
class Spacecraft:
    """FT2 START/STOP/LIVETIME rows of all spacecraft files, files sorted like evtbin."""

    start: np.ndarray
    stop: np.ndarray
    livetime: np.ndarray
    messages: list[str]


def read_spacecraft(files: Sequence[str], sctable: str) -> Spacecraft:
    """Read the FT2 columns needed for EXPOSURE; sort files by (first START, last STOP)."""
    tables: list[tuple[float, float, str, np.ndarray, np.ndarray, np.ndarray]] = []
    for name in files:
        table = table_of(open_fits(name, "spacecraft file"), sctable, "spacecraft file")
        try:
            s = np.asarray(table.column("START"), dtype=np.float64)
            e = np.asarray(table.column("STOP"), dtype=np.float64)
            lt = np.asarray(table.column("LIVETIME"), dtype=np.float64)
        except KeyError as exc:
            raise ToolError(TOOL, f"spacecraft table lacks a column: {exc}", name) from None
        first = float(s[0]) if s.size else 0.0
        last = float(e[-1]) if e.size else 0.0
        tables.append((first, last, name, s, e, lt))
    tables.sort(key=lambda t: (t[0], t[1]))
    messages: list[str] = []
    for a, b in zip(tables, tables[1:], strict=False):
        if not _connects(a[1], b[0]):
            messages.append(f"WARNING: There is a gap in time coverage between {a[2]} and {b[2]}")
    if not tables:
        empty = np.empty(0)
        return Spacecraft(empty, empty, empty, messages)
    return Spacecraft(
        np.concatenate([t[3] for t in tables]),
        np.concatenate([t[4] for t in tables]),
        np.concatenate([t[5] for t in tables]),
        messages,
    )


def _connects(last_stop: float, first_start: float) -> bool:
    """evtbin SpacecraftTable::connectsTo: equal, or relative difference below epsilon."""
    if last_stop == first_start:
        return True
    if last_stop == 0.0:
        ratio = first_start
    elif first_start == 0.0:
        ratio = last_stop
    else:
        ratio = (first_start - last_stop) / last_stop
    return abs(ratio) < np.finfo(float).eps


def compute_exposure(gti: Gti, sc: Spacecraft | None, messages: list[str]) -> float:
    """EXPOSURE (spec 5.2): Σ LIVETIME × fraction inside the GTI, summed row by row in order."""
    if len(gti) == 0:
        messages.append("WARNING: GTI contains no intervals! EXPOSURE keyword will be set to 0.")
        return 0.0
    if sc is None:
        return gti.ontime
    if sc.start.size == 0:
        messages.append("WARNING: Spacecraft data file(s) contain no pointings! EXPOSURE = 0.")
        return 0.0
    # Only rows that can overlap the GTI contribute; the others add exact zeros, which
    # leaves a sequential sum unchanged, so the slice keeps the result bit-identical.
    lo = int(np.searchsorted(sc.stop, gti.tstart, side="left"))
    hi = int(np.searchsorted(sc.start, gti.tstop, side="right"))
    if np.all(np.diff(sc.start) >= 0) and np.all(np.diff(sc.stop) >= 0):
        sl = slice(max(lo - 1, 0), min(hi + 1, sc.start.size))
    else:
        sl = slice(0, sc.start.size)
    frac = gti.overlap_fraction(sc.start[sl], sc.stop[sl], per_piece=True)
    terms = frac * sc.livetime[sl]
    # Sequential left-to-right sum, as the C++ loop (np.sum would sum pairwise).
    return float(np.cumsum(terms)[-1]) if terms.size else 0.0


def coverage_warnings(gti: Gti, sc: Spacecraft | None, messages: list[str]) -> None:
    if sc is None or sc.start.size == 0 or len(gti) == 0:
        return
    if sc.start[0] > gti.tstart or sc.stop[-1] < gti.tstop:
        messages.append("WARNING: EXPOSURE keyword calculation may not be accurate.")
