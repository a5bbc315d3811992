"""Native gtselect: event selection on FT1 files, exactly as the Fermitools (spec §3).

Flow (dataSubselector ``CutController`` + ``dataSubselector.cxx``, spec §3.2–3.4):

1. resolve ``infile`` (one FITS file or an ``@list``); every EVENTS header must carry the same
   ``PASS_VER``; the non-GTI DSS of every input must be identical;
2. cut list = first input's non-GTI DSS cuts, then one GTI cut (union of all inputs' GTIs),
   then the parameter cuts (cone, TIME, ENERGY, CONVERSION_TYPE, EVENT_CLASS/EVENT_TYPE masks,
   ZENITH_ANGLE, PULSE_PHASE) added with the supersede rules, then ``mergeRangeCuts``;
3. rows pass iff every cut's cfitsio filter term holds and TIME lies in the input file's own
   GTI (``gtifilter()``, closed intervals); rows keep input order, inputs in list order;
4. output = the first input with EVENTS filtered, DSS rewritten, ``HISTORY Filter string:``,
   GTI = union ∩ [tmin, tmax], ONTIME; TSTART/TSTOP/dates rewritten when a time cut exists or
   several inputs are merged; checksums on every HDU; FILENAME.

Speed and memory: astropy is never imported (its import alone costs more than the selection).
Headers (:mod:`fermipipe.fits.header`) and data locations come from :mod:`fermipipe.fits.table`;
the raw rows are read in ~8 MB chunks (``RawTable.read_chunks``) as a structured big-endian
numpy array, only the columns the cuts need are converted, and the selected raw bytes are
streamed into :func:`fermipipe.fits.table.write_fits`, which computes the checksums on the
fly. Memory stays at a few chunks whatever the input size or the number of inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fermipipe.errors import EmptyProductError, ToolError
from fermipipe.fits.sphere import angsep_below
from fermipipe.fits.sphere import angsep_scalar as _angsep_scalar  # noqa: F401 - old name
from fermipipe.native.params import ParamSpec, ToolOutcome, expand_file_list, resolve
from fermipipe.native.standard_params import STANDARD_PARAMS

if TYPE_CHECKING:
    from fermipipe.fits.dss import Cuts
    from fermipipe.fits.gti import Gti
    from fermipipe.fits.header import Header
    from fermipipe.fits.table import FitsFile, RawTable

TOOL = "gtselect"

# Parameter table = pfiles/gtselect.par (spec §3.1). infile/outfile are mode "a" with an empty
# default: required. chatter/debug/gui/mode are accepted for command-line compatibility.
PARAMS: list[ParamSpec] = [
    ParamSpec("infile", "file", "", required=True),
    ParamSpec("outfile", "file", "", required=True),
    ParamSpec("ra", "real", None),
    ParamSpec("dec", "real", None),
    ParamSpec("rad", "real", None),
    ParamSpec("tmin", "real", None),
    ParamSpec("tmax", "real", None),
    ParamSpec("emin", "real", 30.0),
    ParamSpec("emax", "real", 300000.0),
    ParamSpec("zmin", "real", 0.0),
    ParamSpec("zmax", "real", 180.0),
    ParamSpec("evclass", "int", None),
    ParamSpec("evtype", "int", None),
    ParamSpec("convtype", "int", -1),
    ParamSpec("phasemin", "real", 0.0),
    ParamSpec("phasemax", "real", 1.0),
    ParamSpec("evtable", "str", "EVENTS"),
    *STANDARD_PARAMS,
]

# Valid ranges from gtselect.par; APE refuses values outside them before the tool runs.
_RANGES: dict[str, tuple[float, float]] = {
    "ra": (0.0, 360.0),
    "dec": (-90.0, 90.0),
    "rad": (0.0, 180.0),
    "tmin": (0.0, np.inf),
    "tmax": (0.0, np.inf),
    "zmin": (0.0, 180.0),
    "zmax": (0.0, 180.0),
    "convtype": (-1.0, 1.0),
}


# ============================================================================================
# Row selection (spec §1.2, §3.3, §10)
# ============================================================================================


@dataclass(frozen=True)
class RangeTerm:
    """``lo < COL && COL <= hi`` (``lo <= COL`` when lo == hi); None = open side.

    ``index`` is the 1-based element of a vector column (cfitsio ``COL[i]``), 0 for scalars.
    """

    column: str
    lo: float | None
    hi: float | None
    index: int = 0


@dataclass(frozen=True)
class ConeTerm:
    """``angsep(RA,DEC,ra,dec) < rad`` with the centre/radius as printed (``%.10g``)."""

    ra: float
    dec: float
    rad: float
    lon: str = "RA"
    lat: str = "DEC"


@dataclass(frozen=True)
class MaskTerm:
    """``((COL&o<mask>) != o0)``: passes when any requested bit is set."""

    column: str
    mask: int


Term = RangeTerm | ConeTerm | MaskTerm


#: ``angsep(RA,DEC,ra0,dec0) < rad`` exactly as cfitsio evaluates it (spec 1.2): the package's
#: single angsep implementation, :mod:`fermipipe.fits.sphere`.
cone_mask = angsep_below


def selection_mask(
    table: RawTable,
    terms: Sequence[Term],
    gti: Gti,
    file: str | None = None,
) -> np.ndarray:
    """Boolean mask of the rows of ``table`` passing every term and the file's own GTI.

    Comparisons are made in float64 (cfitsio promotes columns to double, spec §1.2); bit
    columns are compared as right-aligned unsigned integers (``RawTable.bits32``); the GTI
    test is cfitsio's ``gtifilter()`` (closed intervals, an empty GTI rejects every row)
    through :meth:`Gti.contains`. Column names are case-insensitive.
    """

    def column(name: str) -> np.ndarray:
        if not table.has_column(name):
            raise ToolError(
                TOOL, f"EVENTS table has no column {name} needed by the selection", file
            )
        return table.column(name)

    n = table.nrows
    keep = np.ones(n, dtype=bool)
    for term in terms:
        if isinstance(term, RangeTerm):
            col = column(term.column)
            if term.index:
                col = col.reshape(n, -1)[:, term.index - 1]
            values = col.astype(np.float64)
            if term.lo is not None and term.hi is not None and term.lo == term.hi:
                keep &= (values >= term.lo) & (values <= term.hi)
            else:
                if term.lo is not None:
                    keep &= values > term.lo
                if term.hi is not None:
                    keep &= values <= term.hi
        elif isinstance(term, ConeTerm):
            ra = column(term.lon).astype(np.float64)
            dec = column(term.lat).astype(np.float64)
            keep &= cone_mask(ra, dec, term.ra, term.dec, term.rad)
        else:
            column(term.column)
            bits = table.bits32(term.column)
            keep &= (bits & np.uint32(term.mask & 0xFFFFFFFF)) != 0
    keep &= gti.contains(column("TIME"))
    return keep


# ============================================================================================
# gtselect proper
# ============================================================================================


@dataclass
class _Input:
    """What phase 1 learns about one input file (headers only; the file is closed again)."""

    path: str
    pass_ver: str
    tstart: float | None
    tstop: float | None
    gti: Gti  # the file's own GTI (gtifilter() of this file)
    layout: np.dtype  # the evtable row layout
    cuts: list[Any] = field(default_factory=list)  # its DSS cuts (TIME ranges skipped)


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _open(path: str, tool: str) -> FitsFile:
    from fermipipe.fits.table import FitsFile

    if not Path(path).is_file():
        raise ToolError(tool, "cannot open input file: no such file", path)
    try:
        return FitsFile(path)
    except (OSError, ValueError, EOFError) as exc:
        raise ToolError(tool, f"not a readable FITS file ({exc})", path) from None


def _events_index(ff: FitsFile, evtable: str, tool: str) -> int:
    for info in ff.hdus[1:]:
        if info.extname.upper() == evtable.upper() and info.is_bintable:
            return info.index
    raise ToolError(tool, f"no {evtable} binary table extension", str(ff.path))


def _read_own_gti(ff: FitsFile, tool: str) -> tuple[int, Gti]:
    """The HDU cfitsio's ``gtifilter()`` uses and its intervals (spec 1.2)."""
    from fermipipe.fits.gti import find_gti_hdu, read_gti

    info = find_gti_hdu(ff.hdus)
    if info is None:
        raise ToolError(tool, "input has no GTI extension (needed by gtifilter())", str(ff.path))
    try:
        table = ff.table(info.index)
    except ValueError as exc:
        raise ToolError(tool, f"unreadable GTI extension ({exc})", str(ff.path)) from None
    return info.index, read_gti(table, tool=tool, file=str(ff.path))


