"""Tests of fermipipe.fits.dss: parsing, merge rules, writing and filter text."""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy.io import fits

from fermipipe.errors import ToolError
from fermipipe.fits.dss import (
    BitMaskCut,
    ConeCut,
    Cuts,
    GenericCut,
    GtiCut,
    MaskInconsistentError,
    RangeCut,
    cone_centre_rounded,
    dss_cards,
    filter_string,
    filter_terms,
    fmt_10g,
    fmt_20g,
    fmt_g6,
    load_validity_table,
    read_dss,
    read_dss_file,
    write_dss,
    write_dss_time_only,
)
from fermipipe.fits.gti import Gti


def _dss_cards(header: fits.Header) -> list[str]:
    return [str(c) for c in header.cards if c.keyword.startswith("DS") or c.keyword == "NDSKEYS"]


def _filter_history(header: fits.Header) -> str:
    """The last ``HISTORY Filter string: ...`` text, un-wrapped (72-character chunks)."""
    chunks = [c.image[8:80] for c in header.cards if c.keyword == "HISTORY"]
    starts = [i for i, c in enumerate(chunks) if c.startswith("Filter string: ")]
    text = ""
    for c in chunks[starts[-1] :]:
        if c.startswith("CFITSIO used") and text:
            break
        text += c
    return text[len("Filter string: ") :].rstrip()


def test_printf_formats() -> None:
    assert fmt_20g(0.1) == "0.10000000000000000555"
    assert fmt_20g(1e21) == "1e+21"
    assert fmt_20g(100.0) == "100"
    assert fmt_20g(239557417.5) == "239557417.5"
    assert fmt_10g(194.04652741) == "194.0465274"
    assert fmt_g6(194.0465274) == "194.047"
    assert fmt_g6(80.0) == "80"


MODERN = [  # files whose DSS was written by writeDssKeywords (NDSKEYS last)
    "gammalib/p8v2/ft1.fits.gz",
    "fermitools-2.4/p8v2_mktime_roicut.fits",
    "fermitools-2.4/w323_gti_events.fits",
    "gammapy-fermi-lat-data/2fhl/fermi_2fhl_events.fits.gz",
    "pint/J0030+0451_w323_ft1weights.fits",
]


@pytest.mark.parametrize("name", MODERN)
def test_round_trip_cards(shared_data: Path, name: str) -> None:
    with fits.open(shared_data / name) as h:
        header = h["EVENTS"].header
        cuts = read_dss(header, columns=h["EVENTS"].columns.names)
        new = header.copy()
        write_dss(new, cuts)
        assert _dss_cards(new) == _dss_cards(header)
        assert [c.keyword for c in new.cards][-1] == "NDSKEYS"


def test_filter_text_matches_fermitools_history(shared_data: Path) -> None:
    for name in ("gammalib/p8v2/ft1.fits.gz", "fermitools-2.4/p8v2_mktime_roicut.fits"):
        with fits.open(shared_data / name) as h:
            header = h["EVENTS"].header
            assert filter_string(read_dss(header)) == _filter_history(header)


def test_time_only_round_trip_on_ltcube(shared_data: Path) -> None:
    for name in ("gammalib/p8v2/ltcube.fits.gz", "fermitools-2.4/w323_ltcube_z90.fits.gz"):
        with fits.open(shared_data / name) as h:
            header = h["EXPOSURE"].header
            new = header.copy()
            write_dss_time_only(new, read_dss(header))
            assert _dss_cards(new) == _dss_cards(header)


def test_time_ranges_and_gti_file(shared_data: Path) -> None:
    path = shared_data / "evtbin/ft1tiny0.fits"
    with fits.open(path) as h:
        header = h["EVENTS"].header
    all_cuts = read_dss(header)
    assert RangeCut("TIME", "s", 223850000.0, 223880000.0) in all_cuts
    skipped = read_dss(header, skip_time_ranges=True)
    assert not any(isinstance(c, RangeCut) and c.column == "TIME" for c in skipped)
    loaded = read_dss_file(path, skip_time_ranges=True)
    gcut = next(c for c in loaded if isinstance(c, GtiCut))
    assert gcut.gti is not None and len(gcut.gti) == 6
    # Vector-element ranges and an old column from the evtbin test data.
    small = read_dss_file(shared_data / "evtbin/ft1small.fits")
    assert RangeCut("CALIB_VERSION[2]", "dimensionless", 1.0, 1.0) in small
    assert "1 <= CALIB_VERSION[1] && CALIB_VERSION[1] <= 1" in filter_terms(small)
    assert "CONVERSION_LAYER <= 15" in filter_terms(small)


