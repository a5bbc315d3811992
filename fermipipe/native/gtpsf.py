"""Native gtpsf: exposure-weighted mean PSF at a sky position (spec §14.6, Likelihood meanPsf).

Behaviour (Likelihood src/meanPsf/meanPsf.cxx, pfiles/gtpsf.par):

* ``irfs`` must name the IRF (``CALDB`` is refused: the tool cannot infer IRFs and event types
  from a livetime cube); ``evtype`` is a bit mask of event types (3 = FRONT + BACK). The
  CALDB is found as for the other native IRF users (``$CALDB``, then a Fermitools install;
  :func:`fermipipe.irf.caldb.find_caldb`).
* Energies E_i = emin·exp(i·ln(emax/emin)/(n − 1)); offsets θ_j = float(j²)/float(n²)·thetamax
  (single-precision quotient). The numbers: :mod:`fermipipe.native.meanpsf`.
* Livetime cell: HEALPix ang2pix at the cube's NSIDE and ORDERING of the direction as
  astro::SkyDir hands it to healpix (the livetime-cube reader and cell lookup are
  gtexpcube2's, :mod:`fermipipe.native.expcube_kernel` / :mod:`~fermipipe.native.expcube_sky`); with PHIBINS > 0 the phi-binned entries and the phi-modulated effective area
  are used (the Fermitools always do so when the cube has phi bins).
* Output: empty primary (BITPIX −32, HDUNAME; no FILENAME, as the real product), table
  ``outtable`` (Energy 1D, Exposure 1D, Psf nD) with the DSS entry IRF_VERSION, then THETA
  (Theta 1D); CHECKSUM/DATASUM on every HDU. Our additions: nenergies ≥ 2, emin > 0,
  emax > emin, ntheta ≥ 1 checked up front (the real tool writes NaN energies for
  nenergies = 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.errors import FermipipeError, ToolError
from fermipipe.fits.dss import GenericCut, write_dss
from fermipipe.fits.header import Card, Header
from fermipipe.fits.keywords import bintable_keywords
from fermipipe.irf.aeff import EffectiveArea, load_effective_area
from fermipipe.irf.caldb import IrfSelection, resolve_irf
from fermipipe.irf.psf import Psf3, UnsupportedPsfError, read_psf3
from fermipipe.native.expcube_kernel import read_livetime_cube
from fermipipe.native.expcube_sky import equatorial_from_lonlat, livetime_cells
from fermipipe.native.meanpsf import CellLivetime, MeanPsf, log_energies, mean_psf, output_thetas
from fermipipe.native.output_file import refuse_existing_output, write_tool_output
from fermipipe.native.params import ParamSpec, ToolOutcome, is_none, resolve
from fermipipe.native.standard_params import STANDARD_PARAMS

__all__ = [
    "PARAMS",
    "compute",
    "effective_areas",
    "efficiency_factors",
    "read_cell",
    "run",
    "write_psf_file",
]

TOOL = "gtpsf"

#: Parameters of Likelihood pfiles/gtpsf.par (names, kinds, defaults).
PARAMS: list[ParamSpec] = [
    ParamSpec("expcube", "file", "", required=True),
    ParamSpec("outfile", "file", "", required=True),
    ParamSpec("outtable", "str", "PSF"),
    ParamSpec("irfs", "str", "P8R2_SOURCE_V6"),
    ParamSpec("evtype", "int", 3),
    ParamSpec("ra", "real", None, required=True),
    ParamSpec("dec", "real", None, required=True),
    ParamSpec("emin", "real", 20.0),
    ParamSpec("emax", "real", 2e5),
    ParamSpec("nenergies", "int", 20),
    ParamSpec("thetamax", "real", 30.0),
    ParamSpec("ntheta", "int", 300),
    # Native only (as in our gtexpcube2): the CALDB root; empty = $CALDB, then a Fermitools
    # installation's.
    ParamSpec("caldb", "str", ""),
    *STANDARD_PARAMS,
]

_CALDB_REFUSED = (
    "irfs=CALDB: the IRFs and event type selection cannot be inferred from the expcube file; "
    "select irfs and evtype explicitly"
)


def read_cell(path: str, ra: float, dec: float) -> tuple[CellLivetime, int]:
    """The livetime entries of the cube cell holding (ra, dec), and the cube's PHIBINS.

    The direction goes through astro::SkyDir (unit vector, back to RA/Dec) before the
    HEALPix lookup, as MeanPsf's source direction does; it matters only on a cell boundary.
    """
    try:
        cube = read_livetime_cube(path)
    except ToolError as exc:  # the reader is gtexpcube2's: report it as ours
        raise ToolError(TOOL, exc.detail, exc.file) from None
    coordsys = str(cube.header.get("COORDSYS", "EQU")).strip().upper()
    if coordsys not in ("EQU", "C", "CEL"):
        raise ToolError(TOOL, f"livetime cube COORDSYS {coordsys!r} is not equatorial", path)
    ra2, dec2 = equatorial_from_lonlat(
        np.array([ra * math.pi / 180]), np.array([dec * math.pi / 180]), galactic=False
    )
    pix = int(livetime_cells(ra2, dec2, cube.nside, cube.nest)[0])
    weighted = None if cube.weighted is None else cube.weighted[pix]
    cell = CellLivetime.from_row(
        cube.exposure[pix], weighted, cube.nbins, cube.phibins, cube.cosmin, cube.sqrt_weight
    )
    return cell, cube.phibins


def _load_irfs(
    irfs: str, evtype: int, caldb: str = ""
) -> tuple[IrfSelection, list[EffectiveArea], list[Psf3]]:
    try:
        selection = resolve_irf(irfs, evtype, caldb or None)
        aeffs = [load_effective_area(t) for t in selection.event_types]
        psfs = []
        for t in selection.event_types:
            rpsf, scaling = t.get("RPSF"), t.get("PSF_SCALING")
            if rpsf is None:
                raise ToolError(TOOL, f"IRF {irfs}: no PSF tables for event type {t.event_type}")
            psfs.append(read_psf3(rpsf, scaling))
    except UnsupportedPsfError as exc:
        raise ToolError(TOOL, f"IRF {irfs}: {exc}") from None
    except ToolError:
        raise
    except FermipipeError as exc:
        raise ToolError(TOOL, str(exc)) from None
    return selection, aeffs, psfs


def effective_areas(
    cell: CellLivetime, energies: np.ndarray, aeffs: list[EffectiveArea]
) -> list[np.ndarray]:
    """A_t(E_k, entry) in cm² for every event type: (n_energies, n_entries) each, with the
    phi modulation when the cube is phi-binned."""
    phi = None if cell.phi_deg is None else cell.phi_deg[None, :]
    return [
        np.asarray(a.value(energies[:, None], cell.costh[None, :], phi), dtype=np.float64)
        for a in aeffs
    ]


def efficiency_factors(
    energies: np.ndarray, aeffs: list[EffectiveArea]
) -> tuple[np.ndarray, np.ndarray]:
    """(f1, f2) per energy from the first event type (ResponseFunctions::efficiencyFactor);
    (1, 0) when it has no efficiency parameters."""
    eff = aeffs[0].efficiency
    if eff is None:
        return np.ones(energies.size), np.zeros(energies.size)
    f1, f2 = eff.factors(energies)
    return np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)


def compute(
    cell: CellLivetime, energies: np.ndarray, aeffs: list[EffectiveArea], psfs: list[Psf3]
) -> MeanPsf:
    """Mean PSF for the cell with the event types' effective areas and PSFs (ascending ID)."""
    areas = effective_areas(cell, energies, aeffs)
    return mean_psf(cell, energies, psfs, areas, efficiency_factors(energies, aeffs))


