"""Native gtltsum: additivity over a GTI split, n-way float64 sum, header rules, refusals.

No gtltsum reference exists (PROVENANCE §5), so the checks are invariants: cubes of the two
halves of week 323 sum to the whole week's cube, the sum is the double-precision sum of the
inputs in list order, and incompatible or overlapping inputs are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_fitsverify, cosbins
from fitsedit import with_gti
from native_cli import run_native

from fermipipe.errors import ToolError
from fermipipe.fits.gti import Gti, read_gti
from fermipipe.native import gtltcube, gtltsum
from fermipipe.native.gtltsum import sum_livetime_cubes

W323 = {"dcostheta": 0.025, "binsz": 1, "zmax": 90}
P8V2 = {"dcostheta": 0.05, "binsz": 4, "zmax": 180}


def split_gti(gti: Gti, pieces: int) -> list[Gti]:
    """Cut a GTI at times inside intervals (not on FT2 row boundaries), so FT2 rows straddle
    the cuts and are shared between pieces through their GTI fractions."""
    cuts = [
        0.5 * (gti.start[k] + gti.stop[k]) + 7.3
        for k in (len(gti) * i // pieces for i in range(1, pieces))
    ]
    edges = [gti.tstart, *cuts, gti.tstop]
    return [gti.clip(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def make_cubes(
    ft1: Path, ft2: Path, params: dict[str, float], pieces: int, d: Path, precision: str
) -> tuple[Path, list[Path]]:
    with fits.open(ft1) as h:
        gti = read_gti(h["GTI"])
    outs = []
    for i, part in enumerate(split_gti(gti, pieces)):
        ev = with_gti(ft1, d / f"ev{pieces}_{i}.fits", part.start, part.stop)
        out = d / f"cube{pieces}_{i}_{precision}.fits"
        gtltcube.run({"evfile": str(ev), "scfile": str(ft2), "outfile": str(out),
                      "precision": precision, **params})  # fmt: skip
        outs.append(out)
    whole = d / f"whole_{precision}.fits"
    gtltcube.run({"evfile": str(ft1), "scfile": str(ft2), "outfile": str(whole),
                  "precision": precision, **params})  # fmt: skip
    return whole, outs


@pytest.fixture(scope="module")
def w323_halves(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("ltsum_w323")
    ft1 = shared_data / "fermitools-2.4" / "w323_gti_events.fits"
    ft2 = shared_data / "pint" / "lat_spacecraft_weekly_w323_p202_v001.fits"
    whole, halves = make_cubes(ft1, ft2, W323, 2, d, "fast")
    summed = sum_livetime_cubes(halves, d / "sum.fits")
    return {"whole": whole, "halves": halves, "sum": summed, "dir": d}


@pytest.fixture(scope="module")
def p8v2_thirds(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("ltsum_p8v2")
    base = shared_data / "gammalib" / "p8v2"
    whole, thirds = make_cubes(base / "ft1.fits.gz", base / "ft2.fits.gz", P8V2, 3, d, "exact")
    whole_fast, thirds_fast = make_cubes(
        base / "ft1.fits.gz", base / "ft2.fits.gz", P8V2, 3, d, "fast"
    )
    return {
        "whole": whole,
        "thirds": thirds,
        "whole_fast": whole_fast,
        "thirds_fast": thirds_fast,
        "dir": d,
        "ft2": base / "ft2.fits.gz",
    }


def test_halves_of_week_sum_to_whole(w323_halves: dict[str, object]) -> None:
    whole, summed = w323_halves["whole"], w323_halves["sum"]
    for ext in ("EXPOSURE", "WEIGHTED_EXPOSURE"):
        a = cosbins(summed, ext).astype(np.float64)
        b = cosbins(whole, ext).astype(np.float64)
        assert np.array_equal(a > 0, b > 0)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
        assert b.sum() > 1e9
    with fits.open(summed) as s, fits.open(whole) as w:
        # The halves touch at the split, so the union GTI is the week's GTI.
        assert read_gti(s["GTI"]) == read_gti(w["GTI"])
        assert s["GTI"].header["ONTIME"] == pytest.approx(w["GTI"].header["ONTIME"], rel=1e-12)
        for ext in ("EXPOSURE", "WEIGHTED_EXPOSURE"):
            hs, hw = s[ext].header, w[ext].header
            assert hs["TSTART"] == hw["TSTART"] and hs["TSTOP"] == hw["TSTOP"]
            assert hs["ZENMAX"] == 90.0
            # DSS rewritten by writeDssKeywords: GTI cut, NDSKEYS last.
            dss = [k for k in hs if k.startswith(("DSTYP", "DSUNI", "DSVAL", "DSREF", "NDSKEYS"))]
            assert dss == ["DSTYP1", "DSUNI1", "DSVAL1", "DSREF1", "NDSKEYS"]
            assert (hs["DSTYP1"], hs["DSVAL1"], hs["DSREF1"]) == ("TIME", "TABLE", ":GTI")
        for i in range(len(s)):
            h = s[i].header
            if i > 0:
                assert h["DATE-OBS"] == w[i].header["DATE-OBS"]
                assert h["DATE-END"] == w[i].header["DATE-END"]
        assert s[0].header["CREATOR"].startswith("gtltsum")
        assert s[0].header["FILENAME"] == Path(summed).name
        np.testing.assert_array_equal(s["EXPOSURE"].data["RA"], w["EXPOSURE"].data["RA"])
        np.testing.assert_array_equal(s["CTHETABOUNDS"].data, w["CTHETABOUNDS"].data)
    assert_fitsverify(summed)


def test_n_way_sum_is_double_sum_in_order(p8v2_thirds: dict[str, object], tmp_path: Path) -> None:
    """Three cubes at once: float32(double(a) + double(b) + double(c)), bit for bit; and the
    thirds sum to the whole day's cube to 1e-6. That comparison uses fast-mode cubes: an
    exact-mode cube carries gtltcube's float32 running-sum error (up to ~1e-6 relative here,
    spec §7), which is not a property of the sum."""
    thirds = p8v2_thirds["thirds"]
    lst = tmp_path / "cubes.txt"
    lst.write_text("".join(f"{p}\n" for p in thirds))
    out = tmp_path / "sum3.fits"
    outcome = gtltsum.run({"infile1": f"@{lst}", "outfile": str(out)})
    assert outcome.outputs == [str(out)]
    for ext in ("EXPOSURE", "WEIGHTED_EXPOSURE"):
        parts = [cosbins(p, ext).astype(np.float64) for p in thirds]
        expected = ((parts[0] + parts[1]) + parts[2]).astype(np.float32)
        assert np.array_equal(cosbins(out, ext), expected)
    assert_fitsverify(out)
    out_fast = sum_livetime_cubes(p8v2_thirds["thirds_fast"], tmp_path / "sum3_fast.fits")
    for ext in ("EXPOSURE", "WEIGHTED_EXPOSURE"):
        got = cosbins(out_fast, ext).astype(np.float64)
        whole = cosbins(p8v2_thirds["whole_fast"], ext).astype(np.float64)
        assert np.array_equal(got > 0, whole > 0)
        np.testing.assert_allclose(got, whole, rtol=1e-6, atol=0)


def test_hierarchical_merge_of_sums(p8v2_thirds: dict[str, object], tmp_path: Path) -> None:
    """A sum is itself a valid input (the pipeline's hierarchical merges): ((a+b)+c) is the
    float32 of double(float32(a+b)) + double(c), with the union GTI of all three."""
    a, b, c = p8v2_thirds["thirds"]
    ab = sum_livetime_cubes([a, b], tmp_path / "ab.fits")
    abc = sum_livetime_cubes([ab, c], tmp_path / "abc.fits")
    for ext in ("EXPOSURE", "WEIGHTED_EXPOSURE"):
        pair = (cosbins(a, ext).astype(np.float64) + cosbins(b, ext)).astype(np.float32)
        expected = (pair.astype(np.float64) + cosbins(c, ext)).astype(np.float32)
        assert np.array_equal(cosbins(abc, ext), expected)
    with fits.open(abc) as h, fits.open(p8v2_thirds["whole"]) as w:
        assert read_gti(h["GTI"]) == read_gti(w["GTI"])
        assert h["EXPOSURE"].header["NDSKEYS"] == 1
    assert_fitsverify(abc)


def test_two_file_form_and_cli(p8v2_thirds: dict[str, object], tmp_path: Path) -> None:
    a, b = p8v2_thirds["thirds"][:2]
    out = tmp_path / "cli.fits"
    res = run_native("gtltsum", f"infile1={a}", f"infile2={b}", f"outfile={out}")
    assert res.returncode == 0, res.stderr
    expected = (cosbins(a).astype(np.float64) + cosbins(b)).astype(np.float32)
    assert np.array_equal(cosbins(out), expected)
    with pytest.raises(ToolError, match="infile2 is required"):
        gtltsum.run({"infile1": str(a), "outfile": str(tmp_path / "x.fits")})


def test_refuses_overlapping_gtis(p8v2_thirds: dict[str, object], tmp_path: Path) -> None:
    a, b, _ = p8v2_thirds["thirds"]
    with pytest.raises(ToolError, match="GTIs overlap") as err:
        sum_livetime_cubes([a, b, a], tmp_path / "x.fits")
    assert str(a) in str(err.value)
    with pytest.raises(ToolError, match="GTIs overlap"):
        sum_livetime_cubes([p8v2_thirds["whole"], b], tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()


def test_refuses_mismatched_binning(
    p8v2_thirds: dict[str, object], w323_halves: dict[str, object], tmp_path: Path
) -> None:
    a = p8v2_thirds["thirds"][0]
    week = w323_halves["halves"][0]
    with pytest.raises(ToolError, match="CTHETABOUNDS differ") as err:
        sum_livetime_cubes([a, week], tmp_path / "x.fits")
    assert str(week) in str(err.value)
    # Same cosθ binning, different nside → row count check.
    d = p8v2_thirds["dir"]
    ev = d / "ev3_1.fits"
    other = tmp_path / "nside32.fits"
    gtltcube.run({"evfile": str(ev), "scfile": str(p8v2_thirds["ft2"]), "outfile": str(other),
                  "dcostheta": 0.05, "binsz": 2, "zmax": 180})  # fmt: skip
    with pytest.raises(ToolError, match="pixels differ"):
        sum_livetime_cubes([a, other], tmp_path / "x.fits")
    # Same grid, different zenith cut → ZENMAX check.
    z90 = tmp_path / "z90.fits"
    gtltcube.run({"evfile": str(ev), "scfile": str(p8v2_thirds["ft2"]), "outfile": str(z90),
                  **{**P8V2, "zmax": 90}})  # fmt: skip
    with pytest.raises(ToolError, match="ZENMAX 90 differs from 180"):
        sum_livetime_cubes([a, z90], tmp_path / "x.fits")
    with pytest.raises(ToolError, match="not a livetime cube"):
        sum_livetime_cubes([a, ev], tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()
