"""Native gtselect against real Fermitools outputs (spec §3) and its own contracts.

References (shared/data/fermi, PROVENANCE.md):
* evtbin ft1tiny → ft1tiny0/1/2: made by an OLD gtselect with inclusive bounds
  (``tmin <= TIME <= tmax``). We implement the current Pass 8 semantics (open lower, closed
  upper); the parent has no event exactly on a split time, so the rows must be identical —
  asserted explicitly — and a separate test shows which side a boundary event goes to now.
* gammalib p8v2 ft1: the output of a two-stage chain (weekly → gtselect → gtmktime →
  gtselect ROI stage); its DSS order and filter string come from a real ScienceTools run.
* 2FHL events_selected: a real gtselect over the weekly-file list.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import DSS_STEMS, assert_time_span, assert_valid_product, dss, raw_rows
from fitsedit import set_dss
from native_cli import run_native
from shared_inputs import FT1TINY_MERGED_DSS, ft1tiny_slices
from sky_samples import points_on_cone_edge

from fermipipe.errors import EmptyProductError, ToolError
from fermipipe.fits.table import RawTable
from fermipipe.native import gtselect
from fermipipe.native.gtselect import ConeTerm, MaskTerm, RangeTerm, selection_mask

CRAB = {"ra": "83.633208", "dec": "22.014472", "rad": "15", "emin": "30", "emax": "200000"}
SPLITS = [(223850000, 223880000), (223880000, 223910000), (223910000, 223950000)]
P8V2_STAGE2 = {
    "ra": "83.6331",
    "dec": "22.0145",
    "rad": "15",
    "emin": "200",
    "emax": "20000",
    "zmax": "90",
}
P8V2_FILTER = (
    "((EVENT_CLASS&o200) != o0) && ((EVENT_TYPE&o3) != o0) && "
    "angsep(RA,DEC,83.6331,22.0145) < 15 && 200 < ENERGY && ENERGY <= 20000 && "
    "0 < ZENITH_ANGLE && ZENITH_ANGLE <= 90 && gtifilter()"
)
FHL_PARAMS = {
    "ra": "0",
    "dec": "0",
    "rad": "180",
    "tmin": "239557702.597728",
    "tmax": "444440996.314882",
    "emin": "50000",
    "emax": "2000000",
    "zmax": "105",
    "evclass": "128",
    "evtype": "3",
}


# ------------------------------------------------------------------ helpers


def select(infile: Path | str, outfile: Path, **params: str):
    return gtselect.run({"infile": str(infile), "outfile": str(outfile), **params})


def dss_cards(header: fits.Header) -> list[str]:
    return [c.image for c in header.cards if c.keyword == "NDSKEYS" or c.keyword[:5] in DSS_STEMS]


def filter_history(header: fits.Header) -> list[str]:
    """The card images of the last ``HISTORY Filter string:`` block."""
    cards = [c.image for c in header.cards if c.keyword == "HISTORY"]
    start = max(i for i, c in enumerate(cards) if c.startswith("HISTORY Filter string:"))
    block = [cards[start]]
    for card in cards[start + 1 :]:
        if card.startswith("HISTORY CFITSIO") or card.startswith("HISTORY Filter string"):
            break
        block.append(card)
    return block


def gunzip(src: Path, dst: Path) -> Path:
    with fits.open(src) as hdul:
        hdul.writeto(dst)
    return dst


# ------------------------------------------------------------------ selection semantics


def _rows(**cols: np.ndarray) -> RawTable:
    """A RawTable: float columns as D, uint32 columns as 32X bit strings (first bit = MSB)."""
    header = fits.Header()
    names, formats = [], []
    for n, (name, values) in enumerate(cols.items(), start=1):
        bits = values.dtype.kind == "u"
        header[f"TTYPE{n}"] = name
        header[f"TFORM{n}"] = "32X" if bits else "D"
        names.append(name)
        formats.append(("u1", (4,)) if bits else ">f8")
    rows = np.zeros(len(next(iter(cols.values()))), dtype=list(zip(names, formats, strict=True)))
    for name, values in cols.items():
        if values.dtype.kind == "u":
            rows[name] = values.astype(">u4").view(np.uint8).reshape(-1, 4)
        else:
            rows[name] = values
    header["TFIELDS"] = len(cols)
    header["NAXIS1"] = rows.dtype.itemsize
    return RawTable(header, rows)


def test_mask_range_open_below_closed_above_and_equality_form() -> None:
    from fermipipe.fits.gti import Gti

    e = np.array([100.0, 100.0000001, 1000.0, 1000.0001, 5.0])
    rows = _rows(ENERGY=e, TIME=np.zeros(5), CONVERSION_TYPE=np.array([0.0, 1.0, 0.0, 1.0, 2.0]))
    gti = Gti.from_intervals([0.0], [1.0])
    assert selection_mask(rows, [RangeTerm("ENERGY", 100.0, 1000.0)], gti).tolist() == [
        False,
        True,
        True,
        False,
        False,
    ]
    # min == max: both ends closed (CONVERSION_TYPE [c, c])
    mask = selection_mask(rows, [RangeTerm("CONVERSION_TYPE", 1.0, 1.0)], gti)
    assert mask.tolist() == [False, True, False, True, False]
    assert selection_mask(rows, [RangeTerm("ENERGY", None, 100.0)], gti).tolist() == [
        True,
        False,
        False,
        False,
        True,
    ]


def test_mask_bits_any_and_gti_closed_and_strict_cone() -> None:
    from fermipipe.fits.gti import Gti

    rows = _rows(
        EVENT_CLASS=np.array([128, 256, 128 | 256, 0, 1 << 31], dtype=np.uint32),
        TIME=np.array([10.0, 20.0, 20.0000001, 30.0, 15.0]),
        RA=np.array([0.0, 0.0, 10.0, 10.0000001, 5.0]),
        DEC=np.zeros(5),
    )
    gti = Gti.from_intervals([10.0, 25.0], [20.0, 30.0])
    everything = Gti.from_intervals([0.0], [100.0])
    mask = selection_mask(rows, [MaskTerm("EVENT_CLASS", 128 | 256)], everything)
    assert mask.tolist() == [True, True, True, False, False]  # ANY requested bit
    assert selection_mask(rows, [MaskTerm("EVENT_CLASS", 1 << 31)], everything).tolist() == [
        False,
        False,
        False,
        False,
        True,
    ]
    # gtifilter(): closed at both ends
    assert selection_mask(rows, [], gti).tolist() == [True, True, False, True, True]
    # cone strict '<': an event exactly on the radius is out
    cone = selection_mask(rows, [ConeTerm(0.0, 0.0, 10.0)], everything)
    assert cone.tolist() == [True, True, False, False, True]
    assert not selection_mask(rows, [], Gti.empty()).any()  # empty GTI rejects all


def test_cone_mask_matches_cfitsio_arithmetic_at_the_boundary() -> None:
    """Points within ~1e-9 deg of the radius: the vectorised mask equals a scalar evaluation
    with libm in cfitsio's operation order (eval.y angsep_calc), including exact ties."""
    import math

    from fermipipe.native.gtselect import _angsep_scalar, cone_mask

    ra0, dec0, rad = 83.6331, 22.0145, 15.0
    ra, dec = points_on_cone_edge(ra0, dec0, rad, 20000, seed=7)
    want = np.array([_angsep_scalar(a, d, ra0, dec0) < rad for a, d in zip(ra, dec, strict=True)])
    assert np.array_equal(cone_mask(ra, dec, ra0, dec0, rad), want)
    assert 0.2 < want.mean() < 0.8  # really on the boundary
    deg = 4.0 * math.atan(1.0) / 180.0
    assert math.isclose(_angsep_scalar(0.0, 0.0, 0.0, 90.0), 90.0) and deg == math.pi / 180