def _scan_input(path: str, evtable: str, tool: str = TOOL) -> _Input:
    """Phase 1 for one input: PASS_VER, TSTART/TSTOP, own GTI, DSS (spec 3.2 steps 1–2)."""
    from fermipipe.fits.dss import GtiCut, read_dss

    with _open(path, tool) as ff:
        events = ff.hdus[_events_index(ff, evtable, tool)]
        # PASS_VER is read from the extension literally named EVENTS (CutController); a
        # missing keyword counts as "NONE", as in the C++.
        pass_ver = "NONE"
        for info in ff.hdus[1:]:
            if info.extname.upper() == "EVENTS":
                pass_ver = str(info.header.get("PASS_VER", "NONE")).strip()
                break
        _, gti = _read_own_gti(ff, tool)
        try:
            layout = ff.table(events.index).dtype
        except ValueError as exc:
            raise ToolError(tool, f"unreadable {evtable} table ({exc})", path) from None
        cuts = read_dss(
            events.header,
            columns=[str(c) for c in layout.names or ()],
            skip_time_ranges=True,
            tool=tool,
            file=path,
        )
        # dataSubselector's GtiCut(eventFile) holds the file's GTI extension
        cuts = [GtiCut(gti, c.ext) if isinstance(c, GtiCut) else c for c in cuts]
        return _Input(
            path,
            pass_ver,
            _float_or_none(events.header.get("TSTART")),
            _float_or_none(events.header.get("TSTOP")),
            gti,
            layout,
            cuts,
        )


