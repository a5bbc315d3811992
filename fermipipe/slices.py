"""Per-file spacecraft (FT2) slices of a merged mission file.

A mission FT2 holds ~16 million 30-s rows and grows every week. Giving each weekly chain a
slice with only the rows its tools can use means no tool scans the multi-GB file, and —
because a slice's bytes depend only on its own rows — the weekly cache keys stay the same
when next week's rows are appended to the mission file.

Which rows: those ending after the events' TSTART − :data:`MARGIN` and starting before
their TSTOP. Nothing after TSTOP can change a tool's output: gtmktime takes rows up to the
first one starting after TSTOP (= its tmax, spec §4.2) and a row starting at TSTOP adds
only that instant, already covered, to a GTI inside [TSTART, TSTOP]; gtltcube adds
nothing for a row that does not overlap the GTI (f = 0, §6.4). Rows after TSTOP are
exactly the ones next week's file appends, so leaving them out keeps the last week's
slice — and every product made from it — the same when the next week arrives. Rows before
TSTART never change; a margin of them is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.cache import ProductStore, step_key
from fermipipe.errors import ToolError
from fermipipe.fits.dates import met_to_date
from fermipipe.fits.table import FitsFile, write_fits
from fermipipe.plan import FilePlan, Plan, relocate

#: Seconds of rows kept before the events' TSTART (none after TSTOP: see above).
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


class SpacecraftFile:
    """An FT2's SC_DATA rows, read once for all the slices a run cuts from it: a mission
    file's START/STOP columns are read and converted once, not once per week (that would be
    O(weeks²) at mission scale)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._fits = FitsFile(self.path)
            self._table = self._fits.table("SC_DATA")
            if self._table.nrows == 0:
                raise ValueError("SC_DATA has no rows")
            self._start = self._table.column("START").astype(np.float64)
            self._stop = self._table.column("STOP").astype(np.float64)
        except (KeyError, ValueError, OSError) as exc:
            if hasattr(self, "_fits"):
                self._fits.close()
            raise ToolError(
                "slice", f"not a readable spacecraft file: {exc}", file=str(path)
            ) from None
        # The normal, time-ordered FT2: a slice is found by binary search.
        self._ordered = bool(np.all(np.diff(self._start) >= 0))
        self._stops_ordered = bool(np.all(np.diff(self._stop) >= 0))

    def close(self) -> None:
        self._fits.close()

    def __enter__(self) -> SpacecraftFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def time_range(self) -> TimeRange:
        """First START and last STOP of the rows."""
        return TimeRange(float(self._start[0]), float(self._stop[-1]))

    def write_slice(self, events: TimeRange, out: Path, *, margin: float = MARGIN) -> Path:
        """Write the rows ending after ``start − margin`` and starting before ``stop`` to
        ``out`` (see the module docstring).

        The output is a pure function of those rows and the FT2 headers: in every HDU,
        DATE-OBS/DATE-END and TSTART/TSTOP describe the slice (a mission file's primary
        header spans the whole mission, which grows), DATE is set to DATE-END and the
        checksum comments carry no wall-clock time, so slicing again gives the same bytes
        (and the same cache key).
        """
        lo, hi = events.start - margin, events.stop
        start, stop, table = self._start, self._stop, self._table
        if self._ordered:
            first = int(np.searchsorted(stop, lo, side="right")) if self._stops_ordered else 0
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
                f"no spacecraft rows within {lo:.1f}–{hi:.1f} (the events' time range)",
                file=str(self.path),
            )
        t0, t1 = float(rows["START"][0]), float(rows["STOP"][-1])
        date_obs, date_end = met_to_date(t0), met_to_date(t1)
        specs = []
        for info in self._fits.hdus:
            header = info.header.copy()
            for key, value in (("DATE", date_end), ("DATE-OBS", date_obs), ("DATE-END", date_end)):
                if key in header:
                    header[key] = value
            for key, value in (("TSTART", t0), ("TSTOP", t1)):
                if key in header:
                    header[key] = value
            if info.extname.upper() == "SC_DATA":
                specs.append((header, rows))
            else:
                specs.append((header, self._fits.data_bytes(info.index).tobytes()))
        out.parent.mkdir(parents=True, exist_ok=True)
        write_fits(out, specs, checksum_stamp=date_end)
        return out


