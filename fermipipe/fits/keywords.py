"""Header cards formatted the way cfitsio (and so every Fermitools product) writes them.

The Fermitools write keywords through tip → cfitsio ``fits_update_key``. A double goes through
cfitsio's ``ffd2e`` with 15 significant digits (``%.15G``), with a ``.`` added when the text
would otherwise read as an integer (``86400.``, ``1.0E+38``). astropy would write ``repr()``
(17 digits), so a value computed here would differ textually from the reference in the last
digits. Building the card image ourselves (``fits.Card.fromstring``) makes astropy keep it
byte for byte.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.io import fits

__all__ = [
    "cfitsio_double",
    "make_card",
    "set_card",
]


def cfitsio_double(value: float) -> str:
    """Format a double like cfitsio ``ffd2e`` with 15 significant digits.

    ``%.15G``; if the text has no ``.``: insert ``.0`` before an exponent, else append ``.``.
    """
    text = f"{float(value):.15G}"
    if "." not in text and "N" not in text and "I" not in text:  # not NaN/INF
        text = text.replace("E", ".0E") if "E" in text else text + "."
    return text


def _value_text(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, str):
        quoted = "'" + value.replace("'", "''").ljust(8) + "'"
        return f"{quoted:<20}"
    if isinstance(value, int | np.integer):
        return f"{int(value):>20d}"
    return f"{cfitsio_double(float(value)):>20}"


def make_card(key: str, value: Any, comment: str | None = None) -> fits.Card:
    """A card ``KEY = value / comment`` with cfitsio value formatting, cut to 80 characters.

    Floats use :func:`cfitsio_double`; ints are written as integers; strings are padded to 8
    characters inside the quotes like cfitsio does. Over-long comments are truncated silently
    (cfitsio does the same; astropy would warn).
    """
    image = f"{key.upper():<8}= {_value_text(value)}"
    if comment:
        image += " / " + comment
    if len(image) > 80:
        if len(image.split(" / ")[0]) > 80:
            # Long string values: let astropy use its CONTINUE convention.
            return fits.Card(key, value, comment)
        image = image[:80]
    return fits.Card.fromstring(image.ljust(80))


def set_card(
    header: fits.Header,
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
    if key in header:
        if comment is None or not replace_comment:
            comment = header.comments[key]
        idx = header.index(key)
        del header[idx]
        header.insert(idx, make_card(key, value, comment))
    else:
        header.append(make_card(key, value, comment), end=True)