# ------------------------------------------------------------------ evtbin ft1tiny splits


@pytest.mark.parametrize("part", [0, 1, 2])
def test_ft1tiny_time_splits_match_reference(shared_data: Path, tmp_path: Path, part: int) -> None:
    parent = shared_data / "evtbin" / "ft1tiny.fits"
    ref_path = shared_data / "evtbin" / f"ft1tiny{part}.fits"
    tmin, tmax = SPLITS[part]
    out = tmp_path / f"part{part}.fits"
    outcome = select(parent, out, tmin=str(tmin), tmax=str(tmax), **CRAB)
    assert outcome.outputs == [str(out)]
    with fits.open(parent) as par, fits.open(ref_path) as ref, fits.open(out) as got:
        # The old inclusive gtselect and the Pass 8 open-lower one agree here only because
        # no parent event sits exactly on a bound: check that premise, then exact equality.
        t = par["EVENTS"].data["TIME"]
        assert not np.isin(t, [tmin, tmax]).any()
        e = par["EVENTS"].data["ENERGY"]
        assert not np.isin(e, [30.0, 200000.0]).any()
        assert outcome.n_rows == len(ref["EVENTS"].data) == got["EVENTS"].header["NAXIS2"]
        assert np.array_equal(raw_rows(got["EVENTS"]), raw_rows(ref["EVENTS"]))
        np.testing.assert_array_equal(got["GTI"].data["START"], ref["GTI"].data["START"])
        np.testing.assert_array_equal(got["GTI"].data["STOP"], ref["GTI"].data["STOP"])
        assert got["GTI"].header["ONTIME"] == pytest.approx(ref["GTI"].header["ONTIME"], abs=1e-7)
        # Modern behaviour (spec 3.4): TSTART/TSTOP clipped to the time cut, TELAPSE in GTI
        for name in ("EVENTS", "GTI", "PRIMARY"):
            h = got[name].header
            assert h["TSTART"] == max(par["EVENTS"].header["TSTART"], tmin)
            assert h["TSTOP"] == min(par["EVENTS"].header["TSTOP"], tmax)
        assert got["GTI"].header["TELAPSE"] == tmax - tmin
        assert dss(got["EVENTS"].header) == [
            ("POS(RA,DEC)", "deg", "CIRCLE(83.633208,22.014472,15)", None),
            ("TIME", "s", "TABLE", ":GTI"),
            ("ENERGY", "MeV", "30:200000", None),
        ]
    assert_valid_product(out)