def _check_ranges(p: Mapping[str, Any]) -> None:
    for name, (lo, hi) in _RANGES.items():
        value = p.get(name)
        if value is not None and not (lo <= value <= hi):
            raise ToolError(
                TOOL, f"parameter {name}={value:g} is outside its range [{lo:g}, {hi:g}]"
            )


def _range_or_error(column: str, lo: float, hi: float) -> None:
    if lo > hi:
        # CutController::addRangeCut message
        raise ToolError(
            TOOL,
            f"minimum requested value, {lo:g}, is greater than the maximum requested, "
            f"{hi:g}, for field {column}",
        )


@dataclass
class CutPlan:
    """The merged cut list of a gtselect run and what follows from it."""

    cuts: Cuts
    filter: str
    terms: list[Term]
    time_range: tuple[float, float] | None
    merged_gti: Gti


def input_cuts(inputs: Sequence[_Input], tool: str) -> Cuts:
    """Spec 3.2 steps 1–2: consistency checks, then the first input's non-GTI cuts followed
    by one GTI cut holding the union of all inputs' GTIs (``Cuts::mergeGtis``)."""
    from fermipipe.fits.dss import Cuts, GtiCut
    from fermipipe.fits.gti import union

    first = inputs[0]
    for other in inputs[1:]:
        if other.pass_ver != first.pass_ver:
            raise ToolError(
                tool,
                f"PASS_VER is not consistent across input FT1 files "
                f"({first.pass_ver} in {first.path}, {other.pass_ver} in {other.path})",
                other.path,
            )
    first_non_gti = [c for c in first.cuts if not isinstance(c, GtiCut)]
    for other in inputs[1:]:
        # Cuts::compareWithoutGtis: same size, and every non-GTI cut present in the first
        theirs = [c for c in other.cuts if not isinstance(c, GtiCut)]
        if len(other.cuts) != len(first.cuts) or any(c not in first_non_gti for c in theirs):
            raise ToolError(
                tool, f"DSS keywords in {other.path} do not match those in {first.path}", other.path
            )
    for other in inputs[1:]:
        if other.layout != first.layout:
            raise ToolError(tool, "event columns differ from those of the first input", other.path)
    cuts = Cuts()
    for cut in first_non_gti:
        cuts.add(cut)
    gti_cuts = [c.gti for inp in inputs for c in inp.cuts if isinstance(c, GtiCut)]
    dss_gti = union(g for g in gti_cuts if g is not None)
    if len(dss_gti) > 0:
        cuts.add(GtiCut(dss_gti))
    return cuts


