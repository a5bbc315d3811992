"""Native gtexpcube2: binned exposure maps (WCS cube or HEALPix table) from a livetime cube.

Behaviour (spec §14.1–14.5; Likelihood:src/gtexpcube2/gtexpcube2.cxx, BinnedExposure*.cxx,
ExposureCube.h, AppHelpers.cxx; dataSubselector Cuts):

* Energy planes from emin/emax/enumbins, an ebinfile (ebinalg=FILE) or the cmap's EBOUNDS;
  edisp_bins extra planes at each end; bincalc EDGE (n+1 edges) or CENTER (n geometric
  centres). ENERGIES table in MeV.
* Sky grid: cmap=none → WCS from nxpix, nypix, binsz, xref, yref, axisrot, proj, coordsys
  (all required); a WCS cmap → its grid, or the parameters when they are all given (CRPIX =
  n/2 + 0.5, CDELT = ∓binsz); cmap=hpx or a HEALPix cmap → HEALPix with the hidden
  hpx_order / hpx_ordering_scheme / coordsys, which override the cmap's unless INDEF.
* Exposure per pixel: nearest livetime-cube cell, Σ over cosθ (and phi) bins of livetime ×
  effective area, efficiency-corrected, float32-accumulated over the event types of
  ``evtype`` in ascending order (:mod:`fermipipe.native.expcube_kernel`). Computed once per
  distinct cell and gathered onto the grid (spec §14.7).
* Output: WCS float32 PRIMARY cube (or empty PRIMARY + HPXEXPOSURES), ENERGIES, the livetime
  cube's GTI; time keywords copied from the cube's EXPOSURE header; DSS from the cmap (from
  the cube when cmap is none/hpx) with the IRF's EVENT_CLASS/EVENT_TYPE bit masks (unless
  irfs=CALDB) and IRF_VERSION.

Choices where the C++ fails or is silent: irfs=CALDB needs a counts map with an EVENT_CLASS
DSS (the real tool then also fails); evtype is required unless the cmap's DSS gives it; a
phi-binned cube with a phi-less IRF uses modulation 1 (as the C++ does).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.dates import utc_now_date
from fermipipe.fits.dss import BitMaskCut, Cut, GenericCut, read_dss, read_dss_file, write_dss
from fermipipe.fits.gti import Gti, gti_rows
from fermipipe.fits.header import Card, Header
from fermipipe.fits.keywords import bintable_keywords
from fermipipe.irf.caldb import (
    CaldbNotFoundError,
    IrfNotFoundError,
    event_class_info,
    event_class_table,
    event_type_table,
    find_caldb,
    pass_version,
    resolve_irf,
)
from fermipipe.native.expcube_kernel import (
    cell_exposures,
    distinct_cells,
    read_livetime_cube,
)
from fermipipe.native.expcube_sky import (
    WcsGeometry,
    healpix_cells,
    wcs_cells,
)
from fermipipe.native.output_file import refuse_existing_output, write_tool_output
from fermipipe.native.params import ParamSpec, ToolOutcome, is_none, resolve
from fermipipe.native.standard_params import STANDARD_PARAMS

__all__ = ["PARAMS", "plane_energies", "run"]

TOOL = "gtexpcube2"

PARAMS: list[ParamSpec] = [
    ParamSpec("infile", "file", "", required=True),
    ParamSpec("cmap", "file", "", required=True),
    ParamSpec("outfile", "file", "", required=True),
    ParamSpec("irfs", "str", "CALDB"),
    ParamSpec("evtype", "int", None),
    ParamSpec("edisp_bins", "int", 0),
    ParamSpec("nxpix", "int", None),
    ParamSpec("nypix", "int", None),
    ParamSpec("binsz", "real", None),
    ParamSpec("coordsys", "str", "GAL", choices=("CEL", "GAL")),
    ParamSpec("xref", "real", None),
    ParamSpec("yref", "real", None),
    ParamSpec("axisrot", "real", 0.0),
    ParamSpec("proj", "str", "CAR"),
    ParamSpec("ebinalg", "str", "LOG", choices=("LOG", "FILE")),
    ParamSpec("emin", "real", None),
    ParamSpec("emax", "real", None),
    ParamSpec("enumbins", "int", None),
    ParamSpec("ebinfile", "str", "NONE"),
    ParamSpec("hpx_ordering_scheme", "str", "RING", choices=("RING", "NESTED")),
    ParamSpec("hpx_order", "int", 6),
    ParamSpec("bincalc", "str", "EDGE", choices=("EDGE", "CENTER")),
    ParamSpec("ignorephi", "bool", False),
    ParamSpec("thmax", "real", 180.0),
    ParamSpec("thmin", "real", 0.0),
    ParamSpec("table", "str", "EXPOSURE"),  # in the .par file, never read by gtexpcube2
    *STANDARD_PARAMS,
    # Native only: explicit CALDB root (else $CALDB, then a Fermitools install).
    ParamSpec("caldb", "str", ""),
]


def _card(key: str, value: Any, comment: str | None = None) -> Card:
    return Card.from_value(key, value, comment)


# ---------------------------------------------------------------------- energies


def _read_ebounds(path: str, ext: str) -> list[float]:
    """E_MIN/1e3 of every row, then the last E_MAX/1e3 (keV → MeV, float32 values)."""
    from fermipipe.fits.table import FitsFile

    try:
        with FitsFile(path) as ff:
            table = ff.table(ext)
            lo = np.asarray(table.column("E_MIN"), dtype=np.float64)
            hi = np.asarray(table.column("E_MAX"), dtype=np.float64)
    except (KeyError, ValueError, OSError) as exc:
        raise ToolError(TOOL, f"cannot read {ext} (E_MIN, E_MAX): {exc}", path) from None
    if lo.size == 0:
        raise ToolError(TOOL, f"{ext} has no rows", path)
    return [float(e) / 1e3 for e in lo] + [float(hi[-1]) / 1e3]


def expand_energies(energies: list[float], edisp_bins: int) -> list[float]:
    """FitUtils::expand_energies: ``edisp_bins`` planes at each end, stepping in log10 by the
    first / last step."""
    n = len(energies)
    if n < 2 or edisp_bins <= 0:
        return list(energies)
    out = [0.0] * (n + 2 * edisp_bins)
    out[edisp_bins : edisp_bins + n] = energies
    lo = math.log10(energies[0])
    hi = math.log10(energies[-1])
    step_lo = lo - math.log10(energies[1])
    step_hi = hi - math.log10(energies[n - 2])
    for i in range(1, edisp_bins + 1):
        lo += step_lo
        hi += step_hi
        out[edisp_bins - i] = math.pow(10.0, lo)
        out[n + edisp_bins + i - 1] = math.pow(10.0, hi)
    return out


def have_user_energies(p: Mapping[str, Any]) -> bool:
    if p["ebinalg"] == "FILE":
        return not is_none(p["ebinfile"])
    return all(p[k] is not None for k in ("emin", "emax", "enumbins"))


def plane_energies(p: Mapping[str, Any], cmap: str | None) -> list[float]:
    """Energies of the planes (MeV): generated, expanded by edisp_bins, then EDGE/CENTER."""
    if have_user_energies(p):
        if p["ebinalg"] == "FILE":
            energies = _read_ebounds(p["ebinfile"], "ENERGYBINS")
        else:
            emin, emax, n = float(p["emin"]), float(p["emax"]), int(p["enumbins"])
            if not (emin > 0 and emax > emin and n > 0):
                raise ToolError(
                    TOOL, f"need 0 < emin < emax and enumbins > 0 ({emin}, {emax}, {n})"
                )
            step = math.log(emax / emin) / n
            energies = [emin * math.exp(step * k) for k in range(n + 1)]
    elif cmap is not None:
        energies = _read_ebounds(cmap, "EBOUNDS")
    else:
        raise ToolError(
            TOOL,
            "emin, emax and enumbins (or ebinalg=FILE with an ebinfile) are required "
            "without a counts map",
        )
    energies = expand_energies(energies, max(0, int(p["edisp_bins"] or 0)))
    if p["bincalc"] == "CENTER":
        energies = [math.sqrt(energies[k] * energies[k + 1]) for k in range(len(energies) - 1)]
    return energies


# ---------------------------------------------------------------------- IRFs and DSS


@dataclass
class IrfChoice:
    base: str  # IRF name without the partition suffix
    name: str  # IRF_VERSION value (CALDB_implied_irfs: with " (PSF)" etc.)
    evtype: int
    class_cut: BitMaskCut | None
    type_cut: BitMaskCut


def _mask_cut(column: str, mask: int, pass_ver: str) -> BitMaskCut:
    """BitMaskCut as dataSubselector writes it: the mask for Pass 8, else the bit position."""
    old = pass_ver.upper() in ("", "NONE", "P6", "P7V6", "P7REP", "P8R0")
    value = int(math.log(mask) / math.log(2.0)) if old else mask
    return BitMaskCut(column, value, pass_ver)


def _partition_suffix(caldb: Path, evtype: int) -> str:
    """ " (PSF)" / " (EDISP)" for the partition of bit int(log2(evtype)) (Cuts
    append_event_type_partition), "" for FRONT/BACK."""
    bit = int(math.log(evtype) / math.log(2.0))
    for _name, b, partition in event_type_table(caldb):
        if b == bit and partition != "none":
            return f" ({partition})"
    return ""


def _implied_irf(caldb: Path, mask: int, pass_ver: str) -> str:
    """Cuts::CALDB_implied_irfs with no name: the highest-version IRF of that class mask."""
    best, best_ver = "", -1
    classes = event_class_table(caldb)
    for name in sorted(classes):  # std::map order
        bitpos, _types = classes[name]
        if (1 << bitpos) != mask or pass_version(name) != pass_ver:
            continue
        ver = name[name.rfind("V") + 1 :]
        num = int(ver) if ver.isdigit() else 0
        if best == "" or num > best_ver:
            best, best_ver = name, num
    return best


def choose_irfs(
    p: Mapping[str, Any], caldb: Path, cmap: str | None, cmap_cuts: list[Cut] | None
) -> IrfChoice:
    """IRF name, event-type mask and the bit-mask cuts (AppHelpers createResponseFuncs)."""
    irfs = str(p["irfs"]).strip()
    if irfs.upper() == "CALDB":
        if cmap is None or cmap_cuts is None:
            raise ToolError(TOOL, "irfs=CALDB needs a counts map whose DSS keywords give the "
                            "event class; give irfs=<name> with cmap=none/hpx")  # fmt: skip
        masks = {c.column: c for c in cmap_cuts if isinstance(c, BitMaskCut)}
        if "EVENT_CLASS" not in masks:
            raise ToolError(
                TOOL,
                "No EVENT_CLASS bitmask cut in input file, so cannot infer most recent IRFs "
                "from CALDB.",
                cmap,
            )
        ec = masks["EVENT_CLASS"]
        named = [
            c.value for c in cmap_cuts if isinstance(c, GenericCut) and c.dstyp == "IRF_VERSION"
        ]
        # An IRF_VERSION in the cmap names the IRF (Cuts::set_irfName), else the newest IRF
        # of the event class and pass (CALDB_implied_irfs).
        base = named[0].split(" (")[0] if named else _implied_irf(caldb, ec.mask, ec.pass_ver)
        if not base:
            raise IrfNotFoundError(
                f"no IRF in {caldb / 'data/glast/lat/bcf/irf_index.fits'} for event class "
                f"mask {ec.mask} and pass {ec.pass_ver} (cmap {cmap})"
            )
        if "EVENT_TYPE" in masks:
            evtype = masks["EVENT_TYPE"].mask
        elif p["evtype"] is not None:
            evtype = int(p["evtype"])
        else:
            raise ToolError(TOOL, "evtype is required (the cmap has no EVENT_TYPE DSS)")
        type_cut = masks.get("EVENT_TYPE") or _mask_cut("EVENT_TYPE", evtype, ec.pass_ver)
        return IrfChoice(base, base + _partition_suffix(caldb, evtype), evtype, ec, type_cut)
    if ":" in irfs:
        raise ToolError(
            TOOL,
            "event_type qualifiers should not be included in the irfs specification; use evtype",
        )
    if p["evtype"] is None:
        raise ToolError(TOOL, "parameter evtype is required (e.g. 3 = FRONT+BACK)")
    evtype = int(p["evtype"])
    if evtype <= 0:
        raise ToolError(TOOL, f"evtype={evtype} selects no event type")
    pass_ver = pass_version(irfs)
    info = event_class_info(caldb, irfs)
    if pass_ver != "NONE" and info is None:
        raise IrfNotFoundError(
            f"IRF {irfs} not found in CALDB {caldb}: no {irfs} row in "
            f"{caldb / 'data/glast/lat/bcf/irf_index.fits'} (BITMASK_MAPPING)"
        )
    class_cut = _mask_cut("EVENT_CLASS", 1 << info[0], pass_ver) if info else None
    type_cut = _mask_cut("EVENT_TYPE", evtype, pass_ver)
    suffix = _partition_suffix(caldb, evtype) if pass_ver != "NONE" else ""
    return IrfChoice(irfs, irfs + suffix, evtype, class_cut, type_cut)


def output_cuts(cuts: list[Cut], choice: IrfChoice, irfs_given: bool) -> list[Cut]:
    """copyDssKeywords: the input cuts, bit masks replaced (setBitMaskCut: old ones of the
    column removed, new appended) unless irfs=CALDB, then IRF_VERSION set."""
    out = list(cuts)
    if irfs_given:
        for cut in (choice.class_cut, choice.type_cut):
            if cut is None:
                continue
            out = [c for c in out if not (isinstance(c, BitMaskCut) and c.column == cut.column)]
            out.append(cut)
    version = GenericCut("IRF_VERSION", "DIMENSIONLESS", choice.name)
    for i, c in enumerate(out):
        if isinstance(c, GenericCut) and c.dstyp.upper() == "IRF_VERSION":
            out[i] = version
            break
    else:
        out.append(version)
    return out


# ---------------------------------------------------------------------- counts maps


def _cmap_kind(path: str) -> str:
    """ "WCS" (primary NAXIS ≥ 2) or "HEALPIX" (SKYMAP table with PIXTYPE HEALPIX)."""
    from fermipipe.fits.table import FitsFile

    try:
        with FitsFile(path) as ff:
            if int(ff.hdus[0].header.get("NAXIS", 0) or 0) >= 2:
                return "WCS"
            try:
                info = ff.hdu("SKYMAP")
            except KeyError:
                raise ToolError(
                    TOOL, "Unknown projection type (no image, no SKYMAP)", path
                ) from None
            if str(info.header.get("PIXTYPE", "")).strip().upper().startswith("HEALPIX"):
                return "HEALPIX"
    except OSError as exc:
        raise ToolError(TOOL, f"cannot read counts map ({exc})", path) from None
    raise ToolError(TOOL, "Unknown projection type", path)


def _cmap_header(path: str, ext: int | str) -> Header:
    from fermipipe.fits.table import FitsFile

    with FitsFile(path) as ff:
        return ff.hdu(ext).header


def _proj_of(ctype: str) -> str:
    return ctype.strip().split("-")[-1]


def wcs_geometry(p: Mapping[str, Any], cmap: str | None) -> WcsGeometry:
    """Sky grid of a WCS output (run_wcs / BinnedExposure::setMapGeometry)."""
    keys = ("nxpix", "nypix", "binsz", "xref", "yref")
    user = all(p[k] is not None for k in keys)
    if user or have_user_energies(p):
        if user:
            nx, ny, binsz = int(p["nxpix"]), int(p["nypix"]), float(p["binsz"])
            xref, yref = float(p["xref"]), float(p["yref"])
            rot, proj, gal = float(p["axisrot"] or 0.0), str(p["proj"]), p["coordsys"] == "GAL"
        else:
            if cmap is None:
                missing = ", ".join(k for k in keys if p[k] is None)
                raise ToolError(
                    TOOL, f"Geometry not fully defined and no input counts map file ({missing})"
                )
            h = _cmap_header(cmap, 0)
            nx, ny, binsz = int(h["NAXIS1"]), int(h["NAXIS2"]), abs(float(h["CDELT1"]))
            xref, yref = float(h["CRVAL1"]), float(h["CRVAL2"])
            rot = float(h.get("CROTA2", 0.0) or 0.0)
            proj, gal = _proj_of(str(h["CTYPE1"])), "GLON" in str(h["CTYPE1"]).upper()
        if nx <= 0 or ny <= 0 or not binsz > 0:
            raise ToolError(TOOL, f"need nxpix, nypix > 0 and binsz > 0 ({nx}, {ny}, {binsz})")
        return WcsGeometry(
            nx, ny, proj.upper(), gal, (nx / 2.0 + 0.5, ny / 2.0 + 0.5),
            (xref, yref), (-binsz, binsz), rot,
        )  # fmt: skip
    if cmap is None:
        raise ToolError(TOOL, "Geometry not fully defined and no input counts map file")
    h = _cmap_header(cmap, 0)
    return WcsGeometry(
        int(h["NAXIS1"]),
        int(h["NAXIS2"]),
        _proj_of(str(h["CTYPE1"])).upper(),
        "GLON" in str(h["CTYPE1"]).upper(),
        (float(h["CRPIX1"]), float(h["CRPIX2"])),
        (float(h["CRVAL1"]), float(h["CRVAL2"])),
        (float(h["CDELT1"]), float(h["CDELT2"])),
        float(h.get("CROTA2", 0.0) or 0.0),
    )


@dataclass(frozen=True)
class HpxGeometry:
    order: int
    nest: bool
    galactic: bool

    @property
    def nside(self) -> int:
        return 1 << self.order


def hpx_geometry(p: Mapping[str, Any], cmap: str | None) -> HpxGeometry:
    """HEALPix grid: the hidden hpx_order/hpx_ordering_scheme/coordsys unless INDEF."""
    if p["hpx_order"] is not None and p["hpx_ordering_scheme"] is not None:
        order = int(p["hpx_order"])
        nest = p["hpx_ordering_scheme"] == "NESTED"
        gal = p["coordsys"] == "GAL"
    else:
        if cmap is None:
            raise ToolError(TOOL, "Geometry not fully defined and no input counts map file")
        h = _cmap_header(cmap, "SKYMAP")
        nside = int(h["NSIDE"])
        order = nside.bit_length() - 1
        nest = str(h.get("ORDERING", "RING")).strip().upper().startswith("NEST")
        gal = str(h.get("COORDSYS", "GAL")).strip().upper().startswith("GAL")
    if not 0 <= order <= 12:
        raise ToolError(TOOL, f"hpx_order={order} must be between 0 and 12")
    return HpxGeometry(order, nest, gal)


# ---------------------------------------------------------------------- output


_TIME_KEYS: tuple[tuple[str, str], ...] = (
    ("DATE-OBS", "s"),
    ("DATE-END", "s"),
    ("TSTART", "d"),
    ("TSTOP", "d"),
    ("MJDREFI", "d"),
    ("MJDREFF", "d"),
    ("TIMEUNIT", "s"),
    ("TIMEZERO", "d"),
    ("TIMESYS", "s"),
    ("TIMEREF", "s"),
    ("CLOCKAPP", "b"),
    ("GPS_OUT", "b"),
)


def _copy_time_keywords(out: Header, cube_header: Header) -> None:
    """copyHeaderKeywords: typed copies (doubles re-printed %.15G), missing keys skipped;
    existing cards updated in place, new ones appended."""
    for key, kind in _TIME_KEYS:
        if key not in cube_header or cube_header[key] is None:
            continue
        raw = cube_header[key]
        try:
            if kind == "d":
                value: Any = (
                    float(str(raw).replace("D", "E")) if isinstance(raw, str) else float(raw)
                )
            elif kind == "b":
                value = bool(raw)
            else:
                value = str(raw)
        except ValueError:
            continue
        if key in out:
            out.set(key, value)
        else:
            out.append(_card(key, value))


def _primary_start(bitpix: int, naxes: tuple[int, ...]) -> Header:
    cards = [
        _card("SIMPLE", True, "file does conform to FITS standard"),
        _card("BITPIX", bitpix, "number of bits per data pixel"),
        _card("NAXIS", len(naxes), "number of data axes"),
        *(_card(f"NAXIS{i + 1}", n, f"length of data axis {i + 1}") for i, n in enumerate(naxes)),
        _card("EXTEND", True, "FITS dataset may contain extensions"),
        Card.commentary(
            "COMMENT", "  FITS (Flexible Image Transport System) format is defined in 'Astronomy"
        ),
        Card.commentary(
            "COMMENT", "  and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H"
        ),
        _card("HDUNAME", "PRIMARY"),
    ]
    return Header(cards)


def wcs_primary_header(geom: WcsGeometry, energies: list[float]) -> Header:
    """BinnedExposure::writeOutput keywords (before the copied time keys and DSS)."""
    h = _primary_start(-32, (geom.nx, geom.ny, len(energies)))
    nee = len(energies)
    sys1, sys2 = ("GLON-", "GLAT-") if geom.galactic else ("RA---", "DEC--")
    for card in (
        _card("TELESCOP", "GLAST"),
        _card("INSTRUME", "LAT"),
        _card("DATE", utc_now_date()),
        _card("DATE-OBS", ""),
        _card("DATE-END", ""),
        _card("CRVAL1", float(geom.crval[0])),
        _card("CRPIX1", (geom.nx + 1) / 2.0),
        _card("CDELT1", float(geom.cdelt[0])),
        _card("CRVAL2", float(geom.crval[1])),
        _card("CRPIX2", (geom.ny + 1) / 2.0),
        _card("CDELT2", float(geom.cdelt[1])),
        _card("CTYPE1", sys1 + geom.proj),
        _card("CTYPE2", sys2 + geom.proj),
        _card("CRVAL3", math.log(energies[0])),
        _card("CRPIX3", 1),
        _card("CDELT3", 0 if nee == 1 else math.log(energies[-1] / energies[0]) / (nee - 1)),
        _card("CTYPE3", "log_Energy"),
    ):
        h.append(card)
    if geom.galactic:
        h.append(_card("COORDSYS", "GAL"))
    else:
        h.append(_card("COORDSYS", "CEL"))
        h.append(_card("EQUINOX", 2000.0))
        h.append(_card("RADECSYS", "FK5"))
    return h


def hpx_headers(geom: HpxGeometry, nenergies: int) -> tuple[Header, Header]:
    """Empty PRIMARY and the HPXEXPOSURES header (BinnedHealpixExposure::writeOutput)."""
    primary = _primary_start(-32, ())
    cards = [
        _card(k, v, c)
        for k, v, c in bintable_keywords(8 * nenergies, 12 * geom.nside**2, nenergies)
    ]
    cards.append(_card("EXTNAME", "HPXEXPOSURES", "name of this binary table extension"))
    cards += [_card("TELESCOP", "GLAST"), _card("INSTRUME", "LAT")]
    if geom.galactic:
        cards.append(_card("COORDSYS", "GAL"))
    else:
        cards.append(_card("EQUINOX", 2000.0, "Equinox of RA & DEC specifications"))
        cards.append(_card("COORDSYS", "CEL"))
    npix = 12 * geom.nside**2
    cards += [
        _card("ORDERING", "NESTED" if geom.nest else "RING"),
        _card("PIXTYPE", "HEALPIX"),
        _card("ORDER", geom.order),
        _card("NSIDE", geom.nside),
        _card("FIRSTPIX", 0),
        _card("LASTPIX", npix - 1),
    ]
    for k in range(1, nenergies + 1):
        cards.append(_card(f"TTYPE{k}", f"ENERGY{k}", "label for field"))
        cards.append(_card(f"TFORM{k}", "D", "format of field"))
    cards += [_card("DATE", utc_now_date()), _card("DATE-OBS", ""), _card("DATE-END", "")]
    if not geom.galactic:
        cards.append(_card("RADECSYS", "FK5"))
    return primary, Header(cards)


def energies_hdu(energies: list[float]) -> tuple[Header, np.ndarray]:
    cards = [_card(k, v, c) for k, v, c in bintable_keywords(8, len(energies), 1)]
    cards += [
        _card("EXTNAME", "ENERGIES", "name of this binary table extension"),
        _card("TTYPE1", "Energy", "label for field"),
        _card("TFORM1", "1D", "format of field"),
    ]
    rows = np.empty(len(energies), dtype=[("Energy", ">f8")])
    rows["Energy"] = energies
    return Header(cards), rows


def gti_extension(gti: Gti) -> tuple[Header, np.ndarray]:
    """A GTI extension as dataSubselector ``Gti::writeExtension`` creates it afresh."""
    cards = [_card(k, v, c) for k, v, c in bintable_keywords(16, len(gti), 2)]
    for n, name in ((1, "START"), (2, "STOP")):
        cards += [
            _card(f"TTYPE{n}", name, f"label for field   {n}"),
            _card(f"TFORM{n}", "D", "data format of field: 8-byte DOUBLE"),
            _card(f"TUNIT{n}", "s", "physical unit of field"),
        ]
    cards += [
        _card("EXTNAME", "GTI", "name of this binary table extension"),
        _card("ONTIME", gti.ontime),
    ]
    return Header(cards), gti_rows(gti)


# ---------------------------------------------------------------------- run


def _wcs_table_index(index: np.ndarray, valid: np.ndarray, ncells: int) -> np.ndarray:
    """Per image pixel, its column in the table of :func:`_wcs_planes`: the pixel's cell, or
    ``ncells`` (the column of zeros) where wcslib has no sky."""
    full = np.full(valid.size, ncells, dtype=np.int32 if ncells < 2**31 else np.int64)
    full[valid] = index
    return full


def _wcs_planes(values: np.ndarray, full: np.ndarray, piece: int = 1 << 20) -> Iterator[np.ndarray]:
    """The image planes in order, in pieces of ``piece`` pixels (big-endian float32), 0
    where wcslib has no sky.

    Streamed to the writer so that the cube is never held whole: per piece, one gather from
    a (planes, cells + 1) big-endian table whose extra column is the 0 of unmapped pixels
    (``full``: :func:`_wcs_table_index`). The next piece is gathered in a helper thread while
    the writer writes and checksums the current one (both release the GIL). Pieces rather
    than whole planes: about three are alive at a time (being gathered, being written, just
    written), 3 × 4 MiB instead of 3 × 25 MiB on the mission grid.
    """
    from concurrent.futures import ThreadPoolExecutor

    ncells = values.shape[0]
    table = np.zeros((values.shape[1], ncells + 1), dtype=">f4")
    table[:, :ncells] = values.T
    jobs = [(k, s) for k in range(values.shape[1]) for s in range(0, full.size, piece)]

    def gather(job: tuple[int, int]) -> np.ndarray:
        k, start = job
        return table[k].take(full[start : start + piece])

    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(gather, jobs[0])
        for i in range(len(jobs)):
            part = pending.result()
            if i + 1 < len(jobs):
                pending = pool.submit(gather, jobs[i + 1])
            yield part


def _hpx_rows(values: np.ndarray, index: np.ndarray, chunk: int = 1 << 12) -> Iterator[np.ndarray]:
    """The HPXEXPOSURES rows (big-endian doubles, one per energy) in chunks of pixels: the
    table is streamed to the writer, never held whole (its bytes are the same)."""
    for start in range(0, index.size, chunk):
        yield values[index[start : start + chunk]].astype(">f8")


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """gtexpcube2 with Fermitools parameters (plus the native ``caldb=<path>``)."""
    p = resolve(PARAMS, params, tool=TOOL)
    out = Path(p["outfile"])
    refuse_existing_output(TOOL, out, p["clobber"])
    infile = p["infile"]
    if not Path(infile).is_file():
        raise ToolError(TOOL, "infile: livetime cube not found", infile)
    cmap_param = str(p["cmap"]).strip()
    if cmap_param.lower() in ("none", "hpx"):
        cmap, kind = None, ("WCS" if cmap_param.lower() == "none" else "HEALPIX")
    else:
        cmap = cmap_param
        if not Path(cmap).is_file():
            raise ToolError(TOOL, "cmap: counts map not found (or use cmap=none / cmap=hpx)", cmap)
        kind = _cmap_kind(cmap)
    try:
        caldb = find_caldb(p["caldb"] or None)
    except CaldbNotFoundError as exc:
        raise ToolError(TOOL, str(exc)) from None
    # The .par file has a hidden ``table`` parameter, but gtexpcube2 never reads it: the cube is
    # always read from EXPOSURE (+ WEIGHTED_EXPOSURE). Accepted and ignored likewise.
    cube = read_livetime_cube(infile, "EXPOSURE")
    cmap_cuts = (
        read_dss_file(cmap, "PRIMARY", check_columns=False, skip_time_ranges=False, tool=TOOL)
        if cmap is not None
        else None
    )
    choice = choose_irfs(p, caldb, cmap, cmap_cuts)
    selection = resolve_irf(choice.base, choice.evtype, caldb)
    from fermipipe.irf.aeff import cos_theta_limits, load_effective_area

    aeffs = [load_effective_area(t) for t in selection.event_types]
    energies = plane_energies(p, cmap)
    if kind == "WCS":
        wgeom = wcs_geometry(p, cmap)
        cell_of, valid = wcs_cells(wgeom, cube.nside, cube.nest)
    else:
        hgeom = hpx_geometry(p, cmap)
        cell_of = healpix_cells(hgeom.nside, hgeom.nest, hgeom.galactic, cube.nside, cube.nest)
    cells, index = distinct_cells(cell_of, cube.exposure.shape[0])
    del cell_of
    values = cell_exposures(
        cube,
        cells,
        energies,
        aeffs,
        ignorephi=bool(p["ignorephi"]),
        cos_limits=cos_theta_limits(float(p["thmin"]), float(p["thmax"])),
    )
    # Only the header and the GTI of the cube are needed from here on: its tables go before
    # the output is written (they are a third of a HEALPix run's peak memory).
    cube_header, cube_gti = cube.header, cube.gti
    del cube
    if cmap is not None:
        src_cuts = cmap_cuts or []
    else:
        # The cube's EXPOSURE DSS, its TIME/TABLE cut bound to the GTI already read.
        src_cuts = read_dss(cube_header, gti=cube_gti, tool=TOOL, file=infile)
    cuts = output_cuts(src_cuts, choice, str(p["irfs"]).strip().upper() != "CALDB")
    hdus: list[Any] = []
    if kind == "WCS":
        primary = wcs_primary_header(wgeom, energies)
        _copy_time_keywords(primary, cube_header)
        write_dss(primary, cuts)
        # The per-pixel index in its final form; the pixel → cell index and the mask go.
        full = _wcs_table_index(index, valid, cells.size)
        del index, valid
        hdus.append((primary, _wcs_planes(values, full)))
        del full
        npix = wgeom.nx * wgeom.ny
    else:
        primary, table = hpx_headers(hgeom, len(energies))
        _copy_time_keywords(primary, cube_header)
        write_dss(primary, cuts)
        hdus += [(primary, None), (table, _hpx_rows(values, index))]
        npix = 12 * hgeom.nside**2
    hdus.append(energies_hdu(energies))
    hdus.append(gti_extension(cube_gti))
    written = write_tool_output(TOOL, out, hdus, add_filename=False)
    return ToolOutcome(
        outputs=[str(written)],
        n_rows=npix,
        messages=[
            f"gtexpcube2: {kind} {npix} pixels x {len(energies)} planes, {choice.name} "
            f"({', '.join(t.event_type for t in selection.event_types)}), "
            f"{cells.size} livetime cells -> {written}"
        ],
    )
