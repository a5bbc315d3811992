"""Native farith: ADD, SUB, MUL, DIV, MIN or MAX of two images (HEASARC ftools, fimage).

Behaviour of farith 4.3 (HEASoft ``ftools/fimage/src/farith/farith.f``, ``farith.par``,
``farith.txt``; the header copy is ftools' ``copyhead`` with ``GOODWCS``):

* ``infil1``/``infil2``: ``file[n]`` reads the image of HDU n (default the primary array);
  a name that is not an existing file is read as a list of numbers (comma- or
  space-separated, a 1-D vector of reals). ``dim1``/``dim2`` re-shape an input (same
  number of elements). Images of different shapes are combined cyclically ("wrap-around"):
  the output has the larger size along each axis; with ``evenvec=yes`` (default) the sizes
  must be multiples of each other.
* Pixels are read as double (BSCALE/BZERO applied); a pixel is undefined when it is NaN
  (float images) or equals BLANK (integer images).
* ``ops``: ADD/+, SUB/-, MUL/*, DIV//, MIN, MAX (upper-cased, only the first three
  characters count: MULT = MUL). SUB is infil1 − infil2, DIV infil1 / infil2.
* **Divisor 0** (farith.f, DIV branch: ``if (imag2 .ne. 0) ... else``): the pixel is
  undefined, like a pixel where either input is undefined. Undefined pixels are written as
  NaN (float output) or as the BLANK value (integer output, with a BLANK keyword) when
  ``null=yes``; with ``null=no`` (default) they get the value of ``blank`` (default −999,
  farith.par; the help text's "blank = 0" is out of date).
* Output BITPIX: max(|BITPIX1|, |BITPIX2|), negative (float) if either input is float;
  ``datatype`` overrides it; DIV without ``datatype`` always writes float (−32 for integer
  inputs). Writing double results to an integer type truncates toward zero (cfitsio without
  scaling); a value outside the type's range is an error, or is clamped to the type's
  limits with ``overflow=yes``.
* Header (``copyprime=yes``, default): the mandatory primary keywords (cfitsio's, with its
  two FITS COMMENT lines, dropped if the input's 7th record is already a COMMENT), then every
  record of infil1's image header (infil2's if infil1 is a vector) except the structural
  keywords (SIMPLE, BITPIX, NAXIS*, EXTEND, XTENSION, PCOUNT, GCOUNT, EXTNAME, CHECKSUM,
  DATASUM, table keywords), the scaling keywords (BSCALE, BZERO, BUNIT, BLANK, TSCAL…) and
  records shorter than 7 characters (blank lines); the WCS keywords CTYPE/CRPIX/CRVAL/CDELT/
  CROTA/CUNIT/OPTIC are always kept.
* ``clobber=no`` (default) or an ``outfil`` without a leading ``!`` refuses an existing file.

Our additions: FILENAME and CHECKSUM/DATASUM (every native product has them), the output is
written atomically, and every refusal is one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.header import CARD, Header, card_image
from fermipipe.fits.table import FitsFile
from fermipipe.native.output_file import refuse_existing_output, write_tool_output
from fermipipe.native.params import ParamSpec, ToolOutcome, resolve

__all__ = ["PARAMS", "POSITIONAL", "run"]

TOOL = "farith"

#: Positional order of ``farith infil1 infil2 outfil ops`` (fermipipe.native.POSITIONAL_PARAMS).
POSITIONAL = ("infil1", "infil2", "outfil", "ops")

# farith.par (HEASoft 6.x): names, kinds and defaults.
PARAMS: list[ParamSpec] = [
    ParamSpec("infil1", "str", "", required=True),
    ParamSpec("infil2", "str", "", required=True),
    ParamSpec("outfil", "str", "", required=True),
    ParamSpec("ops", "str", "", required=True),
    ParamSpec("datatype", "str", " "),
    ParamSpec("overflow", "bool", False),
    ParamSpec("blank", "real", -999.0),
    ParamSpec("null", "bool", False),
    ParamSpec("copyprime", "bool", True),
    ParamSpec("dim1", "str", ""),
    ParamSpec("dim2", "str", ""),
    ParamSpec("evenvec", "bool", True),
    ParamSpec("clobber", "bool", False),
    ParamSpec("mode", "str", "ql"),
]

_OPS = {"ADD": "ADD", "+": "ADD", "SUB": "SUB", "-": "SUB", "MUL": "MUL", "*": "MUL"}
_OPS |= {"DIV": "DIV", "/": "DIV", "MIN": "MIN", "MAX": "MAX"}

#: datatype spellings (farith.txt) → BITPIX.
_DATATYPES = {
    **dict.fromkeys(("B", "8"), 8),
    **dict.fromkeys(("I", "SHORT", "16"), 16),
    **dict.fromkeys(("J", "INTEGER", "INT", "LONG", "32"), 32),
    **dict.fromkeys(("R", "F", "E", "REAL", "FLOAT", "-32"), -32),
    **dict.fromkeys(("D", "DOUBLE", "-64"), -64),
}

_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}

#: Range cfitsio accepts when writing a double to an integer image without scaling
#: (DUCHAR_MIN/MAX, DSHRT_*, DINT_*, DLONGLONG_* in fitsio2.h: the type's limits ± 0.49).
_INT_RANGE = {
    8: (-0.49, 255.49),
    16: (-32768.49, 32767.49),
    32: (-2147483648.49, 2147483647.49),
    64: (-9.2233720368547758e18, 9.2233720368547758e18),
}

# copyhead(no_basic=.true., no_scale=.true.) prefixes that are not copied, and GOODWCS's
# prefixes that are copied regardless.
_NOT_COPIED = (
    "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "TFIELDS", "TTYPE",
    "TBCOL", "TFORM", "TUNIT", "THEAP", "TDIM", "GROUPS", "END", "EXTNAME", "CHECKSUM",
    "DATASUM", "ZIMAGE", "ZCMPTYPE", "ZNAME", "ZVAL", "ZTILE", "ZBITPIX", "ZNAXIS", "ZSCALE",
    "ZZERO", "ZBLANK",
    "TSCAL", "TZERO", "TNULL", "TDISP", "BSCALE", "BZERO", "BUNIT", "BLANK", "CTYPE", "CRPIX",
    "CROTA", "CRVAL", "CDELT", "TLMIN", "TLMAX", "OPTIC", "TCRPX", "TCRVL", "TCDLT", "TCTYP",
    "TCROT", "PLTSCL", "TCD",
)  # fmt: skip
_ALWAYS_COPIED = ("CRVAL", "CRPIX", "CDELT", "CTYPE", "CUNIT", "CROTA", "OPTIC")

_FITS_COMMENTS = (
    "COMMENT   FITS (Flexible Image Transport System) format is defined in 'Astronomy",
    "COMMENT   and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H",
)


@dataclass
class _Input:
    """One operand: values (double, numpy axis order), undefined-pixel mask, FITS shape."""

    values: np.ndarray
    undefined: np.ndarray
    naxes: list[int]  # FITS order (NAXIS1 first)
    bitpix: int
    records: list[str] | None  # the image header's 80-character records; None for a vector


_EXT_RE = re.compile(r"^(.*)\[(\d+)\]$")


def _read_input(spec: str, which: str) -> _Input:
    text = spec.strip()
    match = _EXT_RE.match(text)
    path, ext = (match.group(1), int(match.group(2))) if match else (text, 0)
    if not Path(path).is_file():
        return _vector(text, which)
    path = path
    try:
        fits_file = FitsFile(path)
    except (OSError, ValueError) as exc:
        raise ToolError(TOOL, f"{which}: cannot read FITS file: {exc}", path) from None
    if ext >= len(fits_file.hdus):
        raise ToolError(TOOL, f"{which}: no HDU {ext} (the file has {len(fits_file.hdus)})", path)
    hdu = fits_file.hdus[ext]
    header = hdu.header
    xtension = str(header.get("XTENSION", "IMAGE")).strip().upper()
    naxis = int(header.get("NAXIS", 0))
    if xtension != "IMAGE" or naxis == 0:
        what = xtension if xtension != "IMAGE" else "an empty HDU"
        raise ToolError(TOOL, f"{which}: HDU {ext} is {what}; farith only reads images", path)
    bitpix = int(header["BITPIX"])
    naxes = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
    raw = fits_file.data_bytes(ext).view(np.dtype(_DTYPES[bitpix]))
    raw = raw.reshape(naxes[::-1])
    if bitpix > 0:
        blank = header.get("BLANK")
        undefined = raw == blank if blank is not None else np.zeros(raw.shape, bool)
    else:
        undefined = np.isnan(raw)
    values = raw.astype(np.float64)
    scale, zero = float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0))
    if scale != 1.0 or zero != 0.0:
        values = values * scale + zero
    image = header.tostring(endcard=False, padding=False)
    records = [image[i : i + CARD] for i in range(0, len(image), CARD)]
    return _Input(values, undefined, naxes, bitpix, records)


def _vector(text: str, which: str) -> _Input:
    """A command-line vector: numbers separated by commas or blanks, read as reals."""
    words = [w for w in re.split(r"[,\s]+", text) if w]
    try:
        numbers = [float(w.replace("D", "E").replace("d", "e")) for w in words]
    except ValueError:
        numbers = []
    if not numbers:
        raise ToolError(TOOL, f"{which}: unable to open infile {text!r} (no such file)")
    values = np.array(numbers, dtype=np.float64)
    return _Input(values, np.zeros(values.shape, bool), [values.size], -32, None)


def _reshape(operand: _Input, dims: str, which: str) -> None:
    """``dimN``: new FITS dimensions (comma-separated) with the same number of elements."""
    if not dims.strip():
        return
    try:
        naxes = [int(d) for d in re.split(r"[,\s]+", dims.strip()) if d]
    except ValueError:
        raise ToolError(TOOL, f"{which}={dims!r} must be a list of integers") from None
    if not naxes or any(n < 1 for n in naxes) or math.prod(naxes) != operand.values.size:
        raise ToolError(TOOL, f"New dimensions for {which[-1]}. image give wrong size ({dims})")
    operand.naxes = naxes
    operand.values = operand.values.reshape(naxes[::-1])
    operand.undefined = operand.undefined.reshape(naxes[::-1])


def _expand(operand: _Input, naxes: list[int], out: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The operand on the output grid, its indices wrapping around (cyclic copy)."""
    shape = naxes[::-1]
    values = operand.values.reshape(shape)
    undefined = operand.undefined.reshape(shape)
    if naxes == out:
        return values, undefined
    index = np.ix_(*[np.arange(n_out) % n_in for n_in, n_out in zip(shape, out[::-1], strict=True)])
    return values[index], undefined[index]