def _card(key: str, value: Any, comment: str | None = None) -> Card:
    return Card.from_value(key, value, comment)


def _primary_header() -> Header:
    header = Header(
        [
            _card("SIMPLE", True, "file does conform to FITS standard"),
            _card("BITPIX", -32, "number of bits per data pixel"),
            _card("NAXIS", 0, "number of data axes"),
            _card("EXTEND", True, "FITS dataset may contain extensions"),
        ]
    )
    header.add_comment("  FITS (Flexible Image Transport System) format is defined in 'Astronomy")
    header.add_comment("  and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H")
    header.append(_card("HDUNAME", "PRIMARY"))
    return header


def _table_header(extname: str, columns: list[tuple[str, str]], naxis1: int, rows: int) -> Header:
    """tip appendTable + appendField: the cfitsio BINTABLE keywords, EXTNAME, then the fields."""
    header = Header([_card(k, v, c) for k, v, c in bintable_keywords(naxis1, rows, len(columns))])
    header.append(_card("EXTNAME", extname, "name of this binary table extension"))
    for n, (name, tform) in enumerate(columns, start=1):
        header.append(_card(f"TTYPE{n}", name, "label for field"))
        header.append(_card(f"TFORM{n}", tform, "format of field"))
    return header


def write_psf_file(path: str, result: MeanPsf, thetas: np.ndarray, irf: str, outtable: str) -> Path:
    """The gtpsf product: primary, ``outtable`` (Energy, Exposure, Psf) and THETA."""
    n = thetas.size
    psf_values = np.array(
        [[result.value(float(e), float(t)) for t in thetas] for e in result.energies]
    )
    rows = np.zeros(
        result.energies.size, dtype=[("Energy", ">f8"), ("Exposure", ">f8"), ("Psf", ">f8", (n,))]
    )
    rows["Energy"] = result.energies
    rows["Exposure"] = result.exposure
    rows["Psf"] = psf_values
    psf_header = _table_header(
        outtable, [("Energy", "1D"), ("Exposure", "1D"), ("Psf", f"{n}D")], rows.itemsize, 0
    )
    write_dss(psf_header, [GenericCut("IRF_VERSION", "DIMENSIONLESS", irf)])
    theta_rows = np.zeros(n, dtype=[("Theta", ">f8")])
    theta_rows["Theta"] = thetas
    theta_header = _table_header("THETA", [("Theta", "1D")], theta_rows.itemsize, 0)
    return write_tool_output(
        TOOL,
        path,
        [(_primary_header(), b""), (psf_header, rows), (theta_header, theta_rows)],
        add_filename=False,  # the real gtpsf product has no FILENAME
    )


