"""A small, fast FITS header model that never imports astropy.

Why: ``import astropy.io.fits`` costs 0.3–0.5 s per process, more than the whole selection
work of a native gtmktime run. The tools only need to read keywords, copy headers verbatim,
update a handful of cards the way cfitsio formats them and serialise the result.

Model: a :class:`Header` is an ordered list of :class:`Card` records. A card keeps its 80-byte
image(s) verbatim (``CONTINUE`` records of a long string stay attached to their card), so a
copied header is written back byte for byte — what cfitsio does when it copies an HDU. Values
and comments are parsed lazily, with astropy's rules (strings lose trailing blanks, ``''`` is
an escaped quote, ``D`` exponents, an empty value reads as ``None`` where astropy gives
``Undefined``), so code written against ``astropy.io.fits.Header`` reads the same values.

New cards are formatted like cfitsio (:mod:`fermipipe.fits.keywords`): ``%.15G`` doubles with a
``.``, right-aligned numbers and logicals in columns 11–30, strings padded to 8 characters
inside the quotes. Only a string too long for one record needs the ``CONTINUE`` convention;
that rare case is delegated to astropy.

The API is the subset of astropy's ``Header`` the package uses (``get``, ``[]``, ``in``,
``copy``, ``index``, ``insert``, ``append``, ``del``, ``remove``, ``comments[key]``,
``cards[key]``, ``add_history``/``add_comment``, ``tostring``) plus :meth:`Header.set` with
``before``/``after``. Iterating a header yields its keywords, as astropy's does; iterate
:attr:`Header.cards` for the cards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "BLOCK",
    "CARD",
    "COMMENTARY",
    "Card",
    "Header",
    "as_header",
    "card_image",
    "format_value",
    "parse_value",
]

BLOCK = 2880
CARD = 80
#: Keywords whose text after column 8 is free text, never ``= value``.
COMMENTARY = frozenset({"", "COMMENT", "HISTORY"})

# Value field (after "= "): a quoted string ('' escapes a quote), or a number/logical/complex
# up to an optional "/ comment". Same grammar astropy accepts for the standard cases.
_STRING_RE = re.compile(r"\s*'((?:[^']|'')*)'\s*(?:/(.*))?$", re.S)
_INT_RE = re.compile(r"[+-]?\d+$")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?$")
_COMPLEX_RE = re.compile(r"\(\s*([^,]+?)\s*,\s*([^)]+?)\s*\)$")


# ---------------------------------------------------------------------- value formatting


def cfitsio_double(value: float) -> str:
    """A double like cfitsio ``ffd2e`` with 15 significant digits.

    ``%.15G``; if the text has no ``.``: insert ``.0`` before an exponent, else append ``.``
    (``86400.``, ``1.0E+38``). astropy would print ``repr()`` (17 digits).
    """
    text = f"{float(value):.15G}"
    if "." not in text and "N" not in text and "I" not in text:  # not NaN/INF
        text = text.replace("E", ".0E") if "E" in text else text + "."
    return text


def format_value(value: Any) -> str:
    """The value field (columns 11+) of a card, as cfitsio writes it.

    Logicals and numbers right-aligned in 20 characters, strings quoted (quotes doubled) and
    padded to at least 8 characters inside the quotes, then to 20, ``None`` = undefined (blank).
    """
    if value is None:
        return " " * 20
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, str):
        quoted = "'" + value.replace("'", "''").ljust(8) + "'"
        return f"{quoted:<20}"
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return f"{int(value):>20d}"
    if isinstance(value, complex):
        return f"({cfitsio_double(value.real)}, {cfitsio_double(value.imag)})"
    return f"{cfitsio_double(float(value)):>20}"


def card_image(key: str, value: Any, comment: str | None = None) -> str | None:
    """``KEY     = value / comment`` padded to 80 characters, or None when the value does not
    fit in one record (a long string: needs CONTINUE). Over-long comments are cut at column
    80, as cfitsio does."""
    image = f"{key.upper():<8}= {format_value(value)}"
    if len(image) > CARD:
        return None
    if comment:
        image += " / " + comment
    return image[:CARD].ljust(CARD)


# ---------------------------------------------------------------------- value parsing


def _number(text: str) -> Any:
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text.replace("D", "E").replace("d", "e"))
    m = _COMPLEX_RE.match(text)
    if m:
        return complex(_number(m.group(1)), _number(m.group(2)))
    raise ValueError(text)


def parse_value(field: str) -> tuple[Any, str]:
    """(value, comment) of the text after ``= `` (one record or joined CONTINUE records).

    Rules of astropy's card parser for valid cards: strings lose trailing blanks (astropy's
    ``strip_header_whitespace``), ``T``/``F`` are bools, integers int, reals float (``D``
    exponent allowed), an empty value None; the comment is the text after the first ``/``
    outside the string, without its leading and trailing blanks. An unparsable value is
    returned as its stripped text.
    """
    m = _STRING_RE.match(field)
    if m:
        value: Any = m.group(1).replace("''", "'").rstrip()
        comment = m.group(2) or ""
        return value, comment.strip(" ").rstrip()
    text, _, comment = field.partition("/")
    text = text.strip()
    comment = comment.strip(" ").rstrip()
    if text == "":
        return None, comment
    if text == "T":
        return True, comment
    if text == "F":
        return False, comment
    try:
        return _number(text), comment
    except ValueError:
        return text, comment


class Card:
    """One keyword record: its verbatim image (80 characters, or a multiple with CONTINUE).

    ``keyword``, ``value`` and ``comment`` are parsed on first use.
    """

    __slots__ = ("_parsed", "image", "keyword")

    def __init__(self, image: str) -> None:
        if len(image) % CARD:
            image = image.ljust(len(image) + CARD - len(image) % CARD)
        self.image = image
        key = image[:8].rstrip().upper()
        if key == "HIERARCH" and "=" in image[:CARD]:  # long keywords: name up to the "="
            key = image[9:CARD].split("=", 1)[0].strip().upper()
        self.keyword = key
        self._parsed: tuple[Any, str] | None = None

    @classmethod
    def from_value(cls, key: str, value: Any, comment: str | None = None) -> Card:
        """A new card with cfitsio value formatting (:func:`card_image`)."""
        image = card_image(key, value, comment)
        if image is None:
            return cls(_continue_image(key, value, comment))
        return cls(image)

    @classmethod
    def commentary(cls, key: str, text: str) -> Card:
        """A HISTORY/COMMENT/blank card with ``text`` (at most 72 characters) from column 9."""
        return cls(f"{key.upper():<8}{text}"[:CARD].ljust(CARD))

    @property
    def is_hierarch(self) -> bool:
        return self.image.startswith("HIERARCH ") and "=" in self.image[:CARD]

    @property
    def is_commentary(self) -> bool:
        if self.keyword in COMMENTARY:
            return True
        return not self.is_hierarch and self.image[8:10] != "= "

    def _parse(self) -> tuple[Any, str]:
        if self._parsed is None:
            if self.is_commentary:
                self._parsed = (self.image[8:CARD].rstrip(), "")
            elif len(self.image) > CARD:
                self._parsed = _parse_continued(self.image)
            else:
                start = self.image.index("=") + 1 if self.is_hierarch else 10
                self._parsed = parse_value(self.image[start:])
        return self._parsed

    @property
    def value(self) -> Any:
        return self._parse()[0]

    @property
    def comment(self) -> str:
        return self._parse()[1]

    def __repr__(self) -> str:
        return f"Card({self.image.rstrip()!r})"

    def __str__(self) -> str:
        return self.image


def _parse_continued(image: str) -> tuple[Any, str]:
    """A long string card: join the ``&``-terminated pieces of the CONTINUE records."""
    records = [image[i : i + CARD] for i in range(0, len(image), CARD)]
    parts: list[str] = []
    comments: list[str] = []
    for n, rec in enumerate(records):
        value, comment = parse_value(rec[10:])
        if not isinstance(value, str):
            return parse_value(records[0][10:])
        piece = rec[10:].split("'", 1)[1].rsplit("'", 1)[0].replace("''", "'")
        if n < len(records) - 1 and piece.rstrip().endswith("&"):
            piece = piece.rstrip()[:-1]
        parts.append(piece)
        if comment:
            comments.append(comment)
    return "".join(parts).rstrip(), " ".join(comments)


def _continue_image(key: str, value: Any, comment: str | None) -> str:
    """A string too long for one record, in astropy's CONTINUE layout (rare: lazy astropy)."""
    from astropy.io import fits  # only for this rare case

    return fits.Card(key, value, comment).image


