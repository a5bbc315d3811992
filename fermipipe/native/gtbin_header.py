"""Keyword harvesting, history copying and header/HDU assembly for gtbin (spec 5.2).

What gtbin does with keywords (evtbin:src/DataProduct.cxx, facts only):

* It *harvests* a fixed list of keywords, plus NDSKEYS and DSTYP/DSUNI/DSVAL/DSREF 1..NDSKEYS,
  as whole records (value **and** comment) from the primary, GTI, (EBOUNDS,) and events
  headers of every input file, in that order, each extension name over all files; a later
  header overwrites an earlier one. Missing keys are skipped; an extension missing from a
  file stops the harvest of that extension name (the C++ exception aborts the file loop).
* It then sets computed values: TSTART/TSTOP (LC, PHA2), EXPOSURE, ONTIME, DATE (local
  time, no fraction), FILENAME, CREATOR. A computed value replaces the value of a harvested
  record but keeps its comment; a key not harvested gets a new record with the tool's comment.
  Doubles are printed like ``%#.15g`` (``223850000.000000``), as in the reference files.
* Every output HDU whose template contains a key gets that record, in place.
* The DSS records (not NDSKEYS) are appended to the main HDU in first-seen order. They are
  copied as opaque records, without interpretation (so no DSS model is involved).
* HISTORY cards of the inputs' events (and GTI) headers are copied between banners.

EQUINOX is misspelt ``EQUNINOX`` in the C++ list, so the template's value always stays.
The GBM-only extras (DETNAM/TRIGTIME forced into every HDU, DATATYPE/RA_OBJ/… in the
primary) are not reproduced: LAT files never carry them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from fermipipe.fits.keywords import ascii_text, cfitsio_double

if TYPE_CHECKING:
    from fermipipe.compact_write import SparseImage

HARVESTED_KEYS: tuple[str, ...] = (
    "TELESCOP", "INSTRUME", "CHANTYPE", "DATE", "DATE-OBS", "DATE-END", "OBJECT", "TIMESYS",
    "MJDREFI", "MJDREFF", "EQUNINOX", "RADECSYS", "EXPOSURE", "ONTIME", "TSTART", "TSTOP",
    "OBSERVER", "RESPFILE", "DETNAM", "DATATYPE", "RA_OBJ", "DEC_OBJ", "TRIGTIME", "PRIMTYPE",
    "EVT_DEAD", "EVTDEDHI", "TIMEUNIT", "TIMEZERO", "TIMEREF", "CLOCKAPP", "GPS_OUT",
)  # fmt: skip

_RULE = "-" * 72


def format_double(value: float) -> str:
    """A double as tip's KeyRecord prints it: 15 significant digits, trailing zeros kept."""
    return f"{float(value):#.15g}".upper()


def string_value(text: str) -> str:
    """A FITS string value padded to 8 characters inside the quotes, like cfitsio."""
    return "'" + text.replace("'", "''").ljust(8) + "'"


def card_image(key: str, value_text: str, comment: str = "") -> str:
    """An 80-character card ``KEY     = value / comment`` (strings left-, numbers right-aligned)."""
    text = f"{value_text:<20}" if value_text.startswith("'") else f"{value_text:>20}"
    image = f"{key.upper():<8}= {text}"
    if comment:
        image += " / " + comment
    return image[:80].ljust(80)


class CardList:
    """A header as an ordered list of 80-character card images (kept byte for byte).

    astropy's Header would warn on, or reorder, some of the manipulations gtbin's templates
    need (repeated blank cards, in-place record replacement), so the output headers are plain
    card lists serialised directly.
    """

    def __init__(self, images: Iterable[str]) -> None:
        self.cards: list[str] = [c[:80].ljust(80) for c in images]

    def index(self, key: str) -> int | None:
        """Position of the first value card named ``key`` (None if absent)."""
        key = key.upper()
        for i, image in enumerate(self.cards):
            if image[8:10] == "= " and image[:8].rstrip() == key:
                return i
        return None

    def __contains__(self, key: str) -> bool:
        return self.index(key) is not None

    def value(self, key: str) -> object:
        """The parsed value of ``key`` (KeyError if absent)."""
        idx = self.index(key)
        if idx is None:
            raise KeyError(key)
        return fits.Card.fromstring(self.cards[idx]).value

    def put(self, key: str, image: str) -> None:
        """Replace card ``key`` in place, or append it."""
        idx = self.index(key)
        if idx is None:
            self.cards.append(image)
        else:
            self.cards[idx] = image

    def set(self, key: str, value_text: str, comment: str | None = None) -> None:
        """Set ``key`` to a formatted value text, keeping the comment unless one is given."""
        idx = self.index(key)
        if comment is None:
            comment = "" if idx is None else str(fits.Card.fromstring(self.cards[idx]).comment)
        self.put(key, card_image(key, value_text, comment))

    def set_int(self, key: str, value: int, comment: str | None = None) -> None:
        self.set(key, str(int(value)), comment)

    def set_str(self, key: str, value: str, comment: str | None = None) -> None:
        self.set(key, string_value(value), comment)

    def set_double(self, key: str, value: float, comment: str | None = None) -> None:
        """A double as cfitsio ``fits_update_key_dbl`` prints it (``%.15G``, ``.`` added)."""
        self.set(key, cfitsio_double(value), comment)

    def append(self, image: str) -> None:
        self.cards.append(image[:80].ljust(80))

    def add_history(self, text: str) -> None:
        """HISTORY cards, wrapped at 72 characters like cfitsio ``fits_write_history``."""
        text = text.rstrip()
        chunks = [text[i : i + 72] for i in range(0, len(text), 72)] or [""]
        for chunk in chunks:
            self.cards.append(("HISTORY " + chunk).ljust(80))

    def tobytes(self) -> bytes:
        text = "".join(self.cards) + "END".ljust(80)
        text += " " * (-len(text) % 2880)
        return text.encode("ascii")


