"""Native gtmktime against real Fermitools outputs and real LAT data (spec §4)."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_fitsverify
from native_cli import run_native

from fermipipe.errors import EmptyProductError, ToolError
from fermipipe.fits.dss import read_dss_file
from fermipipe.fits.filterexpr import FilterError, angsep, compile_filter
from fermipipe.fits.gti import Gti
from fermipipe.native import gtmktime
from fermipipe.native.gtmktime import (
    NO_ROI_DSS,
    build_filter,
    ft2_gti,
    history_cards,
    run,
    walk_rows,
    write_filtered_events,
)

GOOD = "(DATA_QUAL>0)&&(LAT_CONFIG==1)"
IGNORED = {"DATE", "CHECKSUM", "DATASUM", "CREATOR", "FILENAME"}
MARK = "CFITSIO used the following filtering expression to create this table:"


# ------------------------------------------------------------------------------ fixtures


def _gunzip(src: Path, dst: Path) -> Path:
    if not dst.exists():
        with gzip.open(src, "rb") as fin, dst.open("wb") as fout:
            shutil.copyfileobj(fin, fout)
    return dst


@pytest.fixture(scope="module")
def p8v2(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The gammalib p8v2 FT1/FT2 pair, decompressed (read-only use)."""
    d = tmp_path_factory.mktemp("p8v2")
    ft1 = _gunzip(shared_data / "gammalib/p8v2/ft1.fits.gz", d / "ft1.fits")
    ft2 = _gunzip(shared_data / "gammalib/p8v2/ft2.fits.gz", d / "ft2.fits")
    return ft1, ft2


def _cards(header: fits.Header) -> list[tuple[str, object, str]]:
    return [(c.keyword, c.value, c.comment) for c in header.cards if c.keyword not in IGNORED]


def _split_cfitsio_history(header: fits.Header) -> tuple[list, str]:
    """(cards before the last cfitsio HISTORY block, the block's filter text)."""
    cards = _cards(header)
    idx = max(i for i, c in enumerate(cards) if c[0] == "HISTORY" and c[1] == MARK)
    tail = cards[idx + 1 :]
    assert all(c[0] == "HISTORY" for c in tail)
    return cards[:idx], "".join(str(c[1]) for c in tail)


def _assert_same_headers(ref: fits.HDUList, out: fits.HDUList, *, events: str = "EVENTS") -> None:
    """Keyword by keyword, in order, except DATE/CHECKSUM/DATASUM/CREATOR/FILENAME and the
    path text of the HISTORY block cfitsio appended to the event table (spec §13)."""
    assert [h.name for h in ref] == [h.name for h in out]
    for h_ref, h_out in zip(ref, out, strict=True):
        if h_ref.name == events:
            before_ref, text_ref = _split_cfitsio_history(h_ref.header)
            before_out, text_out = _split_cfitsio_history(h_out.header)
            assert before_ref == before_out
            pattern = r'.*\[EVENTS\]\[gtifilter\(".*_tempgti"\)\]$'
            assert re.match(pattern, text_ref) and re.match(pattern, text_out), text_out
        else:
            assert _cards(h_ref.header) == _cards(h_out.header), h_ref.name


def _rows_bytes(hdu: fits.BinTableHDU) -> bytes:
    """The raw big-endian row bytes of a table (no astropy scaling/conversion)."""
    return np.asarray(hdu.data).tobytes() if len(hdu.data) else b""


def _base(p8v2, tmp_path, **kw):
    """Parameters of a p8v2 run with the usual filter and no ROI cut, overridden by ``kw``."""
    ft1, ft2 = p8v2
    return {
        "scfile": str(ft2),
        "filter": GOOD,
        "roicut": "no",
        "evfile": str(ft1),
        "outfile": str(tmp_path / "out.fits"),
        **kw,
    }


# ------------------------------------------------------------------------------ exactness