def test_data_server_keywords_are_normalised() -> None:
    h = fits.Header()
    h["NDSKEYS"] = 3
    h["DSTYP1"], h["DSUNI1"], h["DSVAL1"] = (
        "POS(RA,DEC)",
        "deg",
        "circle(194.04652741,-5.78931254,10.00000000)",
    )
    h["DSTYP2"], h["DSUNI2"], h["DSVAL2"] = "TIME", "s", "538032601.000000:538079602.000000"
    h["DSTYP3"], h["DSUNI3"], h["DSVAL3"] = "ENERGY", "MeV", "100.000000:100000.000000"
    cuts = read_dss(h, skip_time_ranges=True)
    assert len(cuts) == 2
    cone = cuts[0]
    assert isinstance(cone, ConeCut)
    assert cone.dsval() == "CIRCLE(194.0465274,-5.78931254,10)"
    assert cone_centre_rounded(cone) == (194.0465274, -5.78931254, 10.0)
    assert filter_terms(cuts) == [
        "angsep(RA,DEC,194.0465274,-5.78931254) < 10",
        "100 < ENERGY && ENERGY <= 100000",
    ]
    out = fits.Header()
    write_dss(out, read_dss(h))  # TIME range not written
    assert out["NDSKEYS"] == 2 and out["DSVAL2"] == "100:100000"


def test_unrecognised_and_absent_column() -> None:
    h = fits.Header()
    h["NDSKEYS"] = 1
    h["DSTYP1"], h["DSUNI1"], h["DSVAL1"] = "FOO", "x", "BAR"
    with pytest.raises(ToolError, match="unrecognized DSS filtering scheme"):
        read_dss(h, tool="gtselect", file="a.fits")
    h["DSTYP1"], h["DSVAL1"] = "ENERGY", "1:2"
    with pytest.raises(ToolError, match="unrecognized DSS filtering scheme"):
        read_dss(h, columns=["TIME", "RA"])
    assert read_dss(h, columns=["energy"]) == [RangeCut("ENERGY", "x", 1.0, 2.0)]
    h["DSTYP1"], h["DSUNI1"], h["DSVAL1"] = "IRF_VERSION", "DIMENSIONLESS", "P8R2_SOURCE_V6"
    assert read_dss(h) == [GenericCut("IRF_VERSION", "DIMENSIONLESS", "P8R2_SOURCE_V6")]
    assert filter_terms(read_dss(h)) == []


def test_add_rules() -> None:
    c = Cuts()
    c.add(RangeCut("ENERGY", "MeV", 100.0, 100000.0))
    c.add(RangeCut("ENERGY", "MeV", 100.0, 100000.0))  # identical → dropped
    assert len(c) == 1
    c.add(RangeCut("ENERGY", "MeV", 30.0, 300000.0))  # superseded by the existing → dropped
    assert c.cuts == [RangeCut("ENERGY", "MeV", 100.0, 100000.0)]
    c.add(ConeCut(10.0, 10.0, 5.0))
    c.add(RangeCut("ENERGY", "MeV", 200.0, 1000.0))  # inside → replaces in place
    assert c[0] == RangeCut("ENERGY", "MeV", 200.0, 1000.0) and isinstance(c[1], ConeCut)
    c.add(RangeCut("ENERGY", "MeV", 300.0, None))  # other interval type → appended
    assert len(c) == 3
    c.add(ConeCut(10.0, 11.0, 3.0))  # inside the first cone → replaces it
    assert c[1] == ConeCut(10.0, 11.0, 3.0)
    c.add(ConeCut(10.0, 14.5, 2.0))  # partial overlap → both kept
    assert sum(isinstance(x, ConeCut) for x in c) == 2
    c.add(BitMaskCut("EVENT_CLASS", 128, "P8R3"))
    c.add(BitMaskCut("EVENT_CLASS", 256, "P8R3"))  # no validity table → replaces in place
    assert c[4] == BitMaskCut("EVENT_CLASS", 256, "P8R3") and len(c) == 5
    c.merge_range_cuts()
    assert c[-1] == RangeCut("ENERGY", "MeV", 300.0, 1000.0)
    assert sum(isinstance(x, RangeCut) for x in c) == 1


