"""Native gtmktime: good time intervals from the spacecraft file, events filtered by them.

Behaviour (spec §4, dataSubselector:src/gtmaketime/gtmaketime.cxx):

1. ``outfile`` must be given; an existing one is an error with clobber=no.
2. tmin/tmax = TSTART/TSTOP of the event table header.
3. roicut=yes: from the event file's DSS, zmax = the ZENITH_ANGLE range maximum and the
   acceptance cone; if zmax < 180 and a cone exists the user filter gets
   `` && angsep(RA_ZENITH,DEC_ZENITH,<ra>,<dec>) < <zmax-rad>`` appended verbatim, without
   parentheses, numbers in C ``%g`` (6 digits) — so a top-level ``||`` in the user filter
   binds as in the real tool. Otherwise the "DSS keywords required …" message is printed.
4. For each FT2 file (a file or a dataSubselector list) the rows passing the filter are
   walked (§4.2 step 4, :func:`walk_rows`); zero passing rows is an error per file.
5. The result is intersected with the event file's GTI (its ``TIME/TABLE`` DSS), or with
   [TSTART, TSTOP] / [tstart, tstop] when overwrite=yes.
6. The event file is copied with the events inside the GTI (closed intervals, cfitsio
   ``gtifilter``), the GTI rows replaced and ONTIME set; nothing else changes (TSTART/TSTOP,
   DATE*, DSS untouched — spec "Not done"); cfitsio's HISTORY cards, checksums, FILENAME.

Start-up matters (the work itself takes a fraction of a second on a weekly file), so this
module never imports astropy: headers are :mod:`fermipipe.fits.header`, tables
:mod:`fermipipe.fits.table`, rows streamed with ``RawTable.read_chunks``.

Checked against the Fermitools 2.4 roicut=yes reference: the FT2 filter holds only the user
filter and the ROI term. An older gtmaketime.cxx also appended
``&& (START >= tmin) && (STOP <= tmax)``; with that term the p8v2 GTI would lose rows that
straddle TSTART/TSTOP and differ from the reference, so it is not applied. Consequently an
FT2 that does not cover the event file gives an empty GTI ("No GTIs found", see ``run``)
rather than "Zero rows returned" (spec §4.3 lists both causes under the latter).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.errors import EmptyProductError, ToolError
from fermipipe.fits.dss import ConeCut, Cut, GtiCut, RangeCut, fmt_g6, read_dss_file
from fermipipe.fits.filterexpr import FilterError, compile_filter
from fermipipe.fits.gti import Gti, gti_header_rows, gti_rows
from fermipipe.fits.header import Header
from fermipipe.fits.keywords import set_card
from fermipipe.fits.table import (
    FitsFile,
    RawTable,
    TruncatedTableError,
    dtype_from_header,
    write_fits,
)
from fermipipe.native.data_checks import (
    NonFiniteTally,
    coverage_warning,
    empty_events_warning,
)
from fermipipe.native.params import ParamSpec, ToolOutcome, expand_file_list, resolve
from fermipipe.native.standard_params import STANDARD_PARAMS
from fermipipe.native.tool_files import fits_problem

TOOL = "gtmktime"

#: The .par default filter (spec §4.1); the help text quotes only the first two terms.
DEFAULT_FILTER = "DATA_QUAL>0 && LAT_CONFIG==1 && ABS(ROCK_ANGLE)<52"

PARAMS: list[ParamSpec] = [
    ParamSpec("scfile", "file", "", required=True),
    ParamSpec("sctable", "str", "SC_DATA"),
    ParamSpec("filter", "str", DEFAULT_FILTER),
    ParamSpec("roicut", "bool", True),
    ParamSpec("evfile", "file", "", required=True),
    ParamSpec("evtable", "str", "EVENTS"),
    ParamSpec("outfile", "file", "", required=True),
    ParamSpec("apply_filter", "bool", True),
    ParamSpec("overwrite", "bool", False),
    ParamSpec("header_obstimes", "bool", True),
    ParamSpec("tstart", "real", 0.0),
    ParamSpec("tstop", "real", 0.0),
    ParamSpec("gtifile", "str", "default"),
    *STANDARD_PARAMS,
]

NO_ROI_DSS = "DSS keywords required for ROI-based zenith angle cut are not present in the FT1 file."
CFITSIO_HISTORY = "CFITSIO used the following filtering expression to create this table:"


# ------------------------------------------------------------------------------ filter text


def roi_zenith_term(cuts: Sequence[Cut]) -> str | None:
    """The ROI-based zenith term gtmktime appends to the filter, or None (spec §4.2 step 3).

    zmax = the largest maximum of the ZENITH_ANGLE range cuts (180 when there is none; after
    gtselect's mergeRangeCuts there is at most one). The first cone is used; its centre is
    re-derived from the unit vector (astro::SkyDir) and printed with ``%g`` like a C++ stream.
    """
    zmax = 180.0
    maxima = [c.hi for c in cuts if isinstance(c, RangeCut) and c.column.upper() == "ZENITH_ANGLE"]
    maxima = [m for m in maxima if m is not None]
    if maxima:
        zmax = max(maxima)
    cone = next((c for c in cuts if isinstance(c, ConeCut)), None)
    if zmax >= 180.0 or cone is None:
        return None
    ra, dec = cone.centre()
    return (
        f" && angsep(RA_ZENITH,DEC_ZENITH,{fmt_g6(ra)},{fmt_g6(dec)}) < "
        f"{fmt_g6(zmax - cone.radius)}"
    )


def build_filter(user_filter: str, cuts: Sequence[Cut], roicut: bool) -> tuple[str, list[str]]:
    """The FT2 row filter gtmktime applies, and the messages it prints.

    The ROI term is appended to the user's text as is (no parentheses), so
    ``A || B`` + term reads ``A || (B && term)`` — the real tool's behaviour.
    """
    if not roicut:
        return user_filter, []
    term = roi_zenith_term(cuts)
    if term is None:
        return user_filter, [NO_ROI_DSS]
    return user_filter + term, []


# ------------------------------------------------------------------------------ FT2 → GTI


def walk_rows(
    start: np.ndarray, stop: np.ndarray, tmin: float, tmax: float
) -> tuple[np.ndarray, np.ndarray]:
    """Intervals from the filtered FT2 rows, in file order (spec §4.2 step 4).

    The walk begins at the first row whose STOP > tmin (taken even if it starts after tmax),
    ends before the first later row whose START > tmax, and concatenates a row onto the
    previous interval when its START equals the previous row's STOP exactly. The C++ loop
    re-visits the first row, which only duplicates an interval — irrelevant after the union.
    """
    start = np.asarray(start, dtype=np.float64)
    stop = np.asarray(stop, dtype=np.float64)
    after = np.flatnonzero(stop > tmin)
    if after.size == 0:
        return np.empty(0), np.empty(0)
    k = int(after[0])
    late = np.flatnonzero(start[k + 1 :] > tmax)
    end = k + 1 + (int(late[0]) if late.size else start.size - k - 1)
    s = start[k:end]
    e = stop[k:end]
    # a new interval begins at the first row and wherever START != previous STOP
    begins = np.ones(s.size, dtype=bool)
    begins[1:] = s[1:] != e[:-1]
    first = np.flatnonzero(begins)
    last = np.append(first[1:] - 1, s.size - 1)
    return s[first], e[last]


def _ft2_columns(table: RawTable, names: set[str]) -> dict[str, np.ndarray]:
    """The FT2 columns a filter reads (those that exist; the evaluator reports the others),
    with astropy's value conventions (L → bool, TZERO/TSCAL applied)."""
    return {name: table.values(name) for name in names if table.has_column(name)}


def ft2_gti(
    scfiles: Sequence[str], sctable: str, filter_text: str, tmin: float, tmax: float
) -> Gti:
    """Union over the FT2 files of the intervals of :func:`walk_rows` on the filtered rows.

    An FT2 file with zero rows passing the filter is an :class:`EmptyProductError` ("Zero rows
    returned from FT2 file for this filter: …"), as in the C++ (per file, not overall).
    An empty (blank) filter keeps every row, like tip with no row filter.
    """
    compiled = compile_filter(filter_text, tool=TOOL) if filter_text.strip() else None
    gti = Gti.empty()
    for scfile in scfiles:
        try:
            ff = FitsFile(scfile)
        except (OSError, ValueError) as exc:
            raise ToolError(TOOL, f"cannot open spacecraft file: {exc}", scfile) from None
        with ff:
            try:
                info = ff.hdu(sctable)
            except KeyError:
                raise ToolError(
                    TOOL, f"no {sctable} extension in spacecraft file", scfile
                ) from None
            if not info.is_bintable:
                raise ToolError(TOOL, f"{sctable} is not a binary table", scfile)
            try:
                table = ff.table(info.index)
            except ValueError as exc:
                raise ToolError(TOOL, f"unreadable {sctable} table ({exc})", scfile) from None
            cols = _ft2_columns(table, {"START", "STOP"})
            if len(cols) != 2:
                raise ToolError(TOOL, f"{sctable} lacks START/STOP columns", scfile)
            nrows = table.nrows
            if compiled is None:
                mask = np.ones(nrows, dtype=bool)
            else:
                try:
                    mask = compiled(_ft2_columns(table, compiled.columns()), nrows=nrows)
                except FilterError as exc:
                    raise exc.with_context(TOOL, scfile) from None
            if not mask.any():
                raise EmptyProductError(
                    TOOL, f"Zero rows returned from FT2 file for this filter: {filter_text}", scfile
                )
            starts, stops = walk_rows(cols["START"][mask], cols["STOP"][mask], tmin, tmax)
        try:
            piece = Gti.from_intervals(starts, stops)
        except ValueError as exc:
            raise ToolError(TOOL, f"bad spacecraft rows: {exc}", scfile) from None
        gti = gti.union(piece)
    return gti


# ------------------------------------------------------------------------------ output


def history_cards(evfile: str, evtable: str, gtifile: str) -> list[str]:
    """The HISTORY texts cfitsio appends to the filtered table (spec §1.2), 72-char wrapped."""
    expr = f'{evfile}[{evtable}][gtifilter("{gtifile}")]'
    chunks = [expr[i : i + 72] for i in range(0, len(expr), 72)] or [""]
    return [CFITSIO_HISTORY, *chunks]


@dataclass(frozen=True)
class FilterResult:
    """What :func:`write_filtered_events` wrote."""

    n_events: int
    n_gti: int
    ontime: float


def write_filtered_events(
    evfile: str,
    outfile: str,
    gti: Gti,
    *,
    evtable: str = "EVENTS",
    history: Sequence[str] = (),
    fitsfile: FitsFile | None = None,
    tally: NonFiniteTally | None = None,
) -> FilterResult:
    """Copy ``evfile`` to ``outfile`` keeping the events inside ``gti`` (closed intervals).

    Every HDU is copied byte for byte (headers and data) except the event table (rows
    filtered, ``history`` appended as HISTORY cards, NAXIS2) and the first ``GTI`` extension
    (rows replaced, ONTIME set in place; appended from the event header when absent, like
    dataSubselector ``Gti::writeExtension``). Rows are copied as raw bytes in chunks
    (fermipipe.fits.table), never through astropy tables. Checksums on every HDU, primary
    FILENAME, atomic rename. ``fitsfile``: ``evfile`` already open. ``tally`` counts the
    rows with NaN/inf values as they stream past (data_checks).
    """
    try:
        ff = fitsfile if fitsfile is not None else FitsFile(evfile)
        events = ff.table(evtable)
    except KeyError:
        raise ToolError(TOOL, f"no {evtable} extension", evfile) from None
    except (OSError, ValueError) as exc:
        raise ToolError(TOOL, f"cannot read event file: {exc}", evfile) from None
    if not events.has_column("TIME"):
        raise ToolError(TOOL, f"{evtable} has no TIME column", evfile)
    counter = [0]

    ev_header = events.header.copy()
    for text in history:
        ev_header.add_history(text)
    gti_index = next(
        (h.index for h in ff.hdus[1:] if h.extname.upper() == "GTI" and h.is_bintable), None
    )
    hdus: list[Any] = []
    for info in ff.hdus:
        if events.info is not None and info.index == events.info.index:
            hdus.append((ev_header, _selected_chunks(events, gti, counter, evfile, tally)))
        elif info.index == gti_index:
            hdus.append(_replaced_gti(info.header, gti, evfile))
        else:
            hdus.append((info.header, ff.data_bytes(info.index)))
    if gti_index is None:
        hdus.append(gti_header_rows(gti, events.header))
    write_fits(outfile, hdus, filename=os.path.basename(outfile))
    ff.close()
    return FilterResult(counter[0], len(gti), gti.ontime)


def _selected_chunks(
    events: RawTable,
    gti: Gti,
    counter: list[int],
    evfile: str,
    tally: NonFiniteTally | None = None,
) -> Iterator[np.ndarray]:
    """The rows whose TIME lies in ``gti`` (closed intervals), input order, chunk by chunk
    (``RawTable.read_chunks``: ordinary reads, so the resident memory stays ~ one chunk).

    ``counter[0]`` accumulates the number of rows yielded.
    """
    name = next(n for n in events.columns if n.upper() == "TIME")
    try:
        for chunk in events.read_chunks():
            block = chunk.rows
            keep = gti.contains(block[name].astype(np.float64))
            if tally is not None:
                tally.add(block, keep)
            n = int(np.count_nonzero(keep))
            counter[0] += n
            if n == block.shape[0]:
                yield np.ascontiguousarray(block)
            elif n:
                yield block.take(np.flatnonzero(keep))
    except TruncatedTableError as exc:
        raise ToolError(TOOL, str(exc), evfile) from None


def _replaced_gti(header: Header, gti: Gti, evfile: str) -> tuple[Header, np.ndarray]:
    """The GTI extension with its rows replaced and ONTIME set (TSTART/TSTOP untouched)."""
    names = [n.upper() for n in (dtype_from_header(header).names or ())]
    forms = [str(header.get(f"TFORM{n}", "")).strip().upper() for n in (1, 2)]
    if names != ["START", "STOP"] or any(f not in ("D", "1D") for f in forms):
        raise ToolError(
            TOOL, f"GTI extension must have START, STOP (D) columns, has {names}", evfile
        )
    out = header.copy()
    set_card(out, "ONTIME", gti.ontime, "sum of GTI lengths")
    return out, gti_rows(gti)


# ------------------------------------------------------------------------------ main


def _header_time(header: Header, key: str, evfile: str) -> float:
    try:
        return float(header[key])
    except KeyError:
        raise ToolError(TOOL, f"event table header has no {key}", evfile) from None
    except (TypeError, ValueError):
        raise ToolError(TOOL, f"{key} = {header[key]!r} is not a number", evfile) from None


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """Run gtmktime with Fermitools-style parameters (see :data:`PARAMS`)."""
    p = resolve(PARAMS, params, tool=TOOL)
    outfile: str = p["outfile"]
    evfile: str = p["evfile"]
    evtable: str = p["evtable"]
    if not outfile:
        raise ToolError(TOOL, "Please specify an output file name.")
    if not p["clobber"] and Path(outfile).exists():
        raise ToolError(TOOL, "Output file exists and clobber is set to 'no'.", outfile)
    problem = fits_problem(evfile)
    if problem is not None:
        raise ToolError(TOOL, f"evfile {evfile}: {problem}")
    scfiles = expand_file_list(p["scfile"], TOOL, "scfile")
    try:
        evff = FitsFile(evfile)  # opened once: header, DSS, GTI and the copy below
        evheader = evff.hdu(evtable).header
    except KeyError:
        raise ToolError(TOOL, f"no {evtable} extension", evfile) from None
    except (OSError, ValueError) as exc:
        raise ToolError(TOOL, f"cannot read event file: {exc}", evfile) from None
    tmin = _header_time(evheader, "TSTART", evfile)
    tmax = _header_time(evheader, "TSTOP", evfile)
    # Column checking of the DSS follows apply_filter (spec §4.2: its only effect).
    cuts = read_dss_file(evff, evtable, check_columns=p["apply_filter"], tool=TOOL)

    filter_text, messages = build_filter(p["filter"], cuts, p["roicut"])

    gti = ft2_gti(scfiles, p["sctable"], filter_text, tmin, tmax)
    # The good time the events claim (their GTI cut, else TSTART-TSTOP): how much of it the
    # FT2 rows cover, whatever the filter then keeps (data_checks).
    claimed = [c.gti for c in cuts if isinstance(c, GtiCut) and c.gti is not None]
    own_gti = claimed[0] if claimed else Gti.from_intervals([tmin], [tmax])
    for more in claimed[1:]:
        own_gti = own_gti & more
    warnings = [
        w
        for w in (
            coverage_warning(scfiles, p["sctable"], own_gti, f"the GTI of {evfile}"),
            empty_events_warning(
                evfile, evtable, own_gti, "the output keeps the good time with no events"
            ),
        )
        if w is not None
    ]
    if p["overwrite"]:
        if p["header_obstimes"]:
            t1, t2 = tmin, tmax
        else:
            t1, t2 = float(p["tstart"] or 0.0), float(p["tstop"] or 0.0)
        if t1 > t2:
            raise ToolError(TOOL, f"tstart {float(t1)!r} > tstop {float(t2)!r}", evfile)
        gti = gti.clip(t1, t2)
        against = f"[{float(t1)!r}, {float(t2)!r}] (overwrite=yes)"
    else:
        against = "the event file's GTI"
        gti_cuts = [c for c in cuts if isinstance(c, GtiCut) and c.gti is not None]
        for cut in gti_cuts:
            gti = gti & cut.gti
        if not gti_cuts:
            against = "nothing (the event file has no TIME/TABLE DSS)"

    # Empty GTI: the C++ writes it through undefined behaviour and every event is rejected
    # (spec §1.3, §4.3). For a pipeline an event file with no good time is useless and
    # poisonous downstream (gtltcube: "No GTIs found"), so — our choice — nothing is written
    # and the "empty" outcome is raised before any output exists.
    if len(gti) == 0:
        raise EmptyProductError(
            TOOL,
            f"No GTIs found: the FT2 rows passing the filter between TSTART {float(tmin)!r} and "
            f"TSTOP {float(tmax)!r} do not overlap {against}; filter: {filter_text}",
            evfile,
        )

    gtifile = p["gtifile"]
    if gtifile == "default":
        # The C++ writes the GTI to <outfile>_tempgti and filters through it; we filter in
        # memory (no temp file, so no collisions) and keep the name only for the HISTORY.
        gtifile = f"{outfile}_tempgti"
    tally = NonFiniteTally(evfile)
    result = write_filtered_events(
        evfile,
        outfile,
        gti,
        evtable=evtable,
        history=history_cards(evfile, evtable, gtifile),
        fitsfile=evff,
        tally=tally,
    )
    warnings += tally.warnings()
    messages.append(
        f"gtmktime: {result.n_gti} GTIs, ONTIME {float(result.ontime)!r} s, "
        f"{result.n_events} events written to {outfile}"
    )
    return ToolOutcome(
        outputs=[outfile], n_rows=result.n_events, messages=messages, warnings=warnings
    )
