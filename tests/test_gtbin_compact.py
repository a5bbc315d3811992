"""Native gtbin ``outform=compact`` on a generated week: the compact file written straight
from the events is the file ``compact()`` makes from the dense product of the same run, byte
for byte, and ``expand()`` gives the dense product back byte for byte.

DATE (local time) and the CHECKSUM/DATASUM comments (gtbin's and astropy's) carry the time
of writing, so the byte-for-byte comparisons pin those clocks; the command-line test, in
child processes, compares everything but those cards.
"""

from __future__ import annotations

import datetime
import filecmp
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_checksums, assert_valid_product
from native_cli import run_native

from fermipipe.compact_counts import compact, expand, is_compact, open_compact
from fermipipe.errors import ToolError
from fermipipe.native import gtbin
from fermipipe.synth import generate_week

_MISSION_BINS = {"ebinalg": "LOG", "emin": 100, "emax": 1000000, "enumbins": 24}

#: name → gtbin parameters (besides evfile/scfile/outfile).
CASES: dict[str, dict[str, Any]] = {
    # the mission's weekly cube on a 1° grid
    "CCUBE GAL AIT 1deg 24 LOG": {
        "algorithm": "CCUBE", **_MISSION_BINS, "nxpix": 360, "nypix": 180, "binsz": 1.0,
        "coordsys": "GAL", "xref": 0, "yref": 0, "proj": "AIT",
    },
    # > 2^24 voxels (24.9 M): several CRC/expand chunks, index well past int24
    "CCUBE CEL AIT 0.25deg 24 LOG": {
        "algorithm": "CCUBE", **_MISSION_BINS, "nxpix": 1440, "nypix": 720, "binsz": 0.25,
        "coordsys": "CEL", "xref": 0, "yref": 0, "proj": "AIT",
    },
    # part of the sky: events off the map are dropped
    "CCUBE CEL CAR region LIN": {
        "algorithm": "CCUBE", "ebinalg": "LIN", "emin": 100, "emax": 10100, "denergy": 1000,
        "nxpix": 200, "nypix": 120, "binsz": 0.5, "coordsys": "CEL", "xref": 83.6,
        "yref": 22.0, "proj": "CAR",
    },
    # a projection computed by wcslib (not the numpy fast path), pre-2016 galactic frame
    "CMAP GAL MOL": {
        "algorithm": "CMAP", "nxpix": 720, "nypix": 360, "binsz": 0.5, "coordsys": "GAL",
        "xref": 0, "yref": 0, "proj": "MOL", "galrot": "pre2016",
    },
    # an odd size: the data unit does not fill its last block the same way
    "CMAP CEL CAR odd": {
        "algorithm": "CMAP", "nxpix": 37, "nypix": 23, "binsz": 9.7, "coordsys": "CEL",
        "xref": 10, "yref": -5, "proj": "CAR",
    },
    # no event on the map: an empty VOXELS table
    "CMAP empty": {
        "algorithm": "CMAP", "nxpix": 3, "nypix": 2, "binsz": 0.001, "coordsys": "CEL",
        "xref": 1.2345, "yref": -80.5, "proj": "CAR",
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_week(700, tmp_path_factory.mktemp("week"), events=30_000)


@pytest.fixture
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hold the clocks that land in headers (DATE, checksum comments) at one second."""
    now = time.time()
    local, utc = time.localtime(now), time.gmtime(now)
    real_localtime, real_gmtime = time.localtime, time.gmtime
    monkeypatch.setattr(time, "localtime", lambda *a: real_localtime(*a) if a else local)
    monkeypatch.setattr(time, "gmtime", lambda *a: real_gmtime(*a) if a else utc)
    stamp = datetime.datetime.fromtimestamp(now).isoformat()[:19]
    monkeypatch.setattr(fits.hdu.base._ValidHDU, "_get_timestamp", lambda self: stamp)
    yield


def _run(week: tuple[Path, Path], out: Path, params: dict[str, Any], **extra: Any) -> Any:
    ft1, ft2 = week
    out.parent.mkdir(parents=True, exist_ok=True)
    return gtbin.run({"evfile": str(ft1), "scfile": str(ft2), "outfile": str(out),
                      **params, **extra})  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_direct_compact_is_compact_of_the_dense_product(
    week: tuple[Path, Path], tmp_path: Path, pinned_clock: None, case: str
) -> None:
    params = CASES[case]
    dense = tmp_path / "dense" / "week_map.fits"
    direct = tmp_path / "direct" / "week_map.fits"  # same name: FILENAME is the same
    dense_outcome = _run(week, dense, params)
    direct_outcome = _run(week, direct, params, outform="compact")

    assert is_compact(direct) and not is_compact(dense)
    assert filecmp.cmp(compact(dense, tmp_path / "compacted.fits"), direct, shallow=False)
    back = expand(direct, tmp_path / "expanded" / "week_map.fits")
    assert filecmp.cmp(back, dense, shallow=False)
    assert_checksums(direct)  # fitsverify clean, its own checksums right
    assert_valid_product(back)

    # the same report: events binned, messages (but the output's name), warnings
    assert direct_outcome.outputs == [str(direct)]
    assert direct_outcome.n_rows == dense_outcome.n_rows
    assert direct_outcome.warnings == dense_outcome.warnings
    assert direct_outcome.messages == [
        m.replace(str(dense), str(direct)) for m in dense_outcome.messages
    ]
    with fits.open(dense) as hdul:
        image = hdul[0].data
        assert int(image.sum()) == dense_outcome.n_rows
        if case == "CMAP empty":
            assert dense_outcome.n_rows == 0
        else:
            assert dense_outcome.n_rows > 1000  # a real map, not a trivial one
    cm = open_compact(direct)
    assert np.array_equal(cm.dense(), image)
    assert cm.index.size == np.count_nonzero(image)


def test_data_warnings_are_the_dense_paths(
    week: tuple[Path, Path], tmp_path: Path, pinned_clock: None
) -> None:
    """Damaged inputs (NaN energies, an FT2 covering 2 h of the week, a second event file
    with 0 rows, given as an ``@`` list): the same warnings and the same bytes."""
    ft1, ft2 = week
    nan, empty, cut = tmp_path / "nan.fits", tmp_path / "empty.fits", tmp_path / "ft2_2h.fits"
    with fits.open(ft1) as h:
        h["EVENTS"].data["ENERGY"][[3, 10, 11]] = np.nan
        h.writeto(nan)
        h["EVENTS"].data = h["EVENTS"].data[:0]
        h.writeto(empty)
    with fits.open(ft2) as h:
        rows = h["SC_DATA"].data
        h["SC_DATA"].data = rows[rows["STOP"] <= rows["START"][0] + 7200]
        h.writeto(cut)
    listing = tmp_path / "events.txt"
    listing.write_text(f"{nan}\n{empty}\n")
    damaged = (Path(f"@{listing}"), cut)
    params = CASES["CCUBE GAL AIT 1deg 24 LOG"]
    dense, direct = tmp_path / "d" / "cc.fits", tmp_path / "c" / "cc.fits"
    dense_outcome = _run(damaged, dense, params)
    direct_outcome = _run(damaged, direct, params, outform="compact")
    assert len(dense_outcome.warnings) == 3, dense_outcome.warnings  # NaN, cover, 0 rows
    assert direct_outcome.warnings == dense_outcome.warnings
    assert direct_outcome.n_rows == dense_outcome.n_rows > 1000
    assert direct_outcome.messages == [
        m.replace(str(dense), str(direct)) for m in dense_outcome.messages
    ]
    assert filecmp.cmp(compact(dense, tmp_path / "compacted.fits"), direct, shallow=False)
    assert filecmp.cmp(expand(direct, tmp_path / "x" / "cc.fits"), dense, shallow=False)


def test_direct_compact_never_writes_the_dense_image(
    week: tuple[Path, Path], tmp_path: Path
) -> None:
    """The output folder only ever holds the small file (no dense temporary)."""
    params = CASES["CCUBE CEL AIT 0.25deg 24 LOG"]
    out = tmp_path / "w.fits"
    _run(week, out, params, outform="compact")
    assert [p.name for p in tmp_path.iterdir()] == ["w.fits"]
    assert out.stat().st_size * 100 < 1440 * 720 * 24 * 4


def test_compact_is_only_for_counts_maps(week: tuple[Path, Path], tmp_path: Path) -> None:
    for algorithm in ("HEALPIX", "LC", "PHA1", "PHA2"):
        with pytest.raises(ToolError, match=f"outform=compact is for .*not {algorithm}") as err:
            _run(week, tmp_path / "x.fits", {"algorithm": algorithm, **_MISSION_BINS},
                 outform="compact", dtime=1000)  # fmt: skip
        assert "\n" not in str(err.value)
    with pytest.raises(ToolError, match="outform"):
        _run(week, tmp_path / "x.fits", CASES["CMAP CEL CAR odd"], outform="sparse")
    assert list(tmp_path.iterdir()) == []


_TIME_CARDS = ("DATE", "CHECKSUM")


def _without_time(hdul: fits.HDUList) -> list[list[tuple[str, Any, str]]]:
    """Every card of every HDU but DATE, CHECKSUM and the DATASUM comment."""
    out = []
    for hdu in hdul:
        cards = []
        for c in hdu.header.cards:
            if c.keyword in _TIME_CARDS:
                continue
            cards.append((c.keyword, c.value, "" if c.keyword == "DATASUM" else c.comment))
        out.append(cards)
    return out


def test_command_line(week: tuple[Path, Path], tmp_path: Path) -> None:
    """``python -m fermipipe.native gtbin … outform=compact`` in a child process."""
    ft1, ft2 = week
    args = [f"evfile={ft1}", f"scfile={ft2}",
            *(f"{k}={v}" for k, v in CASES["CCUBE GAL AIT 1deg 24 LOG"].items())]  # fmt: skip
    (tmp_path / "d").mkdir()
    (tmp_path / "c").mkdir()
    dense, direct = tmp_path / "d" / "ccube.fits", tmp_path / "c" / "ccube.fits"
    res_dense = run_native("gtbin", *args, f"outfile={dense}")
    res = run_native("gtbin", *args, f"outfile={direct}", "outform=compact")
    assert res_dense.returncode == 0 and res.returncode == 0, res.stderr
    assert res.stdout == res_dense.stdout.replace(str(dense), str(direct))
    assert res.stderr == res_dense.stderr
    assert f"events binned into {direct}" in res.stdout
    assert_checksums(direct)
    back = expand(direct, tmp_path / "x" / "ccube.fits")
    assert_valid_product(back)
    assert back.stat().st_size == dense.stat().st_size
    with fits.open(back) as a, fits.open(dense) as b:
        assert _without_time(a) == _without_time(b)
        for ha, hb in zip(a, b, strict=True):
            assert np.asarray(ha.data).tobytes() == np.asarray(hb.data).tobytes()
            assert ha.header["DATASUM"] == hb.header["DATASUM"]

    healpix = [("algorithm=HEALPIX" if a == "algorithm=CCUBE" else a) for a in args]
    bad = run_native("gtbin", *healpix, f"outfile={tmp_path / 'h.fits'}", "outform=compact")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "outform=compact is for algorithm=CMAP or CCUBE, not HEALPIX" in bad.stderr
