"""Tests of fermipipe.fits.gti against hand cases, brute force and real Fermitools files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from fermipipe.errors import ToolError
from fermipipe.fits.gti import Gti, find_gti_hdu, gti_hdu, read_gti, union, update_gti_hdu
from fermipipe.fits.keywords import cfitsio_double

SKIP_KEYS = {"CHECKSUM", "DATASUM", "DATE"}


def _random_gti(rng: np.random.Generator, n: int) -> Gti:
    s = np.sort(rng.uniform(0, 1000, n)).round(1)
    return Gti.from_intervals(s, s + rng.uniform(0, 30, n).round(1))


def test_consolidation_merges_touching_and_overlapping() -> None:
    g = Gti.from_intervals([10, 0, 5, 30, 40], [20, 5, 6, 35, 40])
    assert g.start.tolist() == [0, 10, 30, 40]
    assert g.stop.tolist() == [6, 20, 35, 40]  # [0,5]+[5,6] touch; [40,40] kept (closed)
    assert len(g) == 4
    assert g.ontime == 6 + 10 + 5


def test_duplicate_start_keeps_first_inserted() -> None:
    # std::map::insert ignores a key that already exists (evtbin Gti).
    assert Gti.from_intervals([0, 0], [10, 20]).stop.tolist() == [10]
    a = Gti.from_intervals([0], [10])
    b = Gti.from_intervals([0], [20])
    assert a.union(b).stop.tolist() == [10]
    assert b.union(a).stop.tolist() == [20]


def test_start_after_stop_is_an_error() -> None:
    with pytest.raises(ValueError, match="START"):
        Gti.from_intervals([0, 10], [5, 9])


def test_frozen_and_readonly() -> None:
    g = Gti.from_intervals([0], [1])
    with pytest.raises(ValueError):
        g.start[0] = 5
    with pytest.raises(AttributeError):
        g.start = np.zeros(1)  # type: ignore[misc]


def test_intersection_drops_zero_length_and_merges_touching() -> None:
    a = Gti.from_intervals([0, 20], [10, 30])
    b = Gti.from_intervals([10, 25], [20, 40])
    assert len(a & b) == 1 and (a & b).start[0] == 25 and (a & b).stop[0] == 30
    c = Gti.from_intervals([0, 5], [5, 10])  # consolidated to [0,10]
    assert (c & Gti.from_intervals([0], [10])).stop.tolist() == [10]
    assert len(a.clip(10, 20)) == 0
    assert a.clip(5, 25).start.tolist() == [5, 20]
    assert a.clip(5, 25).stop.tolist() == [10, 25]
    assert len(a & Gti.empty()) == 0


def test_intersection_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = _random_gti(rng, 40), _random_gti(rng, 25)
        got = a & b
        t = np.arange(-1, 1040, 0.05)
        # Interior membership equals "in a and in b" away from zero-length pieces.
        assert np.array_equal(
            got.contains(t + 0.025), a.contains(t + 0.025) & b.contains(t + 0.025)
        )
        assert got.ontime == pytest.approx(
            sum(
                max(0.0, min(e1, e2) - max(s1, s2))
                for s1, e1 in zip(a.start, a.stop, strict=True)
                for s2, e2 in zip(b.start, b.stop, strict=True)
            ),
            rel=1e-12,
        )


def test_contains_closed_intervals() -> None:
    g = Gti.from_intervals([0, 20], [10, 30])
    t = np.array([-1, 0, 5, 10, 10.000001, 19.99, 20, 30, 31, np.nan])
    assert g.contains(t).tolist() == [
        False,
        True,
        True,
        True,
        False,
        False,
        True,
        True,
        False,
        False,
    ]
    assert not Gti.empty().contains([1.0]).any()


def _loop_fraction(g: Gti, s: float, e: float) -> float:
    if not e > s:
        return 0.0
    total = 0.0
    for a, b in zip(g.start, g.stop, strict=True):
        if a < e and s < b:
            total += min(e, b) - max(s, a)
    return min(total / (e - s), 1.0)


def test_overlap_fraction_matches_loop_exactly() -> None:
    rng = np.random.default_rng(7)
    g = _random_gti(rng, 60)
    s = np.sort(rng.uniform(-10, 1050, 3000))
    e = s + rng.uniform(0, 80, s.size)
    e[::97] = s[::97]  # zero-length rows
    got = g.overlap_fraction(s, e)
    want = np.array([_loop_fraction(g, a, b) for a, b in zip(s, e, strict=True)])
    assert np.array_equal(got, want)
    assert (got[::97] == 0).all()
    assert g.overlap_fraction(s, e, per_piece=True) == pytest.approx(want, rel=1e-14)


def test_overlap_fraction_long_rows_and_scalars() -> None:
    rng = np.random.default_rng(11)
    g = _random_gti(rng, 500)
    s = np.array([-50.0, 100.0, 0.0, 400.0])
    e = np.array([1100.0, 700.0, 1000.0, 400.5])  # rows spanning hundreds of intervals
    want = np.array([_loop_fraction(g, a, b) for a, b in zip(s, e, strict=True)])
    assert np.array_equal(g.overlap_fraction(s, e), want)
    assert g.overlap_fraction(100.0, 700.0).shape == ()
    assert float(g.overlap_fraction(100.0, 700.0)) == want[1]
    assert Gti.empty().overlap_fraction([0.0], [1.0]).tolist() == [0.0]


def test_real_ontime_and_exposure(shared_data: Path) -> None:
    ft1 = shared_data / "gammalib/p8v2/ft1.fits.gz"
    with fits.open(ft1) as h:
        g = read_gti(find_gti_hdu(h))
        assert len(g) == 15
        # ONTIME is written with 15 digits by cfitsio.
        assert float(cfitsio_double(g.ontime)) == h["GTI"].header["ONTIME"]
    # gtbin EXPOSURE = Σ LIVETIME × fraction (Fermitools 2.4 light curve reference).
    with fits.open(shared_data / "gammalib/p8v2/ft2.fits.gz") as sc:
        d = sc["SC_DATA"].data
        expo = np.sum(d["LIVETIME"] * g.overlap_fraction(d["START"], d["STOP"]))
    with fits.open(shared_data / "fermitools-2.4/p8v2_lc.fits") as lc:
        assert expo == pytest.approx(lc["RATE"].header["EXPOSURE"], rel=1e-12)


def test_gti_hdu_matches_fermitools_header(shared_data: Path) -> None:
    for name in ("gammalib/p8v2/ft1.fits.gz", "fermitools-2.4/p8v2_mktime_roicut.fits"):
        with fits.open(shared_data / name) as h:
            g = read_gti(h["GTI"])
            new = gti_hdu(g, h["EVENTS"].header)
            ref = [str(c) for c in h["GTI"].header.cards if c.keyword not in SKIP_KEYS]
            got = [str(c) for c in new.header.cards if c.keyword not in SKIP_KEYS]
            assert got == ref
            assert np.array_equal(new.data["START"], h["GTI"].data["START"])
            assert np.array_equal(new.data["STOP"], h["GTI"].data["STOP"])


def test_update_gti_hdu_sets_only_rows_and_ontime(shared_data: Path) -> None:
    with (
        fits.open(shared_data / "gammalib/p8v2/ft1.fits.gz") as h,
        fits.open(shared_data / "fermitools-2.4/p8v2_mktime_roicut.fits") as mk,
    ):
        new = update_gti_hdu(h["GTI"], read_gti(mk["GTI"]))
        ref = [str(c) for c in mk["GTI"].header.cards if c.keyword not in SKIP_KEYS]
        got = [str(c) for c in new.header.cards if c.keyword not in SKIP_KEYS]
        assert got == ref  # gtmktime keeps TELAPSE, rewrites ONTIME
        assert new.header["NAXIS2"] == 14


def test_union_of_files_and_errors(shared_data: Path, tmp_path: Path) -> None:
    parts = []
    for i in range(3):
        with fits.open(shared_data / f"evtbin/ft1tiny{i}.fits") as h:
            parts.append(read_gti(h["GTI"]))
    u = union(parts)
    assert u == parts[0].union(parts[1], parts[2])
    assert np.all(u.start[1:] > u.stop[:-1])
    t = np.linspace(u.tstart - 10, u.tstop + 10, 20001)
    assert np.array_equal(u.contains(t), np.any([p.contains(t) for p in parts], axis=0))
    assert union([]) == Gti.empty()
    bad = fits.BinTableHDU.from_columns(
        [fits.Column("START", "D", array=[5.0]), fits.Column("STOP", "D", array=[4.0])],
        name="GTI",
    )
    with pytest.raises(ToolError, match="invalid GTI"):
        read_gti(bad, tool="gtselect", file="x.fits")
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(name="GTI_IMG"), bad])
    assert find_gti_hdu(hdul) is bad
    assert find_gti_hdu(fits.HDUList([fits.PrimaryHDU()])) is None
