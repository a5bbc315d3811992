"""Data Sub-Space (DSS) keywords: the cuts a file has been through (spec 1.4, 3.3).

Model of dataSubselector's ``Cuts``: a list of cuts read from / written to the
``NDSKEYS``/``DSTYPk``/``DSUNIk``/``DSVALk``/``DSREFk`` keywords, merged with the
supersede rules of ``Cuts::addCut``, range cuts merged per column by ``mergeRangeCuts``, and
turned into the cfitsio row-filter text gtselect hands to cfitsio.

Number formats are C printf formats: ``%.20g`` for ranges, ``%.10g`` for cones, ``%g`` (6
digits) for gtmktime's ROI term; Python's ``%`` formatting is correctly rounded like glibc, so
``"%.20g" % x`` is the C text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.gti import Gti, read_gti
from fermipipe.fits.header import Card, Header
from fermipipe.fits.keywords import append_card

if TYPE_CHECKING:
    from astropy.io import fits

    from fermipipe.fits.table import FitsFile

__all__ = [
    "BitMaskCut",
    "ConeCut",
    "Cut",
    "Cuts",
    "GenericCut",
    "GtiCut",
    "MaskInconsistentError",
    "RangeCut",
    "cone_centre_rounded",
    "dss_cards",
    "dss_entries",
    "filter_string",
    "filter_terms",
    "fmt_10g",
    "fmt_20g",
    "fmt_g6",
    "load_validity_table",
    "read_dss",
    "read_dss_file",
    "write_dss",
    "write_dss_time_only",
]

UNRECOGNIZED = "FITS extension contains an unrecognized DSS filtering scheme"

# PASS_VER values for which the BIT_MASK number is a bit position, not a mask (spec 1.4).
_BIT_POSITION_PASSES = frozenset({"P6", "P7V6", "P7REP", "P8R0", "NONE", ""})


def fmt_20g(x: float) -> str:
    """C ``%.20g`` (``0.1`` → ``0.10000000000000000555``, ``1e21`` → ``1e+21``)."""
    return "%.20g" % float(x)  # noqa: UP031 - C printf semantics wanted


def fmt_10g(x: float) -> str:
    """C ``%.10g`` (cone DSVAL and angsep terms)."""
    return "%.10g" % float(x)  # noqa: UP031


def fmt_g6(x: float) -> str:
    """C ``%g`` = C++ default stream formatting, 6 significant digits (gtmktime ROI term)."""
    return "%g" % float(x)  # noqa: UP031


# ---------------------------------------------------------------------- cut classes


@dataclass(frozen=True)
class RangeCut:
    """``lo < COL <= hi`` (``lo <= COL <= hi`` when lo == hi); ``None`` = open end.

    ``column`` may name a vector element as ``NAME[i]`` (1-based, as in DSTYP).
    """

    column: str
    unit: str
    lo: float | None
    hi: float | None

    @property
    def interval_type(self) -> str:
        """'closed', 'minOnly' or 'maxOnly' (dataSubselector RangeCut::IntervalType)."""
        if self.lo is not None and self.hi is not None:
            return "closed"
        return "minOnly" if self.lo is not None else "maxOnly"

    @property
    def base_column(self) -> str:
        """Column name without a ``[i]`` element suffix."""
        return self.column.split("[", 1)[0]

    def dsval(self) -> str:
        lo = "" if self.lo is None else fmt_20g(self.lo)
        hi = "" if self.hi is None else fmt_20g(self.hi)
        return f"{lo}:{hi}"

    def supersedes(self, other: Cut) -> bool:
        """Same column, same interval type and self ⊆ other."""
        if not isinstance(other, RangeCut) or other.column != self.column:
            return False
        if other.interval_type != self.interval_type:
            return False
        lo_ok = self.lo is None or other.lo is None or self.lo >= other.lo
        hi_ok = self.hi is None or other.hi is None or self.hi <= other.hi
        return lo_ok and hi_ok


@dataclass(frozen=True)
class ConeCut:
    """Acceptance cone ``POS(RA,DEC)`` / ``POS(GLON,GLAT)``: centre and radius in degrees."""

    ra: float
    dec: float
    radius: float
    coordsys: str = "RA,DEC"

    def unit_vector(self) -> np.ndarray:
        r, d = math.radians(self.ra), math.radians(self.dec)
        return np.array([math.cos(d) * math.cos(r), math.cos(d) * math.sin(r), math.sin(d)])

    def centre(self) -> tuple[float, float]:
        """Centre re-derived from the unit vector, as astro::SkyDir returns it.

        ra = atan2(y, x) folded to [0, 360); dec = 90° − θ with θ = atan2(√(x²+y²), z)
        (CLHEP Hep3Vector phi/theta). Differs from the input only in the last ulp, which can
        matter for ``%.10g`` only on exact rounding ties — but that is what gets printed.
        """
        x, y, z = self.unit_vector()
        ra = math.atan2(y, x) * 180.0 / math.pi
        if ra < 0:
            ra += 360.0
        if ra >= 360.0:
            ra -= 360.0
        dec = 90.0 - math.atan2(math.hypot(x, y), z) * 180.0 / math.pi
        return ra, dec

    def dsval(self) -> str:
        ra, dec = self.centre()
        return f"CIRCLE({fmt_10g(ra)},{fmt_10g(dec)},{fmt_10g(self.radius)})"

    def separation(self, other: ConeCut) -> float:
        """Angle between the two centres in degrees."""
        c = float(np.clip(np.dot(self.unit_vector(), other.unit_vector()), -1.0, 1.0))
        return math.degrees(math.acos(c))

    def supersedes(self, other: Cut) -> bool:
        """self lies inside other: radius ≤ other.radius − centre separation."""
        if not isinstance(other, ConeCut) or other.coordsys != self.coordsys:
            return False
        return self.radius <= other.radius - self.separation(other)


@dataclass(frozen=True, eq=False)
class GtiCut:
    """``TIME`` / ``s`` / ``TABLE`` / ``:GTI``: events must lie in the GTI extension ``ext``.

    ``gti`` is the interval list (None when not loaded, e.g. header-only parsing).
    """

    gti: Gti | None = None
    ext: str = "GTI"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GtiCut):
            return NotImplemented
        return self.ext == other.ext and self.gti == other.gti

    def __hash__(self) -> int:
        return hash((self.ext, self.gti))

    def supersedes(self, other: Cut) -> bool:
        # Choice (C++ not checked): a GTI cut supersedes another GTI cut when its intervals
        # are contained in the other's — the same inclusion rule as for ranges.
        if not isinstance(other, GtiCut) or self.gti is None or other.gti is None:
            return False
        return (self.gti & other.gti) == self.gti


@dataclass(frozen=True)
class BitMaskCut:
    """``BIT_MASK(COL,<n>,<PASS_VER>)`` / ``DIMENSIONLESS`` / ``1:1``.

    ``value`` is the number as written; ``mask`` the bit mask it means (for old passes the
    number is a bit position, spec 1.4).
    """

    column: str
    value: int
    pass_ver: str = "P8R3"

    @property
    def mask(self) -> int:
        if self.pass_ver.upper() in _BIT_POSITION_PASSES:
            return 1 << self.value
        return self.value

    def dstyp(self) -> str:
        return f"BIT_MASK({self.column},{self.value},{self.pass_ver})"

    def supersedes(self, other: Cut) -> bool:  # handled by Cuts.add (validity tables)
        return False


@dataclass(frozen=True)
class GenericCut:
    """A DSS entry kept verbatim (e.g. ``IRF_VERSION`` / ``DIMENSIONLESS`` / name)."""

    dstyp: str
    unit: str
    value: str
    ref: str | None = None

    def supersedes(self, other: Cut) -> bool:
        return False


Cut = RangeCut | ConeCut | GtiCut | BitMaskCut | GenericCut


def cone_centre_rounded(cut: ConeCut) -> tuple[float, float, float]:
    """(ra, dec, radius) exactly as printed in the filter (``%.10g``), back as floats.

    gtselect's cfitsio filter compares with these printed numbers, so a native selection must
    use them too (spec 3.3).
    """
    ra, dec = cut.centre()
    return float(fmt_10g(ra)), float(fmt_10g(dec)), float(fmt_10g(cut.radius))


# ---------------------------------------------------------------------- reading

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][-+]?\d+)?"
_RANGE_RE = re.compile(rf"^\s*({_NUM})?\s*:\s*({_NUM})?\s*$")
_CIRCLE_RE = re.compile(rf"^\s*CIRCLE\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*$")
_POS_RE = re.compile(r"^\s*POS\s*\(\s*(RA\s*,\s*DEC|GLON\s*,\s*GLAT)\s*\)\s*$", re.I)
_MASK_RE = re.compile(
    r"^\s*BIT_MASK\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*(\d+)\s*(?:,\s*([^)]*?))?\s*\)\s*$"
)
_VERSION_TYPES = frozenset({"IRF_VERSION"})


def _num(text: str | None) -> float | None:
    return None if text is None else float(text.replace("D", "E").replace("d", "e"))


def _parse_one(
    dstyp: str,
    dsuni: str,
    dsval: str,
    dsref: str | None,
    *,
    columns: set[str] | None,
    gti: Gti | None,
) -> Cut | None:
    """One DSS entry → a cut; None = recognised but skipped; ValueError = unrecognised."""
    val = dsval.upper()  # Cuts.cxx upper-cases DSVAL
    typ = dstyp.strip()
    if val.startswith("CIRCLE"):
        m = _CIRCLE_RE.match(val)
        pos = _POS_RE.match(typ)
        if not m:
            raise ValueError(f"bad CIRCLE value {dsval!r}")
        coordsys = "RA,DEC" if pos is None else re.sub(r"\s", "", pos.group(1)).upper()
        return ConeCut(float(m.group(1)), float(m.group(2)), float(m.group(3)), coordsys)
    if typ.upper() == "TIME" and val.strip() == "TABLE":
        ext = (dsref or ":GTI").strip()
        return GtiCut(gti, ext.lstrip(":") or "GTI")
    if typ.upper().startswith("BIT_MASK"):
        m = _MASK_RE.match(typ)
        if not m:
            raise ValueError(f"bad BIT_MASK {dstyp!r}")
        return BitMaskCut(m.group(1), int(m.group(2)), (m.group(3) or "").strip())
    if typ.upper() in _VERSION_TYPES:
        return GenericCut(typ, dsuni, dsval, dsref)
    m = _RANGE_RE.match(val)
    if m and (m.group(1) is not None or m.group(2) is not None):
        base = typ.split("[", 1)[0].upper()
        if columns is not None and base not in columns:
            raise ValueError(f"range on absent column {typ!r}")
        return RangeCut(typ, dsuni, _num(m.group(1)), _num(m.group(2)))
    raise ValueError(f"unknown DSS entry {dstyp!r}={dsval!r}")


def read_dss(
    header: Header | fits.Header | Mapping[str, Any],
    *,
    columns: Iterable[str] | None = None,
    skip_time_ranges: bool = False,
    gti: Gti | None = None,
    tool: str = "fits",
    file: str | None = None,
) -> list[Cut]:
    """Parse the DSS keywords of ``header`` into cuts, in DSS order.

    ``columns``: when given, a range cut on a column not in it is an error (dataSubselector
    checks columns for gtselect and for gtmktime with apply_filter). ``skip_time_ranges``
    drops ``TIME`` range cuts (gtselect, gtltsum). ``gti`` is attached to ``TIME/TABLE``
    cuts. Any unrecognised entry raises ToolError "FITS extension contains an unrecognized DSS
    filtering scheme".
    """
    n = int(header.get("NDSKEYS", 0) or 0)
    cols = None if columns is None else {c.upper() for c in columns}
    cuts: list[Cut] = []
    for k in range(1, n + 1):
        try:
            typ = str(header[f"DSTYP{k}"])
            uni = str(header.get(f"DSUNI{k}", ""))
            val = str(header[f"DSVAL{k}"])
        except KeyError:
            raise ToolError(tool, f"{UNRECOGNIZED} (DSS entry {k} of {n} missing)", file) from None
        ref = header.get(f"DSREF{k}")
        try:
            cut = _parse_one(
                typ, uni, val, None if ref is None else str(ref), columns=cols, gti=gti
            )
        except ValueError as exc:
            raise ToolError(tool, f"{UNRECOGNIZED}: {exc}", file) from None
        if skip_time_ranges and isinstance(cut, RangeCut) and cut.column.upper() == "TIME":
            continue
        if cut is not None:
            cuts.append(cut)
    return cuts


def read_dss_file(
    path: str | Path | FitsFile | fits.HDUList,
    extname: str = "EVENTS",
    *,
    check_columns: bool = True,
    skip_time_ranges: bool = False,
    tool: str = "fits",
) -> list[Cut]:
    """Read the DSS of ``extname`` in a file, loading the GTI its ``TIME/TABLE`` refers to.

    ``path`` may be a file name, an open :class:`~fermipipe.fits.table.FitsFile` (no astropy
    import on these two paths) or an astropy HDUList.
    """
    from fermipipe.fits.table import FitsFile

    if isinstance(path, FitsFile):
        return _read_dss_fitsfile(path, extname, check_columns, skip_time_ranges, tool)
    if isinstance(path, str | Path):
        name = str(path)
        try:
            ff = FitsFile(path)
        except (OSError, ValueError) as exc:
            raise ToolError(tool, f"cannot read FITS file ({exc})", name) from None
        with ff:
            return _read_dss_fitsfile(ff, extname, check_columns, skip_time_ranges, tool)
    return _read_dss_hdul(path, extname, check_columns, skip_time_ranges, tool)


def _read_dss_fitsfile(
    ff: FitsFile, extname: str, check_columns: bool, skip_time_ranges: bool, tool: str
) -> list[Cut]:
    name = str(ff.path)
    try:
        info = ff.hdu(extname)
    except KeyError:
        raise ToolError(tool, f"no {extname} extension", name) from None
    cols: list[str] | None = None
    if check_columns and info.is_bintable:
        try:
            cols = list(ff.table(info.index).columns)
        except ValueError as exc:
            raise ToolError(tool, f"unreadable {extname} table ({exc})", name) from None
    cuts = read_dss(
        info.header, columns=cols, skip_time_ranges=skip_time_ranges, tool=tool, file=name
    )
    out: list[Cut] = []
    for cut in cuts:
        if isinstance(cut, GtiCut):
            try:
                table = ff.table(cut.ext)
            except KeyError:
                raise ToolError(tool, f"DSS refers to missing extension {cut.ext}", name) from None
            except ValueError as exc:
                raise ToolError(tool, f"unreadable {cut.ext} extension ({exc})", name) from None
            cut = GtiCut(read_gti(table, tool=tool, file=name), cut.ext)
        out.append(cut)
    return out


def _read_dss_hdul(
    hdul: fits.HDUList, extname: str, check_columns: bool, skip_time_ranges: bool, tool: str
) -> list[Cut]:
    name = hdul.filename()
    try:
        hdu = hdul[extname]
    except KeyError:
        raise ToolError(tool, f"no {extname} extension", name) from None
    header = hdu.header
    cols = list(hdu.columns.names) if check_columns and hasattr(hdu, "columns") else None
    cuts = read_dss(header, columns=cols, skip_time_ranges=skip_time_ranges, tool=tool, file=name)
    out: list[Cut] = []
    for cut in cuts:
        if isinstance(cut, GtiCut):
            try:
                gti_ext = hdul[cut.ext]
            except KeyError:
                raise ToolError(tool, f"DSS refers to missing extension {cut.ext}", name) from None
            cut = GtiCut(read_gti(gti_ext, tool=tool, file=name), cut.ext)
        out.append(cut)
    return out


# ---------------------------------------------------------------------- merging


class MaskInconsistentError(ValueError):
    """A new event class/type selection is not allowed on top of the existing one."""


def load_validity_table(path: str | Path) -> dict[int, int]:
    """Read a CALDB ``valid_evclass_selections.txt``-style table: lines ``current,allowed``."""
    table: dict[int, int] = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cur, allowed = (int(x) for x in line.split(",")[:2])
        table[cur] = allowed
    return table


MaskValidity = Callable[[str, int, int], bool]


@dataclass
class Cuts:
    """An ordered list of cuts with the Fermitools merge rules.

    ``mask_validity(column, current_mask, new_mask) -> bool`` decides whether a new Pass 8
    bit mask may replace an existing one on the same column (the CALDB validity tables).
    Choice when it is None (tables unavailable, spec 13): the new mask replaces the old one
    in place — what the Fermitools do whenever the table allows it.
    """

    cuts: list[Cut] = field(default_factory=list)
    mask_validity: MaskValidity | None = None

    def __iter__(self) -> Iterator[Cut]:
        return iter(self.cuts)

    def __len__(self) -> int:
        return len(self.cuts)

    def __getitem__(self, i: int) -> Cut:
        return self.cuts[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Cuts):
            return self.cuts == other.cuts
        if isinstance(other, list):
            return self.cuts == other
        return NotImplemented

    def copy(self) -> Cuts:
        return Cuts(list(self.cuts), self.mask_validity)

    def add(self, cut: Cut) -> None:
        """``Cuts::addCut``: drop if identical; else replace the first cut it supersedes in
        place; else drop if an existing cut supersedes it; else append."""
        if any(_same(c, cut) for c in self.cuts):
            return
        if isinstance(cut, BitMaskCut):
            for i, old in enumerate(self.cuts):
                if isinstance(old, BitMaskCut) and old.column == cut.column:
                    if self.mask_validity is not None and not self.mask_validity(
                        cut.column, old.mask, cut.mask
                    ):
                        kind = "evclass" if cut.column.upper() == "EVENT_CLASS" else "evtype"
                        raise MaskInconsistentError(
                            f"The requested {kind} selection {cut.mask} is inconsistent with "
                            f"the existing {kind} selection {old.mask}"
                        )
                    self.cuts[i] = cut
                    return
        for i, old in enumerate(self.cuts):
            if cut.supersedes(old):
                self.cuts[i] = cut
                return
        if any(old.supersedes(cut) for old in self.cuts):
            return
        self.cuts.append(cut)

    def extend(self, cuts: Iterable[Cut]) -> None:
        for c in cuts:
            self.add(c)

    def merge_range_cuts(self) -> None:
        """Remove all range cuts and re-append one per column, alphabetically, each the
        intersection (max of minima, min of maxima) of that column's ranges."""
        ranges: dict[str, RangeCut] = {}
        rest: list[Cut] = []
        for c in self.cuts:
            if not isinstance(c, RangeCut):
                rest.append(c)
                continue
            prev = ranges.get(c.column)
            if prev is None:
                ranges[c.column] = c
                continue
            lo = _max_opt(prev.lo, c.lo)
            hi = _min_opt(prev.hi, c.hi)
            ranges[c.column] = RangeCut(c.column, prev.unit, lo, hi)
        self.cuts = rest + [ranges[k] for k in sorted(ranges)]

    def gti_cuts(self) -> list[GtiCut]:
        return [c for c in self.cuts if isinstance(c, GtiCut)]