def test_boundary_event_follows_pass8_semantics(shared_data: Path, tmp_path: Path) -> None:
    """An event exactly at 223880000 goes to (223850000, 223880000], not to the next part."""
    src = tmp_path / "ft1tiny_edge.fits"
    with fits.open(shared_data / "evtbin" / "ft1tiny.fits") as hdul:
        times = hdul["EVENTS"].data["TIME"]
        i = int(np.argmin(np.abs(times - 223880000.0)))
        hdul["EVENTS"].data["TIME"][i] = 223880000.0
        event_id = int(hdul["EVENTS"].data["EVENT_ID"][i])
        hdul.writeto(src)
    ids = []
    for part in (0, 1):
        out = tmp_path / f"p{part}.fits"
        select(src, out, tmin=str(SPLITS[part][0]), tmax=str(SPLITS[part][1]), **CRAB)
        with fits.open(out) as got:
            ids.append(set(got["EVENTS"].data["EVENT_ID"].tolist()))
    assert event_id in ids[0] and event_id not in ids[1]


# ------------------------------------------------------------------ gammalib p8v2 chain


def test_p8v2_stage2_reproduces_reference_dss_and_filter(shared_data: Path, tmp_path: Path) -> None:
    """Rebuild the stage-2 input (after weekly gtselect + gtmktime) and run stage 2 on it.

    The input's DSS is the one the history implies: EVENT_CLASS/EVENT_TYPE masks, the GTI
    table, ENERGY 10:3000000 and ZENITH_ANGLE 0:90 (the TIME range is not written).
    """
    ref_path = shared_data / "gammalib" / "p8v2" / "ft1.fits.gz"
    stage1 = tmp_path / "stage1.fits"
    with fits.open(ref_path) as hdul:
        entries = [
            ("BIT_MASK(EVENT_CLASS,128,P8R2)", "DIMENSIONLESS", "1:1", None),
            ("BIT_MASK(EVENT_TYPE,3,P8R2)", "DIMENSIONLESS", "1:1", None),
            ("TIME", "s", "TABLE", ":GTI"),
            ("ENERGY", "MeV", "10:3000000", None),
            ("ZENITH_ANGLE", "deg", "0:90", None),
        ]
        set_dss(hdul["EVENTS"].header, entries)
        hdul.writeto(stage1)
    out = tmp_path / "stage2.fits"
    outcome = select(stage1, out, **P8V2_STAGE2)
    with fits.open(ref_path) as ref, fits.open(out) as got:
        assert dss_cards(got["EVENTS"].header) == dss_cards(ref["EVENTS"].header)
        assert filter_history(got["EVENTS"].header) == filter_history(ref["EVENTS"].header)
        assert outcome.n_rows == 1507
        assert np.array_equal(raw_rows(got["EVENTS"]), raw_rows(ref["EVENTS"]))
        assert np.array_equal(np.asarray(got["GTI"].data), np.asarray(ref["GTI"].data))
        assert got["GTI"].header["ONTIME"] == ref["GTI"].header["ONTIME"]
        # no time cut and one input: dates untouched (spec 3.4)
        for name in ("PRIMARY", "EVENTS", "GTI"):
            for key in ("DATE", "DATE-OBS", "DATE-END", "TSTART", "TSTOP"):
                assert got[name].header[key] == ref[name].header[key], (name, key)
    assert_valid_product(out)