def spacecraft_time_range(path: Path) -> TimeRange:
    """First START and last STOP of an FT2's SC_DATA rows."""
    with SpacecraftFile(path) as ft2:
        return ft2.time_range


def wants_slice(events: TimeRange, spacecraft: TimeRange) -> bool:
    """True when the spacecraft file covers much more than the events need."""
    return spacecraft.span > SLICE_RATIO * (events.span + MARGIN)


def slice_name(ft2: Path, events: TimeRange) -> str:
    stem = ft2.name.removesuffix(".gz").removesuffix(".fits")
    return f"{stem}_slice_{int(np.floor(events.start))}_{int(np.ceil(events.stop))}.fits"


def write_slice(ft2: Path, events: TimeRange, out: Path, *, margin: float = MARGIN) -> Path:
    """One slice of ``ft2`` (:meth:`SpacecraftFile.write_slice`)."""
    with SpacecraftFile(ft2) as sc:
        return sc.write_slice(events, out, margin=margin)


# ------------------------------------------------------------- slices in a run


def slice_plan(plan: Plan, store: ProductStore | None, logger: Any) -> Plan:
    """Give each file's steps a slice of a mission-long spacecraft file (``scfile``).

    When a step's ``scfile`` (a common file, not made by an earlier step) spans much more
    than the file's events (:func:`wants_slice`), the rows of the events'
    time range (see the module docstring) are written once to the cache store (keyed
    by the FT2's content and the range) and the step reads the slice. A slice's bytes depend
    only on its rows, so the weekly cache keys survive next week's rows being appended to
    the mission file. Without a store (cache disabled), slices go to the work folder.
    """
    opened: dict[Path, SpacecraftFile | None] = {}
    files: list[FilePlan] = []
    made = 0
    try:
        for fp in plan.files:
            produced = {Path(p) for inv in fp.chain for p in inv.outputs.values()}
            wanted = {
                Path(p)
                for inv in fp.chain
                for name, p in inv.inputs.items()
                if name == "scfile" and Path(p) not in produced
            }
            chain = list(fp.chain)
            for ft2 in sorted(wanted):
                if ft2 not in opened:
                    try:
                        opened[ft2] = SpacecraftFile(ft2)
                    except ToolError:
                        opened[ft2] = None  # not readable here: the tool will say what is wrong
                try:
                    events = event_time_range(Path(fp.input))
                except ToolError:
                    continue
                sc = opened[ft2]
                if sc is None or not wants_slice(events, sc.time_range):
                    continue
                piece = make_slice(sc, events, store, plan.workdir / fp.file_id)
                made += 1
                moved = [relocate(inv, ft2, piece) for inv in chain]
                if any(inv is None for inv in moved):
                    continue
                chain = [inv for inv in moved if inv is not None]
            files.append(replace(fp, chain=tuple(chain)) if chain != list(fp.chain) else fp)
    finally:
        for sc in opened.values():
            if sc is not None:
                sc.close()
    if made:
        logger.info("spacecraft data: %d per-file slices of mission FT2 file(s)", made)
    return replace(plan, files=tuple(files))


def make_slice(
    ft2: SpacecraftFile, events: TimeRange, store: ProductStore | None, folder: Path
) -> Path:
    """The slice of ``ft2`` for ``events``: from the store, or written once into it."""
    name = slice_name(ft2.path, events)
    if store is None:
        return ft2.write_slice(events, folder / name)
    key = step_key(
        tool="ft2-slice",
        tool_version=f"margin-{MARGIN}-to-tstop",
        params={"start": events.start, "stop": events.stop},
        input_hashes={"scfile": store.hashes.hash(ft2.path)},
        output_names={"slice": name},
    )
    with store.lock(key):
        files = store.lookup(key)
        if files is not None and name in files:
            return files[name]
        store.forget(key)
        tmp = store.entry_dir(key) / f".{name}.new"
        ft2.write_slice(events, tmp)
        return store.put(key, {name: tmp}, move=True, meta={"step": "ft2-slice"})[name]
