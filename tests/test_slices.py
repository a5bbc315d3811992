"""Spacecraft slices: same tool outputs as the whole file, bytes independent of later rows."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from astropy.io import fits
from pipeline_project import mission_ft2

from fermipipe.native import run_tool
from fermipipe.slices import (
    MARGIN,
    event_time_range,
    slice_name,
    spacecraft_time_range,
    wants_slice,
    write_slice,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def _gunzip(src: Path, dst: Path) -> Path:
    with gzip.open(src) as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


def test_slice_bytes_do_not_depend_on_rows_added_later(tmp_path: Path) -> None:
    ft2s = sorted(SAMPLE.glob("lat_spacecraft_weekly_w*_p310_v001.fits"))
    week = sorted(SAMPLE.glob("lat_photon_weekly_w*_p305_v001.fits"))[0]
    short = mission_ft2(ft2s[:2], tmp_path / "mission_a.fits")
    long = mission_ft2(ft2s, tmp_path / "mission_b.fits")
    events = event_time_range(week)
    assert wants_slice(events, spacecraft_time_range(long))
    a = write_slice(short, events, tmp_path / "a" / slice_name(short, events))
    b = write_slice(long, events, tmp_path / "b" / slice_name(short, events))
    again = write_slice(long, events, tmp_path / "c" / slice_name(short, events))
    assert a.read_bytes() == b.read_bytes() == again.read_bytes()
    with fits.open(b, checksum=True) as hdul:
        rows = hdul["SC_DATA"].data
        everything = fits.getdata(long, "SC_DATA")
        lo, hi = events.start - MARGIN, events.stop
        expected = everything[(everything["STOP"] > lo) & (everything["START"] < hi)]
        assert 0 < len(rows) == len(expected) < len(everything)
        assert rows.tobytes() == expected.tobytes()
        assert hdul["SC_DATA"].header["TSTART"] == rows["START"][0]


def test_the_last_weeks_slice_does_not_change_when_the_next_week_arrives(
    tmp_path: Path,
) -> None:
    """The mission file as it is after week N (N last), then with week N+1 appended — and,
    as a real merged FT2 has, a primary header whose TSTART/TSTOP span the whole file."""
    ft2s = sorted(SAMPLE.glob("lat_spacecraft_weekly_w*_p310_v001.fits"))
    last = sorted(SAMPLE.glob("lat_photon_weekly_w*_p305_v001.fits"))[1]
    events = event_time_range(last)
    slices = []
    for label, parts in (("before", ft2s[:2]), ("after", ft2s)):
        (tmp_path / label).mkdir()
        mission = mission_ft2(parts, tmp_path / label / "mission.fits")
        span = spacecraft_time_range(mission)
        with fits.open(mission, mode="update") as hdul:
            hdul[0].header["TSTART"], hdul[0].header["TSTOP"] = span.start, span.stop
        assert span.stop > events.stop or label == "before"
        slices.append(
            write_slice(mission, events, tmp_path / label / "s" / slice_name(mission, events))
        )
    assert slices[0].read_bytes() == slices[1].read_bytes()
    with fits.open(slices[1]) as hdul:
        rows = hdul["SC_DATA"].data
        assert rows["START"].max() < events.stop  # nothing of the next week
        assert hdul[0].header["TSTART"] == rows["START"][0]  # the slice's span, every HDU
        assert hdul[0].header["TSTOP"] == rows["STOP"][-1]


def test_tools_give_the_same_products_on_a_slice(shared_data: Path, tmp_path: Path) -> None:
    ft1 = _gunzip(shared_data / "gammalib/p8v2/ft1.fits.gz", tmp_path / "ft1.fits")
    ft2 = _gunzip(shared_data / "gammalib/p8v2/ft2.fits.gz", tmp_path / "ft2.fits")
    events = event_time_range(ft1)
    assert wants_slice(events, spacecraft_time_range(ft2))  # 2.3 days of FT2 for 1 day
    piece = write_slice(ft2, events, tmp_path / slice_name(ft2, events))
    assert len(fits.getdata(piece, "SC_DATA")) < len(fits.getdata(ft2, "SC_DATA"))
    for label, sc in (("whole", ft2), ("slice", piece)):
        run_tool(
            "gtmktime",
            {"scfile": str(sc), "evfile": str(ft1), "outfile": str(tmp_path / f"mk_{label}.fits"),
             "filter": "(DATA_QUAL>0)&&(LAT_CONFIG==1)", "roicut": "no"},
        )  # fmt: skip
        run_tool(
            "gtltcube",
            {"evfile": str(ft1), "scfile": str(sc), "outfile": str(tmp_path / f"lt_{label}.fits"),
             "dcostheta": "0.05", "binsz": "4"},
        )  # fmt: skip
        run_tool(
            "gtbin",
            {"algorithm": "LC", "evfile": str(ft1), "scfile": str(sc),
             "outfile": str(tmp_path / f"lc_{label}.fits"), "tbinalg": "LIN",
             "tstart": "239557417.5", "tstop": "239643817.5", "dtime": "3600"},
        )  # fmt: skip
    for prefix, ext in (("mk", "GTI"), ("lt", "EXPOSURE"), ("lt", "WEIGHTED_EXPOSURE")):
        whole = fits.getdata(tmp_path / f"{prefix}_whole.fits", ext)
        sliced = fits.getdata(tmp_path / f"{prefix}_slice.fits", ext)
        assert whole.tobytes() == sliced.tobytes(), (prefix, ext)
    assert (
        fits.getdata(tmp_path / "mk_whole.fits", "EVENTS").tobytes()
        == fits.getdata(tmp_path / "mk_slice.fits", "EVENTS").tobytes()
    )
    lc_whole = fits.open(tmp_path / "lc_whole.fits")
    lc_slice = fits.open(tmp_path / "lc_slice.fits")
    assert lc_whole["RATE"].header["EXPOSURE"] == lc_slice["RATE"].header["EXPOSURE"]
    assert lc_whole["RATE"].data.tobytes() == lc_slice["RATE"].data.tobytes()