def test_p8v2_stage2_on_itself_same_rows_spec_order(shared_data: Path, tmp_path: Path) -> None:
    """Idempotent in rows, DSS values and filter; the order follows spec 3.2 (input's non-GTI
    cuts first, then the GTI cut), so TIME/TABLE moves after the cone on a second pass."""
    ref_path = shared_data / "gammalib" / "p8v2" / "ft1.fits.gz"
    out = tmp_path / "again.fits"
    outcome = select(ref_path, out, **P8V2_STAGE2)
    with fits.open(ref_path) as ref, fits.open(out) as got:
        assert outcome.n_rows == len(ref["EVENTS"].data)
        assert np.array_equal(raw_rows(got["EVENTS"]), raw_rows(ref["EVENTS"]))
        assert sorted(dss(got["EVENTS"].header)) == sorted(dss(ref["EVENTS"].header))
        assert [d[0] for d in dss(got["EVENTS"].header)] == [
            "BIT_MASK(EVENT_CLASS,128,P8R2)",
            "BIT_MASK(EVENT_TYPE,3,P8R2)",
            "POS(RA,DEC)",
            "TIME",
            "ENERGY",
            "ZENITH_ANGLE",
        ]
        assert " ".join(c[8:] for c in filter_history(got["EVENTS"].header)).replace(" ", "") == (
            "Filter string: " + P8V2_FILTER
        ).replace(" ", "")
        # the whole-block text, unwrapped exactly as cfitsio wraps it (72 characters/card)
        text = "".join(c[8:80] for c in filter_history(got["EVENTS"].header)).rstrip()
        assert text == "Filter string: " + P8V2_FILTER
        # cfitsio's own HISTORY before the DSS names the input and the filter
        hist = [c.image for c in got["EVENTS"].header.cards if c.keyword == "HISTORY"]
        i = max(k for k, c in enumerate(hist) if c.startswith("HISTORY CFITSIO used the following"))
        assert "".join(c[8:80] for c in hist[i + 1 : i + 5]).startswith(
            f"{ref_path}[EVENTS][{P8V2_FILTER}]"
        )
    assert_valid_product(out)


def test_new_evclass_replaces_the_mask_in_place(shared_data: Path, tmp_path: Path) -> None:
    """evclass=1024 on a SOURCE (128) file: the EVENT_CLASS mask is replaced where it stood
    (no CALDB validity table here: fits.dss's documented choice) and only bit 1024 counts."""
    src = shared_data / "gammalib" / "p8v2" / "ft1.fits.gz"
    out = tmp_path / "ultraclean.fits"
    outcome = select(src, out, evclass="1024", emin="INDEF", emax="INDEF")
    with fits.open(src) as ref, fits.open(out) as got:
        bits = np.packbits(ref["EVENTS"].data["EVENT_CLASS"], axis=1).view(">u4").ravel()
        expected = raw_rows(ref["EVENTS"])[(bits & 1024) != 0]
        assert 0 < outcome.n_rows == len(expected) < len(bits)
        assert np.array_equal(raw_rows(got["EVENTS"]), expected)
        entries = dss(got["EVENTS"].header)
        assert entries[0] == ("BIT_MASK(EVENT_CLASS,1024,P8R2)", "DIMENSIONLESS", "1:1", None)
        assert ("ENERGY", "MeV", "200:20000", None) in entries  # INDEF: no new energy cut
        text = "".join(c[8:80] for c in filter_history(got["EVENTS"].header)).rstrip()
        assert text.startswith("Filter string: ((EVENT_CLASS&o2000) != o0) && ")
    assert_valid_product(out)


