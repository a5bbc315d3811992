"""A small **synthetic** LAT CALDB: effective area and PSF of a made-up IRF, for the sample data.

The sample weeks (``fermipipe.synth``) are synthetic, so exposure and PSF products made from
them need IRFs that exist without a CALDB download. :func:`write_synthetic_caldb` writes

* ``<root>/data/glast/lat/bcf/ea/aeff_<IRF>_FB.fits``: EFFECTIVE AREA_FRONT,
  PHI_DEPENDENCE_FRONT, EFFICIENCY_PARAMS_FRONT, then the same three for BACK;
* ``<root>/data/glast/lat/bcf/psf/psf_<IRF>_FB.fits``: RPSF_FRONT, PSF_SCALING_PARAMS_FRONT,
  FISHEYE_CORRECTION_FRONT, then BACK;
* ``<root>/data/glast/lat/bcf/irf_index.fits``: BITMASK_MAPPING (the IRF's event class,
  SOURCE, and its event types, FRONT/BACK) and EVENT_TYPE_MAPPING, as in the real CALDB;
* ``<root>/data/glast/lat/caldb.indx``: the CIF rows pointing at them (what the Fermitools'
  CALDB lookup reads; fermipipe's lookup also finds the files by name).

The layout (HDU order and names, columns, TFORM/TDIM, units, OGIP and CALDB keywords) is that
of the real ``P8R3_SOURCE_V3`` files; the **values are ours**: smooth, plausible functions
(an effective area rising to ~0.4 m² above a few GeV and falling off axis, a PSF of two King
functions whose width shrinks as E^-0.78, a few-percent phi modulation, an efficiency
correction close to 1 at the usual livetime fraction). The IRF is called ``SYNTH_SOURCE_V1``,
which no LAT release uses, and every header says it is synthetic. Do not use it for science.

Output bytes depend only on the IRF name (fixed DATE and checksum stamps), so the files can be
committed and regenerated identically: ``python -m fermipipe.synth_caldb --out DIR``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.fits.header import Card, Header
from fermipipe.fits.keywords import bintable_keywords
from fermipipe.fits.table import write_fits

__all__ = ["SYNTH_IRF", "main", "write_synthetic_caldb"]

#: The IRF name: not a LAT release name (those are P6…, P7…, P8R2_…, P8R3_…).
SYNTH_IRF = "SYNTH_SOURCE_V1"
#: Fixed DATE/CAL_DATE and checksum stamp: the bytes must not depend on when they were made.
_DATE = "2026-01-01"
_STAMP = f"{_DATE}T00:00:00"
_SYNTHETIC = (  # COMMENT lines (at most 72 characters each)
    "SYNTHETIC IRF written by fermipipe.synth_caldb: made-up smooth values",
    "in the layout of the LAT CALDB P8R3 files. NOT LAT calibration data;",
    "not for science.",
)
_TYPES = ("FRONT", "BACK")
_F4 = ">f4"


# ---------------------------------------------------------------------- grids


def _log_edges(lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n bins uniform in log10 E from 10**lo to 10**hi MeV: (ENERG_LO, ENERG_HI)."""
    edges = 10.0 ** np.linspace(lo, hi, n + 1)
    return edges[:-1], edges[1:]


