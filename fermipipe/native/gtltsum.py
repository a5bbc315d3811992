"""Native gtltsum: sum livetime cubes (spec §7, Likelihood:src/gtaddlivetime).

* Inputs: ``infile1`` is one cube or a list (dataSubselector convention, spec §1.1); with a
  single cube, ``infile2`` is the second one (with a list, ``infile2`` is not used, as in the
  Fermitools).
* Checks, all before anything is summed: CTHETABOUNDS identical (length and exact values),
  ZENMAX equal (missing = 180), same number of rows, same COSBINS length. Our addition:
  inputs whose GTIs overlap are refused — gtltsum would silently count that time twice.
* Sum: COSBINS of both tables read as double, added over all files in list order, written
  back as float32 (so one N-file call can differ from N−1 pairwise calls in the last ulp).
  Streaming: one float64 accumulator per table plus one input at a time.
* Output = the first file with, for both tables, TSTART = min and TSTOP = max over the
  inputs; DSS rewritten (non-time cuts of the first file + the union GTI, ``writeDssKeywords``
  order); GTI HDU = the union with ONTIME; date keywords on primary, both tables,
  CTHETABOUNDS and GTI; CREATOR; FILENAME and checksums; written atomically.

:func:`sum_livetime_cubes` is the entry point for the pipeline's n-way / hierarchical merges.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from fermipipe.errors import ToolError
from fermipipe.fits.dates import write_date_keywords
from fermipipe.fits.dss import Cut, GtiCut, read_dss_file, write_dss
from fermipipe.fits.gti import Gti, find_gti_hdu, read_gti, union, update_gti_hdu
from fermipipe.fits.keywords import set_card
from fermipipe.fits.table import FitsFile
from fermipipe.native import ENGINE_VERSION
from fermipipe.native.output_file import refuse_existing_output, write_tool_output
from fermipipe.native.params import ParamSpec, ToolOutcome, expand_file_list, is_none, resolve
from fermipipe.native.standard_params import STANDARD_PARAMS

__all__ = ["PARAMS", "run", "sum_livetime_cubes"]

TOOL = "gtltsum"

PARAMS: list[ParamSpec] = [
    ParamSpec("infile1", "file", "", required=True),
    ParamSpec("infile2", "file", "none"),
    ParamSpec("table", "str", "Exposure"),
    ParamSpec("table2", "str", "WEIGHTED_EXPOSURE"),
    ParamSpec("outfile", "file", "", required=True),
    *STANDARD_PARAMS,
]


@dataclass
class _CubeInfo:
    """What the checks need from one input cube (headers and small HDUs only)."""

    path: str
    nrows: int
    ncells: int
    zenmax: float
    bounds: np.ndarray
    gti: Gti
    tstart: float
    tstop: float


def _ncells(dtype: np.dtype) -> int:
    shape = dtype["COSBINS"].shape
    return int(np.prod(shape)) if shape else 1


def _scan(path: str, tables: Sequence[str]) -> _CubeInfo:
    """Read headers, CTHETABOUNDS and GTI of one cube; refuse anything malformed."""
    try:
        ff = FitsFile(path)
    except (OSError, ValueError) as exc:
        raise ToolError(TOOL, f"cannot read livetime cube: {exc}", path) from None
    infos = []
    for name in tables:
        try:
            tab = ff.table(name)
        except (KeyError, ValueError):
            raise ToolError(TOOL, f"no {name} table: not a livetime cube", path) from None
        if not tab.has_column("COSBINS"):
            raise ToolError(TOOL, f"{name} has no COSBINS column: not a livetime cube", path)
        infos.append(tab)
    first = infos[0]
    for other, name in zip(infos[1:], tables[1:], strict=True):
        if other.nrows != first.nrows or _ncells(other.dtype) != _ncells(first.dtype):
            raise ToolError(TOOL, f"{name} and {tables[0]} differ in shape", path)
    try:
        bounds_tab = ff.table("CTHETABOUNDS")
    except (KeyError, ValueError):
        raise ToolError(TOOL, "no CTHETABOUNDS table: not a livetime cube", path) from None
    try:
        bounds = np.stack(
            [bounds_tab.column(c).astype(np.float32) for c in ("CTHETA_MIN", "CTHETA_MAX")]
        )
    except KeyError:
        raise ToolError(TOOL, "CTHETABOUNDS lacks CTHETA_MIN/CTHETA_MAX", path) from None
    gti_info = next((h for h in ff.hdus[1:] if h.is_bintable and "GTI" in h.extname.upper()), None)
    if gti_info is None:
        raise ToolError(TOOL, "no GTI extension", path)
    gti = read_gti(ff.table(gti_info.index), tool=TOOL, file=path)
    header = first.header
    zenmax = float(header.get("ZENMAX", 180.0))
    try:
        tstart = float(header["TSTART"])
        tstop = float(header["TSTOP"])
    except (KeyError, TypeError, ValueError):
        raise ToolError(TOOL, f"{tables[0]} lacks TSTART/TSTOP", path) from None
    return _CubeInfo(path, first.nrows, _ncells(first.dtype), zenmax, bounds, gti, tstart, tstop)


def _check_compatible(cubes: Sequence[_CubeInfo]) -> None:
    """The gtaddlivetime checks plus our overlapping-GTI check (module docstring)."""
    ref = cubes[0]
    for cube in cubes[1:]:
        where = f"(compared with {ref.path})"
        if cube.bounds.shape != ref.bounds.shape or not np.array_equal(cube.bounds, ref.bounds):
            raise ToolError(TOOL, f"CTHETABOUNDS differ: cosθ binning mismatch {where}", cube.path)
        if cube.zenmax != ref.zenmax:
            raise ToolError(
                TOOL, f"ZENMAX {cube.zenmax:g} differs from {ref.zenmax:g} {where}", cube.path
            )
        if cube.nrows != ref.nrows:
            raise ToolError(TOOL, f"{cube.nrows} pixels differ from {ref.nrows} {where}", cube.path)
        if cube.ncells != ref.ncells:
            raise ToolError(
                TOOL, f"COSBINS length {cube.ncells} differs from {ref.ncells} {where}", cube.path
            )
    # Overlapping GTIs (our addition): Gti.intersect drops zero-length pieces, so touching
    # intervals (one cube's stop == the next one's start) are accepted.
    seen = Gti.empty()
    for i, cube in enumerate(cubes):
        if len(seen & cube.gti):
            j = next(j for j in range(i) if len(cubes[j].gti & cube.gti))
            common = cubes[j].gti & cube.gti
            raise ToolError(
                TOOL,
                f"GTIs overlap with those of {cubes[j].path} (first common interval "
                f"[{float(common.start[0])!r}, {float(common.stop[0])!r}], {common.ontime:g} s in all); "
                "summing would count that livetime twice",
                cube.path,
            )
        seen = seen | cube.gti


def _first_cuts(path: str, table: str, gti: Gti) -> list[Cut]:
    """Non-time cuts of the first file with its GTI cut replaced by the union GTI."""
    cuts = read_dss_file(path, table, check_columns=False, skip_time_ranges=True, tool=TOOL)
    out: list[Cut] = []
    placed = False
    for cut in cuts:
        if isinstance(cut, GtiCut):
            if not placed:
                out.append(GtiCut(gti, cut.ext))
                placed = True
            continue
        out.append(cut)
    if not placed:
        out.append(GtiCut(gti))
    return out


def sum_livetime_cubes(
    inputs: Sequence[Path | str],
    output: Path | str,
    *,
    table: str = "EXPOSURE",
    table2: str = "WEIGHTED_EXPOSURE",
    clobber: bool = True,
) -> Path:
    """Sum livetime cubes into ``output`` (see module docstring); list order is kept."""
    paths = [os.fspath(p) for p in inputs]
    if len(paths) < 2:
        raise ToolError(TOOL, f"need at least two livetime cubes, got {len(paths)}")
    out = Path(output)
    refuse_existing_output(TOOL, out, clobber)
    if any(Path(p).exists() and Path(p).resolve() == out.resolve() for p in paths):
        raise ToolError(TOOL, "output file is also an input", str(out))
    tables = [table, table2]
    cubes = [_scan(p, tables) for p in paths]
    _check_compatible(cubes)
    gti = union(c.gti for c in cubes)
    tstart = min(c.tstart for c in cubes)
    tstop = max(c.tstop for c in cubes)

    # Streaming sum in double, in list order.
    acc = [np.zeros((cubes[0].nrows, cubes[0].ncells), dtype=np.float64) for _ in tables]
    for path in paths:
        ff = FitsFile(path)
        for k, name in enumerate(tables):
            col = ff.table(name).column("COSBINS")
            acc[k] += col.reshape(acc[k].shape).astype(np.float64)
        ff.close()

    first = FitsFile(paths[0])
    cuts = _first_cuts(paths[0], table, gti)
    table_index = {first.hdu(name).index: k for k, name in enumerate(tables)}
    gti_index = next(
        h.index for h in first.hdus[1:] if h.is_bintable and "GTI" in h.extname.upper()
    )
    hdus: list[Any] = []
    with fits.open(paths[0], memmap=True) as hdul:
        for info in first.hdus:
            header = info.header.copy()
            if info.index in table_index:
                rows = np.array(first.table(info.index).rows)  # copy of the first file's rows
                summed = acc[table_index[info.index]]
                rows["COSBINS"] = summed.astype(np.float32).reshape(rows["COSBINS"].shape)
                write_dss(header, cuts)
                data: Any = rows
            elif info.index == gti_index:
                gti_hdu = find_gti_hdu(hdul)
                new = update_gti_hdu(gti_hdu, gti)
                header = new.header.copy()
                data = np.asarray(new.data)
            else:
                data = first.data_bytes(info.index) if info.data_size else None
            if info.index == 0:
                set_card(header, "CREATOR", f"gtltsum fermipipe-native-{ENGINE_VERSION}",
                         "software and version creating file")  # fmt: skip
            if (
                info.index == 0
                or info.index in table_index
                or info.index == gti_index
                or (info.extname.upper() == "CTHETABOUNDS")
            ):
                write_date_keywords(header, tstart, tstop)
            hdus.append((header, data))
    return write_tool_output(TOOL, out, hdus)


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """gtltsum with Fermitools parameters."""
    p = resolve(PARAMS, params, tool=TOOL)
    files = expand_file_list(p["infile1"], TOOL, "infile1")
    if len(files) == 1:
        if is_none(p["infile2"]):
            raise ToolError(TOOL, "infile1 is a single cube: infile2 is required")
        files = files + expand_file_list(p["infile2"], TOOL, "infile2")[:1]
    if is_none(p["outfile"]):
        raise ToolError(TOOL, "parameter outfile is required")
    out = sum_livetime_cubes(
        files, p["outfile"], table=p["table"], table2=p["table2"], clobber=p["clobber"]
    )
    return ToolOutcome(
        outputs=[str(out)],
        n_rows=None,
        messages=[f"gtltsum: {len(files)} cubes -> {out}"],
    )