# ------------------------------------------------------------------ 2FHL


def test_2fhl_reselection(shared_data: Path, tmp_path: Path) -> None:
    """Reproduce 2FHL events_selected from a weekly-like input (DSS: CLASS mask + GTI), and
    check the evclass/evtype/zmax cuts on its rows."""
    ref_path = (
        shared_data / "gammapy-fermi-lat-data" / "2fhl" / "fermi_2fhl_events_selected.fits.gz"
    )
    weekly = tmp_path / "weekly_like.fits"
    with fits.open(ref_path) as hdul:
        entries = [
            ("BIT_MASK(EVENT_CLASS,128,P8R2)", "DIMENSIONLESS", "1:1", None),
            ("TIME", "s", "TABLE", ":GTI"),
        ]
        set_dss(hdul["EVENTS"].header, entries)
        hdul.writeto(weekly)
    out = tmp_path / "fhl.fits"
    outcome = select(weekly, out, **FHL_PARAMS)
    with fits.open(ref_path) as ref, fits.open(out) as got:
        assert dss_cards(got["EVENTS"].header) == dss_cards(ref["EVENTS"].header)
        assert filter_history(got["EVENTS"].header) == filter_history(ref["EVENTS"].header)
        assert outcome.n_rows == len(ref["EVENTS"].data) == 60347
        assert np.array_equal(raw_rows(got["EVENTS"]), raw_rows(ref["EVENTS"]))
        assert len(got["GTI"].data) == len(ref["GTI"].data) == 36260
        assert got["GTI"].header["ONTIME"] == pytest.approx(ref["GTI"].header["ONTIME"], rel=1e-14)
        ev = got["EVENTS"].data
        bits = np.packbits(ev["EVENT_CLASS"], axis=1).view(">u4").ravel()
        assert ((bits & 128) != 0).all()
        types = np.packbits(ev["EVENT_TYPE"], axis=1).view(">u4").ravel()
        assert ((types & 3) != 0).all()
        assert (ev["ZENITH_ANGLE"] <= 105).all() and (ev["ENERGY"] > 50000).all()
        assert got["EVENTS"].header["TSTART"] == 239557702.597728
        assert got["EVENTS"].header["DATE-OBS"] == ref["EVENTS"].header["DATE-OBS"]
    assert_valid_product(out)


def test_2fhl_reselection_on_itself(shared_data: Path, tmp_path: Path) -> None:
    """Re-running on the real output keeps every row; the DSS set is unchanged and, per
    spec 3.2 (input's non-GTI cuts first, then the GTI cut), TIME/TABLE now follows the
    EVENT_TYPE mask."""
    ref_path = (
        shared_data / "gammapy-fermi-lat-data" / "2fhl" / "fermi_2fhl_events_selected.fits.gz"
    )
    out = tmp_path / "again.fits"
    outcome = select(ref_path, out, **FHL_PARAMS)
    with fits.open(ref_path) as ref, fits.open(out) as got:
        assert outcome.n_rows == 60347
        assert np.array_equal(raw_rows(got["EVENTS"]), raw_rows(ref["EVENTS"]))
        assert sorted(dss(got["EVENTS"].header)) == sorted(dss(ref["EVENTS"].header))
        assert [d[0] for d in dss(got["EVENTS"].header)][:3] == [
            "BIT_MASK(EVENT_CLASS,128,P8R2)",
            "BIT_MASK(EVENT_TYPE,3,P8R2)",
            "TIME",
        ]


