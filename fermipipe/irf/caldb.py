"""Locate the LAT CALDB and resolve an IRF name + event types to files and HDUs.

Search order for the CALDB root (the folder holding ``data/glast/lat``):

1. an explicit path (the pipeline config's ``caldb:`` / a tool parameter);
2. ``$CALDB``;
3. a Fermitools install: ``$FERMI_DIR/data/caldb`` (conda packages, where FERMI_DIR is
   ``$CONDA_PREFIX/share/fermitools``), ``$FERMI_DIR/refdata/fermi/caldb/CALDB`` (the older
   ScienceTools tarballs), ``$CONDA_PREFIX/share/fermitools/data/caldb``.

An IRF is looked up the way the Fermitools do (irfUtil HdCaldb ``getFiles``): rows of
``data/glast/lat/caldb.indx`` with ``VERSION(<irf>)`` in CAL_CBD, the event type in DETNAM and
the component in CAL_CNAM (EFF_AREA, PHI_DEP, EFFICIENCY_PARS, RPSF, PSF_SCALING,
FISHEYE_CORR, EDISP, EDISP_SCALING); CAL_XNO is the HDU number. Old names that are a CLASS
prefix rather than a VERSION (``P6_v3_diff`` → ``CLASS(P6_v3_diff_front)``) are accepted too.
Without an index entry the file-name convention of spec §14.4 is tried:
``bcf/ea/aeff_<IRF>_<FB|PSF|EDISP>.fits`` with ``EFFECTIVE AREA_<TYPE>`` … extensions, or the
older ``aeff_<IRF>_<front|back>.fits`` pair with un-suffixed extensions.

Event types (``irf_index.fits`` EVENT_TYPE_MAPPING): FRONT 0, BACK 1, PSF0–3 2–5,
EDISP0–3 6–9; an ``evtype`` bit mask selects them, always in ascending bit order.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fermipipe.errors import FermipipeError

__all__ = [
    "AEFF_COMPONENTS",
    "EDISP_COMPONENTS",
    "EVENT_TYPE_BITS",
    "PSF_COMPONENTS",
    "CaldbNotFoundError",
    "EventTypeIrf",
    "IrfComponent",
    "IrfNotFoundError",
    "IrfSelection",
    "caldb_candidates",
    "event_class_info",
    "event_class_table",
    "event_type_table",
    "find_caldb",
    "pass_version",
    "resolve_irf",
]

#: Sub-path of the LAT index and IRF folder inside a CALDB root.
LAT_INDEX = Path("data/glast/lat/caldb.indx")
BCF = Path("data/glast/lat/bcf")
IRF_INDEX = BCF / "irf_index.fits"

#: CAL_CNAM values of each IRF part (irfUtil IrfHdus).
AEFF_COMPONENTS = ("EFF_AREA", "PHI_DEP", "EFFICIENCY_PARS")
PSF_COMPONENTS = ("RPSF", "PSF_SCALING", "FISHEYE_CORR")
EDISP_COMPONENTS = ("EDISP", "EDISP_SCALING")

#: Fallback when irf_index.fits is absent: name → (bit position, partition).
EVENT_TYPE_BITS: dict[str, tuple[int, str]] = {
    "FRONT": (0, "none"),
    "BACK": (1, "none"),
    **{f"PSF{i}": (2 + i, "PSF") for i in range(4)},
    **{f"EDISP{i}": (6 + i, "EDISP") for i in range(4)},
}

# File-name convention (spec §14.4): folder, file prefix, extension stem per component.
_CONVENTION: dict[str, tuple[str, str, str]] = {
    "EFF_AREA": ("ea", "aeff", "EFFECTIVE AREA"),
    "PHI_DEP": ("ea", "aeff", "PHI_DEPENDENCE"),
    "EFFICIENCY_PARS": ("ea", "aeff", "EFFICIENCY_PARAMS"),
    "RPSF": ("psf", "psf", "RPSF"),
    "PSF_SCALING": ("psf", "psf", "PSF_SCALING_PARAMS"),
    "FISHEYE_CORR": ("psf", "psf", "FISHEYE_CORRECTION"),
    "EDISP": ("edisp", "edisp", "ENERGY DISPERSION"),
    "EDISP_SCALING": ("edisp", "edisp", "EDISP_SCALING_PARAMS"),
}
_PARTITION_FILE = {"none": "FB", "PSF": "PSF", "EDISP": "EDISP"}


class CaldbNotFoundError(FermipipeError):
    """No CALDB folder was found in any of the places searched."""


class IrfNotFoundError(FermipipeError):
    """The IRF (or one of its event types) is not in the CALDB. The message is one line that
    names the IRF and every place looked in."""


@dataclass(frozen=True)
class IrfComponent:
    """One IRF table: file, HDU number (0 = primary) and its EXTNAME."""

    path: Path
    hdu: int
    extname: str


@dataclass(frozen=True)
class EventTypeIrf:
    """The tables of one event type of an IRF, keyed by CAL_CNAM (see *_COMPONENTS).

    A component absent from the CALDB (e.g. PHI_DEP of old IRFs) is absent from the dict.
    """

    irf: str
    event_type: str
    bit: int
    components: Mapping[str, IrfComponent] = field(default_factory=dict)

    @property
    def aeff(self) -> IrfComponent:
        return self.components["EFF_AREA"]

    def get(self, cname: str) -> IrfComponent | None:
        return self.components.get(cname)


@dataclass(frozen=True)
class IrfSelection:
    """An IRF with its selected event types, in ascending bit order (spec §14.3)."""

    caldb: Path
    irf: str
    pass_ver: str
    event_types: tuple[EventTypeIrf, ...]


# ---------------------------------------------------------------------- CALDB root


def caldb_candidates(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> list[tuple[str, Path]]:
    """Where the CALDB is looked for, in order, as (origin, path) pairs."""
    env = os.environ if environ is None else environ
    out: list[tuple[str, Path]] = []
    if explicit not in (None, ""):
        out.append(("caldb parameter", Path(os.fspath(explicit))))
    if env.get("CALDB"):
        out.append(("$CALDB", Path(env["CALDB"])))
    if env.get("FERMI_DIR"):
        fermi = Path(env["FERMI_DIR"])
        out.append(("$FERMI_DIR/data/caldb", fermi / "data" / "caldb"))
        out.append(("$FERMI_DIR/refdata/fermi/caldb/CALDB", fermi / "refdata/fermi/caldb/CALDB"))
    if env.get("CONDA_PREFIX"):
        out.append(
            (
                "$CONDA_PREFIX/share/fermitools/data/caldb",
                Path(env["CONDA_PREFIX"]) / "share/fermitools/data/caldb",
            )
        )
    return out


def _is_caldb(path: Path) -> bool:
    return (path / LAT_INDEX).is_file() or (path / BCF).is_dir()


def find_caldb(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The first candidate of :func:`caldb_candidates` that holds ``data/glast/lat``.

    An explicit path that is not a CALDB is an error by itself (no silent fallback).
    """
    candidates = caldb_candidates(explicit, environ)
    if explicit not in (None, ""):
        origin, path = candidates[0]
        if not _is_caldb(path):
            raise CaldbNotFoundError(f"CALDB {path} ({origin}) has no {LAT_INDEX} nor {BCF}/")
        return path
    for _origin, path in candidates:
        if _is_caldb(path):
            return path
    looked = "; ".join(f"{o}={p}" for o, p in candidates) or "no CALDB, FERMI_DIR, CONDA_PREFIX"
    raise CaldbNotFoundError(
        f"no LAT CALDB found (looked in: {looked}); set caldb: in the config or $CALDB"
    )


