"""Native gtbin: CMAP, CCUBE, HEALPIX, LC, PHA1 and PHA2 from FT1 (and FT2) files.

Reproduces evtbin's gtbin (spec section 5) with numpy/astropy/healpy:

* every row of every input file is binned — no GTI or DSS filtering (spec 5.2);
* output GTI = union of the inputs' GTI extensions; EXPOSURE = Σ LIVETIME × fraction of the
  FT2 row inside the GTI over all FT2 files sorted by their first START (ONTIME without FT2);
* headers come from the gtbin templates (:mod:`fermipipe.native.gtbin_templates`) updated with
  the harvested keywords (:mod:`fermipipe.native.gtbin_header`);
* inputs (file lists, raw-row memmaps read in chunks, GTI, FT2, EXPOSURE):
  :mod:`fermipipe.native.gtbin_inputs`; binners: :mod:`fermipipe.native.binning`;
* sky pixels: wcslib's (astropy.wcs, origin 1) floor(p − 0.5); the common projections are
  evaluated in numpy with wcslib deciding every event near a pixel edge
  (:mod:`fermipipe.native.gtbin_wcs`), which keeps astropy.wcs out of most runs;
* output: :func:`fermipipe.fits.table.write_fits` (atomic, FILENAME, checksums).

Choices where the spec is uncertain (documented, tested):

* Events that wcslib cannot project (e.g. the far hemisphere for TAN/SIN) make gtbin abort
  (spec 5.3, from the code); we do the same with a ToolError naming how many events failed,
  instead of silently dropping them.
* ``coordsys=GAL`` for CMAP/CCUBE converts RA/DEC with the current (2016) astro rotation by
  default; the native-only parameter ``galrot=pre2016`` selects the pre-2016 angles that
  Fermitools ≤ 2015 used (and that reproduce the FT1 L/B columns). HEALPIX GAL bins the L/B
  columns, like gtbin, so ``galrot`` does not apply there.
* ``tbinalg=SNR`` is not implemented (its C++ binner is itself unfinished): ToolError.
* HEALPIX ``HPX_REG`` is written after INDXSCHM (no reference with a region exists).

Native-only ``outform=compact`` (CMAP/CCUBE only; default ``fits``): ``outfile`` is written
in the lossless compact form of :mod:`fermipipe.compact_counts` — exactly the file
``compact()`` makes from the ``outform=fits`` product of the same run, whose FILENAME is
``outfile``'s base name — without ever building the dense image: each chunk's flat voxel
indices are kept and counted at the end (memory O(events), not O(voxels)), and
:mod:`fermipipe.compact_write` writes the form. ``expand()`` gives the dense product back
byte for byte.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from fermipipe.compact_write import SparseImage, write_compact_fits
from fermipipe.errors import ToolError
from fermipipe.fits.gti import Gti
from fermipipe.fits.table import write_fits
from fermipipe.native import gtbin_templates as tpl
from fermipipe.native.binning import Binner, file_binner, lin_binner, log_binner
from fermipipe.native.data_checks import NonFiniteTally, coverage_warning, empty_events_warning
from fermipipe.native.gtbin_header import CardList, Harvest, Hdu, table_bytes
from fermipipe.native.gtbin_inputs import (
    TOOL,
    EventFile,
    Spacecraft,
    compute_exposure,
    coverage_warnings,
    expand_file_list,
    harvest_inputs,
    input_gti,
    open_events,
    open_fits,
    read_spacecraft,
    table_of,
)
from fermipipe.native.gtbin_wcs import FAST, FastWcs
from fermipipe.native.output_file import refuse_existing_output
from fermipipe.native.params import ParamSpec, ToolOutcome, is_none, resolve
from fermipipe.native.standard_params import STANDARD_PARAMS

PARAMS: list[ParamSpec] = [
    ParamSpec("evfile", "file", required=True),
    ParamSpec("scfile", "file", "NONE"),
    ParamSpec("outfile", "file", required=True),
    ParamSpec(
        "algorithm", "str", "PHA2", choices=("CCUBE", "CMAP", "LC", "PHA1", "PHA2", "HEALPIX")
    ),
    ParamSpec("ebinalg", "str", "LOG", choices=("FILE", "LIN", "LOG")),
    ParamSpec("emin", "real", 30.0),
    ParamSpec("emax", "real", 200000.0),
    ParamSpec("enumbins", "int"),
    ParamSpec("denergy", "real"),
    ParamSpec("ebinfile", "file", "NONE"),
    ParamSpec("tbinalg", "str", "LIN", choices=("FILE", "LIN", "SNR")),
    ParamSpec("tstart", "real"),
    ParamSpec("tstop", "real"),
    ParamSpec("dtime", "real"),
    ParamSpec("tbinfile", "file", "NONE"),
    ParamSpec("snratio", "real"),
    ParamSpec("lcemin", "real"),
    ParamSpec("lcemax", "real"),
    ParamSpec("nxpix", "int"),
    ParamSpec("nypix", "int"),
    ParamSpec("binsz", "real"),
    ParamSpec("coordsys", "str", "CEL", choices=("CEL", "GAL")),
    ParamSpec("xref", "real"),
    ParamSpec("yref", "real"),
    ParamSpec("axisrot", "real", 0.0),
    ParamSpec("rafield", "str", "RA"),
    ParamSpec("decfield", "str", "DEC"),
    ParamSpec("proj", "str", "AIT"),
    ParamSpec("hpx_ordering_scheme", "str", "RING", choices=("RING", "NESTED")),
    ParamSpec("hpx_order", "int", 3),
    ParamSpec("hpx_ebin", "bool", True),
    ParamSpec("hpx_region", "str", ""),
    ParamSpec("evtable", "str", "EVENTS"),
    ParamSpec("sctable", "str", "SC_DATA"),
    ParamSpec("efield", "str", "ENERGY"),
    ParamSpec("tfield", "str", "TIME"),
    *STANDARD_PARAMS,
    # Native-only: galactic rotation for CMAP/CCUBE coordsys=GAL (see module docstring).
    ParamSpec("galrot", "str", "current", choices=("current", "pre2016")),
    # Native-only, hidden: CMAP/CCUBE written in the compact form (see module docstring).
    ParamSpec("outform", "str", "fits", choices=("fits", "compact")),
]

# ------------------------------------------------------------------------------ binners


def _table_binner(
    file_param: str, name: str, ext: str, lo_col: str, hi_col: str, factor: float
) -> Binner:
    files = expand_file_list(name, file_param)
    table = table_of(open_fits(files[0], file_param), ext, file_param)
    try:
        lo = factor * np.asarray(table.column(lo_col), dtype=np.float64)
        hi = factor * np.asarray(table.column(hi_col), dtype=np.float64)
    except KeyError as exc:
        raise ToolError(TOOL, f"{file_param}: {ext} lacks a column: {exc}", files[0]) from None
    try:
        return file_binner(lo, hi)
    except ValueError as exc:
        raise ToolError(TOOL, f"{file_param}: {exc}", files[0]) from None


def energy_binner(p: Mapping[str, Any]) -> Binner:
    """The energy binner of ebinalg LOG/LIN/FILE (BinConfig::createEnergyBinner)."""
    alg = p["ebinalg"]
    try:
        if alg == "LOG":
            _need(p, "emin", "emax", "enumbins")
            return log_binner(p["emin"], p["emax"], p["enumbins"])
        if alg == "LIN":
            _need(p, "emin", "emax", "denergy")
            return lin_binner(p["emin"], p["emax"], p["denergy"])
    except ValueError as exc:
        raise ToolError(TOOL, f"energy binning ({alg}): {exc}") from None
    if is_none(p["ebinfile"]):
        raise ToolError(TOOL, "ebinalg=FILE needs ebinfile")
    # ENERGYBINS E_MIN/E_MAX are in keV; evtbin multiplies by 1e-3 to get MeV.
    return _table_binner("ebinfile", p["ebinfile"], "ENERGYBINS", "E_MIN", "E_MAX", 1.0e-3)


def time_binner(p: Mapping[str, Any], harvest: Harvest) -> Binner:
    """The time binner of tbinalg LIN/FILE; tstart/tstop INDEF → the events TSTART/TSTOP."""
    alg = p["tbinalg"]
    if alg == "SNR":
        raise ToolError(TOOL, "tbinalg=SNR (constant signal-to-noise binning) is not supported")
    if alg == "FILE":
        if is_none(p["tbinfile"]):
            raise ToolError(TOOL, "tbinalg=FILE needs tbinfile")
        return _table_binner("tbinfile", p["tbinfile"], "TIMEBINS", "START", "STOP", 1.0)
    tstart = p["tstart"] if p["tstart"] is not None else harvest.get_float("TSTART")
    tstop = p["tstop"] if p["tstop"] is not None else harvest.get_float("TSTOP")
    if tstart is None or tstop is None:
        raise ToolError(TOOL, "tstart/tstop are INDEF and the events header has no TSTART/TSTOP")
    _need(p, "dtime")
    if tstop <= tstart:
        raise ToolError(
            TOOL, f"tstop ({float(tstop)!r}) must be greater than tstart ({float(tstart)!r})"
        )
    try:
        return lin_binner(tstart, tstop, p["dtime"])
    except ValueError as exc:
        raise ToolError(TOOL, f"time binning: {exc}") from None


def _need(p: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if p[name] is None:
            raise ToolError(TOOL, f"parameter {name} is required for algorithm {p['algorithm']}")


# ------------------------------------------------------------------------------ sky binning


def flat_index(outer: np.ndarray, inner: np.ndarray, n_inner: int) -> np.ndarray:
    """``outer·n_inner + inner`` (row-major 2-D bin → flat bin) for the entries where both
    bin indices are valid; an index < 0 marks a value outside its binning (dropped)."""
    keep = (outer >= 0) & (inner >= 0)
    return outer[keep] * n_inner + inner[keep]


def accumulate(counts: np.ndarray, flat: np.ndarray) -> None:
    """counts[flat] += 1 for every entry of ``flat`` (repeats counted).

    A dense bincount is fastest when the histogram is small compared with the chunk; for big
    sky maps sorting the chunk (np.unique) avoids a map-sized int64 temporary per chunk.
    """
    if flat.size == 0:
        return
    if counts.size <= 4 * flat.size:
        counts += np.bincount(flat, minlength=counts.size).astype(counts.dtype, copy=False)
    else:
        uniq, n = np.unique(flat, return_counts=True)
        counts[uniq] += n.astype(counts.dtype, copy=False)


def _ctype(name: str, proj: str) -> str:
    """``RA---AIT``: the axis name padded with '-' to 8 − len(proj), then the projection."""
    return name.ljust(8 - len(proj), "-") + proj


@dataclass
class SkyGrid:
    """CMAP/CCUBE spatial grid: WCS keys and a world → (x, y) pixel index mapping."""

    nx: int
    ny: int
    binsz: float
    xref: float
    yref: float
    axisrot: float
    proj: str
    gal: bool
    _wcs: Any = None  # astropy WCS, built only when needed

    @property
    def ctypes(self) -> tuple[str, str]:
        lon, lat = ("GLON", "GLAT") if self.gal else ("RA", "DEC")
        return _ctype(lon, self.proj), _ctype(lat, self.proj)

    def wcs(self) -> Any:
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = list(self.ctypes)
        w.wcs.crpix = [(self.nx + 1) / 2.0, (self.ny + 1) / 2.0]
        w.wcs.crval = [self.xref, self.yref]
        w.wcs.cdelt = [-self.binsz, self.binsz]
        w.wcs.cunit = ["deg", "deg"]
        # CROTA2 as astro::SkyProj gives it to wcslib (altlin CROTA mode).
        w.wcs.crota = [0.0, self.axisrot]
        try:
            w.wcs.set()
        except Exception as exc:  # wcslib reports unknown projections, bad parameters
            raise ToolError(TOOL, f"proj={self.proj}: invalid projection ({exc})") from None
        return w

    def pixel_index(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, int]:
        """Flat pixel index y·nx + x (−1 outside the map) and the number of unprojectable events.

        wcslib 1-based pixel p → index floor(p − 0.5) for 0.5 ≤ p < n + 0.5 (spec 5.3). The
        common projections are computed in numpy and only the events close to a pixel edge
        or a discontinuity go through astropy.wcs (see :mod:`gtbin_wcs`); the others use
        astropy.wcs for all events.
        """
        if self.proj in FAST:
            fast = FastWcs(
                self.proj,
                ((self.nx + 1) / 2.0, (self.ny + 1) / 2.0),
                (self.xref, self.yref),
                (-self.binsz, self.binsz),
                self.axisrot,
            )
            px, py, suspect = fast.world2pix(lon, lat)
            if suspect.any():
                px[suspect], py[suspect] = self._wcslib(lon[suspect], lat[suspect])
        else:
            px, py = self._wcslib(lon, lat)
        bad = ~(np.isfinite(px) & np.isfinite(py))
        ok = (~bad) & (px >= 0.5) & (px < self.nx + 0.5) & (py >= 0.5) & (py < self.ny + 0.5)
        ix = np.floor(px[ok] - 0.5).astype(np.int64)
        iy = np.floor(py[ok] - 0.5).astype(np.int64)
        flat = np.full(lon.shape, -1, dtype=np.int64)
        flat[ok] = iy * self.nx + ix
        return flat, int(bad.sum())

    def _wcslib(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._wcs is None:
            object.__setattr__(self, "_wcs", self.wcs())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            px, py = self._wcs.wcs_world2pix(lon, lat, 1)
        return np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)


def _sky_lonlat(ev: EventFile, start: int, stop: int, p: Mapping[str, Any]) -> tuple[Any, Any]:
    ra = ev.column(p["rafield"], start, stop)
    dec = ev.column(p["decfield"], start, stop)
    if p["coordsys"] != "GAL":
        return ra, dec
    from fermipipe.fits.skycoords import cel_to_gal

    with np.errstate(invalid="ignore"):  # NaN coordinates are reported by the caller
        return cel_to_gal(ra, dec, pre2016=p["galrot"] == "pre2016")


def bin_sky(
    events: Sequence[EventFile], p: Mapping[str, Any], grid: SkyGrid, ebinner: Binner | None
) -> np.ndarray:
    """Counts cube (ne, ny, nx) int32 for CMAP (ne = 1) / CCUBE."""
    ne = 1 if ebinner is None else len(ebinner)
    counts = np.zeros(ne * grid.nx * grid.ny, dtype=np.int32)  # the image is int32 (BITPIX 32)
    for flat in _sky_flat_indices(events, p, grid, ebinner):
        accumulate(counts, flat)
    return counts.reshape(ne, grid.ny, grid.nx)


def bin_sky_sparse(
    events: Sequence[EventFile], p: Mapping[str, Any], grid: SkyGrid, ebinner: Binner | None
) -> SparseImage:
    """The counts of :func:`bin_sky` as their nonzero voxels, never built dense; shaped as
    the image is written: (ny, nx) for CMAP, (ne, ny, nx) for CCUBE."""
    shape = (grid.ny, grid.nx) if ebinner is None else (len(ebinner), grid.ny, grid.nx)
    parts = list(_sky_flat_indices(events, p, grid, ebinner))
    return SparseImage.from_flat(parts, shape)


def _sky_flat_indices(
    events: Sequence[EventFile], p: Mapping[str, Any], grid: SkyGrid, ebinner: Binner | None
) -> Iterator[np.ndarray]:
    """Per chunk of events, the flat voxel index (energy bin · npix + pixel) of every event
    that falls in the cube; aborts on events that cannot be projected."""
    npix = grid.nx * grid.ny
    if grid.proj not in FAST:
        grid.wcs()  # validate the projection before reading any event
    for ev in events:
        for start, stop in ev.chunks():
            lon, lat = _sky_lonlat(ev, start, stop, p)
            # Every event is projected, whatever its energy: gtbin aborts on any event that
            # cannot be projected.
            flat, nbad = grid.pixel_index(lon, lat)
            n_nonfinite = int(np.count_nonzero(~(np.isfinite(lon) & np.isfinite(lat))))
            if n_nonfinite:  # not a projection problem: say what is wrong with the data
                raise ToolError(
                    TOOL,
                    f"{n_nonfinite} event(s) have NaN or infinite {p['rafield']}/"
                    f"{p['decfield']}: they cannot be binned (select them out first)",
                    ev.name,
                )
            if nbad:
                raise ToolError(
                    TOOL,
                    f"{nbad} event(s) cannot be projected with proj={grid.proj} around "
                    f"({grid.xref}, {grid.yref}); gtbin aborts on such events — use an "
                    "all-sky projection (AIT, CAR, …) or select a smaller region first",
                    ev.name,
                )
            if ebinner is not None:
                eidx = ebinner.index(ev.column(p["efield"], start, stop))
                yield flat_index(eidx, flat, npix)
            else:
                yield flat[flat >= 0]


# ------------------------------------------------------------------------------ HEALPix


@dataclass
class HpxRegion:
    """hpx_region DISK(lon,lat,radius) or DISK_INC(lon,lat,radius,fact)."""

    kind: str
    lon: float
    lat: float
    radius: float
    fact: int = 4

    def text(self) -> str:
        """The region re-formatted with %f (spec 5.4)."""
        vals = [self.lon, self.lat, self.radius]
        body = ",".join(f"{v:f}" for v in vals)
        if self.kind == "DISK_INC":
            body += f",{self.fact:d}"
        return f"{self.kind}({body})"


def parse_region(text: str) -> HpxRegion | None:
    body = text.strip()
    if not body:
        return None
    upper = body.upper().replace(" ", "")
    for kind, nargs in (("DISK_INC", 4), ("DISK", 3)):
        if upper.startswith(kind + "(") and upper.endswith(")"):
            parts = upper[len(kind) + 1 : -1].split(",")
            try:
                vals = [float(x) for x in parts]
            except ValueError:
                break
            if len(vals) != nargs:
                break
            fact = int(vals[3]) if nargs == 4 else 4
            return HpxRegion(kind, vals[0], vals[1], vals[2], fact)
    raise ToolError(
        TOOL, f"hpx_region {text!r} is not DISK(lon,lat,radius) or DISK_INC(lon,lat,radius,fact)"
    )


def bin_healpix(
    events: Sequence[EventFile], p: Mapping[str, Any], ebinner: Binner | None
) -> tuple[np.ndarray, float, float]:
    """HEALPix counts (nbins, npix) float64, plus the energy extrema for the 1-bin EBOUNDS.

    Quirk reproduced (HealpixMap::binInput): the running minimum energy restarts at the
    first event of every file, the maximum starts at 0 and runs over all files.
    """
    import healpy as hp

    nside = 2 ** p["hpx_order"]
    npix = 12 * nside * nside
    nest = p["hpx_ordering_scheme"] == "NESTED"
    nbins = 1 if ebinner is None else len(ebinner)
    counts = np.zeros(nbins * npix, dtype=np.int64)
    lon_col, lat_col = ("L", "B") if p["coordsys"] == "GAL" else ("RA", "DEC")
    emin, emax = 0.0, 0.0
    for ev in events:
        first = True
        for start, stop in ev.chunks():
            energy = ev.column(p["efield"], start, stop)
            if energy.size:
                if first:
                    emin = float(energy[0])
                    first = False
                emin = min(emin, float(energy.min()))
                emax = max(emax, float(energy.max()))
            lon = ev.column(lon_col, start, stop)
            lat = ev.column(lat_col, start, stop)
            pix = hp.ang2pix(nside, np.radians(90.0 - lat), np.radians(lon), nest=nest)
            if nbins > 1:
                eidx = ebinner.index(energy)  # type: ignore[union-attr]
                keep = eidx >= 0
                flat = eidx[keep] * npix + pix[keep]
            else:
                flat = pix
            accumulate(counts, flat)
    return counts.reshape(nbins, npix).astype(np.float64), emin, emax


def _healpix_pixels(p: Mapping[str, Any], region: HpxRegion) -> np.ndarray:
    import healpy as hp

    nside = 2 ** p["hpx_order"]
    nest = p["hpx_ordering_scheme"] == "NESTED"
    vec = hp.ang2vec(region.lon, region.lat, lonlat=True)
    return hp.query_disc(
        nside,
        vec,
        math.radians(region.radius),
        inclusive=region.kind == "DISK_INC",
        fact=region.fact,
        nest=nest,
    )


# ------------------------------------------------------------------------------ 1-d binning


def bin_1d(
    events: Sequence[EventFile],
    column: str,
    binner: Binner,
    *,
    second: tuple[str, Binner] | None = None,
) -> np.ndarray:
    """Counts of ``column`` in ``binner`` (and, for PHA2, × ``second`` binner) as int64."""
    n1 = len(binner)
    n2 = 1 if second is None else len(second[1])
    counts = np.zeros(n1 * n2, dtype=np.int64)
    for ev in events:
        for start, stop in ev.chunks():
            idx = binner.index(ev.column(column, start, stop))
            if second is not None:
                idx2 = second[1].index(ev.column(second[0], start, stop))
                flat = flat_index(idx, idx2, n2)
            else:
                flat = idx[idx >= 0]
            accumulate(counts, flat)
    return counts.reshape(n1, n2) if second is not None else counts


def stat_err(counts: np.ndarray) -> np.ndarray:
    """DataProduct::calcStatErr: 1 + √(N + 0.75) for N ≤ 10 else √N (float64)."""
    c = np.asarray(counts, dtype=np.float64)
    return np.where(c <= 10.0, 1.0 + np.sqrt(0.75 + c), np.sqrt(c))


# ------------------------------------------------------------------------------ products


def _gti_hdu(template: Sequence[str], gti: Gti) -> Hdu:
    header = CardList(template)
    data, width = table_bytes(
        [("START", ">f8", np.asarray(gti.start)), ("STOP", ">f8", np.asarray(gti.stop))], len(gti)
    )
    header.set_int("NAXIS1", width)
    header.set_int("NAXIS2", len(gti))
    return Hdu(header, data)


def _ebounds_hdu(template: Sequence[str], lo: np.ndarray, hi: np.ndarray, detchans: bool) -> Hdu:
    """EBOUNDS: CHANNEL 1..n (I), E_MIN/E_MAX = float32(1000·MeV) in keV (spec 5.2)."""
    n = int(lo.size)
    header = CardList(template)
    data, width = table_bytes(
        [
            ("CHANNEL", ">i2", np.arange(1, n + 1)),
            ("E_MIN", ">f4", (1000.0 * np.asarray(lo, dtype=np.float64)).astype(np.float32)),
            ("E_MAX", ">f4", (1000.0 * np.asarray(hi, dtype=np.float64)).astype(np.float32)),
        ],
        n,
    )
    header.set_int("NAXIS1", width)
    header.set_int("NAXIS2", n)
    if detchans:
        header.set_int("DETCHANS", n)
    return Hdu(header, data)


def _finish(harvest: Harvest, hdus: Sequence[Hdu]) -> None:
    for hdu in hdus:
        harvest.apply(hdu.header)


def _set_sky_keys(header: CardList, grid: SkyGrid) -> None:
    header.set_int("NAXIS1", grid.nx)
    header.set_int("NAXIS2", grid.ny)
    c1, c2 = grid.ctypes
    header.set_str("CTYPE1", c1)
    header.set_double("CRPIX1", (grid.nx + 1) / 2.0)
    header.set_double("CRVAL1", grid.xref)
    header.set_double("CDELT1", -grid.binsz)
    header.set_str("CTYPE2", c2)
    header.set_double("CRPIX2", (grid.ny + 1) / 2.0)
    header.set_double("CRVAL2", grid.yref)
    header.set_double("CDELT2", grid.binsz)
    header.set_double("CROTA2", grid.axisrot)


def make_sky(
    p: Mapping[str, Any],
    events: Sequence[EventFile],
    gti: Gti,
    sc: Spacecraft | None,
    *,
    sparse: bool = False,
) -> tuple[list[Hdu], list[str], int]:
    """CMAP (primary image + GTI) or CCUBE (primary cube + EBOUNDS + GTI); ``sparse``: the
    image as a :class:`SparseImage` (for ``outform=compact``), never built dense."""
    cube = p["algorithm"] == "CCUBE"
    _need(p, "nxpix", "nypix", "binsz", "xref", "yref")
    if p["nxpix"] < 1 or p["nypix"] < 1 or not p["binsz"] > 0:
        raise ToolError(TOOL, "nxpix and nypix must be at least 1 and binsz positive")
    proj = str(p["proj"]).strip().upper()
    if not 1 <= len(proj) <= 3 or not proj.isalnum():
        raise ToolError(TOOL, f"proj={p['proj']!r} is not a projection code (AIT, CAR, TAN, …)")
    grid = SkyGrid(
        p["nxpix"], p["nypix"], p["binsz"], p["xref"], p["yref"], p["axisrot"], proj,
        p["coordsys"] == "GAL",
    )  # fmt: skip
    ebinner = energy_binner(p) if cube else None
    harvest = harvest_inputs(events, ("PRIMARY", "GTI", "EVENTS"))
    messages: list[str] = []
    _time_keywords(harvest, gti, sc, None, messages)
    primary = CardList(tpl.CCUBE_PRIMARY if cube else tpl.CMAP_PRIMARY)
    _set_sky_keys(primary, grid)
    if sparse:
        image = bin_sky_sparse(events, p, grid, ebinner)
        total = image.total
        hdus = [Hdu(primary, image)]
    else:
        counts = bin_sky(events, p, grid, ebinner)
        total = int(counts.sum(dtype=np.int64))
        counts.byteswap(inplace=True)  # to big-endian in place: no second map-sized array
        hdus = [Hdu(primary, counts.view(counts.dtype.newbyteorder(">")))]
    if cube:
        assert ebinner is not None
        primary.set_int("NAXIS3", len(ebinner))
        primary.set_str("CTYPE3", "Energy")
        primary.set_int("CRPIX3", 1)
        primary.set_double("CRVAL3", float(ebinner.lo[0]))
        primary.set_double("CDELT3", float(ebinner.hi[0] - ebinner.lo[0]))
        hdus.append(_ebounds_hdu(tpl.CCUBE_EBOUNDS, ebinner.lo, ebinner.hi, detchans=False))
    gti_hdu = _gti_hdu(tpl.CCUBE_GTI if cube else tpl.CMAP_GTI, gti)
    hdus.append(gti_hdu)
    harvest.finish(TOOL)
    _finish(harvest, hdus)
    harvest.append_dss(primary)
    harvest.append_history(primary, "EVENTS", TOOL)
    harvest.append_history(gti_hdu.header, "GTI", TOOL)
    return hdus, messages, total


def make_healpix(
    p: Mapping[str, Any], events: Sequence[EventFile], gti: Gti, sc: Spacecraft | None
) -> tuple[list[Hdu], list[str], int]:
    """HEALPIX: primary (no data) + SKYMAP + EBOUNDS + GTI (spec 5.4)."""
    order = p["hpx_order"]
    if order is None or not 0 <= order <= 12:
        raise ToolError(TOOL, f"hpx_order={order!r} must be between 0 and 12")
    region = parse_region(p["hpx_region"] or "")
    ebinner = energy_binner(p) if p["hpx_ebin"] else None
    single = ebinner is None or len(ebinner) == 1
    harvest = harvest_inputs(events, ("PRIMARY", "GTI", "EBOUNDS", "EVENTS"))
    messages: list[str] = []
    _time_keywords(harvest, gti, sc, None, messages)
    counts, emin, emax = bin_healpix(events, p, None if single else ebinner)
    nbins = counts.shape[0]
    nside = 2**order

    primary = CardList(tpl.HEALPIX_PRIMARY)
    skymap = CardList(tpl.HEALPIX_SKYMAP)
    columns: list[tuple[str, str, np.ndarray]] = []
    if region is not None:
        pix = np.asarray(_healpix_pixels(p, region), dtype=np.int64)
        columns.append(("PIX", ">i4", pix))
        rows = counts[:, pix]
    else:
        rows = counts
    for k in range(nbins):
        columns.append((f"CHANNEL{k + 1}", ">f8", rows[k]))
    nrows = int(rows.shape[1])
    data, width = table_bytes(columns, nrows)
    skymap.set_int("NAXIS1", width)
    skymap.set_int("NAXIS2", nrows)
    skymap.set_int("TFIELDS", len(columns))
    if p["coordsys"] == "CEL":
        skymap.set_double("EQUINOX", 2000.0, "Equinox of RA & DEC specifications")
    skymap.set_str("COORDSYS", p["coordsys"], "")
    skymap.set_str("ORDERING", p["hpx_ordering_scheme"], "")
    skymap.set_int("ORDER", order, "")
    skymap.set_int("NSIDE", nside, "")
    skymap.set_int("FIRSTPIX", 0, "")
    skymap.set_int("LASTPIX", 12 * nside * nside - 1, "")
    skymap.set_str("INDXSCHM", "EXPLICIT" if region is not None else "IMPLICIT", "")
    if region is not None:
        skymap.set_str("HPX_REG", region.text(), "")
    for k, (name, _, _) in enumerate(columns, start=1):
        skymap.set_str(f"TTYPE{k}", name, "label for field")
        skymap.set_str(f"TFORM{k}", "J" if name == "PIX" else "D", "format of field")
        if name == "PIX":
            skymap.set_int(f"TNULL{k}", -2147483648, "")

    if single:
        # One energy channel: every event counted, EBOUNDS = [min E, max E] (spec 5.4).
        elo, ehi = np.array([emin]), np.array([emax])
    else:
        assert ebinner is not None
        elo, ehi = ebinner.lo, ebinner.hi
    hdus = [
        Hdu(primary),
        Hdu(skymap, data),
        _ebounds_hdu(tpl.HEALPIX_EBOUNDS, elo, ehi, detchans=False),
        _gti_hdu(tpl.HEALPIX_GTI, gti),
    ]
    harvest.finish(TOOL)
    _finish(harvest, hdus)
    # Fermitools 2.4 writes SKYMAP TELESCOP/INSTRUME without a comment (value harvested).
    for key in ("TELESCOP", "INSTRUME"):
        card = harvest.records.get(key)
        if card is not None:
            skymap.set_str(key, str(card.value), "")
    harvest.append_history(skymap, "EVENTS", TOOL)
    harvest.append_dss(skymap)
    harvest.append_dss(primary)
    harvest.append_history(hdus[3].header, "GTI", TOOL)
    return hdus, messages, int(counts.sum())


def _time_keywords(
    harvest: Harvest, gti: Gti, sc: Spacecraft | None, binner: Binner | None, messages: list[str]
) -> None:
    """DataProduct::adjustTimeKeywords: TSTART/TSTOP (with a time binner), EXPOSURE, ONTIME."""
    if binner is not None:
        new_start = float(binner.lo[0])
        old = harvest.get_float("TSTART")
        if old is not None:
            new_start = max(old, new_start)
        harvest.update_double("TSTART", new_start)
        new_stop = float(binner.hi[-1])
        old = harvest.get_float("TSTOP")
        if old is not None:
            new_stop = min(old, new_stop)
        harvest.update_double("TSTOP", new_stop)
    coverage_warnings(gti, sc, messages)
    exposure = compute_exposure(gti, sc, messages)
    harvest.update_double("EXPOSURE", exposure, "Integration time (in seconds) for the PHA data")
    harvest.update_double("ONTIME", gti.ontime, "Sum of all Good Time Intervals")


def _bins_gti(binner: Binner) -> Gti:
    return Gti.from_intervals(binner.lo, binner.hi)


def make_lc(
    p: Mapping[str, Any], events: Sequence[EventFile], gti: Gti, sc: Spacecraft | None
) -> tuple[list[Hdu], list[str], int]:
    """LC: primary + RATE + GTI, GTI reduced to the bins (spec 5.5)."""
    harvest = harvest_inputs(events, ("PRIMARY", "GTI", "EVENTS"))
    binner = time_binner(p, harvest)
    gti = gti & _bins_gti(binner)  # DataProduct::adjustGti
    messages: list[str] = []
    _time_keywords(harvest, gti, sc, binner, messages)
    counts = bin_1d(events, p["tfield"], binner)
    n = len(binner)
    rate = CardList(tpl.LC_RATE)
    data, width = table_bytes(
        [
            ("TIME", ">f8", 0.5 * (binner.lo + binner.hi)),
            ("TIMEDEL", ">f8", binner.hi - binner.lo),
            ("COUNTS", ">i4", counts),
            ("ERROR", ">f4", stat_err(counts).astype(np.float32)),
        ],
        n,
    )
    rate.set_int("NAXIS1", width)
    rate.set_int("NAXIS2", n)
    hdus = [Hdu(CardList(tpl.LC_PRIMARY)), Hdu(rate, data), _gti_hdu(tpl.LC_GTI, gti)]
    harvest.finish(TOOL)
    _finish(harvest, hdus)
    harvest.append_dss(rate)
    harvest.append_history(rate, "EVENTS", TOOL)
    harvest.append_history(hdus[2].header, "GTI", TOOL)
    return hdus, messages, int(counts.sum())


def make_pha(
    p: Mapping[str, Any], events: Sequence[EventFile], gti: Gti, sc: Spacecraft | None
) -> tuple[list[Hdu], list[str], int]:
    """PHA1 (one spectrum) or PHA2 (one spectrum per time bin) + EBOUNDS + GTI (spec 5.6)."""
    pha2 = p["algorithm"] == "PHA2"
    if sc is None:
        raise ToolError(
            TOOL,
            "Binning LAT data for spectral analysis requires a spacecraft file (scfile) "
            "to compute the exposure",
        )
    ebinner = energy_binner(p)
    harvest = harvest_inputs(events, ("PRIMARY", "GTI", "EBOUNDS", "EVENTS"))
    tbinner = time_binner(p, harvest) if pha2 else None
    messages: list[str] = []
    _time_keywords(harvest, gti, sc, tbinner, messages)
    n = len(ebinner)
    spectrum = CardList(tpl.PHA2_SPECTRUM if pha2 else tpl.PHA1_SPECTRUM)
    if tbinner is not None:
        counts2 = bin_1d(events, p["tfield"], tbinner, second=(p["efield"], ebinner))
        nt = len(tbinner)
        exposures = np.array(
            [
                compute_exposure(gti & Gti.from_intervals([lo], [hi]), sc, [])
                for lo, hi in zip(tbinner.lo, tbinner.hi, strict=True)
            ]
        )
        channels = np.tile(np.arange(1, n + 1, dtype=np.int16), (nt, 1))
        data, width = table_bytes(
            [
                ("TSTART", ">f8", tbinner.lo),
                ("TELAPSE", ">f8", tbinner.hi - tbinner.lo),
                ("SPEC_NUM", ">i2", np.arange(1, nt + 1)),
                ("CHANNEL", f"({n},)>i2", channels),
                ("COUNTS", f"({n},)>i4", counts2),
                ("STAT_ERR", f"({n},)>f4", stat_err(counts2).astype(np.float32)),
                ("ROWID", "S1", np.zeros(nt, dtype="S1")),
                ("EXPOSURE", ">f8", exposures),
            ],
            nt,
        )
        spectrum.set_str("TFORM4", f"{n}I")
        spectrum.set_str("TFORM5", f"{n}J")
        spectrum.set_str("TFORM6", f"{n}E")
        nrows = nt
        total = int(counts2.sum())
        template = tpl.PHA2_EBOUNDS, tpl.PHA2_GTI, tpl.PHA2_PRIMARY
    else:
        counts = bin_1d(events, p["efield"], ebinner)
        data, width = table_bytes(
            [
                ("CHANNEL", ">i2", np.arange(1, n + 1)),
                ("COUNTS", ">i4", counts),
                ("STAT_ERR", ">f4", stat_err(counts).astype(np.float32)),
            ],
            n,
        )
        nrows = n
        total = int(counts.sum())
        template = tpl.PHA1_EBOUNDS, tpl.PHA1_GTI, tpl.PHA1_PRIMARY
    spectrum.set_int("NAXIS1", width)
    spectrum.set_int("NAXIS2", nrows)
    spectrum.set_int("DETCHANS", n)
    hdus = [
        Hdu(CardList(template[2])),
        Hdu(spectrum, data),
        _ebounds_hdu(template[0], ebinner.lo, ebinner.hi, detchans=True),
        _gti_hdu(template[1], gti),
    ]
    harvest.finish(TOOL)
    _finish(harvest, hdus)
    harvest.append_dss(spectrum)
    harvest.append_history(spectrum, "EVENTS", TOOL)
    harvest.append_history(hdus[3].header, "GTI", TOOL)
    return hdus, messages, total


_MAKERS = {
    "CMAP": make_sky,
    "CCUBE": make_sky,
    "HEALPIX": make_healpix,
    "LC": make_lc,
    "PHA1": make_pha,
    "PHA2": make_pha,
}


def write_output(path: str, hdus: Sequence[Hdu]) -> None:
    """Write atomically (temporary file renamed on success) with FILENAME and checksums.

    fits.table.write_fits streams the data (no file-sized copy) and computes CHECKSUM/DATASUM
    while writing; the template card images are kept byte for byte. A :class:`SparseImage`
    primary is written in the compact form of that same file (FILENAME = ``path``'s name).
    """
    specs = [(fits.Header.fromstring(h.header.tobytes().decode("ascii")), h.data) for h in hdus]
    if isinstance(hdus[0].data, SparseImage):
        write_compact_fits(path, specs, filename=os.path.basename(path))
    else:
        write_fits(path, specs, filename=os.path.basename(path))


def _nonfinite(ev: EventFile, p: Mapping[str, Any]) -> NonFiniteTally:
    """NaN/inf values in the columns gtbin reads (data_checks), one pass over the file."""
    names = [p["efield"], p["rafield"], p["decfield"], p["tfield"]]
    if p["algorithm"] == "HEALPIX" and p["coordsys"] == "GAL":
        names += ["L", "B"]
    names = [n for n in dict.fromkeys(names) if ev.events.has_column(n)]
    tally = NonFiniteTally(ev.name)
    for start, stop in ev.chunks():
        columns = {n.upper(): ev.column(n, start, stop) for n in names}
        tally.add_columns(stop - start, columns, None)  # binning drops or misplaces them
    return tally


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """gtbin with Fermitools-style parameters (see PARAMS); returns the output file."""
    p = resolve(PARAMS, params, tool=TOOL)
    compact = p["outform"] == "compact"
    if compact and p["algorithm"] not in ("CMAP", "CCUBE"):
        raise ToolError(
            TOOL, f"outform=compact is for algorithm=CMAP or CCUBE, not {p['algorithm']}"
        )
    outfile = p["outfile"]
    refuse_existing_output(TOOL, outfile, p["clobber"])
    evfiles = expand_file_list(p["evfile"], "evfile")
    scfiles = [] if is_none(p["scfile"]) else expand_file_list(p["scfile"], "scfile")
    events = open_events(evfiles, p["evtable"])
    gti = input_gti(events)
    sc = read_spacecraft(scfiles, p["sctable"]) if scfiles else None
    nonfinite = [_nonfinite(ev, p) for ev in events]
    if compact:
        hdus, messages, total = make_sky(p, events, gti, sc, sparse=True)
    else:
        hdus, messages, total = _MAKERS[p["algorithm"]](p, events, gti, sc)
    if sc is not None:
        messages = sc.messages + messages
    write_output(outfile, hdus)
    messages.append(f"gtbin {p['algorithm']}: {total} events binned into {outfile}")
    # Data-quality findings (the product is what the Fermitools write).
    warnings = [] if sc is None else [coverage_warning(scfiles, p["sctable"], gti)]
    warnings += [w for tally in nonfinite for w in tally.warnings()]
    warnings += [
        empty_events_warning(ev.name, p["evtable"], gti, "the product has its time, no counts")
        for ev in events
        if ev.nrows == 0
    ]
    return ToolOutcome(
        outputs=[outfile],
        n_rows=total,
        messages=messages,
        warnings=[w for w in warnings if w is not None],
    )
