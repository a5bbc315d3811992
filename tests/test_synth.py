"""The synthetic weekly FT1/FT2 generator (fermipipe.synth) and the committed sample."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_fitsverify

from fermipipe import synth
from fermipipe.fits.skycoords import cel_to_gal

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
# Must match data/sample/README.md (the command that made the committed files).
SAMPLE_WEEKS = (700, 701, 702)
SAMPLE_EVENTS = 15_000
SAMPLE_SEED = 1
SAMPLE_SPAN = 86400.0

WEEK = 700
SPAN = 0.5 * 86400.0  # half a day keeps every test fast
EVENTS = 6000


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("synth")
    return synth.generate_week(WEEK, out, events=EVENTS, seed=3, span=SPAN)


@pytest.fixture(scope="module")
def ft1(pair: tuple[Path, Path]) -> fits.HDUList:
    with fits.open(pair[0]) as hdul:
        hdul.readall()
        yield hdul


@pytest.fixture(scope="module")
def ft2(pair: tuple[Path, Path]) -> fits.HDUList:
    with fits.open(pair[1]) as hdul:
        hdul.readall()
        yield hdul


def _stable_cards(header: fits.Header) -> list[tuple[object, ...]]:
    """Cards without the creation time: DATE and CHECKSUM (which covers DATE) keep only
    their place, DATASUM its value (its comment carries the time)."""
    out: list[tuple[object, ...]] = []
    for c in header.cards:
        if c.keyword in ("DATE", "CHECKSUM"):
            out.append((c.keyword,))
        elif c.keyword == "DATASUM":
            out.append((c.keyword, c.value))
        else:
            out.append((c.keyword, c.value, c.comment))
    return out


def _assert_same_files(a: Path, b: Path) -> None:
    """Identical apart from DATE and the checksum (which covers DATE) — bytes of the data."""
    with fits.open(a) as ha, fits.open(b) as hb:
        assert [h.name for h in ha] == [h.name for h in hb]
        for x, y in zip(ha, hb, strict=True):
            assert _stable_cards(x.header) == _stable_cards(y.header), (a.name, x.name)
            if x.data is not None:
                assert x.data.tobytes() == y.data.tobytes(), (a.name, x.name)


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def _gti_from_ft2(sc: fits.FITS_rec) -> tuple[np.ndarray, np.ndarray]:
    good = (sc["DATA_QUAL"] > 0) & (sc["LAT_CONFIG"] == 1)
    starts, stops = [], []
    for s, e in zip(sc["START"][good], sc["STOP"][good], strict=True):
        if stops and s == stops[-1]:
            stops[-1] = e
        else:
            starts.append(s)
            stops.append(e)
    return np.array(starts), np.array(stops)


# ------------------------------------------------------------------------------- determinism


def test_same_seed_same_files(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    again = synth.generate_week(WEEK, tmp_path, events=EVENTS, seed=3, span=SPAN)
    for a, b in zip(pair, again, strict=True):
        _assert_same_files(a, b)


def test_other_seed_other_events_same_orbit(tmp_path: Path, ft1: fits.HDUList, ft2) -> None:
    f1, f2 = synth.generate_week(WEEK, tmp_path, events=EVENTS, seed=4, span=SPAN)
    other = fits.getdata(f1, "EVENTS")
    assert not np.array_equal(other["TIME"], ft1["EVENTS"].data["TIME"])
    sc = fits.getdata(f2, "SC_DATA")
    # Orbit, runs and rows do not depend on the seed; drop-outs do.
    np.testing.assert_array_equal(sc["START"], ft2["SC_DATA"].data["START"])
    np.testing.assert_array_equal(sc["SC_POSITION"], ft2["SC_DATA"].data["SC_POSITION"])


# ------------------------------------------------------------------------ formats vs real files


def _columns(hdu: fits.BinTableHDU) -> list[tuple[str, str, str | None, object, object]]:
    h = hdu.header
    out = []
    for i in range(1, h["TFIELDS"] + 1):
        out.append(
            (
                h[f"TTYPE{i}"],
                h[f"TFORM{i}"],
                h.get(f"TUNIT{i}"),
                h.get(f"TLMIN{i}"),
                h.get(f"TLMAX{i}"),
            )
        )
    return out


def test_ft2_columns_match_real_weekly_ft2(shared_data: Path, ft2: fits.HDUList) -> None:
    real = fits.open(shared_data / "pint" / "lat_spacecraft_weekly_w323_p202_v001.fits")
    with real:
        ref = _columns(real["SC_DATA"])
    ours = _columns(ft2["SC_DATA"])
    assert ours[: len(ref)] == ref
    # current files add the spacecraft velocity (spec §2)
    assert ours[len(ref) :] == [("SC_VELOCITY", "3E", "m/s", None, None)]
    assert ft2["SC_DATA"].header["NAXIS1"] == 152 + 12


def test_ft1_columns_match_real_photon_file(shared_data: Path, ft1: fits.HDUList) -> None:
    with fits.open(shared_data / "gammalib" / "p8v2" / "ft1.fits.gz") as real:
        assert _columns(ft1["EVENTS"]) == _columns(real["EVENTS"])
        assert _columns(ft1["GTI"]) == _columns(real["GTI"])
        for key in ("MJDREFI", "MJDREFF", "TIMESYS", "TIMEREF", "TIMEUNIT", "TELESCOP"):
            assert ft1["EVENTS"].header[key] == real["EVENTS"].header[key], key
    assert [h.name for h in ft1] == ["PRIMARY", "EVENTS", "GTI"]


def test_headers(ft1: fits.HDUList, ft2: fits.HDUList) -> None:
    ev, gti, sc = ft1["EVENTS"].header, ft1["GTI"].header, ft2["SC_DATA"].header
    t0 = synth.week_start(WEEK)
    assert (ev["TSTART"], ev["TSTOP"]) == (t0, t0 + SPAN)
    assert ev["PASS_VER"] == "P8R3"
    assert (ev["HDUCLASS"], ev["HDUCLAS1"], gti["HDUCLAS1"]) == ("OGIP", "EVENTS", "GTI")
    assert ev["NDSKEYS"] == 2
    assert (ev["DSTYP1"], ev["DSVAL1"]) == ("BIT_MASK(EVENT_CLASS,128,P8R3)", "1:1")
    assert (ev["DSTYP2"], ev["DSVAL2"], ev["DSREF2"]) == ("TIME", "TABLE", ":GTI")
    gdata = ft1["GTI"].data
    assert gti["ONTIME"] == pytest.approx(np.sum(gdata["STOP"] - gdata["START"]), abs=1e-6)
    assert gti["TELAPSE"] == pytest.approx(SPAN)
    data = ft2["SC_DATA"].data
    assert (sc["TSTART"], sc["TSTOP"]) == (data["START"][0], data["STOP"][-1])
    assert ft1[0].header["FILENAME"] == synth.ft1_name(WEEK)
    assert ft2[0].header["FILENAME"] == synth.ft2_name(WEEK)
    assert ev["DATE-OBS"] == "2021-10-28T01:14:57.6387"  # MET 657076502.638735


def test_week_boundaries_from_w323(shared_data: Path) -> None:
    with fits.open(shared_data / "pint" / "lat_spacecraft_weekly_w323_p202_v001.fits") as real:
        assert synth.week_start(323) == real["SC_DATA"].header["TSTART"]
    assert synth.week_start(324) - synth.week_start(323) == synth.WEEK_SECONDS
    with pytest.raises(ValueError, match="week 9"):
        synth.week_start(9)


# --------------------------------------------------------------------------------- FT2 content


def test_ft2_rows_are_realistic(ft2: fits.HDUList) -> None:
    sc = ft2["SC_DATA"].data
    dur = sc["STOP"] - sc["START"]
    assert np.all(dur > 0) and np.all(sc["START"][1:] >= sc["STOP"][:-1])
    assert np.mean(np.isclose(dur, 30.0)) > 0.95  # nominal 30 s rows, some short
    gaps = sc["START"][1:] - sc["STOP"][:-1]
    assert np.any(gaps > 600)  # SAA passages are gaps without rows (as in w323)
    assert np.any(np.isclose(gaps, 13.55, atol=0.01))  # run boundaries
    assert not sc["IN_SAA"].any()
    frac = sc["LIVETIME"] / dur
    assert 0.85 < frac.mean() < 0.95 and frac.max() <= 0.95
    # drop-outs that the gtmktime filter must remove, and a "good with caveat" block
    assert (sc["LAT_CONFIG"] == 0).any() and (sc["DATA_QUAL"] == 0).any()
    assert (sc["DATA_QUAL"] == 2).any()
    # geometry: zenith = position direction, SCZ at |ROCK_ANGLE| from it, SCX ⟂ SCZ
    zen = _unit(sc["RA_ZENITH"], sc["DEC_ZENITH"])
    pos = sc["SC_POSITION"].astype(float)
    np.testing.assert_allclose(
        np.einsum("ij,ij->i", zen, pos / np.linalg.norm(pos, axis=1)[:, None]), 1, atol=1e-6
    )
    scz = _unit(sc["RA_SCZ"], sc["DEC_SCZ"])
    scx = _unit(sc["RA_SCX"], sc["DEC_SCX"])
    rock = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", zen, scz), -1, 1)))
    np.testing.assert_allclose(rock, np.abs(sc["ROCK_ANGLE"]), atol=0.01)
    assert np.abs(np.einsum("ij,ij->i", scz, scx)).max() < 1e-5
    plateau = np.isclose(np.abs(sc["ROCK_ANGLE"]), 50.0, atol=0.01)
    plateau |= np.isclose(np.abs(sc["ROCK_ANGLE"]), 60.0, atol=0.01)
    assert plateau.mean() > 0.85  # ±50° survey, ±60° block; the rest are the flips
    assert (np.abs(sc["ROCK_ANGLE"]) > 52).any()  # one modified-profile block per file
    assert np.abs(sc["LAT_GEO"]).max() < 26.0 and np.abs(sc["DEC_NPOLE"] - 64.4).max() < 0.1
    # quaternion: rotation whose columns are the SC axes (QSJ_4 scalar, as in w323)
    qx, qy, qz, qw = (sc[f"QSJ_{i}"] for i in range(1, 5))
    col2 = np.stack(
        [2 * (qx * qz + qy * qw), 2 * (qy * qz - qx * qw), 1 - 2 * (qx * qx + qy * qy)], -1
    )
    np.testing.assert_allclose(col2, scz, atol=1e-5)


def test_consecutive_weeks_join(tmp_path: Path) -> None:
    a = fits.getdata(synth.generate_week(700, tmp_path, events=0)[1], "SC_DATA")
    b = fits.getdata(synth.generate_week(701, tmp_path, events=0)[1], "SC_DATA")
    boundary = synth.week_start(701)
    assert a["STOP"][-1] <= boundary <= b["START"][0]
    assert len(a) > 15000 and len(b) > 15000
    # a run crossing the boundary continues on the same row grid
    if a["STOP"][-1] == boundary == b["START"][0]:
        assert (a["STOP"][-1] - a["START"][-1]) + (b["STOP"][0] - b["START"][0]) <= 30.0 + 1e-6


# --------------------------------------------------------------------------------- FT1 content


def test_gti_is_good_ft2_rows_merged(ft1: fits.HDUList, ft2: fits.HDUList) -> None:
    start, stop = _gti_from_ft2(ft2["SC_DATA"].data)
    np.testing.assert_array_equal(ft1["GTI"].data["START"], start)
    np.testing.assert_array_equal(ft1["GTI"].data["STOP"], stop)


def test_events_inside_gti_sorted_and_counted(ft1: fits.HDUList) -> None:
    ev, gti = ft1["EVENTS"].data, ft1["GTI"].data
    assert len(ev) == EVENTS
    t = ev["TIME"]
    assert np.all(np.diff(t) >= 0)
    i = np.searchsorted(gti["START"], t, side="right") - 1
    assert np.all(i >= 0) and np.all(t <= gti["STOP"][i])


def test_run_bookkeeping(ft1: fits.HDUList, ft2: fits.HDUList) -> None:
    ev = ft1["EVENTS"].data
    run, eid = ev["RUN_ID"], ev["EVENT_ID"]
    same = run[1:] == run[:-1]
    assert np.all(np.diff(run) >= 0) and np.all(np.diff(eid)[same] > 0)
    assert np.all(ev["TIME"] > run)
    # LIVETIME = livetime since the run started: never more than the elapsed time, and it
    # grows by the FT2 livetime between two events of a run
    assert np.all(ev["LIVETIME"] <= ev["TIME"] - run)
    sc = ft2["SC_DATA"].data
    k = np.searchsorted(sc["START"], ev["TIME"], side="right") - 1
    frac = sc["LIVETIME"][k] / (sc["STOP"][k] - sc["START"][k])
    dt, dl = np.diff(ev["TIME"]), np.diff(ev["LIVETIME"])
    row_pair = same & (k[1:] == k[:-1])
    assert row_pair.sum() > 100
    np.testing.assert_allclose(
        dl[row_pair], dt[row_pair] * frac[1:][row_pair], rtol=1e-6, atol=1e-7
    )
    assert np.all(dl[same] >= 0)


def test_angles_consistent_with_ft2(ft1: fits.HDUList, ft2: fits.HDUList) -> None:
    ev, sc = ft1["EVENTS"].data, ft2["SC_DATA"].data
    k = np.searchsorted(sc["START"], ev["TIME"], side="right") - 1
    d = _unit(ev["RA"], ev["DEC"])
    # zenith moves 0.063°/s: interpolate between the row start and the next row start
    z0 = _unit(sc["RA_ZENITH"], sc["DEC_ZENITH"])
    nxt = np.minimum(k + 1, len(sc) - 1)
    w = (ev["TIME"] - sc["START"][k]) / np.maximum(sc["START"][nxt] - sc["START"][k], 1e-9)
    contiguous = (nxt > k) & (sc["START"][nxt] - sc["START"][k] <= 30.0 + 1e-6)
    zen = (1 - w)[:, None] * z0[k] + w[:, None] * z0[nxt]
    zen /= np.linalg.norm(zen, axis=1)[:, None]
    za = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", d, zen), -1, 1)))
    assert np.abs(za - ev["ZENITH_ANGLE"])[contiguous].max() < 0.05
    # THETA from SCZ at the row start: within the attitude drift over one row (except slews)
    theta0 = np.degrees(
        np.arccos(np.clip(np.einsum("ij,ij->i", d, _unit(sc["RA_SCZ"], sc["DEC_SCZ"])[k]), -1, 1))
    )
    assert np.median(np.abs(theta0 - ev["THETA"])) < 0.5
    # the FoV: effective area vanishes beyond 80° in the true direction
    assert np.percentile(ev["THETA"], 99) < 85.0
    # L/B: the rotation of real FT1 files (pre-2016 astro angles)
    gl, gb = cel_to_gal(ev["RA"], ev["DEC"], pre2016=True)
    dl = (gl - ev["L"] + 180.0) % 360.0 - 180.0
    assert np.abs(dl * np.cos(np.radians(gb))).max() < 1e-3 and np.abs(gb - ev["B"]).max() < 1e-3


def test_sky_and_spectrum_are_plausible(ft1: fits.HDUList) -> None:
    ev = ft1["EVENTS"].data
    e, b, za = ev["ENERGY"], ev["B"], ev["ZENITH_ANGLE"]
    assert e.min() >= 20.0 and e.max() <= 1.0e6
    assert 0.02 < np.mean(e < 30.0) < 0.12  # some events below 30 MeV
    assert 80.0 < np.median(e) < 200.0 and np.mean(e > 1000.0) > 0.02
    # galactic plane: |b| < 10° holds 17 % of an isotropic sky
    assert np.mean(np.abs(b) < 10.0) > 2.5 * np.sin(np.radians(10.0))
    # brighter toward the centre: |l| < 60° (1/3 of the band) holds over half its events
    inner = np.abs(b) < 10.0
    toward_centre = np.abs((ev["L"] + 180.0) % 360.0 - 180.0) < 60.0
    assert np.sum(inner & toward_centre) > 0.5 * np.sum(inner)
    # Earth limb at low energy, so that a zenith cut matters
    low = e < 300.0
    assert np.mean((za[low] > 100.0) & (za[low] < 115.0)) > 0.08
    assert np.mean(za > 90.0) > 0.1
    # Vela shows up as a point source
    vela = _unit([128.8359], [-45.1764])[0]
    sep = np.degrees(np.arccos(np.clip(_unit(ev["RA"], ev["DEC"]) @ vela, -1, 1)))
    assert np.sum(sep[e > 1000.0] < 1.0) >= 10


def test_event_class_and_type_bits(ft1: fits.HDUList) -> None:
    ev = ft1["EVENTS"].data
    cls = np.packbits(ev["EVENT_CLASS"], axis=1).view(">u4").ravel()
    typ = np.packbits(ev["EVENT_TYPE"], axis=1).view(">u4").ravel()
    assert np.all(cls & 0xFF == 0xFF)  # SOURCE (128) and the transient classes below it
    for better, worse in ((1024, 512), (512, 256), (256, 128), (1024, 2048)):
        assert np.all(cls[(cls & better) != 0] & worse), (better, worse)
    assert 0.3 < np.mean(cls & 1024 != 0) < 0.8
    front_back = typ & 3
    assert np.all((front_back == 1) | (front_back == 2))
    np.testing.assert_array_equal(ev["CONVERSION_TYPE"], front_back - 1)
    for part in (60, 960):  # exactly one PSF and one EDISP quartile per event
        bits = typ & part
        assert np.all((bits != 0) & ((bits & (bits - 1)) == 0))
    psf3 = (typ & 32) != 0
    assert np.mean(front_back[psf3] == 1) > 0.8  # best PSF quartile mostly FRONT


# ------------------------------------------------------------------------- files and the CLI


def test_fitsverify_clean(pair: tuple[Path, Path]) -> None:
    for path in pair:
        assert_fitsverify(path)


def test_checksums_valid(pair: tuple[Path, Path]) -> None:
    for path in pair:
        with fits.open(path, checksum=True) as hdul:
            for hdu in hdul:
                assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1, hdu.name


@pytest.mark.slow  # importing gammapy takes seconds; the reading itself is instant
def test_gammapy_reads_the_events(pair: tuple[Path, Path]) -> None:
    from gammapy.data import EventList

    events = EventList.read(pair[0])
    assert len(events.table) == EVENTS
    assert events.energy.unit == "MeV"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = [sys.executable, "-m", "fermipipe.synth", "--weeks", "700-701", "--events", "50"]
    res = subprocess.run(
        [*cmd, "--seed", "2", "--span-days", "0.05", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [synth.ft1_name(700), synth.ft2_name(700), synth.ft1_name(701), synth.ft2_name(701)]
    )
    assert synth.main(["--weeks", "12-x", "--out", str(tmp_path)]) == 2
    assert "bad week list" in capsys.readouterr().err
    assert synth.main(["--weeks", "5", "--out", str(tmp_path)]) == 2
    assert "week 5" in capsys.readouterr().err


def test_parse_weeks() -> None:
    assert synth.parse_weeks("10-12") == [10, 11, 12]
    assert synth.parse_weeks("15,10-11,10") == [10, 11, 15]
    with pytest.raises(ValueError, match="end before start"):
        synth.parse_weeks("12-10")


# ----------------------------------------------------------------------------- committed sample


def test_committed_sample_is_reproducible(tmp_path: Path) -> None:
    committed = sorted(p.name for p in SAMPLE.glob("*.fits"))
    expected = sorted(name for w in SAMPLE_WEEKS for name in (synth.ft1_name(w), synth.ft2_name(w)))
    assert committed == expected
    assert sum(p.stat().st_size for p in SAMPLE.iterdir()) <= 6 * 1024 * 1024
    for week in SAMPLE_WEEKS:
        made = synth.generate_week(
            week, tmp_path, events=SAMPLE_EVENTS, seed=SAMPLE_SEED, span=SAMPLE_SPAN
        )
        for path in made:
            _assert_same_files(SAMPLE / path.name, path)


def test_committed_sample_caldb_is_reproducible(tmp_path: Path) -> None:
    """data/sample/caldb is what `python -m fermipipe.synth_caldb --out data/sample/caldb`
    writes (data/sample/README.md): every file, byte for byte."""
    from fermipipe.synth_caldb import main as synth_caldb_main

    committed_root = SAMPLE / "caldb"
    committed = sorted(
        p.relative_to(committed_root) for p in committed_root.rglob("*") if p.is_file()
    )
    assert synth_caldb_main(["--out", str(tmp_path)]) == 0
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert committed == made
    assert len(made) == 4  # aeff, psf, irf_index.fits, caldb.indx
    for rel in made:
        assert (committed_root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
