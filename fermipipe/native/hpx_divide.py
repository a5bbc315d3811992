"""Native hpx_divide: HEALPix flux map = counts / exposure, per pixel and energy plane.

The existing pipeline's ``scripts/hpx_divide.py COUNTS EXPOSURE FLUX`` step (farith only
reads images, and HEALPix maps are binary tables). Run as
``python -m fermipipe.native hpx_divide COUNTS EXPOSURE FLUX`` (positional) or with
``counts=``/``exposure=``/``outfile=``.

* counts: a gtbin HEALPIX file — its ``SKYMAP`` table, columns CHANNEL1..N (one per energy
  bin), implicit full-sky indexing.
* exposure: a gtexpcube2 HEALPix file — its ``HPXEXPOSURES`` table, columns ENERGY1..M.
  With ``bincalc=CENTER`` and the counts map as ``cmap`` (the seed configuration), M = N and
  the exposure planes are at the bin centres √(E_MIN·E_MAX) of the counts EBOUNDS.
* Checked before dividing, each failure one line: ORDERING, NSIDE and COORDSYS equal, both
  maps full-sky with 12·NSIDE² rows, M = N, and the exposure energies at the counts bin
  centres (relative 1e-5: EBOUNDS are float32). An ``bincalc=EDGE`` exposure (M = N + 1)
  is refused rather than averaged.
* flux = counts / exposure in double; **pixels whose exposure is not > 0 (0, i.e. never
  seen, or NaN) get flux 0** — the original script's rule (``np.divide(..., where=exposure >
  0)``); a flux map has no use for NaN holes. Values are written as float64 (the script's
  ``format='D'``).
* Output: the counts file with the SKYMAP columns replaced — every other HDU (primary,
  EBOUNDS, GTI) and every SKYMAP keyword copied verbatim, TFORMn = D, TUNITn = ph/cm2/s
  (the unit goes in TUNITn: BUNIT is an image keyword that fitsverify rejects in a binary
  table); a HISTORY line in the primary names both inputs; FILENAME, checksums, atomic.
  The script wrote the same layout (without units).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.header import Header
from fermipipe.fits.table import FitsFile, HduInfo, RawTable
from fermipipe.native.output_file import refuse_existing_output, write_tool_output
from fermipipe.native.params import ParamSpec, ToolOutcome, resolve
from fermipipe.native.standard_params import STANDARD_PARAMS

__all__ = ["PARAMS", "run"]

TOOL = "hpx_divide"

PARAMS: list[ParamSpec] = [
    ParamSpec("counts", "file", "", required=True),
    ParamSpec("exposure", "file", "", required=True),
    ParamSpec("outfile", "file", "", required=True),
    *STANDARD_PARAMS,
]

FLUX_UNIT = "ph/cm2/s"
_COORDSYS = {"G": "GAL", "GAL": "GAL", "C": "EQU", "CEL": "EQU", "EQU": "EQU", "E": "ECL"}


def _open(path: str, which: str) -> FitsFile:
    if not Path(path).is_file():
        raise ToolError(TOOL, f"{which}: file not found", path)
    try:
        return FitsFile(path)
    except (OSError, ValueError) as exc:
        raise ToolError(TOOL, f"{which}: cannot read FITS file: {exc}", path) from None


def _healpix_table(ff: FitsFile, extname: str, prefix: str, which: str) -> tuple[int, RawTable]:
    """The map table (by EXTNAME, else the first HEALPix table) and its checks."""
    path = str(ff.path)
    hdus = [h for h in ff.hdus if h.is_bintable and h.extname.upper() == extname]
    hdus = hdus or [
        h
        for h in ff.hdus
        if h.is_bintable and str(h.header.get("PIXTYPE", "")).strip().upper() == "HEALPIX"
    ]
    if not hdus:
        raise ToolError(TOOL, f"{which}: no {extname} (HEALPix) table", path)
    info: HduInfo = hdus[0]
    table = ff.table(info.index)
    names = table.columns
    pattern = re.compile(rf"^{prefix}(\d+)$", re.I)
    if not names or any(not pattern.match(n) for n in names):
        raise ToolError(
            TOOL,
            f"{which}: {info.extname} columns {names} are not {prefix}1..n (implicit map)",
            path,
        )
    if [int(pattern.match(n).group(1)) for n in names] != list(range(1, len(names) + 1)):  # type: ignore[union-attr]
        raise ToolError(
            TOOL, f"{which}: {info.extname} columns are not in order {prefix}1..n", path
        )
    if table.rows.dtype[0].shape:
        raise ToolError(TOOL, f"{which}: {info.extname} columns must hold one value per row", path)
    return info.index, table


def _geometry(table: RawTable, which: str, path: str) -> tuple[str, int, str]:
    h = table.header
    ordering = str(h.get("ORDERING", "")).strip().upper()
    coordsys = str(h.get("COORDSYS", "")).strip().upper()
    nside = h.get("NSIDE")
    if ordering not in ("RING", "NESTED") or not isinstance(nside, int) or nside < 1:
        raise ToolError(
            TOOL, f"{which}: missing or bad ORDERING/NSIDE ({ordering!r}, {nside!r})", path
        )
    indexing = str(h.get("INDXSCHM", "IMPLICIT")).strip().upper()
    if indexing != "IMPLICIT" or table.nrows != 12 * nside * nside:
        raise ToolError(
            TOOL,
            f"{which}: only full-sky implicit maps are supported ({table.nrows} rows, "
            f"INDXSCHM {indexing}, NSIDE {nside})",
            path,
        )
    return ordering, nside, _COORDSYS.get(coordsys, coordsys)


def _check_energies(cf: FitsFile, ef: FitsFile, nplanes: int, paths: tuple[str, str]) -> None:
    """Exposure energies (MeV) at √(E_MIN·E_MAX) of the counts EBOUNDS (keV)."""
    try:
        eb = cf.table("EBOUNDS")
        en = ef.table("ENERGIES")
    except (KeyError, ValueError):
        return  # nothing to compare (the planes were still counted)
    centre = np.sqrt(eb.column("E_MIN").astype(float) * eb.column("E_MAX").astype(float)) / 1e3
    energy = en.rows[en.columns[0]].astype(float).reshape(-1)
    if centre.shape != (nplanes,) or energy.shape != (nplanes,):
        raise ToolError(TOOL, f"EBOUNDS has {centre.size} rows, ENERGIES {energy.size}", paths[1])
    if not np.allclose(energy, centre, rtol=1e-5, atol=0):
        raise ToolError(
            TOOL,
            "exposure energies are not the centres of the counts energy bins "
            f"(e.g. {energy[0]:.6g} MeV vs {centre[0]:.6g} MeV): make the exposure with "
            "gtexpcube2 cmap=<counts> bincalc=CENTER",
            paths[1],
        )


def divide(counts: np.ndarray, exposure: np.ndarray) -> np.ndarray:
    """counts / exposure in double; 0 where the exposure is not > 0 (see module doc)."""
    c = counts.astype(np.float64)
    e = exposure.astype(np.float64)
    seen = e > 0
    return np.divide(c, e, out=np.zeros(c.shape), where=seen)


def _flux_header(header: Header, nplanes: int) -> Header:
    out = header.copy()
    out.set("NAXIS1", 8 * nplanes)
    for i in range(1, nplanes + 1):
        out.set(f"TFORM{i}", "D")
        if f"TUNIT{i}" in out:
            out.set(f"TUNIT{i}", FLUX_UNIT)
        else:
            out.set(f"TUNIT{i}", FLUX_UNIT, "physical unit of field", after=f"TFORM{i}")
    return out


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """hpx_divide counts exposure outfile (positional or by name)."""
    p = resolve(PARAMS, params, tool=TOOL)
    cpath = p["counts"]
    epath = p["exposure"]
    out = Path(p["outfile"])
    refuse_existing_output(TOOL, out, p["clobber"])
    cf = _open(cpath, "counts")
    ef = _open(epath, "exposure")
    c_index, ctable = _healpix_table(cf, "SKYMAP", "CHANNEL", "counts")
    _, etable = _healpix_table(ef, "HPXEXPOSURES", "ENERGY", "exposure")
    cgeo = _geometry(ctable, "counts", cpath)
    egeo = _geometry(etable, "exposure", epath)
    for name, a, b in zip(("ORDERING", "NSIDE", "COORDSYS"), cgeo, egeo, strict=True):
        if a != b:
            raise ToolError(TOOL, f"{name} differs: counts {a}, exposure {b}", epath)
    n, m = len(ctable.columns), len(etable.columns)
    if n != m:
        hint = " (a bincalc=EDGE exposure: make it with bincalc=CENTER)" if m == n + 1 else ""
        raise ToolError(TOOL, f"counts have {n} energy planes, exposure {m}{hint}", epath)
    _check_energies(cf, ef, n, (cpath, epath))
    counts = np.column_stack([ctable.column(c).astype(np.float64) for c in ctable.columns])
    exposure = np.column_stack([etable.column(c).astype(np.float64) for c in etable.columns])
    flux = divide(counts, exposure)
    rows = np.empty(ctable.nrows, dtype=[(name, ">f8") for name in ctable.columns])
    for j, name in enumerate(ctable.columns):
        rows[name] = flux[:, j]
    hdus: list[Any] = []
    for info in cf.hdus:
        header = info.header
        if info.index == 0:
            header = header.copy()
            header.add_history(
                f"hpx_divide: flux = {Path(cpath).name} / {Path(epath).name} (0 where "
                "exposure <= 0)"
            )
        if info.index == c_index:
            hdus.append((_flux_header(header, n), rows))
        else:
            hdus.append((header, cf.data_bytes(info.index)))
    written = write_tool_output(TOOL, out, hdus)
    unseen = int(np.count_nonzero(~(exposure > 0)))
    return ToolOutcome(
        outputs=[str(written)],
        n_rows=ctable.nrows,
        messages=[
            f"hpx_divide: NSIDE {cgeo[1]} {cgeo[0]} {cgeo[2]}, {n} planes, "
            f"{unseen} pixel-plane(s) without exposure set to 0 -> {written}"
        ],
    )
