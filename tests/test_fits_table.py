"""Tests of fermipipe.fits.table: raw BINTABLE reading and the fast writer."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from fermipipe.fits.gti import read_gti
from fermipipe.fits.table import (
    FitsFile,
    RawTable,
    TruncatedTableError,
    dtype_from_header,
    open_table,
    read_hdus,
    write_fits,
)

FT1 = "gammalib/p8v2/ft1.fits.gz"
FT2 = "gammalib/p8v2/ft2.fits.gz"


def _fitsverify(path: Path) -> None:
    exe = shutil.which("fitsverify")
    if exe is None:
        return
    res = subprocess.run([exe, "-q", str(path)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("verification OK"), res.stdout


@pytest.mark.parametrize("name,ext", [(FT1, "EVENTS"), (FT2, "SC_DATA"), (FT1, "GTI")])
def test_columns_equal_astropy(shared_data: Path, name: str, ext: str) -> None:
    table = open_table(shared_data / name, ext)
    with fits.open(shared_data / name) as h:
        ref = h[ext].data
        assert table.nrows == len(ref) and table.dtype.itemsize == h[ext].header["NAXIS1"]
        for i, col in enumerate(ref.columns):
            raw = table.column(col.name)
            want = ref[col.name]
            if col.format.endswith("X"):
                assert np.array_equal(
                    np.unpackbits(raw, axis=1)[:, : want.shape[1]].astype(bool), want
                )
                if col.format == "32X":
                    packed = np.packbits(want, axis=1).view(">u4").ravel()
                    assert np.array_equal(table.bits32(col.name), packed)
            elif col.format.endswith("L"):
                assert np.array_equal(table.logical(col.name), want)
            else:
                assert np.array_equal(raw, want), col.name
            assert table.columns[i] == col.name
    assert table.has_column(ref.columns[0].name.lower())


def test_hdu_layout_plain_and_gz(shared_data: Path, tmp_path: Path) -> None:
    plain = tmp_path / "ft1.fits"
    with fits.open(shared_data / FT1) as h:
        h.writeto(plain)
        infos = [hdu.fileinfo() for hdu in h]
    a = read_hdus(shared_data / FT1)
    b = read_hdus(plain)
    assert [x.extname for x in a] == ["PRIMARY", "EVENTS", "GTI"]
    for x, y, info in zip(a, b, infos, strict=True):
        assert x.data_offset == info["datLoc"] and x.data_size == y.data_size
    with FitsFile(plain) as ff:
        assert isinstance(ff.table("EVENTS").rows, np.memmap)
        assert read_gti(ff.table("gti")).ontime == pytest.approx(63395.6504765749, rel=1e-15)
        with pytest.raises(KeyError):
            ff.hdu("NOPE")
        with pytest.raises(ValueError, match="not a binary table"):
            ff.table(0)


def test_bits32_of_shorter_bit_columns() -> None:
    h = fits.Header()
    h["XTENSION"], h["BITPIX"], h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = "BINTABLE", 8, 2, 1, 2
    h["PCOUNT"], h["GCOUNT"], h["TFIELDS"], h["TTYPE1"], h["TFORM1"] = 0, 1, 1, "F", "3X"
    rows = np.frombuffer(b"\xa0\x40", dtype=dtype_from_header(h))
    assert RawTable(h, rows).bits32("F").tolist() == [0b101, 0b010]  # first bit = MSB
    h["NAXIS1"] = 2
    with pytest.raises(ValueError, match="NAXIS1"):
        dtype_from_header(h)


def test_write_selected_rows(shared_data: Path, tmp_path: Path) -> None:
    ff = FitsFile(shared_data / FT1)
    ev = ff.table("EVENTS")
    mask = ev.column("ENERGY").astype(np.float64) > 1000
    header_before = str(ev.header)
    out = tmp_path / "sel.fits"
    hdus = [(ff.hdus[0].header, None), (ev.header, ev.select(mask))]
    hdus.append((ff.hdus[2].header, ff.data_bytes("GTI")))
    write_fits(out, hdus, filename="final.fits")
    assert str(ev.header) == header_before  # inputs untouched
    with fits.open(out, checksum=True) as h, fits.open(shared_data / FT1) as ref:
        for hdu in h:
            assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
        assert h[0].header["FILENAME"] == "final.fits"
        assert h["EVENTS"].header["NAXIS2"] == int(mask.sum()) > 0
        assert np.array_equal(h["EVENTS"].data, ref["EVENTS"].data[mask])
        assert np.array_equal(h["GTI"].data, ref["GTI"].data)
        # Keyword order preserved apart from the appended checksum cards.
        got = [k for k in h["EVENTS"].header if k not in ("CHECKSUM", "DATASUM")]
        want = [k for k in ref["EVENTS"].header if k not in ("CHECKSUM", "DATASUM")]
        assert got == want
        # DATASUM as astropy computes it.
        assert h["EVENTS"].header["DATASUM"] == str(h["EVENTS"]._calculate_datasum())
    _fitsverify(out)
    # The same rows streamed in odd-sized chunks give the same data and DATASUM.
    raw = ev.select(mask).tobytes()
    out2 = tmp_path / "chunks.fits"
    chunks = (raw[i : i + 1001] for i in range(0, len(raw), 1001))
    write_fits(out2, [(ff.hdus[0].header, None), (ev.header, chunks)])
    with fits.open(out) as a, fits.open(out2, checksum=True) as b:
        assert b["EVENTS"].header["NAXIS2"] == a["EVENTS"].header["NAXIS2"]
        assert b["EVENTS"].header["DATASUM"] == a["EVENTS"].header["DATASUM"]
        assert b["EVENTS"].verify_checksum() == 1


def test_write_empty_table_and_astropy_hdus(shared_data: Path, tmp_path: Path) -> None:
    ev = open_table(shared_data / FT1, "EVENTS")
    out = tmp_path / "empty.fits"
    gti = fits.BinTableHDU.from_columns(
        [fits.Column("START", "D", array=[1.0]), fits.Column("STOP", "D", array=[2.0])],
        name="GTI",
    )
    write_fits(out, [fits.PrimaryHDU(), (ev.header, ev.rows[:0]), gti])
    with fits.open(out, checksum=True) as h:
        assert h["EVENTS"].header["NAXIS2"] == 0 and len(h["EVENTS"].data) == 0
        assert h["GTI"].data["STOP"][0] == 2.0
        assert all(hdu.verify_checksum() == 1 for hdu in h)
    _fitsverify(out)
    with pytest.raises(FileExistsError):
        write_fits(out, [fits.PrimaryHDU()], overwrite=False)
    with pytest.raises(ValueError, match="whole number"):
        write_fits(tmp_path / "bad.fits", [fits.PrimaryHDU(), (ev.header, b"\0" * 97)])
    assert not (tmp_path / "bad.fits").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.fits"]  # no temp left


def test_native_byte_order_input_is_converted(tmp_path: Path) -> None:
    h = fits.BinTableHDU.from_columns([fits.Column("X", "D", array=np.arange(3.0))]).header
    rows = np.zeros(3, dtype=[("X", "<f8")])
    rows["X"] = [1.5, 2.5, 3.5]
    out = tmp_path / "le.fits"
    write_fits(out, [fits.PrimaryHDU(), (h, rows)])
    with fits.open(out) as f:
        assert f[1].data["X"].tolist() == [1.5, 2.5, 3.5]


def test_not_fits(tmp_path: Path) -> None:
    bad = tmp_path / "x.fits"
    bad.write_bytes(b"hello" * 1000)
    with pytest.raises(ValueError):
        read_hdus(bad)


def test_chunked_mask_equals_whole_table(shared_data: Path) -> None:
    ev = open_table(shared_data / FT1, "EVENTS")

    def cut(t: RawTable) -> np.ndarray:
        e = t.column("ENERGY").astype(np.float64)
        return (e > 1000) & ((t.bits32("EVENT_TYPE") & 1) != 0)

    whole = cut(ev)
    assert 0 < whole.sum() < ev.nrows
    assert np.array_equal(ev.compute_mask(cut, chunk_rows=100), whole)
    starts = [s for s, c in ev.chunks(500)]
    assert starts == [0, 500, 1000, 1500]
    assert np.array_equal(ev.select(whole), ev.rows[whole])
    streamed = np.concatenate(list(ev.iter_selected(whole, chunk_rows=333)))
    assert np.array_equal(streamed, ev.rows[whole])
    with pytest.raises(ValueError, match="mask has shape"):
        ev.select(whole[:-1])


def test_truncated_and_trailing_bytes(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "fermitools-2.4/p8v2_mktime_roicut.fits"
    raw = src.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(raw[: len(raw) - 2880])  # GTI data block missing
    with pytest.raises(ValueError, match="cut.fits: .*runs past the end"):
        read_hdus(cut)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(raw + b"\0" * 2880 + b"garbage" * 500)
    assert [h.extname for h in read_hdus(junk)] == ["PRIMARY", "EVENTS", "GTI"]


def test_read_chunks_streams_the_rows(shared_data: Path, tmp_path: Path) -> None:
    """read_chunks gives the rows in order, in chunks of the requested size, from a plain file
    (ordinary reads, not the memmap) and from a gzipped one (in memory) alike."""
    src = shared_data / FT1
    plain = tmp_path / "plain.fits"
    with fits.open(src) as hdul:
        hdul.writeto(plain)
    for path in (src, plain):
        ev = open_table(path, "EVENTS")
        itemsize = ev.dtype.itemsize
        chunks = list(ev.read_chunks(chunk_bytes=200 * itemsize + 5))
        assert [c.nrows for c in chunks[:-1]] == [200] * (len(chunks) - 1) and len(chunks) == 8
        assert all(not isinstance(c.rows, np.memmap) for c in chunks) or path == src
        assert np.array_equal(np.concatenate([c.rows for c in chunks]), ev.rows)
        assert chunks[3].header is ev.header and chunks[3].column("ENERGY").shape == (200,)
    # a file shortened after it was opened: a clear error, not short data
    ev = open_table(plain, "EVENTS")
    with open(plain, "r+b") as f:
        f.truncate(ev.info.data_offset + 1000 * ev.dtype.itemsize)
    with pytest.raises(TruncatedTableError, match="truncated inside table HDU 1"):
        list(ev.read_chunks(chunk_bytes=300 * ev.dtype.itemsize))


def test_values_like_astropy(shared_data: Path, tmp_path: Path) -> None:
    """values(): logical columns as bool and TZERO unsigned integers like astropy."""
    ft2 = open_table(shared_data / FT2, "SC_DATA")
    with fits.open(shared_data / FT2) as hdul:
        data = hdul["SC_DATA"].data
        for name in ("IN_SAA", "LAT_CONFIG", "DATA_QUAL", "ROCK_ANGLE", "START", "LAT_MODE"):
            got, want = ft2.values(name), np.asarray(data[name])
            assert got.dtype == want.dtype.newbyteorder("="), name
            assert np.array_equal(got, want), name
    cols = [
        fits.Column("U", "I", bzero=32768, array=np.array([0, 1, 65535], np.uint16)),
        fits.Column("V", "J", bzero=2**31, array=np.array([0, 7, 2**32 - 1], np.uint32)),
        fits.Column("F", "L", array=np.array([True, False, True])),
    ]
    path = tmp_path / "scaled.fits"
    fits.BinTableHDU.from_columns(cols).writeto(path)
    table = open_table(path, 1)
    with fits.open(path) as hdul:
        for name in "UVF":
            want = np.asarray(hdul[1].data[name])
            assert np.array_equal(table.values(name), want), name
            assert table.values(name).dtype.kind == want.dtype.kind, name


def test_an_astropy_table_with_a_heap_keeps_its_rows(tmp_path: Path) -> None:
    """A variable-length column puts its values in the heap (PCOUNT > 0): the rows are
    NAXIS2 as astropy made them, not the byte count divided by the row size."""
    column = fits.Column(name="V", format="PJ()", array=np.array([[1, 2, 3], [4]], dtype=object))
    table = fits.BinTableHDU.from_columns([column], name="VLA")
    out = write_fits(tmp_path / "vla.fits", [fits.PrimaryHDU(), table])
    with fits.open(out, checksum=True) as hdul:
        assert hdul["VLA"].header["NAXIS2"] == 2 and hdul["VLA"].header["PCOUNT"] == 16
        assert [list(v) for v in hdul["VLA"].data["V"]] == [[1, 2, 3], [4]]


def _cube_steps(cube: np.ndarray, step: int) -> Iterator[np.ndarray]:
    flat = cube.reshape(-1)
    for start in range(0, flat.size, step):
        yield flat[start : start + step].astype(">i4")


def test_write_behind_writes_the_same_bytes(tmp_path: Path) -> None:
    """An image streamed in chunks (one of them shorter than a word boundary would like)
    gives the same file, checksums included, with or without the writer thread."""
    cube = np.arange(5 * 37 * 41, dtype=np.int32).reshape(5, 37, 41) - 3000
    header = fits.PrimaryHDU(cube).header
    plain, behind = tmp_path / "a" / "cube.fits", tmp_path / "b" / "cube.fits"
    plain.parent.mkdir()
    behind.parent.mkdir()
    stamp = "2026-12-06T00:00:00"
    write_fits(plain, [(header, _cube_steps(cube, 1001))], checksum_stamp=stamp)
    write_fits(behind, [(header, _cube_steps(cube, 1001))], checksum_stamp=stamp, write_behind=True)
    assert behind.read_bytes() == plain.read_bytes()
    with fits.open(behind, checksum=True) as f:
        assert np.array_equal(f[0].data, cube)
    _fitsverify(behind)


def test_write_behind_raises_a_failed_write_and_stops(tmp_path: Path) -> None:
    """A write that fails in the writer thread (a full disk: /dev/full) is raised to the
    caller, the stream is not read to its end, and no writer thread is left."""
    import threading

    from fermipipe.fits import table

    made: list[int] = []

    def chunks() -> Iterator[memoryview]:
        for i in range(1000):
            made.append(i)
            yield memoryview(np.full(1 << 16, i, dtype=np.uint8))

    with open("/dev/full", "wb", buffering=0) as full, pytest.raises(OSError) as info:
        table._write_behind(full, chunks(), table._Summer())
    assert info.value.errno == errno.ENOSPC
    assert len(made) < 1000
    assert not [t for t in threading.enumerate() if t.name == "fermipipe-fits-writer"]