# ------------------------------------------------------------------ @list input


def test_list_input_concatenates_and_unions_gti(shared_data: Path, tmp_path: Path) -> None:
    ev = shared_data / "evtbin"
    listfile = tmp_path / "parts.lis"
    listfile.write_text(
        "# three time slices\n\n" + "\n".join(map(str, ft1tiny_slices(shared_data))) + "\n"
    )
    out = tmp_path / "merged.fits"
    outcome = select(f"@{listfile}", out)
    with (
        fits.open(ev / "ft1tiny.fits") as parent,
        fits.open(out) as got,
    ):
        parts = [fits.open(p) for p in ft1tiny_slices(shared_data)]
        try:
            expected = np.concatenate([raw_rows(p["EVENTS"]) for p in parts])
            assert outcome.n_rows == len(expected) == 1552
            assert np.array_equal(raw_rows(got["EVENTS"]), expected)
            # union of the parts' GTIs: touching pieces merge back into the parent GTI
            assert np.array_equal(np.asarray(got["GTI"].data), np.asarray(parent["GTI"].data))
            assert got["GTI"].header["ONTIME"] == pytest.approx(84307.6959530115, abs=1e-7)
            # several inputs: TSTART/TSTOP = min/max of the inputs', dates rewritten
            tstart = min(p["EVENTS"].header["TSTART"] for p in parts)
            tstop = max(p["EVENTS"].header["TSTOP"] for p in parts)
            assert_time_span(got, tstart, tstop)
            for name in ("PRIMARY", "EVENTS", "GTI"):
                # one leap second (2006-01-01) lies between the epoch and MET 220838400
                assert got[name].header["DATE-OBS"] == "2007-12-31T23:59:59.0000"
            # DSS: common cuts + TIME/TABLE (the parts' TIME ranges are not carried over)
            assert dss(got["EVENTS"].header) == FT1TINY_MERGED_DSS
        finally:
            for p in parts:
                p.close()
    assert_valid_product(out)


# ------------------------------------------------------------------ empty outputs


def test_zero_events_is_a_valid_product(shared_data: Path, tmp_path: Path) -> None:
    """Zero selected events with good time left is a normal output (it still has exposure)."""
    out = tmp_path / "none.fits"
    outcome = select(shared_data / "evtbin" / "ft1tiny.fits", out, emin="1e6", emax="2e6")
    assert outcome.n_rows == 0
    with fits.open(out) as got:
        assert got["EVENTS"].header["NAXIS2"] == 0
        assert len(got["GTI"].data) == 13
    assert_valid_product(out)


def test_empty_gti_writes_valid_file_then_reports_empty(shared_data: Path, tmp_path: Path) -> None:
    """Time cut inside a GTI gap (223854399.x – 223856049.x): our documented choice."""
    out = tmp_path / "gap.fits"
    with pytest.raises(EmptyProductError, match="No GTIs"):
        select(shared_data / "evtbin" / "ft1tiny.fits", out, tmin="223855000", tmax="223856000")
    with fits.open(out) as got:
        assert got["EVENTS"].header["NAXIS2"] == 0
        assert got["GTI"].header["NAXIS2"] == 0 and got["GTI"].header["ONTIME"] == 0.0
        assert got["EVENTS"].header["TSTART"] == 223855000.0
    assert_valid_product(out)


# ------------------------------------------------------------------ errors


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.startswith("gtselect")
    return text


def test_missing_input_file(tmp_path: Path) -> None:
    with pytest.raises(ToolError) as err:
        select(tmp_path / "nope.fits", tmp_path / "out.fits")
    assert "not found" in _one_line(err.value) and "nope.fits" in str(err.value)


def test_min_greater_than_max(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolError) as err:
        select(
            shared_data / "evtbin" / "ft1tiny.fits", tmp_path / "o.fits", emin="1000", emax="100"
        )
    assert _one_line(err.value).endswith(
        "minimum requested value, 1000, is greater than the maximum requested, 100, for field ENERGY"
    )
    assert not (tmp_path / "o.fits").exists()