@dataclass
class Harvest:
    """The keyword records and history gathered from the input files (DataProduct state)."""

    known: list[str] = field(default_factory=lambda: list(HARVESTED_KEYS))
    dss_keys: list[str] = field(default_factory=list)
    records: dict[str, fits.Card] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)

    def harvest(self, header: fits.Header) -> None:
        """Take the known keys (and the DSS keys announced by NDSKEYS) from ``header``."""
        ndss = 0
        if "NDSKEYS" in header:
            try:
                ndss = int(header["NDSKEYS"])
            except (TypeError, ValueError):
                ndss = 0
            self.known.append("NDSKEYS")
        for idx in range(1, ndss + 1):
            for stem in ("DSTYP", "DSUNI", "DSVAL", "DSREF"):
                key = f"{stem}{idx}"
                if key not in self.known:
                    self.dss_keys.append(key)
                    self.known.append(key)
        for key in dict.fromkeys(self.known):
            if key in header:
                self.records[key] = header.cards[key]

    def harvest_history(self, header: fits.Header | None, file_name: str, ext: str) -> None:
        """Collect the HISTORY of ``file_name[ext]`` between gtbin's banner lines."""
        file_name = ascii_text(file_name)  # a header holds ASCII only; names hold any bytes
        if header is None:
            lines = [_RULE, f'Unable to find or open input extension "{ext}" in file {file_name}']
            lines.append(_RULE)
        else:
            found = [str(c.value).lstrip() for c in header.cards if c.keyword == "HISTORY"]
            if not found:
                lines = [_RULE, f"No history available in {file_name}[{ext}]", _RULE]
            else:
                lines = [_RULE, f"BEGIN history copied from {file_name}[{ext}]", _RULE]
                lines += found
                lines += [_RULE, "END copied history", _RULE]
        self.history.setdefault(ext, []).extend(lines)

    def get_float(self, key: str) -> float | None:
        """A harvested numeric value (None when absent or undefined)."""
        card = self.records.get(key)
        if card is None:
            return None
        try:
            return float(card.value)
        except (TypeError, ValueError):
            return None

    def update_value(self, key: str, value_text: str, comment: str = "") -> None:
        """``updateKeyValue``: keep a harvested record's comment, else create a new record."""
        old = self.records.get(key)
        if old is not None:
            comment = str(old.comment)
        self.records[key] = fits.Card.fromstring(card_image(key, value_text, comment))

    def update_double(self, key: str, value: float, comment: str = "") -> None:
        self.update_value(key, format_double(value), comment)

    def update_string(self, key: str, value: str, comment: str = "") -> None:
        self.update_value(key, string_value(value), comment)

    def finish(self, creator: str) -> None:
        """CREATOR and DATE (local time, like ``formatDateKeyword``) records.

        FILENAME is set by the writer (fits.table.write_fits), like FitsUtil::writeChecksums.
        """
        self.update_string("CREATOR", creator, "Software and version creating file")
        self.update_string("DATE", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()))

    def apply(self, header: CardList) -> None:
        """Overwrite, in place, every harvested record whose key the template HDU has."""
        for key in sorted(self.records):
            idx = header.index(key)
            if idx is not None:
                header.cards[idx] = self.records[key].image  # CONTINUE cards kept whole

    def append_dss(self, header: CardList) -> None:
        """Write the DSS records in first-seen order (update in place or append)."""
        for key in self.dss_keys:
            card = self.records.get(key)
            if card is not None:
                header.put(key, card.image)

    def append_history(self, header: CardList, ext: str, creator: str) -> None:
        """``writeHistory``: the copied history of input extension ``ext``, with its banner."""
        lines = self.history.get(ext, [])
        if lines:
            header.add_history(f"The following history was copied from input files by {creator}")
        for line in lines:
            header.add_history(line)


@dataclass
class Hdu:
    """One output HDU: its header and its data (a big-endian array, or the nonzero voxels of
    a counts image written in the compact form), None for no data."""

    header: CardList
    data: np.ndarray | SparseImage | None = None


def table_bytes(
    columns: Sequence[tuple[str, str, np.ndarray]], nrows: int
) -> tuple[np.ndarray, int]:
    """Rows of columns ``(name, big-endian numpy dtype, values)``: (structured array, width)."""
    dtype = np.dtype([(name, dt) for name, dt, _ in columns])
    rec = np.zeros(nrows, dtype=dtype)
    for name, _, values in columns:
        rec[name] = values
    return rec, dtype.itemsize