def build_cuts(inputs: Sequence[_Input], p: Mapping[str, Any]) -> CutPlan:
    """Spec 3.2: the cut list from the inputs' DSS and the parameters, merged."""
    from fermipipe.fits.dss import (
        BitMaskCut,
        ConeCut,
        MaskInconsistentError,
        RangeCut,
        cone_centre_rounded,
        filter_string,
    )
    from fermipipe.fits.gti import union

    first = inputs[0]
    cuts = input_cuts(inputs, TOOL)
    merged = union(inp.gti for inp in inputs)

    ra, dec, rad = p["ra"], p["dec"], p["rad"]
    if ra is not None and dec is not None and rad is not None and rad < 180.0:
        cuts.add(ConeCut(ra, dec, rad))
    time_range: tuple[float, float] | None = None
    tmin, tmax = p["tmin"], p["tmax"]
    if tmin is None or tmax is None:
        tmin = tmax = 0.0
    if not (tmin == 0 and tmax == 0):
        _range_or_error("TIME", tmin, tmax)
        cuts.add(RangeCut("TIME", "s", tmin, tmax))
        time_range = (tmin, tmax)
    # Choice: INDEF emin/emax count as 0 (the C++ would throw reading them), so INDEF for
    # both means "no ENERGY cut" like 0/0 does; zmin/zmax/phasemin/phasemax INDEF → defaults.
    emin = p["emin"] if p["emin"] is not None else 0.0
    emax = p["emax"] if p["emax"] is not None else 0.0
    if not (emin == 0 and emax == 0):
        _range_or_error("ENERGY", emin, emax)
        cuts.add(RangeCut("ENERGY", "MeV", emin, emax))
    if p["convtype"] is not None and p["convtype"] >= 0:
        c = float(p["convtype"])
        cuts.add(RangeCut("CONVERSION_TYPE", "dimensionless", c, c))
    pass_ver = first.pass_ver
    for name, column in (("evclass", "EVENT_CLASS"), ("evtype", "EVENT_TYPE")):
        value = p[name]
        if value is None:
            continue
        if pass_ver.upper() in ("NONE", ""):
            # Choice: the C++ falls back to the removed evclsmin/evclsmax parameters and
            # fails; we say why instead.
            raise ToolError(TOOL, f"{name} needs Pass 8 input, but PASS_VER is missing", first.path)
        if name == "evtype" and not pass_ver.upper().startswith("P8"):
            continue  # EVENT_TYPE exists only after Pass 7 (BitMaskCut::post_P7)
        try:
            cuts.add(BitMaskCut(column, int(value), pass_ver))
        except MaskInconsistentError as exc:
            raise ToolError(TOOL, str(exc), first.path) from None
    zmin = p["zmin"] if p["zmin"] is not None else 0.0
    zmax = p["zmax"] if p["zmax"] is not None else 180.0
    if zmin > 0 or zmax < 180.0:
        _range_or_error("ZENITH_ANGLE", zmin, zmax)
        cuts.add(RangeCut("ZENITH_ANGLE", "deg", zmin, zmax))
    phmin = p["phasemin"] if p["phasemin"] is not None else 0.0
    phmax = p["phasemax"] if p["phasemax"] is not None else 1.0
    if phmin != 0 or phmax != 1:
        _range_or_error("PULSE_PHASE", phmin, phmax)
        cuts.add(RangeCut("PULSE_PHASE", "dimensionless", phmin, phmax))
    cuts.merge_range_cuts()

    terms: list[Term] = []
    for cut in cuts:
        if isinstance(cut, RangeCut):
            index = 0
            if "[" in cut.column:
                index = int(cut.column.split("[", 1)[1].rstrip("]"))
            terms.append(RangeTerm(cut.base_column, cut.lo, cut.hi, index))
        elif isinstance(cut, ConeCut):
            # the filter compares with the printed (%.10g) centre and radius (spec 3.3)
            c_ra, c_dec, c_rad = cone_centre_rounded(cut)
            lon, lat = ("RA", "DEC") if cut.coordsys == "RA,DEC" else ("L", "B")
            terms.append(ConeTerm(c_ra, c_dec, c_rad, lon, lat))
        elif isinstance(cut, BitMaskCut):
            terms.append(MaskTerm(cut.column, cut.mask))
    return CutPlan(cuts, filter_string(cuts), terms, time_range, merged)