def test_roicut_yes_matches_fermitools_reference(p8v2, shared_data, tmp_path):
    out = tmp_path / "p8v2_mktime_roicut.fits"
    outcome = run(_base(p8v2, tmp_path, roicut="yes", outfile=str(out)))
    assert outcome.outputs == [str(out)] and outcome.n_rows == 1493
    assert NO_ROI_DSS not in outcome.messages
    assert not list(tmp_path.glob("*_tempgti")) and not list(tmp_path.glob(".*tmp*"))
    with (
        fits.open(shared_data / "fermitools-2.4/p8v2_mktime_roicut.fits") as ref,
        fits.open(out) as got,
    ):
        assert len(got["EVENTS"].data) == 1493
        assert _rows_bytes(got["EVENTS"]) == _rows_bytes(ref["EVENTS"])  # row for row
        assert len(got["GTI"].data) == 14
        assert _rows_bytes(got["GTI"]) == _rows_bytes(ref["GTI"])  # bit for bit
        assert got["GTI"].header["ONTIME"] == ref["GTI"].header["ONTIME"]
        assert got[0].header["FILENAME"] == out.name
        _assert_same_headers(ref, got)
    with fits.open(out, checksum=True) as hdul:  # checksums present and valid
        for hdu in hdul:
            assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header
            assert hdu._checksum_valid and hdu._datasum_valid
    assert_fitsverify(out)


def test_roicut_term_text_and_precedence(p8v2):
    ft1, ft2 = p8v2
    cuts = read_dss_file(ft1, "EVENTS")
    term = " && angsep(RA_ZENITH,DEC_ZENITH,83.6331,22.0145) < 75"  # %g, zmax 90 − rad 15
    assert build_filter(GOOD, cuts, True) == (GOOD + term, [])
    assert build_filter(GOOD, cuts, False) == (GOOD, [])
    # Appended without parentheses: a top-level || binds the term to its right operand only.
    text, _ = build_filter("DATA_QUAL>0 || LAT_CONFIG==1", cuts, True)
    assert text == "DATA_QUAL>0 || LAT_CONFIG==1" + term
    with fits.open(ft2) as hdul:
        d = hdul["SC_DATA"].data
        cols = {n: np.asarray(d[n]) for n in ("DATA_QUAL", "LAT_CONFIG", "RA_ZENITH", "DEC_ZENITH")}
    sep = angsep(cols["RA_ZENITH"], cols["DEC_ZENITH"], 83.6331, 22.0145)
    dq, lc = cols["DATA_QUAL"] > 0, cols["LAT_CONFIG"] == 1
    got = compile_filter(text)(cols)
    np.testing.assert_array_equal(got, dq | (lc & (sep < 75)))
    assert not np.array_equal(got, (dq | lc) & (sep < 75))  # the data tell the two apart


def _without_dss(src: Path, dst: Path, drop: str) -> Path:
    """A copy of ``src`` whose EVENTS DSS lacks the entries whose DSTYP starts with ``drop``
    (the rest renumbered, order kept); everything else unchanged."""
    keys = ("DSTYP", "DSUNI", "DSVAL", "DSREF")
    with fits.open(src) as hdul:
        h = hdul["EVENTS"].header
        n = h["NDSKEYS"]
        entries = [
            [(s, h.get(f"{s}{k}")) for s in keys]
            for k in range(1, n + 1)
            if not str(h[f"DSTYP{k}"]).startswith(drop)
        ]
        assert len(entries) == n - 1
        for k in range(1, n + 1):
            for s in keys:
                h.remove(f"{s}{k}", ignore_missing=True)
        for k, entry in enumerate(entries, start=1):
            for s, v in entry:
                if v is not None:
                    h[f"{s}{k}"] = v
        h["NDSKEYS"] = len(entries)
        hdul.writeto(dst)
    return dst


def test_roicut_without_cone_prints_message(p8v2, tmp_path):
    ft1, ft2 = p8v2
    nocone = _without_dss(ft1, tmp_path / "nocone.fits", "POS")
    cuts = read_dss_file(nocone, "EVENTS")
    assert build_filter(GOOD, cuts, True) == (GOOD, [NO_ROI_DSS])
    out = tmp_path / "out.fits"
    outcome = run(
        {"scfile": str(ft2), "filter": GOOD, "roicut": True, "evfile": str(nocone),
         "outfile": str(out)}
    )  # fmt: skip
    assert NO_ROI_DSS in outcome.messages
    assert outcome.n_rows == 1507  # no zenith term: the FT1's own GTI comes back