def test_mask_validity_table(tmp_path: Path) -> None:
    table = tmp_path / "valid.txt"
    table.write_text("# current,allowed\n128,3968\n3,3\n")
    valid = load_validity_table(table)
    assert valid == {128: 3968, 3: 3}

    def check(column: str, cur: int, new: int) -> bool:
        if cur not in valid:
            raise MaskInconsistentError(f"current {column} mask {cur} not in table")
        return valid[cur] & new == new

    c = Cuts([BitMaskCut("EVENT_CLASS", 128, "P8R3")], mask_validity=check)
    c.add(BitMaskCut("EVENT_CLASS", 1024, "P8R3"))
    assert c.cuts == [BitMaskCut("EVENT_CLASS", 1024, "P8R3")]
    c = Cuts([BitMaskCut("EVENT_CLASS", 128, "P8R3")], mask_validity=check)
    with pytest.raises(MaskInconsistentError, match="inconsistent"):
        c.add(BitMaskCut("EVENT_CLASS", 64, "P8R3"))
    assert BitMaskCut("EVENT_CLASS", 4, "P7REP").mask == 16  # bit position for old passes


def test_merge_alphabetical_and_gtselect_order() -> None:
    # gtselect on a weekly-file-like input (spec 3.2 / 12): mask, GTI, then user cuts.
    c = Cuts([BitMaskCut("EVENT_CLASS", 128, "P8R3"), GtiCut(Gti.from_intervals([0], [10]))])
    c.add(ConeCut(194.04652741, -5.78931254, 10.0))
    c.add(RangeCut("TIME", "s", 1.0, 9.0))
    c.add(RangeCut("ENERGY", "MeV", 100.0, 100000.0))
    c.add(RangeCut("ZENITH_ANGLE", "deg", 0.0, 90.0))
    c.add(RangeCut("ENERGY", "MeV", 50.0, 200.0))  # overlapping, neither inside
    c.merge_range_cuts()
    assert [type(x).__name__ for x in c] == [
        "BitMaskCut", "GtiCut", "ConeCut", "RangeCut", "RangeCut", "RangeCut",
    ]  # fmt: skip
    assert [x.column for x in c if isinstance(x, RangeCut)] == ["ENERGY", "TIME", "ZENITH_ANGLE"]
    assert filter_string(c) == (
        "((EVENT_CLASS&o200) != o0) && angsep(RA,DEC,194.0465274,-5.78931254) < 10 && "
        "100 < ENERGY && ENERGY <= 200 && 1 < TIME && TIME <= 9 && "
        "0 < ZENITH_ANGLE && ZENITH_ANGLE <= 90 && gtifilter()"
    )
    h = fits.Header()
    h["HISTORY"] = "old"
    write_dss(h, c)
    assert [k for k in h if k.startswith("DSTYP")] == [f"DSTYP{i}" for i in range(1, 6)]
    assert h["DSTYP1"] == "BIT_MASK(EVENT_CLASS,128,P8R3)" and h["DSREF2"] == ":GTI"
    assert list(h.keys())[-1] == "NDSKEYS" and h.comments["NDSKEYS"] == ""
    write_dss(h, c.cuts[:1])  # old set removed completely
    assert "DSTYP2" not in h and h["NDSKEYS"] == 1


def test_dss_cards_helper() -> None:
    cuts = [GtiCut(), RangeCut("TIME", "s", 1.0, 2.0), RangeCut("ENERGY", "MeV", 0.1, None)]
    cards = [str(c).rstrip() for c in dss_cards(cuts)]
    assert cards == [
        "DSTYP1  = 'TIME    '",
        "DSUNI1  = 's       '",
        "DSVAL1  = 'TABLE   '",
        "DSREF1  = ':GTI    '",
        "DSTYP2  = 'ENERGY  '",
        "DSUNI2  = 'MeV     '",
        "DSVAL2  = '0.10000000000000000555:'",
        "NDSKEYS =                    2",
    ]