# ------------------------------------------------------------------ output


def _gti_data(header: Header, gti: Gti) -> np.ndarray:
    from fermipipe.fits.table import dtype_from_header

    rows = np.zeros(len(gti), dtype=dtype_from_header(header))
    rows["START"] = gti.start
    rows["STOP"] = gti.stop
    return rows


def write_event_product(
    inputs: Sequence[_Input],
    outfile: str,
    *,
    evtable: str,
    cuts: Cuts,
    out_gti: Gti,
    dates: tuple[float, float] | None,
    cfitsio_history: Sequence[str],
    history: Sequence[str],
    accept: Callable[[RawTable, _Input], np.ndarray] | None,
    tool: str,
) -> int:
    """Write the output event file (spec 3.4); return the number of event rows written.

    All HDUs of the first input are copied; the ``evtable`` rows of every input (list order,
    filtered by ``accept`` when given) are streamed into its copy, whose DSS is replaced by
    ``cuts`` (``writeDssKeywords``) between ``cfitsio_history`` and ``history``; the GTI HDU
    gets ``out_gti`` and ONTIME; ``dates`` = (TSTART, TSTOP) when the date keywords are to be
    rewritten in the primary, events and GTI headers (spec 1.5); checksums and FILENAME by
    :func:`fermipipe.fits.table.write_fits`, atomically.
    """
    from fermipipe.fits import dates as fdates
    from fermipipe.fits.dss import write_dss
    from fermipipe.fits.keywords import set_card
    from fermipipe.fits.table import TruncatedTableError, write_fits

    count = [0]

    def stream() -> Iterator[np.ndarray]:
        for inp in inputs:
            with _open(inp.path, tool) as ff:
                index = _events_index(ff, evtable, tool)
                try:
                    for chunk in ff.table(index).read_chunks():
                        rows = chunk.rows
                        if accept is not None:
                            # take() on indices is ~5x faster than boolean indexing of records
                            rows = rows.take(np.flatnonzero(accept(chunk, inp)))
                        count[0] += len(rows)
                        yield rows
                except TruncatedTableError as exc:
                    raise ToolError(tool, str(exc), inp.path) from None

    with _open(inputs[0].path, tool) as first:
        ev_index = _events_index(first, evtable, tool)
        gti_index, _ = _read_own_gti(first, tool)
        for info in first.hdus[1:]:  # Gti::writeExtension writes the extension named GTI
            if info.extname.upper() == "GTI":
                gti_index = info.index
                break
        hdus: list[Any] = []
        for info in first.hdus:
            header = info.header.copy()
            if dates is not None and info.index in (0, ev_index, gti_index):
                fdates.write_date_keywords(header, *dates)
            if info.index == ev_index:
                for text in cfitsio_history:
                    header.add_history(text)  # wrapped at 72 characters, as cfitsio ffphis
                write_dss(header, cuts)
                for text in history:
                    header.add_history(text)
                hdus.append((header, stream()))
            elif info.index == gti_index:
                set_card(header, "ONTIME", out_gti.ontime, "sum of GTI lengths")
                hdus.append((header, _gti_data(header, out_gti)))
            else:
                hdus.append((header, first.data_bytes(info.index)))
        write_fits(outfile, hdus, filename=os.path.basename(outfile))
    return count[0]