def test_no_gti_dss_means_no_intersection(p8v2, tmp_path):
    """Without a TIME/TABLE DSS the FT2 intervals are not intersected with anything
    (spec §4.2 step 5): the walk's result is written as is."""
    ft1, ft2 = p8v2
    nogti = _without_dss(ft1, tmp_path / "nogti.fits", "TIME")
    out = tmp_path / "out.fits"
    run({"scfile": str(ft2), "filter": GOOD, "roicut": "no", "evfile": str(nogti),
         "outfile": str(out)})  # fmt: skip
    tmin, tmax = 239557417.5, 239643817.5
    walk = ft2_gti([str(ft2)], "SC_DATA", GOOD, tmin, tmax)
    with fits.open(ft1) as src, fits.open(out) as got:
        np.testing.assert_array_equal(got["GTI"].data["START"], walk.start)
        np.testing.assert_array_equal(got["GTI"].data["STOP"], walk.stop)
        # whole FT2 rows: the first starts before TSTART and the last ends after TSTOP
        assert walk.start[0] < tmin and walk.stop[-1] > tmax
        assert len(got["GTI"].data) == len(src["GTI"].data)
        assert got["GTI"].header["ONTIME"] > src["GTI"].header["ONTIME"]


def test_roicut_no_reproduces_ft1_gti(p8v2, tmp_path):
    ft1, _ = p8v2
    out = tmp_path / "noroi.fits"
    outcome = run(_base(p8v2, tmp_path, outfile=str(out)))
    with fits.open(ft1) as src, fits.open(out) as got:
        assert _rows_bytes(got["GTI"]) == _rows_bytes(src["GTI"])  # 15 rows, exactly
        assert len(got["GTI"].data) == 15
        assert got["GTI"].header["ONTIME"] == src["GTI"].header["ONTIME"]
        assert _rows_bytes(got["EVENTS"]) == _rows_bytes(src["EVENTS"])
        # "Not done" (spec §4.2): TSTART/TSTOP, DATE-OBS/END and DSS stay as they were
        for key in ("TSTART", "TSTOP", "DATE-OBS", "DATE-END", "NDSKEYS", "DSVAL3", "DSREF3"):
            assert got["EVENTS"].header[key] == src["EVENTS"].header[key]
            assert got[0].header.get(key) == src[0].header.get(key)
        assert got["GTI"].header["TELAPSE"] == src["GTI"].header["TELAPSE"]
    assert outcome.n_rows == 1507
    assert_fitsverify(out)


def test_overwrite_yes_uses_header_or_given_times(p8v2, tmp_path):
    ft1, ft2 = p8v2
    base = {"scfile": str(ft2), "filter": GOOD, "roicut": "no", "evfile": str(ft1)}
    out = tmp_path / "ow.fits"
    run({**base, "outfile": str(out), "overwrite": "yes"})
    with fits.open(ft1) as src, fits.open(out) as got:
        # the FT1 GTI was made the same way, so [TSTART, TSTOP] clipping gives it back
        assert _rows_bytes(got["GTI"]) == _rows_bytes(src["GTI"])
    t1, t2 = 239570000.0, 239600000.0
    out2 = tmp_path / "ow2.fits"
    run(
        {
            **base,
            "outfile": str(out2),
            "overwrite": "yes",
            "header_obstimes": "no",
            "tstart": t1,
            "tstop": t2,
        }
    )
    with fits.open(ft1) as src, fits.open(out2) as got:
        want = Gti.from_intervals(src["GTI"].data["START"], src["GTI"].data["STOP"]).clip(t1, t2)
        np.testing.assert_array_equal(got["GTI"].data["START"], want.start)
        np.testing.assert_array_equal(got["GTI"].data["STOP"], want.stop)
        t = src["EVENTS"].data["TIME"]
        assert len(got["EVENTS"].data) == int(want.contains(t).sum())


def test_pint_week323_gti(shared_data, tmp_path):
    """Full weekly FT2 (17305 rows): the 106 good-time intervals of week 323 equal those of
    the J0030+0451 FT1 (PROVENANCE §2.6)."""
    ft2 = shared_data / "pint/lat_spacecraft_weekly_w323_p202_v001.fits"
    ft1 = shared_data / "pint/J0030+0451_w323_ft1weights.fits"
    out = tmp_path / "w323.fits"
    outcome = run(
        {
            "scfile": str(ft2),
            "filter": "DATA_QUAL>0 && LAT_CONFIG==1",
            "roicut": "no",
            "evfile": str(ft1),
            "outfile": str(out),
        }
    )
    with fits.open(ft2) as h2, fits.open(ft1) as h1, fits.open(out) as got:
        t0, t1 = h2["SC_DATA"].data["START"][0], h2["SC_DATA"].data["STOP"][-1]
        g = h1["GTI"].data
        inweek = (g["STOP"] > t0) & (g["START"] < t1)
        assert inweek.sum() == 106
        assert len(got["GTI"].data) == 106
        np.testing.assert_array_equal(got["GTI"].data["START"], g["START"][inweek])
        np.testing.assert_array_equal(got["GTI"].data["STOP"], g["STOP"][inweek])
        assert _rows_bytes(got["EVENTS"]) == _rows_bytes(h1["EVENTS"])  # all 27 in the week
    assert outcome.n_rows == 27