# ---------------------------------------------------------------------- index files


@dataclass(frozen=True)
class _IndexRow:
    detnam: str
    cname: str
    path: Path
    hdu: int
    version: str
    klass: str
    quality: int


_CBD_RE = re.compile(r"(VERSION|CLASS)\(([^)]*)\)")


def _text(value: object) -> str:
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip()


@functools.lru_cache(maxsize=8)
def _read_index(caldb: Path) -> tuple[_IndexRow, ...]:
    # The package's own FITS reader: no astropy import (~0.5 s) for a 3000-row index.
    from fermipipe.fits.table import FitsFile

    path = caldb / LAT_INDEX
    if not path.is_file():
        return ()
    with FitsFile(path) as ff:
        t = ff.table("CIF")
        cols = [
            t.column(c)
            for c in ("DETNAM", "CAL_CNAM", "CAL_DIR", "CAL_FILE", "CAL_XNO", "CAL_CBD", "CAL_QUAL")
        ]
        rows: list[_IndexRow] = []
        for det, cnam, cdir, cfile, xno, cbd, qual in zip(*cols, strict=True):
            found = dict(_CBD_RE.findall(_text(cbd)))
            rows.append(
                _IndexRow(
                    _text(det),
                    _text(cnam),
                    caldb / _text(cdir) / _text(cfile),
                    int(xno),
                    found.get("VERSION", ""),
                    found.get("CLASS", ""),
                    int(qual),
                )
            )
    return tuple(rows)