def _check(p: Mapping[str, Any]) -> None:
    if is_none(p["expcube"]):
        raise ToolError(TOOL, "Please specify an exposure cube file.")
    if is_none(p["outfile"]):
        raise ToolError(TOOL, "parameter outfile is required")
    if str(p["irfs"]).strip().upper() == "CALDB":
        raise ToolError(TOOL, _CALDB_REFUSED)
    # Ranges of gtpsf.par (ra 0–360, dec −90–90), then our own up-front checks.
    if not 0.0 <= p["ra"] <= 360.0:
        raise ToolError(TOOL, f"ra={p['ra']} is outside [0, 360]")
    if not -90.0 <= p["dec"] <= 90.0:
        raise ToolError(TOOL, f"dec={p['dec']} is outside [-90, 90]")
    for name in ("emin", "emax", "thetamax"):
        if p[name] is None or not math.isfinite(p[name]):
            raise ToolError(TOOL, f"parameter {name} must be a number")
    if p["emin"] <= 0 or p["emax"] <= p["emin"]:
        raise ToolError(TOOL, f"need 0 < emin < emax (emin={p['emin']}, emax={p['emax']})")
    if p["nenergies"] is None or p["nenergies"] < 2:
        raise ToolError(TOOL, "nenergies must be at least 2")
    if p["ntheta"] is None or p["ntheta"] < 1:
        raise ToolError(TOOL, "ntheta must be at least 1")
    if p["evtype"] is None:
        raise ToolError(TOOL, "parameter evtype is required")


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """gtpsf with Fermitools parameters."""
    p = resolve(PARAMS, params, tool=TOOL)
    _check(p)
    refuse_existing_output(TOOL, p["outfile"], p["clobber"])
    expcube = str(p["expcube"])
    if not Path(expcube).is_file():
        raise ToolError(TOOL, "expcube: file not found", expcube)
    irf = str(p["irfs"]).strip()
    cell, phibins = read_cell(expcube, float(p["ra"]), float(p["dec"]))
    selection, aeffs, psfs = _load_irfs(irf, int(p["evtype"]), p["caldb"])
    energies = log_energies(float(p["emin"]), float(p["emax"]), int(p["nenergies"]))
    thetas = output_thetas(float(p["thetamax"]), int(p["ntheta"]))
    try:
        result = compute(cell, energies, aeffs, psfs)
    except ValueError as exc:  # an energy outside the IRF tables (above 1e10 MeV)
        raise ToolError(TOOL, f"IRF {irf}: {exc}") from None
    out = write_psf_file(p["outfile"], result, thetas, selection.irf, str(p["outtable"]))
    types = "+".join(t.event_type for t in selection.event_types)
    return ToolOutcome(
        outputs=[str(out)],
        n_rows=int(energies.size),
        messages=[
            f"gtpsf: {selection.irf} {types}, {energies.size} energies x {thetas.size} angles"
            f"{f', {phibins} phi bins' if phibins else ''} -> {out}"
        ],
    )