def test_2fhl_event_filtering_by_reference_gti(shared_data, tmp_path):
    """Without the 2FHL FT2, check the filtering/GTI writing on the reference's own GTI."""
    d = shared_data / "gammapy-fermi-lat-data/2fhl"
    selected = _gunzip(d / "fermi_2fhl_events_selected.fits.gz", tmp_path / "selected.fits")
    reference = _gunzip(d / "fermi_2fhl_events.fits.gz", tmp_path / "events.fits")
    with fits.open(reference) as ref:
        gti = Gti.from_intervals(ref["GTI"].data["START"], ref["GTI"].data["STOP"])
    assert len(gti) == 36164
    out = tmp_path / "out.fits"
    # the file names of the original run, so that even cfitsio's HISTORY text (wrapped at
    # 72 characters over two cards) must come out identical
    history = history_cards(
        "fermi_2fhl_events_selected.fits", "EVENTS", "fermi_2fhl_events.fits_tempgti"
    )
    result = write_filtered_events(str(selected), str(out), gti, history=history)
    assert result.n_events == 60275 and result.n_gti == 36164
    with fits.open(reference) as ref, fits.open(out) as got:
        assert _rows_bytes(got["EVENTS"]) == _rows_bytes(ref["EVENTS"])
        assert _rows_bytes(got["GTI"]) == _rows_bytes(ref["GTI"])
        assert got["GTI"].header["ONTIME"] == ref["GTI"].header["ONTIME"]
        for h_ref, h_out in zip(ref, got, strict=True):  # every keyword, in order
            assert _cards(h_ref.header) == _cards(h_out.header), h_ref.name
    assert_fitsverify(out)


# ------------------------------------------------------------------------------ the row walk


def test_walk_rows_rules():
    start = np.array([0.0, 10, 20, 30, 45, 50, 60, 70, 80])
    stop = np.array([10.0, 20, 30, 40, 50, 60, 65, 80, 90])
    # tmin=15: the first row with STOP > 15 is [10,20]; contiguous rows are concatenated;
    # 40 != 45 splits; 65 != 70 splits; START 80 > tmax=75 ends the walk.
    s, e = walk_rows(start, stop, 15.0, 75.0)
    np.testing.assert_array_equal(s, [10.0, 45.0, 70.0])
    np.testing.assert_array_equal(e, [40.0, 65.0, 80.0])
    # the first row is taken even when it begins after tmax
    s, e = walk_rows(start, stop, 62.0, 61.0)
    np.testing.assert_array_equal(s, [60.0])
    np.testing.assert_array_equal(e, [65.0])
    # nothing ends after tmin → no interval
    s, e = walk_rows(start, stop, 95.0, 100.0)
    assert s.size == 0 and e.size == 0
    # STOP == tmin is not "after" tmin (strict)
    s, _ = walk_rows(start, stop, 10.0, 100.0)
    assert s[0] == 10.0