@functools.lru_cache(maxsize=8)
def _read_irf_index(
    caldb: Path,
) -> tuple[dict[str, tuple[int, int]], tuple[tuple[str, int, str], ...]]:
    """(event class → (bit position, allowed event-type mask), event types (name, bit,
    partition)) from ``irf_index.fits``; empty class map and the fallback types without it."""
    from fermipipe.fits.table import FitsFile

    path = caldb / IRF_INDEX
    types = tuple((n, b, p) for n, (b, p) in EVENT_TYPE_BITS.items())
    if not path.is_file():
        return {}, types
    with FitsFile(path) as ff:
        bm = ff.table("BITMASK_MAPPING")
        classes = {
            _text(n): (int(b), int(m))
            for n, b, m in zip(
                bm.column("EVENT_CLASS"), bm.column("BITPOSITION"), bm.column("EVENT_TYPES"),
                strict=True,
            )
        }  # fmt: skip
        et = ff.table("EVENT_TYPE_MAPPING")
        types = tuple(
            (_text(n), int(b), _text(p))
            for n, b, p in zip(
                et.column("EVENT_TYPE"), et.column("BITPOSITION"),
                et.column("EVENT_TYPE_PARTITION"), strict=True,
            )
        )  # fmt: skip
    return classes, types


def event_type_table(caldb: Path) -> tuple[tuple[str, int, str], ...]:
    """Event types of the CALDB as (name, bit position, partition), in file order."""
    return _read_irf_index(Path(caldb))[1]


def event_class_table(caldb: Path) -> dict[str, tuple[int, int]]:
    """Every IRF of irf_index.fits BITMASK_MAPPING: name → (EVENT_CLASS bit position,
    allowed event-type mask)."""
    return dict(_read_irf_index(Path(caldb))[0])


def event_class_info(caldb: Path, irf: str) -> tuple[int, int] | None:
    """(EVENT_CLASS bit position, allowed event-type mask) of ``irf`` from irf_index.fits, or
    None when the IRF is not listed there (Pass 6, custom IRFs)."""
    return _read_irf_index(Path(caldb))[0].get(irf)


def pass_version(irf: str) -> str:
    """PASS_VER implied by an IRF name (dataSubselector ``extract_irf_versions``).

    No upper-case ``V`` → ``NONE``; ``P7…V6`` → ``P7V6``; else the text before the first
    ``_`` (``P8R3_SOURCE_V3`` → ``P8R3``, ``P7REP_SOURCE_V15`` → ``P7REP``).
    """
    v = irf.rfind("V")
    if v < 0:
        return "NONE"
    if irf.startswith("P7") and irf[v:] == "V6":
        return "P7V6"
    return irf.split("_", 1)[0]


# ---------------------------------------------------------------------- resolution


def _extname(path: Path, hdu: int) -> str:
    from fermipipe.fits.table import FitsFile

    with FitsFile(path) as ff:
        return str(ff.hdus[hdu].header.get("EXTNAME", "")).strip()


def _from_index(
    rows: Sequence[_IndexRow], irf: str, event_type: str, cnames: Sequence[str]
) -> dict[str, IrfComponent]:
    key = irf.upper()
    klass = f"{irf}_{event_type}".upper()
    out: dict[str, IrfComponent] = {}
    for cname in cnames:
        hits = [
            r
            for r in rows
            if r.cname == cname
            and r.detnam == event_type
            and r.quality == 0
            and (r.version.upper() == key or r.klass.upper() == klass)
        ]
        if not hits:
            continue
        if len({(h.path, h.hdu) for h in hits}) > 1:
            # Several validity epochs (AeffEpochDep): not needed by any IRF we support.
            raise IrfNotFoundError(
                f"IRF {irf} {event_type} {cname}: {len(hits)} epochs in the CALDB index; "
                "multi-epoch IRFs are not supported"
            )
        h = hits[0]
        if h.path.is_file():
            out[cname] = IrfComponent(h.path, h.hdu, _extname(h.path, h.hdu))
    return out


