"""Tests of fermipipe.fits.stream (front-to-back reading) and the livetime-cube reader on it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fermipipe.errors import ToolError
from fermipipe.fits.stream import FitsStream
from fermipipe.fits.table import FitsFile, TruncatedTableError
from fermipipe.native.expcube_kernel import read_livetime_cube

LTCUBE = "gammalib/p8v2/ltcube.fits.gz"
FT1 = "gammalib/p8v2/ft1.fits.gz"


def _plain_copy(src: Path, dst: Path) -> Path:
    with gzip.open(src, "rb") as g:
        dst.write_bytes(g.read())
    return dst


@pytest.mark.parametrize("name", [LTCUBE, FT1])
@pytest.mark.parametrize("gzipped", [True, False])
def test_stream_equals_random_access(
    shared_data: Path, tmp_path: Path, name: str, gzipped: bool
) -> None:
    """Every header and place, every column and whole table, as FitsFile gives them."""
    path = shared_data / name
    if not gzipped:
        path = _plain_copy(path, tmp_path / "plain.fits")
    with FitsFile(path) as ff:
        ref = ff.hdus
        with FitsStream(path) as fs:
            seen = 0
            for info in fs.hdus():
                want = ref[info.index]
                assert (info.header_offset, info.data_offset, info.data_size) == (
                    want.header_offset,
                    want.data_offset,
                    want.data_size,
                )
                assert info.header.tostring() == want.header.tostring()
                if info.is_bintable and info.index % 2:
                    table = fs.table(info)
                    assert table.rows.tobytes() == ff.table(info.index).rows.tobytes()
                elif info.is_bintable:
                    col = ff.table(info.index).columns[0]
                    got = fs.column(info, col.lower(), np.float64)
                    expected = np.asarray(ff.table(info.index).column(col), dtype=np.float64)
                    np.testing.assert_array_equal(got, expected)
                seen += 1
    assert seen == len(ref) > 2


def test_stream_never_goes_back(shared_data: Path) -> None:
    with FitsStream(shared_data / LTCUBE) as fs:
        infos = list(fs.hdus())
        with pytest.raises(ValueError, match="cannot go back"):
            fs.table(infos[1])


def test_livetime_cube_columns(shared_data: Path) -> None:
    """COSBINS of EXPOSURE and WEIGHTED_EXPOSURE as float32 (rows, entries), the GTI."""
    cube = read_livetime_cube(str(shared_data / LTCUBE))
    with FitsFile(shared_data / LTCUBE) as ff:
        for arr, ext in ((cube.exposure, "EXPOSURE"), (cube.weighted, "WEIGHTED_EXPOSURE")):
            ref = np.asarray(ff.table(ext).column("COSBINS"), dtype=np.float32)
            assert arr is not None and arr.dtype == np.float32 and arr.flags.c_contiguous
            np.testing.assert_array_equal(arr, ref.reshape(len(ref), -1))
        start = np.asarray(ff.table("GTI").column("START"), dtype=np.float64)
    assert cube.nside == int(cube.header["NSIDE"]) and len(cube.gti) == start.size


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.999])
def test_truncated_cube_is_one_line_error(shared_data: Path, tmp_path: Path, keep: float) -> None:
    """A cube cut short (gzipped: inside the deflate stream; plain: inside a table) is a
    ToolError, never a traceback."""
    gz = (shared_data / LTCUBE).read_bytes()
    bad = tmp_path / "cut.fits.gz"
    bad.write_bytes(gz[: int(len(gz) * keep)])
    with pytest.raises(ToolError, match="cannot read livetime cube"):
        read_livetime_cube(str(bad))
    plain = _plain_copy(shared_data / LTCUBE, tmp_path / "plain.fits").read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(plain[: int(len(plain) * keep) // 2880 * 2880])
    with pytest.raises(ToolError, match="cannot read livetime cube|no GTI"):
        read_livetime_cube(str(cut))


def test_truncated_table_error_from_column(shared_data: Path, tmp_path: Path) -> None:
    plain = _plain_copy(shared_data / LTCUBE, tmp_path / "plain.fits").read_bytes()
    with FitsFile(tmp_path / "plain.fits") as ff:
        exp = ff.hdu("EXPOSURE")
    cut = tmp_path / "cut.fits"
    cut.write_bytes(plain[: exp.data_offset + exp.data_size // 2])
    with FitsStream(cut) as fs:
        info = next(i for i in fs.hdus() if i.extname == "EXPOSURE")
        with pytest.raises(TruncatedTableError):
            fs.column(info, "COSBINS", np.float32)


def test_not_a_livetime_cube(shared_data: Path) -> None:
    with pytest.raises(ToolError, match="no EXPOSURE table"):
        read_livetime_cube(str(shared_data / FT1))
