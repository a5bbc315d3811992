"""Tests of fermipipe.fits.header: the astropy-free FITS header model.

Every header of every real file in the shared data is parsed both by us and by astropy: the
keywords, values and comments must agree card by card, and writing our header back must give
the file's header bytes unchanged. New cards must be formatted like cfitsio (the images the
astropy-based helpers produced before). And the native gtselect/gtmktime command lines must not
import astropy at all.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from fermipipe.fits.header import Card, Header, as_header, card_image, parse_value
from fermipipe.fits.keywords import append_card, make_card, set_card
from fermipipe.fits.table import FitsFile, read_hdus

REPO = Path(__file__).resolve().parents[1]


def _fits_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith((".fits", ".fits.gz", ".fit")))


def _same_value(ours: object, theirs: object) -> bool:
    if isinstance(theirs, fits.card.Undefined):
        return ours is None
    if isinstance(theirs, float) and isinstance(ours, float):
        return ours == theirs or (math.isnan(ours) and math.isnan(theirs))
    return type(ours) is type(theirs) and ours == theirs


def test_every_real_header_reads_like_astropy(shared_data: Path) -> None:
    files = _fits_files(shared_data)
    assert len(files) >= 10
    n_cards = 0
    for path in files:
        ours = read_hdus(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True) as hdul:
                assert len(hdul) == len(ours), path
                for info, hdu in zip(ours, hdul, strict=True):
                    theirs = hdu.header
                    assert len(info.header) == len(theirs), (path, info.index)
                    for mine, ref in zip(info.header.cards, theirs.cards, strict=True):
                        where = (path.name, info.index, ref.keyword)
                        assert mine.keyword == ref.keyword, where
                        assert _same_value(mine.value, ref.value), (*where, mine.value, ref.value)
                        assert mine.comment == ref.comment, where
                        n_cards += 1
                    for key in ("NAXIS", "TSTART", "EXTNAME", "DATE-OBS", "NOPE"):
                        got, want = info.header.get(key), theirs.get(key)
                        if isinstance(want, fits.card.Undefined):
                            want = None
                        assert got == want, (path.name, key)
                        assert (key in info.header) == (key in theirs)
    assert n_cards > 1000


def test_headers_round_trip_byte_for_byte(shared_data: Path) -> None:
    for path in _fits_files(shared_data):
        if path.suffix == ".gz":
            continue
        raw = path.read_bytes()
        for info in read_hdus(path):
            original = raw[info.header_offset : info.data_offset]
            assert info.header.tobytes() == original, (path.name, info.index)


def test_new_cards_match_the_astropy_based_formatting() -> None:
    cases = [
        ("TSTART", 538032601.0, "mission time of the start of the observation"),
        ("MJDREFF", 7.428703703703703e-4, "Fractional part"),
        ("TLMAX1", 1e10, None),
        ("ONTIME", 86400.0, "sum of GTI lengths"),
        ("NDSKEYS", 5, None),
        ("CLOCKAPP", False, "whether a clock drift correction has been applied"),
        ("DSVAL1", "CIRCLE(194.0465274,-5.789312744,10)", None),
        ("TELESCOP", "GLAST", "x" * 90),
        ("OBSERVER", "it's", ""),
        ("X", -0.0, None),
    ]
    for key, value, comment in cases:
        mine = Card.from_value(key, value, comment)
        assert mine.image == make_card(key, value, comment).image, key
        assert _same_value(mine.value, fits.Card.fromstring(mine.image).value), key
    assert card_image("X", 1.5) == "X       =                  1.5" + " " * 50
    assert card_image("LONG", "v" * 80) is None
    long = Card.from_value("LONGSTR", "v" * 100, "c")  # CONTINUE convention (astropy's)
    assert long.image == make_card("LONGSTR", "v" * 100, "c").image and long.value == "v" * 100
    assert long.comment == "c"
    assert Header.fromstring(Header([long]).tostring()).get("LONGSTR") == "v" * 100


def test_parse_value_grammar() -> None:
    assert parse_value("'it''s / x'  / a comment ") == ("it's / x", "a comment")
    assert parse_value("                 1.5D3 / e") == (1500.0, "e")
    assert parse_value("  T") == (True, "")
    assert parse_value("                     / undefined") == (None, "undefined")
    assert parse_value(" (1, 2.0)") == (complex(1, 2), "")
    assert parse_value(" '  a   '") == ("  a", "")


def test_header_operations_mirror_astropy() -> None:
    mine = Header([Card.from_value("SIMPLE", True, "std"), Card.from_value("NAXIS", 0)])
    theirs = fits.Header([make_card("SIMPLE", True, "std"), make_card("NAXIS", 0)])
    for h in (mine, theirs):
        set_card(h, "TSTART", 1.0, "start")
        set_card(h, "TSTART", 2.5, "ignored: existing comment kept")
        set_card(h, "NAXIS", 0, "new comment", replace_comment=True)
        append_card(h, "DSTYP1", "TIME")
        append_card(h, "DSTYP1", "TIME")  # appended even when present
        h.add_history("h" * 100)
        h.add_comment("a comment")
        del h["DSTYP1"]  # all of them, as astropy
    assert mine.tostring() == theirs.tostring(sep="", endcard=True, padding=True)
    assert list(mine) == list(theirs.keys())
    assert mine["HISTORY"] == list(theirs["HISTORY"])
    assert mine.comments["TSTART"] == "start"
    mine.set("A", 1, "first", before="NAXIS")
    mine.set("B", 2, after="A")
    assert list(mine)[:4] == ["SIMPLE", "A", "B", "NAXIS"]
    mine.remove("A")
    mine.remove("A", ignore_missing=True)
    with pytest.raises(KeyError):
        mine.remove("A")
    with pytest.raises(KeyError):
        mine["A"]
    copy = mine.copy()
    copy["B"] = 3
    assert mine["B"] == 2 and copy["B"] == 3
    # astropy cards and astropy headers are accepted
    mine.append(make_card("C", "x"))
    assert mine["C"] == "x"
    converted = as_header(theirs)
    assert converted.tostring() == theirs.tostring(sep="", endcard=True, padding=True)
    assert converted.to_astropy()["TSTART"] == 2.5


def test_fitsfile_headers_are_ours_and_write_back(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "fermitools-2.4" / "p8v2_mktime_roicut.fits"
    ff = FitsFile(path)
    assert all(isinstance(h.header, Header) for h in ff.hdus)
    ev = ff.hdus[1].header
    assert ev.cards["NAXIS2"].value == ev["NAXIS2"] and np.isscalar(ev["NAXIS2"])


@pytest.mark.parametrize("tool", ["gtselect", "gtmktime"])
def test_native_command_lines_do_not_import_astropy(
    shared_data: Path, tmp_path: Path, tool: str
) -> None:
    """A fresh ``python -m fermipipe.native`` process, then astropy must not be loaded."""
    ft1 = shared_data / "gammalib/p8v2/ft1.fits.gz"  # gzip: read with Python's gzip module
    ft2 = shared_data / "gammalib/p8v2/ft2.fits.gz"
    selected = tmp_path / "sel.fits"
    if tool == "gtselect":
        params = [f"infile={ft1}", f"outfile={selected}", "emin=100", "emax=100000", "zmax=90",
                  "ra=83.6331", "dec=22.0145", "rad=10"]  # fmt: skip
    else:
        params = [f"scfile={ft2}", f"evfile={ft1}", f"outfile={tmp_path / 'mk.fits'}"]
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['fermipipe.native', {tool!r}, *{params!r}]\n"
        "try:\n"
        "    runpy.run_module('fermipipe.native', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'astropy')\n"
        "print('ASTROPY', len(loaded), loaded[:5])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "ASTROPY 0 []" in proc.stdout, proc.stdout