def _convention_files(caldb: Path, irf: str, event_type: str, partition: str) -> list[Path]:
    """File names tried for ``aeff`` by the §14.4 convention (for the error message too)."""
    group = _PARTITION_FILE.get(partition, partition)
    return [
        caldb / BCF / "ea" / f"aeff_{irf}_{group}.fits",
        caldb / BCF / "ea" / f"aeff_{irf}_{event_type.lower()}.fits",
    ]


def _from_convention(
    caldb: Path, irf: str, event_type: str, partition: str, cnames: Sequence[str]
) -> dict[str, IrfComponent]:
    from fermipipe.fits.table import FitsFile

    group = _PARTITION_FILE.get(partition, partition)
    out: dict[str, IrfComponent] = {}
    for cname in cnames:
        folder, prefix, stem = _CONVENTION[cname]
        for fname, ext in (
            (f"{prefix}_{irf}_{group}.fits", f"{stem}_{event_type}"),
            (f"{prefix}_{irf}_{event_type.lower()}.fits", stem),
        ):
            path = caldb / BCF / folder / fname
            if not path.is_file():
                continue
            with FitsFile(path) as ff:
                for info in ff.hdus:
                    if str(info.header.get("EXTNAME", "")).strip().upper() == ext.upper():
                        out[cname] = IrfComponent(path, info.index, ext)
                        break
            if cname in out:
                break
    return out


def _selected_types(
    caldb: Path, irf: str, evtype: int | Sequence[str] | None
) -> list[tuple[str, int, str]]:
    table = event_type_table(caldb)
    if evtype is None:
        info = event_class_info(caldb, irf)
        allowed = info[1] if info is not None else 0b11  # FRONT/BACK for unlisted IRFs
        return [t for t in table if (allowed >> t[1]) & 1]
    if isinstance(evtype, int):
        if evtype <= 0:
            raise IrfNotFoundError(f"IRF {irf}: evtype={evtype} selects no event type")
        chosen = [t for t in table if (evtype >> t[1]) & 1]
        unknown = evtype & ~sum(1 << t[1] for t in table)
        if unknown:
            raise IrfNotFoundError(f"IRF {irf}: evtype={evtype} has unknown bits {unknown}")
        return sorted(chosen, key=lambda t: t[1])
    names = {n.upper() for n in evtype}
    chosen = [t for t in table if t[0] in names]
    missing = names - {t[0] for t in chosen}
    if missing:
        raise IrfNotFoundError(f"IRF {irf}: unknown event type(s) {', '.join(sorted(missing))}")
    return sorted(chosen, key=lambda t: t[1])


def resolve_irf(
    irf: str,
    evtype: int | Sequence[str] | None = None,
    caldb: str | os.PathLike[str] | None = None,
    *,
    components: Sequence[str] = AEFF_COMPONENTS + PSF_COMPONENTS + EDISP_COMPONENTS,
    environ: Mapping[str, str] | None = None,
) -> IrfSelection:
    """The files and HDUs of ``irf`` for the event types in ``evtype``.

    ``evtype``: a bit mask (gtexpcube2's ``evtype``, 3 = FRONT+BACK), event type names, or
    None for every type the IRF allows (irf_index.fits). ``caldb``: an explicit CALDB root,
    else the search of :func:`find_caldb`. The effective area of every selected type must be
    found; otherwise :class:`IrfNotFoundError` names the IRF, the type and where it looked.
    """
    root = find_caldb(caldb, environ)
    name = irf.strip()
    rows = _read_index(root)
    out: list[EventTypeIrf] = []
    for event_type, bit, partition in _selected_types(root, name, evtype):
        found = _from_index(rows, name, event_type, components)
        if "EFF_AREA" not in found:
            found = _from_convention(root, name, event_type, partition, components)
        if "EFF_AREA" not in found:
            tried = ", ".join(str(p) for p in _convention_files(root, name, event_type, partition))
            index = root / LAT_INDEX
            where = f"{index} (VERSION({name}) / CLASS({name}_{event_type}))"
            if not index.is_file():
                where = f"{index} (missing)"
            raise IrfNotFoundError(
                f"IRF {name} (event type {event_type}) not found in CALDB {root}: "
                f"looked in {where}, {tried}"
            )
        out.append(EventTypeIrf(name, event_type, bit, found))
    if not out:
        raise IrfNotFoundError(f"IRF {name}: no event type selected")
    return IrfSelection(root, name, pass_version(name), tuple(out))
