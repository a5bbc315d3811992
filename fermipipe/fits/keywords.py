"""Header cards formatted the way cfitsio (and so every Fermitools product) writes them.

The Fermitools write keywords through tip → cfitsio ``fits_update_key``. A double goes through
cfitsio's ``ffd2e`` with 15 significant digits (``%.15G``), with a ``.`` added when the text
would otherwise read as an integer (``86400.``, ``1.0E+38``). astropy would write ``repr()``
(17 digits), so a value computed here would differ textually from the reference in the last
digits. The card images are built here (:func:`fermipipe.fits.header.card_image`) and kept
byte for byte.

The helpers accept both header types: :class:`fermipipe.fits.header.Header` (the tools' own,
no astropy import) and ``astropy.io.fits.Header`` (astropy is imported only for that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fermipipe.fits.header import Card, Header, card_image, cfitsio_double, format_value

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = [
    "CFITSIO_BINTABLE_COMMENTS",
    "TEMPLATE_BINTABLE_COMMENTS",
    "append_card",
    "bintable_keywords",
    "ascii_text",
    "cfitsio_double",
    "make_card",
    "set_card",
]

_value_text = format_value  # backwards-compatible private name


def ascii_text(text: str) -> str:
    """``text`` (e.g. a file name) as printable ASCII for a header card.

    FITS header values may hold only ASCII 32-126 (FITS 4.0 §4.2.1), while a file name may
    hold any bytes: other characters are written as Python-style escapes (``é`` → ``\\xe9``,
    a non-UTF-8 byte 0xff → ``\\udcff``, a newline → ``\\x0a``), so the card stays valid and
    the name stays recognisable.
    """
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch.encode("ascii", "backslashreplace").decode("ascii"))
    return "".join(out)


_BINTABLE_KEYS = ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS")

#: Comments of the mandatory BINTABLE keywords as cfitsio's ``ffphbn`` writes them: the FT1
#: GTI extension and the livetime-cube EXPOSURE tables of real Fermitools outputs carry these.
CFITSIO_BINTABLE_COMMENTS: tuple[str, ...] = (
    "binary table extension",
    "8-bit bytes",
    "2-dimensional binary table",
    "width of table in bytes",
    "number of rows in table",
    "size of special data area",
    "one data group (required keyword)",
    "number of fields in each row",
)

#: The same keywords in HDUs built from a tip/cfitsio template file (evtbin's Lat*Template,
#: the healpix CosineBinner template for CTHETABOUNDS), which word them differently.
TEMPLATE_BINTABLE_COMMENTS: tuple[str, ...] = (
    "Binary table extension",
    "Bits per pixel",
    "Required value",
    "Number of bytes per row",
    "Number of rows",
    "Normally 0 (no varying arrays)",
    "Required value",
    "Number of columns in table",
)


def bintable_keywords(
    naxis1: int,
    naxis2: int,
    tfields: int,
    comments: tuple[str, ...] = CFITSIO_BINTABLE_COMMENTS,
) -> list[tuple[str, Any, str]]:
    """``(key, value, comment)`` of XTENSION … TFIELDS of a binary table without a heap.

    Returned as triples so that both card factories (the tools' :class:`Card` and astropy's
    via :func:`make_card`) and the literal template images can use them.
    """
    values = ("BINTABLE", 8, 2, naxis1, naxis2, 0, 1, tfields)
    return list(zip(_BINTABLE_KEYS, values, comments, strict=True))


def make_card(key: str, value: Any, comment: str | None = None) -> fits.Card:
    """An astropy ``Card`` ``KEY = value / comment`` with cfitsio value formatting, cut to 80
    characters (imports astropy; the tools' own headers use :class:`Card.from_value`).

    Floats use :func:`cfitsio_double`; ints are written as integers; strings are padded to 8
    characters inside the quotes like cfitsio does. Over-long comments are truncated silently
    (cfitsio does the same; astropy would warn).
    """
    from astropy.io import fits

    image = card_image(key, value, comment)
    if image is None:
        # Long string values: let astropy use its CONTINUE convention.
        return fits.Card(key, value, comment)
    return fits.Card.fromstring(image)


def set_card(
    header: Header | fits.Header,
    key: str,
    value: Any,
    comment: str | None = None,
    *,
    replace_comment: bool = False,
) -> None:
    """Update ``key`` in place (or append it at the end) with cfitsio formatting.

    Like tip's ``setKeyword`` (``fits_update_key`` with a null comment): an existing card
    keeps its position and its comment unless ``replace_comment``; ``comment`` is used when
    the card is new.
    """
    if isinstance(header, Header):
        if key in header and not replace_comment:
            comment = None  # Header.set keeps the existing comment
        header.set(key, value, comment)
        return
    if key in header:
        if comment is None or not replace_comment:
            comment = header.comments[key]
        idx = header.index(key)
        del header[idx]
        header.insert(idx, make_card(key, value, comment))
    else:
        header.append(make_card(key, value, comment), end=True)


def append_card(
    header: Header | fits.Header, key: str, value: Any, comment: str | None = None
) -> None:
    """Append ``KEY = value`` at the very end (even when ``key`` exists), cfitsio formatting."""
    if isinstance(header, Header):
        header.append(Card.from_value(key, value, comment))
    else:
        header.append(make_card(key, value, comment), end=True)