def select_events(infiles: Sequence[str], outfile: str, p: Mapping[str, Any]) -> ToolOutcome:
    """Run gtselect on resolved input files with resolved parameters (see module doc)."""
    evtable = str(p.get("evtable") or "EVENTS")
    if not p.get("clobber", True) and Path(outfile).exists():
        raise ToolError(TOOL, "output file already exists and clobber=no", outfile)
    inputs = [_scan_input(f, evtable) for f in infiles]
    plan = build_cuts(inputs, p)
    have = {str(n).upper() for n in inputs[0].layout.names or ()}
    for term in [*plan.terms, RangeTerm("TIME", None, None)]:
        needed = [term.lon, term.lat] if isinstance(term, ConeTerm) else [term.column]
        for name in needed:
            if name.upper() not in have:  # cfitsio would refuse the filter expression
                raise ToolError(
                    TOOL,
                    f"{evtable} table has no column {name} needed by the selection",
                    infiles[0],
                )
    out_gti = plan.merged_gti
    if plan.time_range is not None:
        out_gti = out_gti.clip(*plan.time_range)

    dates: tuple[float, float] | None = None
    if plan.time_range is not None or len(inputs) > 1:
        dates = merged_time_span(inputs, plan.merged_gti, plan.time_range, TOOL)

    terms = plan.terms

    def accept(chunk: RawTable, inp: _Input) -> np.ndarray:
        return selection_mask(chunk, terms, inp.gti, inp.path)

    n_selected = write_event_product(
        inputs,
        outfile,
        evtable=evtable,
        cuts=plan.cuts,
        out_gti=out_gti,
        dates=dates,
        cfitsio_history=[
            "CFITSIO used the following filtering expression to create this table:",
            f"{infiles[0]}[{evtable}][{plan.filter}]",
        ],
        history=[f"Filter string: {plan.filter}"],
        accept=accept,
        tool=TOOL,
    )
    messages = [f"gtselect: {n_selected} events selected, {len(out_gti)} GTIs -> {outfile}"]
    if len(out_gti) == 0:
        # Choice (spec 1.3/3.4: the Fermitools' behaviour is undefined here): a valid file is
        # written (GTI table with 0 rows, ONTIME 0) and the run reports "empty", the same
        # condition under which gtltcube fails with "No GTIs found". Zero selected events
        # with a non-empty GTI is a normal product: it still carries exposure.
        raise EmptyProductError(
            TOOL, "No GTIs left after the time selection (empty output written)", outfile
        )
    return ToolOutcome(outputs=[outfile], n_rows=n_selected, messages=messages)


def merged_time_span(
    inputs: Sequence[_Input],
    gti: Gti,
    time_range: tuple[float, float] | None,
    tool: str,
) -> tuple[float, float]:
    """TSTART/TSTOP of the output: min/max over the inputs' EVENTS headers (GTI span when
    absent), clipped to the time cut when there is one (spec 3.4)."""
    starts = [i.tstart for i in inputs if i.tstart is not None]
    stops = [i.tstop for i in inputs if i.tstop is not None]
    if (not starts or not stops) and len(gti) == 0:
        raise ToolError(tool, "inputs have neither TSTART/TSTOP nor GTIs", inputs[0].path)
    tstart = min(starts) if starts else gti.tstart
    tstop = max(stops) if stops else gti.tstop
    if time_range is not None:
        tstart = max(tstart, time_range[0])
        tstop = min(tstop, time_range[1])
    return tstart, tstop


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """Native gtselect with Fermitools parameters (``infile`` may be an ``@list``)."""
    p = resolve(PARAMS, params, tool=TOOL)
    _check_ranges(p)
    infiles = expand_file_list(str(p["infile"]), TOOL, "infile")
    outfile = str(p["outfile"])  # names are data: nothing is expanded
    return select_events(infiles, outfile, p)