def _cos_edges(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n bins uniform in cos θ from 0.2 to 1 (the LAT IRFs stop at θ ≈ 78°)."""
    edges = np.linspace(0.2, 1.0, n + 1)
    return edges[:-1], edges[1:]


def _centres(
    elo: np.ndarray, ehi: np.ndarray, clo: np.ndarray, chi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(log10 E, cos θ) at the bin centres, shaped (n_cos, n_E) like the CALDB tables."""
    loge = 0.5 * (np.log10(elo) + np.log10(ehi))
    c = 0.5 * (clo + chi)
    return np.meshgrid(loge, c)


# ---------------------------------------------------------------------- value models
# One number per event type: FRONT is the thin-converter half (sharper PSF, a bit more
# area), BACK the thick one.

_AEFF_MAX = {"FRONT": 0.43, "BACK": 0.39}  # m²
_AEFF_TURN_ON = {"FRONT": 110.0, "BACK": 150.0}  # MeV
_PSF_SCALE = {"FRONT": (0.0520, 0.00070, -0.78), "BACK": (0.0905, 0.00130, -0.78)}
_WIDTH = {"FRONT": 1.0, "BACK": 1.15}


def _effective_area(kind: str, loge: np.ndarray, c: np.ndarray) -> np.ndarray:
    """m²: a turn-on at ~100 MeV, a slow decline above 100 GeV, ~0 at cos θ = 0.2."""
    energy = 10.0**loge
    rise = 1.0 / (1.0 + (_AEFF_TURN_ON[kind] / energy) ** 1.7)
    fall = 1.0 - 0.12 * np.clip(loge - 5.0, 0.0, None)
    off_axis = np.clip((c - 0.2) / 0.8, 0.0, 1.0) ** 0.75
    return _AEFF_MAX[kind] * rise * fall * off_axis


def _phi_dependence(kind: str, loge: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """(PHIDEP0, PHIDEP1): a modulation amplitude growing off axis, and its exponent."""
    amp = 0.10 * (1.0 - c) / 0.8 * (1.0 + 0.15 * np.tanh(loge - 3.0))
    if kind == "BACK":
        amp = 0.8 * amp
    return amp, 1.5 + 0.25 * (loge - 0.75)


def _efficiency_pars(kind: str) -> np.ndarray:
    """Two rows (p0, p1) of (a0, b0, a1, logEb1, a2, logEb2): piecewise linear in log10 E
    with breaks at 10^2.4 and 10^3.6 MeV; p1 = 1 − 0.92·p0 so that p0·f + p1 stays within a
    few percent of 1 for livetime fractions f ≈ 0.9."""
    scale = 1.0 if kind == "FRONT" else 1.1
    a0, b0, a1, a2 = -1.5 * scale, 4.2 * scale, -0.40 * scale, -0.05 * scale
    p0 = [a0, b0, a1, 2.4, a2, 3.6]
    p1 = [-0.92 * a0, 1.0 - 0.92 * b0, -0.92 * a1, 2.4, -0.92 * a2, 3.6]
    return np.array([p0, p1])


def _king_pars(kind: str, loge: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """Two King functions (core and tail) in scaled deviation units."""
    w = _WIDTH[kind] * (1.0 + 0.35 * (1.0 - c))
    t = np.tanh((loge - 3.0) / 1.5)
    score = 0.55 * w
    return {
        "NCORE": 0.35 + 0.10 * t,
        "NTAIL": 0.08 + 0.05 * (1.0 - c),
        "SCORE": score,
        "STAIL": 1.7 * score + 0.25,
        "GCORE": 2.3 + 0.6 * t,
        "GTAIL": 1.7 + 0.3 * t,
    }


def _fisheye(kind: str, loge: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """Mean/median/peak offset (deg) of the reconstructed direction at low energy."""
    mean = 1.8 * 10.0 ** (-0.55 * (loge - 1.0)) * (1.0 + 0.3 * (1.0 - c))
    if kind == "BACK":
        mean = 1.3 * mean
    return {"MEAN": mean, "MEDIAN": 0.85 * mean, "PEAK": 0.6 * mean}


# ---------------------------------------------------------------------- tables


def _rows(columns: Sequence[tuple[str, np.ndarray]], nrows: int = 1) -> np.ndarray:
    """One structured big-endian float32 row block; array shapes as stored (TDIM reversed)."""
    dtype = np.dtype([(name, _F4, value.shape[1:]) for name, value in columns])
    out = np.zeros(nrows, dtype=dtype)
    for name, value in columns:
        out[name] = value
    return out


def _grid_columns(
    elo: np.ndarray, ehi: np.ndarray, clo: np.ndarray, chi: np.ndarray
) -> list[tuple[str, np.ndarray]]:
    return [
        ("ENERG_LO", elo[None]),
        ("ENERG_HI", ehi[None]),
        ("CTHETA_LO", clo[None]),
        ("CTHETA_HI", chi[None]),
    ]


# ---------------------------------------------------------------------- headers


def _card(key: str, value: Any, comment: str | None = None) -> Card:
    return Card.from_value(key, value, comment)


def _cbd(irf: str, kind: str) -> list[str]:
    """The nine CALDB boundary strings (CBDn0001 / CAL_CBD) of the real P8R3 files."""
    return [
        f"VERSION({irf})",
        f"CLASS({irf}_{kind})",
        "ENERG(18-560000)MeV",
        "CTHETA(0.2-1)",
        "PHI(0-360)deg",
        *["NONE"] * 4,
    ]


def _caldb_cards(irf: str, kind: str, cname: str, description: str) -> list[Card]:
    cards = [_card("CCLS0001", "BCF"), _card("CDTP0001", "DATA"), _card("CCNM0001", cname)]
    cards += [_card(f"CBD{i}0001", v) for i, v in enumerate(_cbd(irf, kind), 1)]
    cards += [
        _card("CVSD0001", "2007-01-17", "Dataset validity start date (UTC)"),
        _card("CVST0001", "00:00:00"),
        _card("CDES0001", description),
    ]
    return cards


def _table_header(
    rows: np.ndarray,
    extname: str,
    units: Sequence[str],
    tdims: Sequence[str | None],
    extra: Sequence[Card],
) -> Header:
    names = rows.dtype.names or ()
    cards = [
        _card(k, v, c) for k, v, c in bintable_keywords(rows.dtype.itemsize, len(rows), len(names))
    ]
    for i, name in enumerate(names, 1):
        shape = rows.dtype[name].shape
        cards.append(_card(f"TTYPE{i}", name))
        cards.append(_card(f"TFORM{i}", f"{int(np.prod(shape)) if shape else 1}E"))
    cards.append(_card("EXTNAME", extname, "name of this binary table extension"))
    for i, (unit, tdim) in enumerate(zip(units, tdims, strict=True), 1):
        cards.append(_card(f"TUNIT{i}", unit))
        if tdim is not None:
            cards.append(_card(f"TDIM{i}", tdim))
    cards += [_card("TELESCOP", "GLAST"), _card("INSTRUME", "LAT"), *extra]
    header = Header(cards)
    for text in _SYNTHETIC:
        header.add_comment(text)
    return header


def _response_cards(kind: str, hduclas2: str, psfver: bool) -> list[Card]:
    cards = [
        _card("DETNAM", kind),
        _card("HDUCLASS", "OGIP"),
        _card("HDUDOC", "CAL/GEN/92-019"),
        _card("HDUCLAS1", "RESPONSE"),
        _card("HDUCLAS2", hduclas2),
        _card("HDUVERS", "1.0.0"),
        _card("EARVERSN", "1992a"),
        _card("1CTYP5", "ENERGY", "Always use log(ENERGY) for interpolation"),
        _card("2CTYP5", "COSTHETA", "Off-axis angle cosine"),
        _card("CREF5", "(ENERG_LO:ENERG_HI,CTHETA_LO:CTHETA_HI)"),
        _card("CSYSNAME", "XMA_POL"),
        _card("DATE", f"{_DATE}T00:00:00.0000", "file creation date (YYYY-MM-DDThh:mm:ss UT)"),
    ]
    if psfver:
        cards.append(_card("PSFVER", 3, "File format version"))
    return cards


def _param_cards(kind: str) -> list[Card]:
    """Keywords of the small parameter tables (EFFICIENCY_PARAMS_*, PSF_SCALING_PARAMS_*)."""
    return [
        _card("DETNAM", kind),
        _card("FILTER", "NULL"),
        _card("HDUCLASS", "OGIP"),
        _card("HDUCLAS1", "RESPONSE"),
        _card("HDUCLAS2", "PSFPARAMS"),
        _card("HDUVERS", "1.2.0"),
        _card("DATE", f"{_DATE}T00:00:00.0000"),
    ]


def _primary(filename_hint: str) -> Header:
    header = Header(
        [
            _card("SIMPLE", True, "file does conform to FITS standard"),
            _card("BITPIX", 8, "number of bits per data pixel"),
            _card("NAXIS", 0, "number of data axes"),
            _card("EXTEND", True, "FITS dataset may contain extensions"),
            _card("ORIGIN", "fermipipe", "synthetic: not a LISOC product"),
            _card("CREATOR", "fermipipe.synth_caldb", filename_hint),
        ]
    )
    for text in _SYNTHETIC:
        header.add_comment(text)
    return header


# ---------------------------------------------------------------------- files


def _aeff_hdus(irf: str) -> list[tuple[Header, np.ndarray | None]]:
    hdus: list[tuple[Header, np.ndarray | None]] = [(_primary("effective area"), None)]
    e_lo, e_hi = _log_edges(0.75, 6.5, 74)
    c_lo, c_hi = _cos_edges(32)
    p_lo, p_hi = _log_edges(0.75, 6.5, 23)
    q_lo, q_hi = _cos_edges(8)
    desc = "synthetic effective area"
    for kind in _TYPES:
        loge, c = _centres(e_lo, e_hi, c_lo, c_hi)
        rows = _rows(
            [
                *_grid_columns(e_lo, e_hi, c_lo, c_hi),
                ("EFFAREA", _effective_area(kind, loge, c)[None]),
            ]
        )
        cards = _response_cards(kind, "EFF_AREA", psfver=False)
        cards += _caldb_cards(irf, kind, "EFF_AREA", desc)
        hdus.append(
            (
                _table_header(
                    rows,
                    f"EFFECTIVE AREA_{kind}",
                    ("MeV", "MeV", "", "", "m2"),
                    (None, None, None, None, "(74, 32)"),
                    cards,
                ),
                rows,
            )
        )
        loge, c = _centres(p_lo, p_hi, q_lo, q_hi)
        dep0, dep1 = _phi_dependence(kind, loge, c)
        rows = _rows(
            [
                *_grid_columns(p_lo, p_hi, q_lo, q_hi),
                ("PHIDEP0", dep0[None]),
                ("PHIDEP1", dep1[None]),
            ]
        )
        cards = _response_cards(kind, "RPSF", psfver=False)
        cards += _caldb_cards(irf, kind, "PHI_DEP", desc)
        hdus.append(
            (
                _table_header(
                    rows,
                    f"PHI_DEPENDENCE_{kind}",
                    ("MeV", "MeV", "", "", "", ""),
                    (None, None, None, None, "(23, 8)", "(23, 8)"),
                    cards,
                ),
                rows,
            )
        )
        rows = _rows([("EFFICIENCY_PARS", _efficiency_pars(kind))], nrows=2)
        cards = _param_cards(kind) + _caldb_cards(irf, kind, "EFFICIENCY_PARS", desc)
        hdus.append((_table_header(rows, f"EFFICIENCY_PARAMS_{kind}", ("",), (None,), cards), rows))
    return hdus


def _psf_hdus(irf: str) -> list[tuple[Header, np.ndarray | None]]:
    hdus: list[tuple[Header, np.ndarray | None]] = [(_primary("point spread function"), None)]
    e_lo, e_hi = _log_edges(0.75, 6.5, 23)
    c_lo, c_hi = _cos_edges(8)
    f_lo, f_hi = _log_edges(0.75, 6.5, 46)
    g_lo, g_hi = _cos_edges(16)
    desc = "synthetic point spread function"
    for kind in _TYPES:
        loge, c = _centres(e_lo, e_hi, c_lo, c_hi)
        king = _king_pars(kind, loge, c)
        rows = _rows(
            [*_grid_columns(e_lo, e_hi, c_lo, c_hi), *((k, v[None]) for k, v in king.items())]
        )
        cards = _response_cards(kind, "RPSF", psfver=True)
        cards += _caldb_cards(irf, kind, "RPSF", desc)
        hdus.append(
            (
                _table_header(
                    rows,
                    f"RPSF_{kind}",
                    ("MeV", "MeV", "", "", *[""] * 6),
                    (None, None, None, None, *["(23, 8)"] * 6),
                    cards,
                ),
                rows,
            )
        )
        rows = _rows([("PSFSCALE", np.array([_PSF_SCALE[kind]]))])
        cards = _param_cards(kind) + _caldb_cards(irf, kind, "PSF_SCALING", desc)
        hdus.append(
            (_table_header(rows, f"PSF_SCALING_PARAMS_{kind}", ("",), (None,), cards), rows)
        )
        loge, c = _centres(f_lo, f_hi, g_lo, g_hi)
        fish = _fisheye(kind, loge, c)
        rows = _rows(
            [*_grid_columns(f_lo, f_hi, g_lo, g_hi), *((k, v[None]) for k, v in fish.items())]
        )
        cards = _response_cards(kind, "RPSF", psfver=True)
        cards += _caldb_cards(irf, kind, "FISHEYE_CORR", desc)
        hdus.append(
            (
                _table_header(
                    rows,
                    f"FISHEYE_CORRECTION_{kind}",
                    ("MeV", "MeV", "", "", "", "", ""),
                    (None, None, None, None, *["(46, 16)"] * 3),
                    cards,
                ),
                rows,
            )
        )
    return hdus


#: CIF columns of caldb.indx (name, numpy dtype, TFORM), as in the real index.
_CIF_COLUMNS = (
    ("TELESCOP", "S10", "10A"),
    ("INSTRUME", "S10", "10A"),
    ("DETNAM", "S20", "20A"),
    ("FILTER", "S10", "10A"),
    ("CAL_DEV", "S20", "20A"),
    ("CAL_DIR", "S70", "70A"),
    ("CAL_FILE", "S40", "40A"),
    ("CAL_CLAS", "S3", "3A"),
    ("CAL_DTYP", "S4", "4A"),
    ("CAL_CNAM", "S20", "20A"),
    ("CAL_CBD", "S630", "630A70"),
    ("CAL_XNO", ">i2", "I"),
    ("CAL_VSD", "S10", "10A"),
    ("CAL_VST", "S8", "8A"),
    ("REF_TIME", ">f8", "D"),
    ("CAL_QUAL", ">i2", "I"),
    ("CAL_DATE", "S10", "10A"),
    ("CAL_DESC", "S70", "70A"),
)


def _index_hdus(
    entries: Sequence[tuple[str, str, str, int, str]], irf: str
) -> list[tuple[Header, np.ndarray | None]]:
    """caldb.indx: one CIF row per (folder, file, type, HDU number, CAL_CNAM)."""
    rows = np.zeros(len(entries), dtype=[(n, t) for n, t, _ in _CIF_COLUMNS])
    for row, (folder, fname, kind, xno, cname) in zip(rows, entries, strict=True):
        param = cname in ("EFFICIENCY_PARS", "PSF_SCALING")
        row["TELESCOP"], row["INSTRUME"], row["DETNAM"] = b"GLAST", b"LAT", kind.encode()
        row["FILTER"] = b"NULL" if param else b"NONE"
        row["CAL_DEV"], row["CAL_DIR"] = b"ONLINE", f"data/glast/lat/bcf/{folder}".encode()
        row["CAL_FILE"], row["CAL_CLAS"], row["CAL_DTYP"] = fname.encode(), b"BCF", b"DATA"
        row["CAL_CNAM"] = cname.encode()
        row["CAL_CBD"] = "".join(s.ljust(70) for s in _cbd(irf, kind)).encode()
        row["CAL_XNO"], row["CAL_VSD"], row["CAL_VST"] = xno, b"2007-01-17", b"00:00:00"
        row["REF_TIME"], row["CAL_QUAL"], row["CAL_DATE"] = 54117.0, 0, _DATE.encode()
        row["CAL_DESC"] = f"synthetic {cname} ({irf})".encode()
    cards = [
        _card(k, v, c)
        for k, v, c in bintable_keywords(rows.dtype.itemsize, len(rows), len(_CIF_COLUMNS))
    ]
    for i, (name, _, tform) in enumerate(_CIF_COLUMNS, 1):
        cards += [_card(f"TTYPE{i}", name), _card(f"TFORM{i}", tform)]
    cards += [_card("EXTNAME", "CIF"), _card("CIFVERSN", "1.1", "Version of CIF format")]
    header = Header(cards)
    for text in _SYNTHETIC:
        header.add_comment(text)
    return [(_primary("CALDB index"), None), (header, rows)]


# irf_index.fits: the event-class bit and allowed event types of each IRF (what the
# Fermitools' dataSubselector reads to write an IRF's EVENT_CLASS/EVENT_TYPE DSS cuts; without
# a row, a tool with ``irfs=<IRF>`` fails). The event-type table is the LAT's bit assignment.
_BITMASK_COLUMNS = (("EVENT_CLASS", "S60", "60A"), ("BITPOSITION", ">i2", "1I"),
                    ("EVENT_TYPES", ">i4", "1J"))  # fmt: skip
_TYPE_COLUMNS = (("EVENT_TYPE", "S60", "60A"), ("BITPOSITION", ">i2", "1I"),
                 ("EVENT_TYPE_PARTITION", "S20", "20A"))  # fmt: skip
_EVENT_TYPES = (
    ("FRONT", 0, "none"), ("BACK", 1, "none"),
    *((f"PSF{i}", 2 + i, "PSF") for i in range(4)),
    *((f"EDISP{i}", 6 + i, "EDISP") for i in range(4)),
)  # fmt: skip
#: SOURCE class bit (EVENT_CLASS 128, as the sample weeks' DSS) and FRONT/BACK only (the
#: synthetic IRF has no PSFn/EDISPn files).
_SOURCE_BIT, _FB_TYPES = 7, 0b11


def _table_hdu(
    extname: str, columns: Sequence[tuple[str, str, str]], values: Sequence[tuple[Any, ...]]
) -> tuple[Header, np.ndarray]:
    rows = np.zeros(len(values), dtype=[(n, t) for n, t, _ in columns])
    for row, value in zip(rows, values, strict=True):
        for (name, _, _), v in zip(columns, value, strict=True):
            row[name] = v.encode() if isinstance(v, str) else v
    cards = [
        _card(k, v, c)
        for k, v, c in bintable_keywords(rows.dtype.itemsize, len(rows), len(columns))
    ]
    for i, (name, _, tform) in enumerate(columns, 1):
        cards += [_card(f"TTYPE{i}", name), _card(f"TFORM{i}", tform)]
    cards.append(_card("EXTNAME", extname, "extension name"))
    header = Header(cards)
    for text in _SYNTHETIC:
        header.add_comment(text)
    return header, rows


def _irf_index_hdus(irf: str) -> list[tuple[Header, np.ndarray | None]]:
    """irf_index.fits: BITMASK_MAPPING (this IRF only) and EVENT_TYPE_MAPPING."""
    return [
        (_primary("IRF index"), None),
        _table_hdu("BITMASK_MAPPING", _BITMASK_COLUMNS, [(irf, _SOURCE_BIT, _FB_TYPES)]),
        _table_hdu("EVENT_TYPE_MAPPING", _TYPE_COLUMNS, _EVENT_TYPES),
    ]


def write_synthetic_caldb(root: str | Path, irf: str = SYNTH_IRF) -> list[Path]:
    """Write the synthetic aeff/psf files and caldb.indx under ``root`` (a CALDB root: the
    folder that holds ``data/glast/lat``); return the paths written. Deterministic bytes."""
    lat = Path(root) / "data" / "glast" / "lat"
    files: list[tuple[str, str, Callable[[str], list[tuple[Header, np.ndarray | None]]]]] = [
        ("ea", f"aeff_{irf}_FB.fits", _aeff_hdus),
        ("psf", f"psf_{irf}_FB.fits", _psf_hdus),
    ]
    written: list[Path] = []
    entries: list[tuple[str, str, str, int, str]] = []
    for folder, fname, make in files:
        path = lat / "bcf" / folder / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        hdus = make(irf)
        write_fits(path, hdus, checksum_stamp=_STAMP)
        written.append(path)
        for xno, (header, _) in enumerate(hdus[1:], 1):
            cname = str(header["CCNM0001"])
            entries.append((folder, fname, str(header["DETNAM"]), xno, cname))
    irf_index = lat / "bcf" / "irf_index.fits"
    write_fits(irf_index, _irf_index_hdus(irf), checksum_stamp=_STAMP)
    written.append(irf_index)
    index = lat / "caldb.indx"
    write_fits(index, _index_hdus(entries, irf), checksum_stamp=_STAMP)
    written.append(index)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fermipipe.synth_caldb",
        description="Write the synthetic SYNTH_SOURCE_V1 effective area + PSF as a CALDB.",
    )
    parser.add_argument("--out", required=True, help="CALDB root to create (holds data/glast/lat)")
    parser.add_argument("--irf", default=SYNTH_IRF, help=f"IRF name (default {SYNTH_IRF})")
    args = parser.parse_args(argv)
    for path in write_synthetic_caldb(args.out, args.irf):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