def _same(a: Cut, b: Cut) -> bool:
    return type(a) is type(b) and a == b


def _max_opt(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _min_opt(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


# ---------------------------------------------------------------------- writing


def dss_entries(cut: Cut) -> tuple[str, str, str, str | None]:
    """(DSTYP, DSUNI, DSVAL, DSREF or None) of one cut, as ``writeDssKeywords`` writes them."""
    if isinstance(cut, RangeCut):
        return cut.column, cut.unit, cut.dsval(), None
    if isinstance(cut, ConeCut):
        return f"POS({cut.coordsys})", "deg", cut.dsval(), None
    if isinstance(cut, GtiCut):
        return "TIME", "s", "TABLE", f":{cut.ext}"
    if isinstance(cut, BitMaskCut):
        return cut.dstyp(), "DIMENSIONLESS", "1:1", None
    return cut.dstyp, cut.unit, cut.value, cut.ref


_dss_entries = dss_entries  # backwards-compatible private name (used by gtselect)


def dss_cards(cuts: Iterable[Cut]) -> list[Card]:
    """The cards :func:`write_dss` appends (TIME ranges skipped, NDSKEYS last, no comment)."""
    header = Header()
    write_dss(header, cuts)
    return list(header.cards)


def _remove_dss(header: Header | fits.Header) -> None:
    n = int(header.get("NDSKEYS", 0) or 0)
    for k in range(1, n + 1):
        for stem in ("DSTYP", "DSUNI", "DSVAL", "DSREF"):
            key = f"{stem}{k}"
            while key in header:
                del header[key]
    while "NDSKEYS" in header:
        del header["NDSKEYS"]


def _append_entry(header: Header | fits.Header, k: int, cut: Cut) -> None:
    typ, uni, val, ref = dss_entries(cut)
    append_card(header, f"DSTYP{k}", typ)
    append_card(header, f"DSUNI{k}", uni)
    append_card(header, f"DSVAL{k}", val)
    if ref is not None:
        append_card(header, f"DSREF{k}", ref)


def _is_time_range(cut: Cut) -> bool:
    return isinstance(cut, RangeCut) and cut.column.upper() == "TIME"


def write_dss(header: Header | fits.Header, cuts: Iterable[Cut]) -> None:
    """``writeDssKeywords``: drop the old set, append cuts in order (TIME ranges skipped),
    then ``NDSKEYS`` last, without comment."""
    _remove_dss(header)
    k = 0
    for cut in cuts:
        if _is_time_range(cut):
            continue
        k += 1
        _append_entry(header, k, cut)
    append_card(header, "NDSKEYS", k)


def write_dss_time_only(header: Header | fits.Header, cuts: Iterable[Cut]) -> None:
    """``writeDssTimeKeywords`` (gtltcube): ``NDSKEYS`` first, then only GTI/TIME cuts."""
    _remove_dss(header)
    timecuts = [c for c in cuts if isinstance(c, GtiCut) or _is_time_range(c)]
    append_card(header, "NDSKEYS", len(timecuts))
    for k, cut in enumerate(timecuts, start=1):
        _append_entry(header, k, cut)


# ---------------------------------------------------------------------- filter text


def _range_term(cut: RangeCut) -> str:
    col = cut.column
    if cut.lo is not None and cut.hi is not None:
        op = "<=" if cut.lo == cut.hi else "<"
        return f"{fmt_20g(cut.lo)} {op} {col} && {col} <= {fmt_20g(cut.hi)}"
    if cut.lo is not None:
        return f"{fmt_20g(cut.lo)} < {col}"
    return f"{col} <= {fmt_20g(cut.hi)}"  # type: ignore[arg-type]


def filter_terms(cuts: Iterable[Cut]) -> list[str]:
    """cfitsio row-filter terms of the cuts, in list order (spec 3.3).

    GTI cuts and verbatim (version) cuts give no term; the caller appends ``gtifilter()``.
    A ``POS(GLON,GLAT)`` cone uses the L and B columns (choice: not covered by the spec).
    """
    terms: list[str] = []
    for cut in cuts:
        if isinstance(cut, RangeCut):
            terms.append(_range_term(cut))
        elif isinstance(cut, ConeCut):
            ra, dec = cut.centre()
            lon, lat = ("RA", "DEC") if cut.coordsys == "RA,DEC" else ("L", "B")
            terms.append(
                f"angsep({lon},{lat},{fmt_10g(ra)},{fmt_10g(dec)}) < {fmt_10g(cut.radius)}"
            )
        elif isinstance(cut, BitMaskCut):
            terms.append(f"(({cut.column}&o{cut.mask:o}) != o0)")
    return terms


def filter_string(cuts: Iterable[Cut], *, gtifilter: bool = True) -> str:
    """Terms joined by `` && ``, then `` && gtifilter()`` (gtselect's full filter)."""
    terms = filter_terms(cuts)
    if gtifilter:
        terms.append("gtifilter()")
    return " && ".join(terms)
