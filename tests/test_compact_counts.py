"""fermipipe.compact_counts on real counts maps: a native gtbin weekly cube, the Fermitools'
CCUBE and CMAP references. A compact file is valid FITS and expands to the original bytes;
anything it cannot hold exactly is refused; a damaged compact file is one line naming it."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_checksums, assert_fitsverify
from weekly_cubes import weekly_cube

from fermipipe import merge
from fermipipe.compact_counts import (
    CompactCountsError,
    can_compact,
    compact,
    expand,
    is_compact,
    open_compact,
)
from fermipipe.errors import FermipipeError


@pytest.fixture(scope="module")
def week_cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return weekly_cube(tmp_path_factory.mktemp("week"), 700)


def _originals(shared_data: Path, week_cube: Path) -> dict[str, Path]:
    return {
        "native weekly CCUBE": week_cube,
        "Fermitools CCUBE": shared_data / "evtbin" / "outref" / "test.ccube",
        "Fermitools CMAP": shared_data / "evtbin" / "outref" / "CM2.fits",
    }


def _cards(path: Path, keys: tuple[str, ...] = ("CHECKSUM", "DATASUM")) -> list[list[str]]:
    with fits.open(path) as hdul:
        return [[str(h.header.get(k)) for k in keys] for h in hdul]


@pytest.mark.parametrize("which", ["native weekly CCUBE", "Fermitools CCUBE", "Fermitools CMAP"])
def test_expand_gives_back_the_original_bytes(
    shared_data: Path, week_cube: Path, tmp_path: Path, which: str
) -> None:
    original = _originals(shared_data, week_cube)[which]
    small = compact(original, tmp_path / "c.fits")
    assert is_compact(small) and not is_compact(original)
    assert_checksums(small)  # fitsverify clean, its own CHECKSUM/DATASUM right
    back = expand(small, tmp_path / "out" / "x.fits")
    assert filecmp.cmp(original, back, shallow=False)
    # the checksum cards came back verbatim and still verify (every HDU)
    assert _cards(back) == _cards(original)
    assert_fitsverify(back)
    with fits.open(original) as a, fits.open(back, checksum=True) as b:
        assert a[0].data.sum() > 50  # not an empty map
        for hdu in b:
            assert hdu.verify_checksum() in (1, 2) and hdu.verify_datasum() in (1, 2)
    assert list(tmp_path.rglob(".*tmp*")) == []


def test_compact_file_is_small_and_holds_the_voxels(week_cube: Path, tmp_path: Path) -> None:
    small = compact(week_cube, tmp_path / "c.fits")
    with fits.open(week_cube) as hdul:
        image = hdul[0].data
        nonzero = int(np.count_nonzero(image))
        header_text = hdul[0].header.tostring()
    with fits.open(small) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "VOXELS", "PRIMARY_HEADER", "EBOUNDS", "GTI"]
        assert hdul[1].header["NAXIS2"] == nonzero
        assert hdul[1].columns["INDEX"].format == "J"
        assert hdul[1].columns["VALUE"].format == "B"  # weekly counts < 256: one byte each
        flat = image.reshape(-1)
        assert np.array_equal(flat[hdul[1].data["INDEX"]], hdul[1].data["VALUE"])
        assert hdul[0].header["FPCOMPAC"] == "SPARSE"
    cm = open_compact(small)
    assert cm.header.tostring() == header_text
    assert np.array_equal(cm.dense(), image)
    assert small.stat().st_size * 20 < week_cube.stat().st_size


def _image_file(path: Path, data: np.ndarray, **cards: object) -> Path:
    hdu = fits.PrimaryHDU(data)
    for key, value in cards.items():
        hdu.header[key] = value
    gti = fits.BinTableHDU.from_columns(
        [fits.Column("START", "D", array=[1.0, 5.0]), fits.Column("STOP", "D", array=[2.0, 9.0])],
        name="GTI",
    )
    fits.HDUList([hdu, gti]).writeto(path, checksum=True)
    return path


@pytest.mark.parametrize(
    ("dtype", "values", "column"),
    [
        (np.float32, [1.0, -0.0, np.nan, 1.5e30, -3.25], "E"),  # bits kept: -0.0 and NaN too
        (np.float64, [2.0, 1e-300, -7.5], "D"),
        (np.int16, [-5, 300, 1], "I"),
        (np.int32, [70000, -1, 3], "J"),
        (np.int64, [2**40, -2], "K"),
        (np.uint8, [255, 1], "B"),
    ],
)
def test_any_unscaled_image_roundtrips(
    tmp_path: Path, dtype: type, values: list[float], column: str
) -> None:
    data = np.zeros((3, 7, 11), dtype)
    data.reshape(-1)[[0, 17, 100, 150, 230][: len(values)]] = values
    original = _image_file(tmp_path / "map.fits", data)
    small = compact(original, tmp_path / "c.fits")
    assert_fitsverify(small)
    with fits.open(small) as hdul:
        assert hdul["VOXELS"].columns["VALUE"].format == column
        assert hdul["VOXELS"].header["NAXIS2"] == len(values)
    assert filecmp.cmp(original, expand(small, tmp_path / "x.fits"), shallow=False)


def test_an_empty_map_roundtrips(tmp_path: Path) -> None:
    original = _image_file(tmp_path / "zero.fits", np.zeros((4, 5), np.int32))
    small = compact(original, tmp_path / "c.fits")
    assert fits.getheader(small, "VOXELS")["NAXIS2"] == 0
    assert filecmp.cmp(original, expand(small, tmp_path / "x.fits"), shallow=False)


def test_what_cannot_be_held_exactly_is_refused(shared_data: Path, tmp_path: Path) -> None:
    hpx = shared_data / "gammapy-fermi-lat-data" / "2fhl" / "fermi_2fhl_counts_cube_hpx.fits.gz"
    assert not can_compact(hpx)  # HEALPix counts tables are stored as they are
    with pytest.raises(CompactCountsError, match="NAXIS < 2"):
        compact(hpx, tmp_path / "h.fits")
    scaled = _image_file(tmp_path / "scaled.fits", np.ones((4, 4), np.int16), BZERO=32768)
    assert not can_compact(scaled)
    with pytest.raises(CompactCountsError, match="BZERO"):
        compact(scaled, tmp_path / "s.fits")
    tail = tmp_path / "tail.fits"
    _image_file(tail, np.ones((4, 4), np.int32))
    assert can_compact(tail)
    with open(tail, "ab") as fh:
        fh.write(b"junk")
    with pytest.raises(CompactCountsError, match="4 bytes after the last HDU") as err:
        compact(tail, tmp_path / "t.fits")
    assert str(tail) in str(err.value) and "\n" not in str(err.value)
    padded = tmp_path / "padded.fits"
    _image_file(padded, np.ones((4, 4), np.int32))
    raw = bytearray(padded.read_bytes())
    raw[2880 + 64 + 10] = 1  # in the zero padding after the 64-byte image
    padded.write_bytes(bytes(raw))
    with pytest.raises(CompactCountsError, match="non-zero padding"):
        compact(padded, tmp_path / "p.fits")
    small = compact(shared_data / "evtbin" / "outref" / "CM2.fits", tmp_path / "c.fits")
    assert not can_compact(small)
    with pytest.raises(CompactCountsError, match="already a compact"):
        compact(small, tmp_path / "again.fits")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.fits", "padded.fits", "scaled.fits", "tail.fits"
    ]  # fmt: skip


def test_is_compact_on_other_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("SIMPLE  = not really\n")
    assert not is_compact(text)
    assert not is_compact(tmp_path / "absent.fits")
    assert not can_compact(text)


def _damaged(small: Path, tmp_path: Path) -> dict[str, Path]:
    raw = small.read_bytes()
    with fits.open(small) as hdul:
        voxels = hdul.fileinfo(1)["datLoc"]
        head = hdul.fileinfo(2)["datLoc"]
    out: dict[str, Path] = {}
    for name, data in {
        "truncated": raw[: len(raw) - 2880],
        "cut in a header": raw[:1000],
        "voxel flipped": raw[:voxels] + bytes([raw[voxels] ^ 0x01]) + raw[voxels + 1 :],
        "header byte flipped": raw[: head + 100] + b"X" + raw[head + 101 :],
    }.items():
        out[name] = tmp_path / f"{name.replace(' ', '_')}.fits"
        out[name].write_bytes(data)
    return out


def test_a_damaged_compact_file_is_one_line_naming_it(week_cube: Path, tmp_path: Path) -> None:
    small = compact(week_cube, tmp_path / "c.fits")
    for name, bad in _damaged(small, tmp_path).items():
        for what in ("open", "expand"):
            with pytest.raises(FermipipeError) as err:
                if what == "open":
                    open_compact(bad)
                else:
                    expand(bad, tmp_path / "x.fits")
            text = str(err.value)
            assert str(bad) in text and "\n" not in text, (name, what, text)
        with pytest.raises(FermipipeError, match=str(bad)):
            merge.image_sum([week_cube, bad], tmp_path / "sum.fits")
    assert not (tmp_path / "x.fits").exists() and not (tmp_path / "sum.fits").exists()
    assert list(tmp_path.glob(".*tmp*")) == []


def test_a_failed_write_leaves_nothing(week_cube: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CompactCountsError, match="cannot write") as err:
        compact(week_cube, blocker / "c.fits")
    assert str(blocker / "c.fits") in str(err.value)
    small = compact(week_cube, tmp_path / "c.fits")
    with pytest.raises(CompactCountsError, match="cannot write"):
        expand(small, blocker / "x.fits")


def test_command_line(week_cube: Path, tmp_path: Path) -> None:
    """``python -m fermipipe.compact_counts compact|expand SRC DEST`` in a child process."""

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "fermipipe.compact_counts", *map(str, args)]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    small, back = tmp_path / "c.fits", tmp_path / "x.fits"
    assert run("compact", week_cube, small).returncode == 0
    assert run("expand", small, back).returncode == 0
    assert filecmp.cmp(week_cube, back, shallow=False)
    bad = run("expand", week_cube, tmp_path / "y.fits")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert f"compact_counts ({week_cube}): not a compact counts file" in bad.stderr