def _open_string(card: Card) -> bool:
    """True when ``card`` is a string card whose last record ends with ``&'`` (CONTINUE
    convention: the value goes on in the next record)."""
    if card.is_commentary or card.is_hierarch:
        return False
    m = _STRING_RE.match(card.image[-CARD:][10:])
    return m is not None and m.group(1).rstrip().endswith("&")


class _Comments:
    """``header.comments[key]`` (astropy spelling)."""

    def __init__(self, header: Header) -> None:
        self._header = header

    def __getitem__(self, key: str | int) -> str:
        return self._header._card(key).comment


class _Cards:
    """``header.cards``: a sequence of :class:`Card`, also indexable by keyword."""

    def __init__(self, header: Header) -> None:
        self._header = header

    def __getitem__(self, key: str | int) -> Card:
        return self._header._card(key)

    def __iter__(self) -> Iterator[Card]:
        return iter(list(self._header._cards))

    def __len__(self) -> int:
        return len(self._header._cards)


class Header:
    """An ordered list of FITS cards (see module docstring)."""

    __slots__ = ("_cards",)

    def __init__(self, cards: Iterable[Card | str | Any] = ()) -> None:
        self._cards: list[Card] = [_as_card(c) for c in cards]

    # ------------------------------------------------------------------ parsing / writing
    @classmethod
    def fromstring(cls, data: str | bytes) -> Header:
        """Parse header text (blocks of 80-character records) up to the END card.

        Records after END (block padding) are ignored; CONTINUE records are attached to the
        string card before them.
        """
        text = data.decode("ascii") if isinstance(data, bytes | bytearray) else data
        cards: list[Card] = []
        for i in range(0, len(text), CARD):
            rec = text[i : i + CARD].ljust(CARD)
            if rec[:8] == "END     ":
                break
            if (
                cards
                and rec.startswith("CONTINUE")
                and rec[8:10] != "= "
                and _open_string(cards[-1])
            ):
                cards[-1] = Card(cards[-1].image + rec)
                continue
            cards.append(Card(rec))
        return cls(cards)

    def tostring(self, sep: str = "", endcard: bool = True, padding: bool = True) -> str:
        """The header as text: the card images, END, blank padding to a 2880-byte block."""
        records = [c.image[i : i + CARD] for c in self._cards for i in range(0, len(c.image), CARD)]
        if endcard:
            records.append("END".ljust(CARD))
        text = sep.join(records)
        if padding and not sep:
            text += " " * (-len(text) % BLOCK)
        return text

    def tobytes(self) -> bytes:
        """The header blocks as written to a file.

        Values built from names are escaped to ASCII first (``keywords.ascii_text``); any
        other non-ASCII character becomes ``?`` (same length) so a file is always valid FITS.
        """
        return self.tostring().encode("ascii", errors="replace")

    def __str__(self) -> str:
        return self.tostring()

    def __repr__(self) -> str:
        return "\n".join(c.image[:CARD].rstrip() for c in self._cards)

    def copy(self) -> Header:
        """An independent copy (cards are immutable, so sharing them is safe)."""
        return Header(self._cards)

    def to_astropy(self) -> Any:
        """The same cards as an ``astropy.io.fits.Header`` (imports astropy)."""
        from astropy.io import fits

        return fits.Header.fromstring(self.tostring())

    # ------------------------------------------------------------------ lookup
    def index(self, key: str) -> int:
        """Position of the first card named ``key`` (KeyError if absent)."""
        k = key.upper()
        for i, card in enumerate(self._cards):
            if card.keyword == k:
                return i
        raise KeyError(f"Keyword {key!r} not found.")

    def _find(self, key: str) -> int | None:
        k = key.upper()
        for i, card in enumerate(self._cards):
            if card.keyword == k:
                return i
        return None

    def _card(self, key: str | int) -> Card:
        if isinstance(key, int):
            return self._cards[key]
        i = self._find(key)
        if i is None:
            raise KeyError(f"Keyword {key!r} not found.")
        return self._cards[i]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str) and key.upper() in COMMENTARY:
            values = [c.value for c in self._cards if c.keyword == key.upper()]
            if not values:
                raise KeyError(f"Keyword {key!r} not found.")
            return values
        return self._card(key).value

    def get(self, key: str, default: Any = None) -> Any:
        """The value of the first card ``key``, else ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def __len__(self) -> int:
        return len(self._cards)

    def __iter__(self) -> Iterator[str]:
        return iter([c.keyword for c in self._cards])

    def keys(self) -> list[str]:
        return [c.keyword for c in self._cards]

    @property
    def cards(self) -> _Cards:
        """The cards, iterable and indexable by position or keyword."""
        return _Cards(self)

    @property
    def comments(self) -> _Comments:
        """``header.comments[key]``: the comment of the first card ``key``."""
        return _Comments(self)

    # ------------------------------------------------------------------ modification
    def set(
        self,
        key: str,
        value: Any,
        comment: str | None = None,
        *,
        before: str | int | None = None,
        after: str | int | None = None,
    ) -> None:
        """Set ``key``: an existing card is rewritten in place (keeping its comment when
        ``comment`` is None), a new one goes before/after the given card or at the end.
        Values are formatted like cfitsio (:func:`card_image`)."""
        i = self._find(key)
        if i is not None:
            if comment is None:
                comment = self._cards[i].comment
            self._cards[i] = Card.from_value(key, value, comment)
            return
        card = Card.from_value(key, value, comment)
        if before is not None:
            self._cards.insert(self._position(before), card)
        elif after is not None:
            self._cards.insert(self._position(after) + 1, card)
        else:
            self._cards.append(card)

    def __setitem__(self, key: str, value: Any) -> None:
        """``header[key] = value`` or ``= (value, comment)``, as astropy."""
        if isinstance(value, tuple) and len(value) == 2:
            self.set(key, value[0], value[1])
        else:
            self.set(key, value)

    def _position(self, where: str | int) -> int:
        return where if isinstance(where, int) else self.index(where)

    def append(self, card: Card | str | Any, useblanks: bool = False, end: bool = True) -> None:
        """Append a card (a :class:`Card`, an image, or anything with ``.image`` such as an
        astropy Card) at the end. ``useblanks``/``end`` are accepted for astropy
        compatibility; cards always go at the very end."""
        self._cards.append(_as_card(card))

    def insert(self, index: int | str, card: Card | str | Any, after: bool = False) -> None:
        """Insert a card before position/keyword ``index`` (after it when ``after``)."""
        pos = self._position(index) + (1 if after else 0)
        self._cards.insert(pos, _as_card(card))

    def remove(self, key: str, ignore_missing: bool = False, remove_all: bool = False) -> None:
        """Remove the first card ``key`` (all of them with ``remove_all``)."""
        i = self._find(key)
        if i is None:
            if ignore_missing:
                return
            raise KeyError(f"Keyword {key!r} not found.")
        del self._cards[i]
        if remove_all:
            k = key.upper()
            self._cards = [c for c in self._cards if c.keyword != k]

    def __delitem__(self, key: str | int) -> None:
        """``del header[i]`` removes one card; ``del header[key]`` every card ``key`` (as
        astropy)."""
        if isinstance(key, int):
            del self._cards[key]
        else:
            self.remove(key, remove_all=True)

    def add_history(self, text: str) -> None:
        """HISTORY cards, the text cut into 72-character pieces (cfitsio ``ffphis``)."""
        self._add_commentary("HISTORY", text)

    def add_comment(self, text: str) -> None:
        """COMMENT cards, the text cut into 72-character pieces."""
        self._add_commentary("COMMENT", text)

    def _add_commentary(self, key: str, text: str) -> None:
        for i in range(0, max(len(text), 1), 72):
            self._cards.append(Card.commentary(key, text[i : i + 72]))


def _as_card(card: Card | str | Any) -> Card:
    if isinstance(card, Card):
        return card
    if isinstance(card, str):
        return Card(card)
    image = getattr(card, "image", None)  # an astropy Card
    if isinstance(image, str):
        return Card(image)
    raise TypeError(f"not a FITS card: {card!r}")


def as_header(header: Header | Any) -> Header:
    """A :class:`Header` from ours (returned as is) or an astropy Header (converted via its
    text, so the cards keep astropy's images)."""
    if isinstance(header, Header):
        return header
    tostring = getattr(header, "tostring", None)
    if tostring is None:
        raise TypeError(f"not a FITS header: {type(header).__name__}")
    return Header.fromstring(tostring(sep="", endcard=True, padding=True))