def test_ft2_file_list_equals_single_file(p8v2, tmp_path):
    ft1, ft2 = p8v2
    with fits.open(ft2) as hdul:
        n = len(hdul["SC_DATA"].data)
        halves = []
        for i, rows in enumerate((slice(0, n // 2), slice(n // 2, n))):
            path = tmp_path / f"ft2_{i}.fits"
            fits.HDUList(
                [
                    hdul[0].copy(),
                    fits.BinTableHDU(hdul["SC_DATA"].data[rows], hdul["SC_DATA"].header),
                ]
            ).writeto(path)
            halves.append(path)
    listfile = tmp_path / "ft2.lst"
    listfile.write_text(f"# FT2 halves\n{halves[0]}\n\n{halves[1]}\n")
    tmin, tmax = 239557417.5, 239643817.5
    whole = ft2_gti([str(ft2)], "SC_DATA", GOOD, tmin, tmax)
    out = tmp_path / "list.fits"
    run(
        {
            "scfile": f"@{listfile}",
            "filter": GOOD,
            "roicut": "no",
            "evfile": str(ft1),
            "outfile": str(out),
        }
    )
    with fits.open(ft1) as src, fits.open(out) as got:
        assert _rows_bytes(got["GTI"]) == _rows_bytes(src["GTI"])
    split = ft2_gti([str(h) for h in halves], "SC_DATA", GOOD, tmin, tmax)
    # The second half starts after tmax, yet its first row is taken (spec §4.2 step 4); the
    # intersection with the event GTI removes it, so the outputs above are equal.
    assert len(split) == len(whole) + 1 and split.start[-1] > tmax
    assert split.clip(tmin, tmax) == whole.clip(tmin, tmax)


# ------------------------------------------------------------------------------ errors


def test_filter_syntax_error(p8v2, tmp_path):
    with pytest.raises(FilterError) as info:
        run(_base(p8v2, tmp_path, filter="DATA_QUAL>0 &&& LAT_CONFIG==1"))
    msg = str(info.value)
    assert msg.startswith("gtmktime") and "DATA_QUAL>0 &&& LAT_CONFIG==1" in msg
    assert info.value.position == 14
    assert not (tmp_path / "out.fits").exists()


def test_filter_unknown_column(p8v2, tmp_path):
    with pytest.raises(FilterError) as info:
        run(_base(p8v2, tmp_path, filter="DATA_QUALITY>0"))
    assert "unknown column 'DATA_QUALITY'" in str(info.value)
    assert info.value.file == str(p8v2[1]) and info.value.tool == "gtmktime"
    assert not (tmp_path / "out.fits").exists()


def test_zero_ft2_rows_is_empty_product(p8v2, tmp_path):
    with pytest.raises(EmptyProductError) as info:
        run(_base(p8v2, tmp_path, filter="DATA_QUAL>5"))
    assert "Zero rows returned from FT2 file for this filter: DATA_QUAL>5" in str(info.value)
    assert not (tmp_path / "out.fits").exists()


def test_zero_rows_is_checked_per_ft2_file(p8v2, tmp_path):
    _, ft2 = p8v2
    with fits.open(ft2) as hdul:
        d = hdul["SC_DATA"].data
        bad = tmp_path / "bad_ft2.fits"
        fits.HDUList(
            [hdul[0].copy(), fits.BinTableHDU(d[d["LAT_CONFIG"] == 0], hdul["SC_DATA"].header)]
        ).writeto(bad)
    listfile = tmp_path / "ft2.lst"
    listfile.write_text(f"{ft2}\n{bad}\n")
    with pytest.raises(EmptyProductError) as info:
        run(_base(p8v2, tmp_path, scfile=f"@{listfile}"))
    assert info.value.file == str(bad)


def test_roi_larger_than_zmax_gives_zero_rows(p8v2):
    ft1, ft2 = p8v2
    cuts = read_dss_file(ft1, "EVENTS")
    text, _ = build_filter(GOOD, cuts, True)
    # zmax − rad ≤ 0 in the spec's failure list; here check the numeric form is used as is
    assert text.endswith("< 75")
    with pytest.raises(EmptyProductError, match="Zero rows"):
        ft2_gti(
            [str(ft2)],
            "SC_DATA",
            GOOD + " && angsep(RA_ZENITH,DEC_ZENITH,83.6331,22.0145) < -5",
            239557417.5,
            239643817.5,
        )


def test_ft2_not_covering_gives_no_gtis(p8v2, tmp_path):
    """FT2 rows all after the event file's TSTOP: the walk keeps only the first row, outside
    the event GTI, so the GTI is empty → our choice: EmptyProductError "No GTIs found" and no
    output file."""
    _, ft2 = p8v2
    with fits.open(ft2) as hdul:
        d = hdul["SC_DATA"].data
        late = tmp_path / "late_ft2.fits"
        fits.HDUList(
            [hdul[0].copy(), fits.BinTableHDU(d[d["START"] > 239650000.0], hdul["SC_DATA"].header)]
        ).writeto(late)
    with pytest.raises(EmptyProductError, match="No GTIs found"):
        run(_base(p8v2, tmp_path, scfile=str(late)))
    assert not list(tmp_path.glob("out.fits*")) and not list(tmp_path.glob(".out.fits*"))


def test_clobber_no_and_missing_parameters(p8v2, tmp_path):
    out = tmp_path / "out.fits"
    out.write_bytes(b"keep me")
    with pytest.raises(ToolError, match="clobber"):
        run(_base(p8v2, tmp_path, clobber="no"))
    assert out.read_bytes() == b"keep me"
    with pytest.raises(ToolError, match="outfile"):
        run({k: v for k, v in _base(p8v2, tmp_path).items() if k != "outfile"})
    with pytest.raises(ToolError, match="did you mean"):
        run(_base(p8v2, tmp_path, roicutt="no"))


def test_params_table_matches_par_file():
    names = [p.name for p in gtmktime.PARAMS]
    assert names[:13] == [
        "scfile",
        "sctable",
        "filter",
        "roicut",
        "evfile",
        "evtable",
        "outfile",
        "apply_filter",
        "overwrite",
        "header_obstimes",
        "tstart",
        "tstop",
        "gtifile",
    ]
    defaults = {p.name: p.default for p in gtmktime.PARAMS}
    assert defaults["filter"] == "DATA_QUAL>0 && LAT_CONFIG==1 && ABS(ROCK_ANGLE)<52"
    assert defaults["sctable"] == "SC_DATA" and defaults["roicut"] is True
    assert defaults["overwrite"] is False and defaults["gtifile"] == "default"


# ------------------------------------------------------------------------------ CLI


def test_cli_subprocess(p8v2, tmp_path):
    ft1, ft2 = p8v2
    out = tmp_path / "cli.fits"
    args = [f"scfile={ft2}", f"filter={GOOD}", "roicut=no", f"evfile={ft1}", f"outfile={out}"]
    proc = run_native("gtmktime", *args, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "15 GTIs" in proc.stdout
    with fits.open(ft1) as src, fits.open(out) as got:
        assert _rows_bytes(got["GTI"]) == _rows_bytes(src["GTI"])
    bad = [args[0], "filter=DATA_QUAL>>0", *args[2:-1], f"outfile={tmp_path / 'x.fits'}"]
    proc = run_native("gtmktime", *bad, timeout=120)
    assert proc.returncode == 1
    assert "error: gtmktime" in proc.stderr and "DATA_QUAL>>0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_zero_events_with_good_time_is_a_valid_file(p8v2, tmp_path):
    """GTI not empty but no event inside it: a valid file with NAXIS2 = 0 (not 'empty')."""
    ft1, ft2 = p8v2
    with fits.open(ft1) as src:
        t = np.sort(src["EVENTS"].data["TIME"])
        g0 = (src["GTI"].data["START"][0], src["GTI"].data["STOP"][0])
    inside = t[(t > g0[0]) & (t < g0[1])]
    gaps = np.diff(inside)
    i = int(np.argmax(gaps))
    t1, t2 = inside[i] + 0.25 * gaps[i], inside[i] + 0.75 * gaps[i]  # no event in [t1, t2]
    out = tmp_path / "none.fits"
    before = ft1.read_bytes()
    outcome = run(
        {"scfile": str(ft2), "filter": GOOD, "roicut": "no", "evfile": str(ft1),
         "outfile": str(out), "overwrite": "yes", "header_obstimes": "no",
         "tstart": t1, "tstop": t2}
    )  # fmt: skip
    assert outcome.n_rows == 0
    assert ft1.read_bytes() == before  # input untouched
    with fits.open(out) as got:
        assert got["EVENTS"].header["NAXIS2"] == 0
        np.testing.assert_array_equal(got["GTI"].data["START"], [t1])
        np.testing.assert_array_equal(got["GTI"].data["STOP"], [t2])
        assert got["GTI"].header["ONTIME"] == t2 - t1
    assert_fitsverify(out)


def test_bad_inputs_are_tool_errors(p8v2, tmp_path):
    ft1, ft2 = p8v2
    junk = tmp_path / "junk.fits"
    junk.write_text("not a FITS file\n" * 200)
    with pytest.raises(ToolError, match="junk.fits: not a FITS file"):
        run(_base(p8v2, tmp_path, evfile=str(junk)))
    with pytest.raises(ToolError, match="no EVENTZ extension"):
        run(_base(p8v2, tmp_path, evtable="EVENTZ"))
    with pytest.raises(ToolError, match="no SC_DATAX extension"):
        run(_base(p8v2, tmp_path, sctable="SC_DATAX"))
    with pytest.raises(ToolError, match="file not found"):
        run(_base(p8v2, tmp_path, scfile=str(tmp_path / "missing_ft2.fits")))
    with pytest.raises(ToolError, match="junk.fits: not a FITS file"):
        run(_base(p8v2, tmp_path, scfile=f"@{_list(tmp_path, junk)}"))
    assert not (tmp_path / "out.fits").exists()


def _list(tmp_path: Path, *files: Path) -> Path:
    path = tmp_path / "files.lst"
    path.write_text("".join(f"{f}\n" for f in files))
    return path
