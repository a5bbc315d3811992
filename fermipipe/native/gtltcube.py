"""Native gtltcube: livetime cube (EXPOSURE, WEIGHTED_EXPOSURE) from FT2 + event GTIs (spec §6).

Behaviour (spec §6, Likelihood:src/makeExposureCube, map_tools:src/Exposure.cxx):

* Event file(s): all DSS are read (TIME ranges kept, no column check) and must agree across
  files; the GTI is the union of the files' GTIs. No GTI cut, or an empty union →
  "No GTIs found in input event file(s)." (:class:`EmptyProductError`). Events are not read.
* Grid: HEALPix NESTED, equatorial, nside from binsz (§6.3); cosθ bins uniform in √(1−cosθ),
  nbins = trunc(1/dcostheta).
* phibins > 0: cosθ and the azimuth φ are taken in the instrument frame that CLHEP builds from
  SCX and SCZ (normalised and re-orthogonalised, map_tools Exposure::Filler), so even the
  cosθ block can differ from the phibins=0 cube in edge cells — as in gtltcube
  (:func:`fermipipe.native.ltcube_kernel.instrument_axes`).
* FT2 rows: pre-filtered with (START >= gtimin − 60) && (STOP <= gtimax + 60), files in list
  order, rows in file order; each row adds LIVETIME·f (f = fraction of the row in the GTI,
  capped at 1) and, to WEIGHTED_EXPOSURE, (LIVETIME·f)·(LIVETIME/(STOP−START)).
* ``precision=exact`` (default, native-only parameter): float32 cells updated as
  ``float32(double(cell) + value)`` in row order — bit-identical to gtltcube.
  ``precision=fast``: float64 accumulation converted to float32 at the end (closer to the true
  sum than gtltcube's own float32 accumulation; differs from it by that accumulation's
  rounding, ~1e-6 relative).

Only the FT2 rows inside the GTI span (±60 s) are read: START/STOP are binary-searched on a
raw memmap of the rows, so a one-week job on a mission-long FT2 touches a week of rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from fermipipe.errors import EmptyProductError, ToolError
from fermipipe.fits.dates import met_to_date, utc_now_date, write_date_keywords
from fermipipe.fits.dss import Cut, GtiCut, RangeCut, read_dss_file, write_dss_time_only
from fermipipe.fits.gti import Gti, gti_hdu, union
from fermipipe.fits.keywords import (
    TEMPLATE_BINTABLE_COMMENTS,
    bintable_keywords,
    make_card,
    set_card,
)
from fermipipe.fits.table import FitsFile, RawTable
from fermipipe.native import ENGINE_VERSION
from fermipipe.native.data_checks import bisect_column, coverage_warning, empty_events_warning
from fermipipe.native.output_file import refuse_existing_output, write_tool_output
from fermipipe.native.params import ParamSpec, ToolOutcome, expand_file_list, is_none, resolve
from fermipipe.native.standard_params import STANDARD_PARAMS

__all__ = [
    "PARAMS",
    "CubeGrid",
    "EventInputs",
    "LivetimeCube",
    "compute_livetime",
    "read_event_inputs",
    "run",
    "write_livetime_cube",
]

TOOL = "gtltcube"

PARAMS: list[ParamSpec] = [
    ParamSpec("evfile", "file", ""),
    ParamSpec("evtable", "str", "EVENTS"),
    ParamSpec("scfile", "file", "", required=True),
    ParamSpec("sctable", "str", "SC_DATA"),
    ParamSpec("outfile", "file", "expCube.fits"),
    ParamSpec("dcostheta", "real", 0.025),
    ParamSpec("binsz", "real", 1.0),
    ParamSpec("phibins", "int", 0),
    ParamSpec("tmin", "real", 0.0),
    ParamSpec("tmax", "real", 0.0),
    ParamSpec("file_version", "str", "1"),
    ParamSpec("zmin", "real", 0.0),
    ParamSpec("zmax", "real", 180.0),
    *STANDARD_PARAMS,
    # Native only: exact = bit-identical to gtltcube; fast = float64 accumulation.
    ParamSpec("precision", "str", "exact", choices=("exact", "fast")),
]

#: FT2 rows handed to the kernel at a time (bounds memory: ~100 bytes per row).
CHUNK_ROWS = 262_144
#: Pre-filter margin around the GTI span, seconds (spec §6.4).
FT2_MARGIN = 60.0
_FT2_COLUMNS = ("START", "STOP", "LIVETIME", "RA_SCZ", "DEC_SCZ", "RA_ZENITH", "DEC_ZENITH")


# ---------------------------------------------------------------------- grid


@dataclass(frozen=True)
class CubeGrid:
    """Sky and incidence-angle binning of a livetime cube."""

    nside: int
    nbins: int
    phibins: int = 0

    @property
    def npix(self) -> int:
        return 12 * self.nside * self.nside

    @property
    def ncells(self) -> int:
        """COSBINS length: nbins·(1 + phibins)."""
        return self.nbins * (1 + self.phibins)

    @classmethod
    def from_params(cls, binsz: float, dcostheta: float, phibins: int = 0) -> CubeGrid:
        """nside: from 1, doubled while 12·nside² < 41252/binsz² and nside < 512 (§6.3);
        nbins = trunc(1/dcostheta)."""
        if not binsz > 0:
            raise ToolError(TOOL, f"binsz={binsz} must be > 0")
        if not 0 < dcostheta <= 1:
            raise ToolError(TOOL, f"dcostheta={dcostheta} must be in (0, 1]")
        if phibins < 0:
            raise ToolError(TOOL, f"phibins={phibins} must be >= 0")
        nside = 1
        while 12 * nside * nside < 41252.0 / (binsz * binsz) and nside < 512:
            nside *= 2
        return cls(nside, int(1.0 / dcostheta), int(phibins))

    def pixel_directions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit vectors (npix, 3), RA deg, Dec deg) of the NESTED pixel centres, float64.

        healpy pix2ang gives (θ, φ); RA = φ·180/π in [0, 360), Dec = 90 − θ·180/π, and the
        vector is built from RA/Dec like astro::SkyDir (checked bit-exact on both references).
        """
        import healpy as hp  # imported here: healpy pulls in matplotlib (~1 s)

        from fermipipe.native.ltcube_kernel import radec_to_unit

        theta, phi = hp.pix2ang(self.nside, np.arange(self.npix), nest=True)
        ra = phi * 180.0 / math.pi
        dec = 90.0 - theta * 180.0 / math.pi
        return radec_to_unit(ra, dec), ra, dec

    def ctheta_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(CTHETA_MIN, CTHETA_MAX) float32: row i = (1 − ((i+1)/n)², 1 − (i/n)²)."""
        i = np.arange(self.nbins, dtype=np.float64)
        n = float(self.nbins)
        hi = 1.0 - (i / n) * (i / n)
        lo = 1.0 - ((i + 1.0) / n) * ((i + 1.0) / n)
        return lo.astype(np.float32), hi.astype(np.float32)


# ---------------------------------------------------------------------- event inputs


@dataclass
class EventInputs:
    """What gtltcube takes from the event file(s): the cuts of the first file and the GTI."""

    files: list[str]
    cuts: list[Cut]
    gti: Gti
    file_gtis: list[Gti] = field(default_factory=list)  # each file's own, in list order


def read_event_inputs(evfiles: list[str], evtable: str = "EVENTS") -> EventInputs:
    """Read and check the DSS of every event file; the GTI is the union of their GTIs.

    Non-GTI cuts must be identical across files (spec §6.2); an ENERGY range must be closed
    with emin > 0. No GTI cut at all, or an empty union, is an EmptyProductError with the
    Fermitools message.
    """
    first: list[Cut] | None = None
    gtis: list[Gti] = []
    file_gtis: list[Gti] = []
    for path in evfiles:
        cuts = read_dss_file(path, evtable, check_columns=False, skip_time_ranges=False, tool=TOOL)
        others = [c for c in cuts if not isinstance(c, GtiCut)]
        own = [c.gti for c in cuts if isinstance(c, GtiCut) and c.gti is not None]
        gtis.extend(own)
        file_gtis.append(union(own))
        for cut in others:
            if isinstance(cut, RangeCut) and cut.column.upper() == "ENERGY":
                if cut.lo is None or cut.hi is None:
                    raise ToolError(TOOL, "the ENERGY DSS range must be closed (emin:emax)", path)
                if not cut.lo > 0:
                    raise ToolError(TOOL, f"the ENERGY DSS minimum {cut.lo} must be > 0", path)
        if first is None:
            first = cuts
        elif others != [c for c in first if not isinstance(c, GtiCut)]:
            raise ToolError(
                TOOL,
                f"DSS cuts differ from those of {evfiles[0]}: all event files must have the "
                "same selections (only their GTIs may differ)",
                path,
            )
    gti = union(gtis)
    if len(gti) == 0:
        raise EmptyProductError(TOOL, "No GTIs found in input event file(s).", ", ".join(evfiles))
    assert first is not None
    return EventInputs(list(evfiles), first, gti, file_gtis)


# ---------------------------------------------------------------------- FT2 rows


@dataclass
class Ft2Chunk:
    """FT2 rows that contribute (f > 0), in file order, with their values."""

    scz: np.ndarray
    zen: np.ndarray
    scx: np.ndarray | None
    value: np.ndarray
    wvalue: np.ndarray


def _open_ft2(path: str, sctable: str, phibins: int) -> RawTable:
    try:
        table = FitsFile(path).table(sctable)
    except KeyError:
        raise ToolError(TOOL, f"no {sctable} extension in the spacecraft file", path) from None
    except (OSError, ValueError) as exc:
        raise ToolError(TOOL, f"cannot read spacecraft file: {exc}", path) from None
    needed = _FT2_COLUMNS + (("RA_SCX", "DEC_SCX") if phibins > 0 else ())
    missing = [c for c in needed if not table.has_column(c)]
    if missing:
        raise ToolError(TOOL, f"{sctable} lacks column(s) {', '.join(missing)}", path)
    return table


def _row_window(table: RawTable, t_lo: float, t_hi: float) -> tuple[int, int]:
    """Rows [i0, i1) that can pass (START >= t_lo) && (STOP <= t_hi).

    FT2 files are time ordered (FSSC files, and ftmerge'd lists must stay so — spec §8), so
    the passing rows are one contiguous run found by binary search. The window is checked
    for order when read (:func:`iter_ft2_chunks`); an out-of-order window triggers a full
    scan of the file. Out-of-order rows *outside* the window are not looked for.
    """
    start = table.column("START")
    stop = table.column("STOP")
    if table.nrows == 0:
        return 0, 0
    i0 = bisect_column(start, t_lo, right=False)
    i1 = bisect_column(stop, t_hi, right=True)
    return i0, max(i0, i1)


def _in_order(table: RawTable, i0: int, i1: int, chunk_rows: int) -> bool:
    """True if START and STOP are non-decreasing over rows [i0, i1) (read chunk by chunk)."""
    last_start = last_stop = -math.inf
    for c0 in range(i0, i1, chunk_rows):
        rows = table.rows[c0 : min(c0 + chunk_rows, i1)]
        s = rows["START"].astype(np.float64)
        e = rows["STOP"].astype(np.float64)
        if (
            s[0] < last_start
            or e[0] < last_stop
            or np.any(np.diff(s) < 0)
            or np.any(np.diff(e) < 0)
        ):
            return False
        last_start, last_stop = float(s[-1]), float(e[-1])
    return True


def iter_ft2_chunks(
    path: str,
    sctable: str,
    gti: Gti,
    phibins: int,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[Ft2Chunk]:
    """The contributing rows of one FT2 file, in file order, ``chunk_rows`` at a time."""
    from fermipipe.native.ltcube_kernel import radec_to_unit

    table = _open_ft2(path, sctable, phibins)
    # %.20g of a double reads back as the same double, so the filter compares with
    # exactly gtimin − 60 and gtimax + 60 computed in double.
    t_lo = gti.tstart - FT2_MARGIN
    t_hi = gti.tstop + FT2_MARGIN
    i0, i1 = _row_window(table, t_lo, t_hi)
    ranges = [(i0, i1)] if _in_order(table, i0, i1, chunk_rows) else [(0, table.nrows)]
    for a, b in ranges:
        for c0 in range(a, b, chunk_rows):
            c1 = min(c0 + chunk_rows, b)
            rows = table.rows[c0:c1]
            start = rows["START"].astype(np.float64)
            stop = rows["STOP"].astype(np.float64)
            keep = (start >= t_lo) & (stop <= t_hi)
            bad = np.flatnonzero(keep & (start > stop))
            if bad.size:
                i = int(bad[0])
                raise ToolError(
                    TOOL,
                    f"{sctable} row {c0 + i + 1} has START {float(start[i])!r} > STOP {float(stop[i])!r}",
                    path,
                )
            # Rows with STOP == START get f = 0 and are skipped like f = 0 rows.
            frac = np.zeros(start.shape)
            if keep.any():
                frac[keep] = gti.overlap_fraction(start[keep], stop[keep])
            use = np.flatnonzero(frac > 0)
            if use.size == 0:
                continue
            sub = rows[use]
            live = sub["LIVETIME"].astype(np.float64)
            f = frac[use]
            value = live * f
            wvalue = value * (live / (stop[use] - start[use]))
            scz = radec_to_unit(sub["RA_SCZ"], sub["DEC_SCZ"])
            zen = radec_to_unit(sub["RA_ZENITH"], sub["DEC_ZENITH"])
            scx = radec_to_unit(sub["RA_SCX"], sub["DEC_SCX"]) if phibins > 0 else None
            yield Ft2Chunk(scz, zen, scx, value, wvalue)


# ---------------------------------------------------------------------- computation


@dataclass
class LivetimeCube:
    """The arrays of a livetime cube: (npix, ncells) float32 EXPOSURE and WEIGHTED_EXPOSURE."""

    grid: CubeGrid
    exposure: np.ndarray
    weighted: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    n_rows: int


def compute_livetime(
    gti: Gti,
    scfiles: list[str],
    grid: CubeGrid,
    *,
    sctable: str = "SC_DATA",
    zmin: float = 0.0,
    zmax: float = 180.0,
    precision: str = "exact",
    chunk_rows: int = CHUNK_ROWS,
) -> LivetimeCube:
    """Accumulate the livetime cube of ``gti`` from the FT2 file(s), in list and row order.

    Memory: the two accumulators (npix × ncells, 4 or 8 bytes) plus one chunk of rows.
    """
    # numba is imported on first use, so that reading PARAMS stays cheap.
    from fermipipe.native.ltcube_kernel import PixelBlocks, accumulate

    if precision not in ("exact", "fast"):
        raise ToolError(TOOL, f"precision={precision!r} must be exact or fast")
    if not 0 <= zmin < zmax <= 180:
        raise ToolError(TOOL, f"need 0 <= zmin < zmax <= 180 (zmin={zmin}, zmax={zmax})")
    pix, ra, dec = grid.pixel_directions()
    blocks = PixelBlocks(pix, grid.nside)
    # zmin=0 and zmax=180 means no zenith test at all (spec §6.4).
    zcut = not (zmin == 0 and zmax == 180)
    cos_zmax = math.cos(zmax * math.pi / 180.0) if zcut else None
    cos_zmin = math.cos(zmin * math.pi / 180.0) if zcut else None
    culls = blocks.cull_thresholds(
        cos_zmax,
        zmax * math.pi / 180.0 if zcut else None,
        zmin * math.pi / 180.0 if zcut else None,
    )
    dtype = np.float32 if precision == "exact" else np.float64
    shape = (blocks.nblocks, grid.ncells, blocks.size)
    exp = np.zeros(shape, dtype)
    wexp = np.zeros(shape, dtype)
    n_rows = 0
    for path in scfiles:
        for chunk in iter_ft2_chunks(path, sctable, gti, grid.phibins, chunk_rows):
            n_rows += chunk.value.size
            accumulate(
                blocks,
                culls,
                chunk.scz,
                chunk.zen if zcut else None,
                chunk.scx,
                chunk.value,
                chunk.wvalue,
                grid.nbins,
                grid.phibins,
                cos_zmax,
                cos_zmin,
                exp,
                wexp,
            )
    exposure = blocks.to_pixel_major(exp).astype(np.float32, copy=False)
    del exp
    weighted = blocks.to_pixel_major(wexp).astype(np.float32, copy=False)
    return LivetimeCube(grid, exposure, weighted, ra, dec, n_rows)


# ---------------------------------------------------------------------- output


def _card(key: str, value: Any, comment: str | None = None) -> fits.Card:
    return make_card(key, value, comment)


def _cards(keywords: list[tuple[str, Any, str]]) -> list[fits.Card]:
    return [_card(key, value, comment) for key, value, comment in keywords]


#: Cards with the same value and comment wherever LivetimeCubeTemplate and the healpix
#: CosineBinner template write them (each HDU picks them in its own order).
_FIXED_CARDS: dict[str, tuple[Any, str]] = {
    "OBSERVER": ("Peter Michelson", "LAT PI"),
    "ORIGIN": ("LISOC", "name of organization making file"),
    "MJDREFI": (51910.0, "Int. part of MJD of SC clock start"),
    "MJDREFF": (7.428703703703703e-4, "Frac. part of MJD of SC clock start"),
    "TIMEUNIT": ("s", "units for the time related keywords"),
    "TIMESYS": ("TT", "type of time system that is used"),
}


def _fixed(*keys: str) -> list[fits.Card]:
    return [_card(key, *_FIXED_CARDS[key]) for key in keys]


def _time_range(tstart: float, tstop: float) -> list[fits.Card]:
    return [
        _card("TSTART", tstart, "mission time of the obs. start"),
        _card("TSTOP", tstop, "mission time of the obs. end"),
    ]


def _common_cards(instr_comment: str) -> list[fits.Card]:
    """TELESCOP … DATE-END block shared by the Likelihood templates."""
    return [
        _card("TELESCOP", "GLAST", "name of telescope generating data"),
        _card("INSTRUME", "LAT", instr_comment),
        _card("EQUINOX", 2000.0, "equinox for ra and dec"),
        _card("RADECSYS", "FK5", "world coord. system for this file (FK5 or FK4)"),
        _card("DATE", "", "file creation date (UTC)"),
        _card("DATE-OBS", "", "start date/time of the obs. (UTC)"),
        _card("DATE-END", "", "end date/time of the obs. (UTC)"),
    ]


def primary_header(tstart: float, tstop: float, creator: str, version: str) -> fits.Header:
    """Primary header of the LivetimeCubeTemplate (keyword order of the references)."""
    cards = [
        _card("SIMPLE", True, "file does conform to FITS standard"),
        _card("BITPIX", 8, "number of bits per data pixel"),
        _card("NAXIS", 0, "number of data axes"),
        _card("EXTEND", True, "FITS dataset may contain extensions"),
    ]
    header = fits.Header(cards)
    header.add_comment("  FITS (Flexible Image Transport System) format is defined in 'Astronomy")
    header.add_comment("  and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H")
    for card in [
        *_common_cards("name of instrument generating data"),
        *_time_range(tstart, tstop),
        *_fixed("TIMEUNIT", "TIMESYS"),
        _card(
            "GPS_OUT", False, "whether GPS time was unavailable at any time during this interval"
        ),
        *_fixed("MJDREFI", "MJDREFF", "OBSERVER"),
        _card("FILENAME", "", "name of this file: nnnnnnnnnn = MET of"),
        *_fixed("ORIGIN"),
        _card("CREATOR", creator, "software and version creating file"),
        # file_version is written as a string (spec §6.5).
        _card("VERSION", str(version), "release version of the file"),
    ]:
        header.append(card, end=True)
    write_date_keywords(header, tstart, tstop)
    return header


def exposure_header(
    extname: str,
    grid: CubeGrid,
    tstart: float,
    tstop: float,
    cuts: list[Cut],
    zmin: float,
    zmax: float,
) -> fits.Header:
    """EXPOSURE / WEIGHTED_EXPOSURE header (LivetimeCubeTemplate + healpix keywords)."""
    n = grid.ncells
    cards = [
        *_cards(bintable_keywords(4 * n + 8, grid.npix, 3)),
        _card("TTYPE1", "COSBINS", "label for field"),
        _card("TFORM1", f"{n}E", "data format of field: 4-byte REAL"),
        _card("TTYPE2", "RA", "RA of HEALPixel center"),
        _card("TFORM2", "E", "format of field"),
        _card("TTYPE3", "DEC", "DEC of HEALPixel center"),
        _card("TFORM3", "E", "format of field"),
        *_common_cards("name of instr. generating data"),
        *_fixed("OBSERVER", "ORIGIN"),
        _card("EXTNAME", extname, "name of this binary table extension"),
        *_time_range(tstart, tstop),
        *_fixed("MJDREFI", "MJDREFF", "TIMEUNIT"),
        _card("TIMEZERO", 0.0, "clock correction"),
        *_fixed("TIMESYS"),
        _card("TIMEREF", "LOCAL", "reference frame used for times"),
        _card("CLOCKAPP", False, "clock drift correction applied?"),
        _card("GPS_OUT", False, "GPS time unavailable at any time during interval"),
        _card("PIXTYPE", "HEALPIX", "Indicates this is a HEALPix representation"),
        _card("ORDERING", "NESTED", "Can be NESTED or RING"),
        _card("COORDSYS", "EQU"),
        _card("NSIDE", grid.nside, "Number of pixels per side per dodecahedron face"),
        _card("FIRSTPIX", 0, "First pixel index"),
        _card("LASTPIX", grid.npix - 1, "Last pixel index"),
        _card("THETABIN", "SQRT(1-COSTHETA)", "Costheta binning scheme"),
        _card("NBRBINS", grid.nbins, "Number of costheta bins"),
        _card("COSMIN", 0.0, "Minimum costheta value"),
        _card("PHIBINS", grid.phibins, "Number of phi bins"),
        _card("TUNIT1", "s", "physical unit of field"),
        _card("TUNIT2", "deg"),
        _card("TLMIN2", 0.0, "minimum value"),
        _card("TLMAX2", 360.0, "maximum value"),
        _card("TUNIT3", "deg"),
        _card("TLMIN3", -90.0, "minimum value"),
        _card("TLMAX3", 90.0, "maximum value"),
        _card("EXTVER", 1, "auto assigned by template parser"),
    ]
    header = fits.Header(cards)
    write_date_keywords(header, tstart, tstop)
    write_dss_time_only(header, cuts)
    if zmax < 180:
        # Written only for a real zenith cut, after the DSS keys, without comments.
        header.append(_card("ZENMAX", float(zmax)), end=True)
        header.append(_card("ZENMIN", float(zmin)), end=True)
    return header


def cthetabounds_header(nbins: int, tstart: float, tstop: float) -> fits.Header:
    """CTHETABOUNDS header (healpix CosineBinner template)."""
    cards = [
        *_cards(bintable_keywords(8, nbins, 2, TEMPLATE_BINTABLE_COMMENTS)),
        _card("TTYPE1", "CTHETA_MIN", "Lower boundary of the COSTHETA bin"),
        _card("TFORM1", "E", "Data format of this field"),
        _card("TTYPE2", "CTHETA_MAX", "Upper boundary of the COSTHETA bin"),
        _card("TFORM2", "E", "Data format of this field"),
        *_common_cards("name of instrument generating data"),
        *_time_range(tstart, tstop),
        *_fixed("OBSERVER", "ORIGIN"),
        _card("TLMIN1", -1.0, "minimum value"),
        _card("TLMAX1", 1.0, "maximum value"),
        _card("TLMIN2", -1.0, "minimum value"),
        _card("TLMAX2", 1.0, "maximum value"),
        _card("EXTNAME", "CTHETABOUNDS", "Extension name"),
        _card("HDUCLASS", "OGIP", "Format confirms to OGIP standard"),
        _card("HDUVERS", "0.0.0", "Version number of the format"),
        _card("EXTVER", 1, "auto assigned by template parser"),
    ]
    header = fits.Header(cards)
    write_date_keywords(header, tstart, tstop)
    return header


# Comments of the GTI HDU in the Likelihood livetime-cube template (differ from the FT1
# template's in wording only).
_GTI_COMMENTS = {
    "TFORM1": "field data format: 8-byte DOUBLE",
    "TFORM2": "field data format: 8-byte DOUBLE",
    "DATE": "file creation date (UTC)",
    "DATE-OBS": "start date/time of the obs. (UTC)",
    "DATE-END": "end date/time of the obs. (UTC)",
    "OBSERVER": "LAT PI",
    "EXTNAME": "name of this binary table ext.",
    "HDUCLAS1": "ext. contains good time intervals",
    "HDUCLAS2": "ext. contains all science time",
    "TSTART": "mission time of the obs. start",
    "TSTOP": "mission time of the obs. end",
    "MJDREFI": "Int. part of MJD of SC clock start",
    "MJDREFF": "Frac. part of MJD of SC clock start",
    "TIMEUNIT": "units for time-related keywords",
    "CLOCKAPP": "clock drift correction applied?",
    "GPS_OUT": "GPS time was unavailable at any time during this interval",
    "TELAPSE": "time between first GTI START and last GTI STOP",
}


def gti_header_and_rows(gti: Gti, tstart: float, tstop: float) -> fits.BinTableHDU:
    """The merged GTI as a Fermitools GTI HDU (ONTIME, TELAPSE, date keywords)."""
    keys = {
        "DATE": utc_now_date(),
        "DATE-OBS": met_to_date(tstart),
        "DATE-END": met_to_date(tstop),
        "ORIGIN": "LISOC",
        "TSTART": tstart,
        "TSTOP": tstop,
    }
    hdu = gti_hdu(gti, keys)
    for key, comment in _GTI_COMMENTS.items():
        if key in hdu.header:
            set_card(hdu.header, key, hdu.header[key], comment, replace_comment=True)
    return hdu


def _cube_rows(values: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    n = values.shape[1]
    dt = np.dtype([("COSBINS", ">f4", (n,)), ("RA", ">f4"), ("DEC", ">f4")])
    rows = np.empty(values.shape[0], dtype=dt)
    rows["COSBINS"] = values.reshape(values.shape[0], n)
    rows["RA"] = ra.astype(np.float32)
    rows["DEC"] = dec.astype(np.float32)
    return rows


def write_livetime_cube(
    outfile: str | Path,
    cube: LivetimeCube,
    gti: Gti,
    cuts: list[Cut],
    *,
    zmin: float = 0.0,
    zmax: float = 180.0,
    file_version: str = "1",
    clobber: bool = True,
) -> Path:
    """Write the cube with the HDUs and keywords of spec §6.5 (atomic, with checksums)."""
    out = Path(outfile)
    refuse_existing_output(TOOL, out, clobber)
    tstart, tstop = gti.tstart, gti.tstop
    # The cuts written are the first event file's, with its GTI replaced by the merged one.
    merged = [GtiCut(gti, c.ext) if isinstance(c, GtiCut) else c for c in cuts]
    grid = cube.grid
    lo, hi = grid.ctheta_bounds()
    bounds = np.empty(grid.nbins, dtype=[("CTHETA_MIN", ">f4"), ("CTHETA_MAX", ">f4")])
    bounds["CTHETA_MIN"] = lo
    bounds["CTHETA_MAX"] = hi
    creator = f"gtltcube fermipipe-native-{ENGINE_VERSION}"
    gti_table = gti_header_and_rows(gti, tstart, tstop)
    hdus: list[Any] = [
        (primary_header(tstart, tstop, creator, file_version), None),
        (
            exposure_header("EXPOSURE", grid, tstart, tstop, merged, zmin, zmax),
            _cube_rows(cube.exposure, cube.ra, cube.dec),
        ),
        (
            exposure_header("WEIGHTED_EXPOSURE", grid, tstart, tstop, merged, zmin, zmax),
            _cube_rows(cube.weighted, cube.ra, cube.dec),
        ),
        (cthetabounds_header(grid.nbins, tstart, tstop), bounds),
        (gti_table.header, np.asarray(gti_table.data)),
    ]
    return write_tool_output(TOOL, out, hdus)


# ---------------------------------------------------------------------- tool entry


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """gtltcube with Fermitools parameters (plus ``precision=exact|fast``)."""
    p = resolve(PARAMS, params, tool=TOOL)
    if is_none(p["evfile"]):
        # tmin/tmax are only used without an event file, and that path fails in the
        # Fermitools ("GTIs are empty", Fermitools-conda issue #27); we refuse it up front.
        raise ToolError(
            TOOL, "evfile is required (without an event file gtltcube fails: GTIs are empty)"
        )
    if is_none(p["outfile"]):
        raise ToolError(TOOL, "parameter outfile is required")
    for name in ("dcostheta", "binsz", "zmin", "zmax"):
        if p[name] is None:
            raise ToolError(TOOL, f"parameter {name} must be a number, not INDEF")
    evfiles = expand_file_list(p["evfile"], TOOL, "evfile")
    scfiles = expand_file_list(p["scfile"], TOOL, "scfile")
    grid = CubeGrid.from_params(p["binsz"], p["dcostheta"], p["phibins"] or 0)
    zmin, zmax = float(p["zmin"]), float(p["zmax"])
    events = read_event_inputs(evfiles, p["evtable"])
    cube = compute_livetime(
        events.gti,
        scfiles,
        grid,
        sctable=p["sctable"],
        zmin=zmin,
        zmax=zmax,
        precision=p["precision"],
    )
    if cube.n_rows == 0:
        # Our choice: a cube with no FT2 row inside the GTI is all zeros and almost surely
        # the wrong spacecraft file, so it is reported as an empty product.
        raise EmptyProductError(
            TOOL,
            f"no FT2 row overlaps the GTI [{float(events.gti.tstart)!r}, {float(events.gti.tstop)!r}]",
            ", ".join(scfiles),
        )
    out = write_livetime_cube(
        p["outfile"],
        cube,
        events.gti,
        events.cuts,
        zmin=zmin,
        zmax=zmax,
        file_version=p["file_version"],
        clobber=p["clobber"],
    )
    # Data-quality findings (the cube itself is what the Fermitools write).
    warnings = [
        w
        for w in (
            coverage_warning(scfiles, p["sctable"], events.gti),
            *(
                empty_events_warning(f, p["evtable"], g, "its full livetime goes into the cube")
                for f, g in zip(evfiles, events.file_gtis, strict=True)
            ),
        )
        if w is not None
    ]
    return ToolOutcome(
        outputs=[str(out)],
        n_rows=grid.npix,
        warnings=warnings,
        messages=[
            f"gtltcube: nside {grid.nside}, {grid.ncells} bins, {cube.n_rows} FT2 rows, "
            f"precision {p['precision']} -> {out}"
        ],
    )