def _copy_with(src: Path, dst: Path, **keys: str) -> Path:
    with fits.open(src) as hdul:
        for key, value in keys.items():
            hdul["EVENTS"].header[key] = value
        hdul.writeto(dst)
    return dst


def test_pass_ver_mismatch(shared_data: Path, tmp_path: Path) -> None:
    p8 = gunzip(shared_data / "gammalib" / "p8v2" / "ft1.fits.gz", tmp_path / "a.fits")
    other = _copy_with(p8, tmp_path / "b.fits", PASS_VER="P8R3")
    (tmp_path / "l.lis").write_text(f"{p8}\n{other}\n")
    with pytest.raises(ToolError) as err:
        select(f"@{tmp_path / 'l.lis'}", tmp_path / "o.fits")
    assert "PASS_VER is not consistent across input FT1 files" in _one_line(err.value)


def test_dss_mismatch(shared_data: Path, tmp_path: Path) -> None:
    p8 = gunzip(shared_data / "gammalib" / "p8v2" / "ft1.fits.gz", tmp_path / "a.fits")
    other = _copy_with(p8, tmp_path / "b.fits", DSVAL6="0:100")
    (tmp_path / "l.lis").write_text(f"{p8}\n{other}\n")
    with pytest.raises(ToolError) as err:
        select(f"@{tmp_path / 'l.lis'}", tmp_path / "o.fits")
    assert f"DSS keywords in {other} do not match those in {p8}" in _one_line(err.value)


