"""Tests of fermipipe.fits.dates against DATE-OBS/DATE-END written by real Fermitools."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from astropy.io import fits

from fermipipe.fits.dates import date_to_jd, met_to_date, utc_now_date, write_date_keywords


def test_spec_example_is_floored() -> None:
    assert met_to_date(538032601) == "2018-01-19T05:29:55.9999"
    assert met_to_date(458611204.0) == "2015-07-15T00:00:00.0000"  # 4 leap seconds by then
    assert met_to_date(0.0) == "2001-01-01T00:00:00.0000"
    assert date_to_jd(2001, 1, 1) == 2451910.5


# (file, HDU, MET key, date key): files written by modern tools (the 2011 evtbin test
# files predate leap-second handling and are not used). The w323 reference keeps the full
# TSTART double in its GTI-only companion file.
REFS = [
    ("gammalib/p8v2/ft1.fits.gz", "EVENTS"),
    ("gammalib/p8v2/ft2.fits.gz", "PRIMARY"),
    ("fermitools-2.4/p8v2_hpx_nest.fits", "GTI"),
    ("gammapy-fermi-lat-data/2fhl/fermi_2fhl_counts_cube_hpx.fits.gz", "GTI"),
    ("pint/J0030+0451_w323_ft1weights.fits", "PRIMARY"),
]


@pytest.mark.parametrize("name,hdu", REFS)
def test_reference_date_obs_end(shared_data: Path, name: str, hdu: str) -> None:
    with fits.open(shared_data / name) as h:
        header = h[hdu].header
        assert met_to_date(header["TSTART"]) == header["DATE-OBS"]
        assert met_to_date(header["TSTOP"]) == header["DATE-END"]


def test_w323_full_precision(shared_data: Path) -> None:
    with fits.open(shared_data / "fermitools-2.4/w323_gti_events.fits") as g:
        tstart, tstop = g["GTI"].header["TSTART"], g["GTI"].header["TSTOP"]
    with fits.open(shared_data / "fermitools-2.4/w323_ltcube_z90.fits.gz") as h:
        assert met_to_date(tstart) == h[0].header["DATE-OBS"] == "2014-08-07T01:14:59.6387"
        assert met_to_date(tstop) == h[0].header["DATE-END"]


def test_now_format() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{4}", utc_now_date())
    # 2015-07-24T13:13:01 UTC through the JulianDate path (as in the gammalib FT1 DATE).
    assert utc_now_date(1437743581.0) in ("2015-07-24T13:13:01.0000", "2015-07-24T13:13:00.9999")


def test_write_date_keywords(shared_data: Path) -> None:
    with fits.open(shared_data / "gammalib/p8v2/ft1.fits.gz") as h:
        gti = h["GTI"].header.copy()
        events = h["EVENTS"].header.copy()
    order = list(gti.keys())
    write_date_keywords(gti, 239557417.5, 239600000.25, now=0.0)
    assert list(gti.keys()) == order  # updated in place, nothing appended
    assert gti["DATE"] == "1970-01-01T00:00:00.0000"
    assert gti["DATE-END"] == met_to_date(239600000.25)
    assert gti["TSTOP"] == 239600000.25
    assert gti["TELAPSE"] == 239600000.25 - 239557417.5
    assert gti.comments["TSTOP"] == "mission time of the end of the observation"
    write_date_keywords(events, 1.0, 2.0)
    assert "TELAPSE" not in events  # only updated when present
    assert events.cards["TSTART"].image.startswith("TSTART  =                   1. /")