def _output_bitpix(a: _Input, b: _Input, datatype: str, op: str) -> int:
    bitpix = max(abs(a.bitpix), abs(b.bitpix))
    if a.bitpix < 0 or b.bitpix < 0:
        bitpix = -bitpix
    key = datatype.strip().upper()
    if key in ("", "-"):
        # By default division writes reals, even for integer inputs.
        return -32 if op == "DIV" and bitpix > 0 else bitpix
    if key not in _DATATYPES:
        raise ToolError(TOOL, f"datatype={datatype!r} is not one of b, i, j, r, d (or 8 … -64)")
    return _DATATYPES[key]


def _compute(op: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Result in double and the mask of pixels the operation itself leaves undefined."""
    extra = np.zeros(x.shape, bool)
    if op == "ADD":
        return x + y, extra
    if op == "SUB":
        return x - y, extra
    if op == "MUL":
        return x * y, extra
    if op == "MIN":
        return np.minimum(x, y), extra
    if op == "MAX":
        return np.maximum(x, y), extra
    # DIV: a zero divisor makes the pixel undefined (farith.f: imag2 .ne. 0 test).
    zero = y == 0
    out = np.divide(x, y, out=np.zeros(x.shape), where=~zero)
    return out, zero


def _to_output(
    result: np.ndarray, undefined: np.ndarray, bitpix: int, p: Mapping[str, Any]
) -> np.ndarray:
    """Undefined pixels per null/blank, then the conversion cfitsio does when writing."""
    blank = float(p["blank"])
    dtype = np.dtype(_DTYPES[bitpix])
    if bitpix < 0:
        out = result.copy()
        out[undefined] = math.nan if p["null"] else blank
        return out.astype(dtype)
    if p["null"] and not _INT_RANGE[bitpix][0] <= int(blank) <= _INT_RANGE[bitpix][1]:
        raise ToolError(TOOL, f"blank={blank!r} cannot be the BLANK value of BITPIX {bitpix}")
    # Undefined pixels: the blank value (null=no), else BLANK after the conversion.
    out = np.where(undefined, 0.0 if p["null"] else blank, result)
    lo, hi = _INT_RANGE[bitpix]
    bad = ~((out >= lo) & (out <= hi))  # NaN counts as out of range
    if bad.any():
        if not p["overflow"]:
            raise ToolError(
                TOOL,
                f"{int(bad.sum())} value(s) (e.g. {float(out[bad].flat[0])!r}) do not fit "
                f"BITPIX {bitpix} (overflow=yes clamps them to the type's limits)",
            )
        info = np.iinfo(dtype)
        out = np.where(bad, np.where(out > 0, float(info.max), float(info.min)), out)
    values = np.trunc(out).astype(dtype)
    if p["null"]:
        values[undefined] = int(blank)  # Fortran INTEGER = DOUBLE truncates
    return values


def _keep_record(record: str) -> bool:
    """copyhead(no_basic, no_scale) with GOODWCS: is this input record copied?"""
    if record.startswith(_ALWAYS_COPIED):
        return True
    return not record.startswith(_NOT_COPIED) and len(record.rstrip()) >= 7


def _header(source: _Input | None, bitpix: int, naxes: list[int], p: Mapping[str, Any]) -> Header:
    records = [
        card_image("SIMPLE", True, "file does conform to FITS standard"),
        card_image("BITPIX", bitpix, "number of bits per data pixel"),
        card_image("NAXIS", len(naxes), "number of data axes"),
        *(card_image(f"NAXIS{i}", n, f"length of data axis {i}") for i, n in enumerate(naxes, 1)),
        card_image("EXTEND", True, "FITS dataset may contain extensions"),
    ]
    if source is not None and source.records is not None and p["copyprime"]:
        # farith deletes cfitsio's two COMMENT lines when the input's 7th record is a
        # COMMENT (the input's own copies follow).
        if len(source.records) < 7 or not source.records[6].startswith("COMMENT"):
            records.extend(_FITS_COMMENTS)
        records.extend(r for r in source.records if _keep_record(r))
    else:
        records.extend(_FITS_COMMENTS)
    if p["null"] and bitpix > 0:
        records.append(card_image("BLANK", int(float(p["blank"])), "Null value"))
    return Header.fromstring("".join(str(r).ljust(CARD) for r in records))


def run(params: Mapping[str, Any]) -> ToolOutcome:
    """farith with the HEASARC parameters (positional: infil1 infil2 outfil ops)."""
    p = resolve(PARAMS, params, tool=TOOL)
    op = _OPS.get(p["ops"].strip().upper()[:3])
    if op is None:
        raise ToolError(TOOL, f"Unknown arithmetic operator: {p['ops']}")
    outfil = p["outfil"].strip()
    clobber = p["clobber"]
    if outfil.startswith("!"):
        outfil, clobber = outfil[1:], True
    out = Path(outfil)
    refuse_existing_output(TOOL, out, clobber)
    a = _read_input(p["infil1"], "infil1")
    b = _read_input(p["infil2"], "infil2")
    _reshape(a, p["dim1"], "dim1")
    _reshape(b, p["dim2"], "dim2")
    naxis = max(len(a.naxes), len(b.naxes))
    na = a.naxes + [1] * (naxis - len(a.naxes))
    nb = b.naxes + [1] * (naxis - len(b.naxes))
    if p["evenvec"]:
        for n1, n2 in zip(na, nb, strict=True):
            if n1 % n2 and n2 % n1:
                raise ToolError(
                    TOOL,
                    f"dimensions of 2 input files are not even multiples ({na} and {nb}; "
                    "evenvec=no wraps them anyway)",
                )
    naxes = [max(n1, n2) for n1, n2 in zip(na, nb, strict=True)]
    x, ux = _expand(a, na, naxes)
    y, uy = _expand(b, nb, naxes)
    bitpix = _output_bitpix(a, b, p["datatype"], op)
    undefined = ux | uy
    with np.errstate(all="ignore"):
        result, made_undefined = _compute(
            op, np.where(undefined, 0.0, x), np.where(undefined, 1.0, y)
        )
    undefined |= made_undefined
    data = _to_output(result, undefined, bitpix, p)
    header = _header(a if a.records is not None else b, bitpix, naxes, p)
    written = write_tool_output(TOOL, out, [(header, data)])
    return ToolOutcome(
        outputs=[str(written)],
        messages=[
            f"farith: {op} {'x'.join(map(str, naxes))} BITPIX {bitpix}, "
            f"{int(undefined.sum())} undefined pixel(s) -> {written}"
        ],
    )
