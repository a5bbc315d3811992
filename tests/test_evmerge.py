"""Event-list merge (spec §8) on the real evtbin time slices and the p8v2 file.

ft1tiny0/1/2 are consecutive time slices of ft1tiny (PROVENANCE 2.2): their merge must give
back the parent's rows (in list order) and the parent's GTI (the slices' GTIs touch at the
split times and consolidate), with TSTART/TSTOP = min/max and DSS = common cuts + GTI table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_time_span, assert_valid_product, dss, raw_rows
from shared_inputs import FT1TINY_MERGED_DSS, ft1tiny_slices

from fermipipe.errors import EmptyProductError, ToolError
from fermipipe.fits import table as fits_table
from fermipipe.native import gtselect
from fermipipe.native.evmerge import merge_event_files


def test_merge_time_slices_gives_back_the_parent(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.fits"
    outcome = merge_event_files(ft1tiny_slices(shared_data), out)
    assert outcome.outputs == [str(out)] and outcome.n_rows == 1552
    with fits.open(shared_data / "evtbin" / "ft1tiny.fits") as parent, fits.open(out) as got:
        slices = [fits.open(p) for p in ft1tiny_slices(shared_data)]
        try:
            expected = np.concatenate([raw_rows(s["EVENTS"]) for s in slices])
            assert np.array_equal(raw_rows(got["EVENTS"]), expected)
            assert np.array_equal(np.asarray(got["GTI"].data), np.asarray(parent["GTI"].data))
            assert got["GTI"].header["ONTIME"] == pytest.approx(
                parent["GTI"].header["ONTIME"], abs=1e-7
            )
            tstart = min(s["EVENTS"].header["TSTART"] for s in slices)
            tstop = max(s["EVENTS"].header["TSTOP"] for s in slices)
            assert_time_span(got, tstart, tstop)
            assert dss(got["EVENTS"].header) == FT1TINY_MERGED_DSS
        finally:
            for s in slices:
                s.close()
    assert_valid_product(out)


def test_list_order_is_kept(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "reversed.fits"
    files = ft1tiny_slices(shared_data)[::-1]
    merge_event_files(files, out)
    with fits.open(out) as got:
        ids = got["EVENTS"].data["EVENT_ID"]
        expected = np.concatenate([fits.getdata(p, "EVENTS")["EVENT_ID"] for p in files])
        assert np.array_equal(ids, expected)
        times = got["EVENTS"].data["TIME"]
        assert times[0] >= 223910000 and times[-1] <= 223880000  # really reversed
    assert_valid_product(out)


def test_same_as_gtselect_list_when_nothing_is_cut(shared_data: Path, tmp_path: Path) -> None:
    """On these slices gtselect @list drops nothing, so both give the same EVENTS and GTI."""
    lst = tmp_path / "l.lis"
    lst.write_text("\n".join(str(p) for p in ft1tiny_slices(shared_data)))
    a, b = tmp_path / "a.fits", tmp_path / "b.fits"
    merge_event_files(ft1tiny_slices(shared_data), a)
    gtselect.run({"infile": f"@{lst}", "outfile": str(b)})
    with fits.open(a) as ha, fits.open(b) as hb:
        assert np.array_equal(raw_rows(ha["EVENTS"]), raw_rows(hb["EVENTS"]))
        assert np.array_equal(np.asarray(ha["GTI"].data), np.asarray(hb["GTI"].data))
        assert dss(ha["EVENTS"].header) == dss(hb["EVENTS"].header)
        for name in ("PRIMARY", "EVENTS", "GTI"):
            for key in ("TSTART", "TSTOP", "DATE-OBS", "DATE-END", "ONTIME"):
                assert ha[name].header.get(key) == hb[name].header.get(key), (name, key)


def test_streaming_chunks_and_odd_row_size(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """p8v2 rows are 98 bytes (not a multiple of 4): tiny chunks exercise the checksum
    carry across chunk boundaries; the result must equal a one-chunk run byte for byte
    apart from DATE/CHECKSUM stamps."""
    src = shared_data / "gammalib" / "p8v2" / "ft1.fits.gz"
    plain = tmp_path / "plain.fits"  # read with file reads, the .gz from memory
    with fits.open(src) as hdul:
        hdul.writeto(plain)
    big, small = tmp_path / "big.fits", tmp_path / "small.fits"
    merge_event_files([src, plain], big)
    monkeypatch.setattr(fits_table, "CHUNK_BYTES", 1000)  # RawTable.read_chunks' default
    merge_event_files([src, plain], small)
    with fits.open(src) as ref, fits.open(big) as hb, fits.open(small) as hs:
        one = raw_rows(ref["EVENTS"])
        assert np.array_equal(raw_rows(hs["EVENTS"]), np.concatenate([one, one]))
        assert hb["EVENTS"].header["DATASUM"] == hs["EVENTS"].header["DATASUM"]
        assert np.array_equal(np.asarray(hs["GTI"].data), np.asarray(ref["GTI"].data))
    assert_valid_product(small)


def test_dss_mismatch_is_a_clear_error(shared_data: Path, tmp_path: Path) -> None:
    a = shared_data / "evtbin" / "ft1tiny0.fits"
    b = tmp_path / "other_energy.fits"
    with fits.open(shared_data / "evtbin" / "ft1tiny1.fits") as hdul:
        hdul["EVENTS"].header["DSVAL4"] = "100:200000"
        hdul.writeto(b)
    with pytest.raises(ToolError) as err:
        merge_event_files([a, b], tmp_path / "o.fits")
    text = str(err.value)
    assert "\n" not in text and text.startswith("evmerge")
    assert f"DSS keywords in {b} do not match those in {a}" in text
    assert not (tmp_path / "o.fits").exists()


def test_pass_ver_and_column_mismatch(shared_data: Path, tmp_path: Path) -> None:
    p8 = shared_data / "gammalib" / "p8v2" / "ft1.fits.gz"
    with pytest.raises(ToolError, match="PASS_VER is not consistent"):
        merge_event_files([shared_data / "evtbin" / "ft1tiny0.fits", p8], tmp_path / "o.fits")
    narrow = tmp_path / "narrow.fits"
    with fits.open(p8) as hdul:
        cols = [c for c in hdul["EVENTS"].columns if c.name != "DIFRSP4"]
        new = fits.BinTableHDU.from_columns(cols, header=hdul["EVENTS"].header)
        fits.HDUList([hdul[0], new, hdul["GTI"]]).writeto(narrow)
    with pytest.raises(ToolError, match="columns differ from those of the first input"):
        merge_event_files([p8, narrow], tmp_path / "o.fits")


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="cannot open input file"):
        merge_event_files([tmp_path / "absent.fits"], tmp_path / "o.fits")


def test_empty_gti_written_then_reported(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "nogti.fits"
    with fits.open(shared_data / "evtbin" / "ft1tiny0.fits") as hdul:
        hdul["GTI"] = fits.BinTableHDU(hdul["GTI"].data[:0], header=hdul["GTI"].header)
        hdul.writeto(src)
    out = tmp_path / "o.fits"
    with pytest.raises(EmptyProductError, match="No GTIs"):
        merge_event_files([src], out)
    with fits.open(out) as got:
        assert got["GTI"].header["NAXIS2"] == 0 and got["GTI"].header["ONTIME"] == 0.0
        assert got["EVENTS"].header["NAXIS2"] == 396
    assert_valid_product(out)