def test_clobber_no_keeps_existing_output(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.fits"
    out.write_bytes(b"keep")
    with pytest.raises(ToolError, match="clobber"):
        select(shared_data / "evtbin" / "ft1tiny.fits", out, clobber="no")
    assert out.read_bytes() == b"keep"


def test_unknown_parameter_suggests(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="did you mean emax"):
        select(tmp_path / "x.fits", tmp_path / "o.fits", emaxx="3")


# ------------------------------------------------------------------ command line


def test_cli_with_awkward_path(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "my data's dir"
    folder.mkdir()
    src = folder / "ft1 in.fits"
    shutil.copy(shared_data / "evtbin" / "ft1tiny.fits", src)
    out = folder / "sel 'out'.fits"
    proc = run_native(
        "gtselect", f"infile={src}", f"outfile={out}", "emin=100", "emax=1e5", "zmax=90"
    )
    assert proc.returncode == 0, proc.stderr
    with fits.open(out) as got:
        e = got["EVENTS"].data["ENERGY"]
        assert len(e) > 0 and (e > 100).all() and (e <= 1e5).all()
        assert (got["EVENTS"].data["ZENITH_ANGLE"] <= 90).all()
    assert_valid_product(out)
    bad = run_native("gtselect", f"infile={src}", f"outfile={out}", "emin=5", "emax=1")
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "is greater than the maximum" in bad.stderr


def test_outputs_open_with_gammapy(shared_data: Path, tmp_path: Path) -> None:
    """A normal, a zero-event and a list-merged output all load as gammapy EventLists.

    Modern inputs only: the 2007 DC2 files (evtbin ft1tiny*) lack MJDREFI, which gammapy
    needs, and gtselect copies headers as they are.
    """
    from gammapy import data

    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    weeks = sorted(sample.glob("lat_photon_weekly_w*_p305_v001.fits"))[:2]
    p8v2 = shared_data / "gammalib" / "p8v2" / "ft1.fits.gz"
    normal, zero, merged = tmp_path / "n.fits", tmp_path / "z.fits", tmp_path / "m.fits"
    select(p8v2, normal, **P8V2_STAGE2)
    select(p8v2, zero, emin="1e6", emax="2e6")
    (tmp_path / "l.lis").write_text("\n".join(str(w) for w in weeks))
    select(f"@{tmp_path / 'l.lis'}", merged, emin="30", emax="1e6")
    assert len(data.EventList.read(normal).table) == 1507
    assert len(data.EventList.read(zero).table) == 0
    expected = sum(
        int(np.count_nonzero((e > 30) & (e <= 1e6))) for e in (fitsio_energy(w) for w in weeks)
    )
    assert len(data.EventList.read(merged).table) == expected > 0


def fitsio_energy(path: Path) -> np.ndarray:
    from astropy.io import fits

    with fits.open(path) as hdul:
        return np.asarray(hdul["EVENTS"].data["ENERGY"], dtype=np.float64)


# ------------------------------------------------------------------ cfitsio cross-check


@pytest.fixture(scope="module")
def synth_week(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fermipipe.synth import generate_week

    ft1, _ = generate_week(500, tmp_path_factory.mktemp("synth"), events=30_000, seed=3)
    return ft1


@pytest.mark.parametrize(
    "params",
    [
        {"emin": "100", "emax": "1e5", "zmax": "90", "evclass": "128", "evtype": "3", "t": "y"},
        {
            "ra": "266.4",
            "dec": "-28.9",
            "rad": "30",
            "tmin": "0",  # INDEF-like: both zero means no time cut
            "tmax": "0",
            "emin": "300",
            "emax": "3000",
            "zmin": "10",
            "zmax": "100",
            "evtype": "60",
            "convtype": "1",
        },
        {"evclass": "1024", "evtype": "1", "emin": "1000", "emax": "1e6", "rad": "180", "t": "y"},
    ],
)
def test_rows_equal_cfitsio_filter(synth_week: Path, tmp_path: Path, params: dict) -> None:
    """The rows equal what cfitsio itself selects with our filter string (fitscopy)."""
    out = tmp_path / "native.fits"
    with fits.open(synth_week) as hdul:
        t0, t1 = hdul["GTI"].data["START"][3], hdul["GTI"].data["STOP"][40]
    params = dict(params)
    if params.pop("t", None):  # a time cut from inside one GTI to inside another
        params.update(tmin=repr(float(t0) + 10.0), tmax=repr(float(t1) - 10.0))
    outcome = select(synth_week, out, **params)
    with fits.open(out) as got:
        text = "".join(c[8:80] for c in filter_history(got["EVENTS"].header)).rstrip()
    filt = text.removeprefix("Filter string: ")
    ref = tmp_path / "fitscopy.fits"
    proc = subprocess.run(
        ["fitscopy", f"{synth_week}[EVENTS][{filt}]", str(ref)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    with fits.open(out) as got, fits.open(ref) as want:
        assert 0 < outcome.n_rows < 30_000
        assert np.array_equal(raw_rows(got["EVENTS"]), raw_rows(want["EVENTS"]))
    assert_valid_product(out)


def test_phase_cut_indef_and_evtable(shared_data: Path, tmp_path: Path) -> None:
    """PULSE_PHASE range (PINT file has the column), INDEF cone, evtable given explicitly."""
    src = shared_data / "pint" / "J0030+0451_w323_ft1weights.fits"
    out = tmp_path / "phase.fits"
    outcome = select(
        src,
        out,
        ra="INDEF",
        dec="22",
        rad="1",
        emin="100",
        emax="100000",
        phasemin="0.25",
        phasemax="0.75",
        evtable="EVENTS",
    )
    with fits.open(src) as ref, fits.open(out) as got:
        phase = ref["EVENTS"].data["PULSE_PHASE"]
        expected = raw_rows(ref["EVENTS"])[(phase > 0.25) & (phase <= 0.75)]
        assert 0 < outcome.n_rows == len(expected) < len(phase)
        assert np.array_equal(raw_rows(got["EVENTS"]), expected)
        entries = dss(got["EVENTS"].header)
        assert ("PULSE_PHASE", "dimensionless", "0.25:0.75", None) in entries
        # INDEF ra: no new cone, the input's cone is kept as it was
        assert [e for e in entries if e[0] == "POS(RA,DEC)"] == [
            ("POS(RA,DEC)", "deg", "CIRCLE(7.61428534,4.861029436,2)", None)
        ]
        text = "".join(c[8:80] for c in filter_history(got["EVENTS"].header)).rstrip()
        assert "0.25 < PULSE_PHASE && PULSE_PHASE <= 0.75" in text
    assert_valid_product(out)
    with pytest.raises(ToolError, match="no column PULSE_PHASE"):
        select(shared_data / "evtbin" / "ft1tiny.fits", tmp_path / "x.fits", phasemax="0.5")
