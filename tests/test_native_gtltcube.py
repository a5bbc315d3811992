"""Native gtltcube against real Fermitools references, plus invariants derived independently.

References (PROVENANCE.md 2.3 and the fermitools-2.4 table):
* gammalib/p8v2/ltcube.fits.gz: ScienceTools 10-01-01, dcostheta=0.05, binsz=4, zmax=180.
* fermitools-2.4/w323_ltcube_z90.fits.gz: Fermitools 2.4, dcostheta=0.025, binsz=1, zmax=90.
* fermitools-2.4/ltcube_pint_w323_phi2_z105.fits.gz: Fermitools 2.4, phibins=2, zmax=105.
"""

from __future__ import annotations

import math
from pathlib import Path

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_fitsverify, cosbins
from fitsedit import with_gti
from native_cli import run_native

from fermipipe.errors import EmptyProductError, ToolError
from fermipipe.fits.gti import read_gti
from fermipipe.native import gtltcube
from fermipipe.native.gtltcube import CubeGrid, compute_livetime
from fermipipe.native.ltcube_kernel import (
    PixelBlocks,
    accumulate,
    instrument_axes,
    radec_to_unit,
)

IGNORED_KEYS = {"DATE", "CHECKSUM", "DATASUM", "CREATOR", "FILENAME"}
U32 = 2.0**-24  # float32 unit roundoff


# ---------------------------------------------------------------------- helpers


def assert_same_fits(out: Path, ref: Path) -> None:
    """HDU names, header cards (ignoring the spec §13 keys) and every column byte-identical."""
    with fits.open(out) as a, fits.open(ref) as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ha, hb in zip(a, b, strict=True):
            # Card images (keyword, value text and comment), in order, except spec §13 keys:
            # the numbers are formatted exactly like cfitsio's.
            ca = [str(c) for c in ha.header.cards if c.keyword not in IGNORED_KEYS]
            cb = [str(c) for c in hb.header.cards if c.keyword not in IGNORED_KEYS]
            assert ca == cb, f"{ha.name}: header cards differ"
            if hb.data is None:
                assert ha.data is None
                continue
            assert ha.columns.names == hb.columns.names
            assert ha.columns.formats == hb.columns.formats
            for col in hb.columns.names:
                x, y = ha.data[col], hb.data[col]
                assert x.dtype == y.dtype
                # Bit-identical: compare the raw bytes (NaN-safe, sign-of-zero-safe).
                assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes(), (
                    f"{ha.name}.{col}"
                )


def run_cube(outfile: Path, **params: object) -> Path:
    outcome = gtltcube.run({"outfile": str(outfile), **params})
    assert outcome.outputs == [str(outfile)]
    return outfile


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def p8v2(shared_data: Path) -> dict[str, Path]:
    base = shared_data / "gammalib" / "p8v2"
    return {
        "ft1": base / "ft1.fits.gz",
        "ft2": base / "ft2.fits.gz",
        "ref": base / "ltcube.fits.gz",
    }


@pytest.fixture(scope="module")
def w323(shared_data: Path) -> dict[str, Path]:
    return {
        "ft1": shared_data / "fermitools-2.4" / "w323_gti_events.fits",
        "ft2": shared_data / "pint" / "lat_spacecraft_weekly_w323_p202_v001.fits",
        "ref": shared_data / "fermitools-2.4" / "w323_ltcube_z90.fits.gz",
    }


P8V2 = {"dcostheta": 0.05, "binsz": 4, "zmax": 180}
W323 = {"dcostheta": 0.025, "binsz": 1, "zmax": 90}


@pytest.fixture(scope="module")
def cubes(
    p8v2: dict[str, Path], w323: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each cube computed once per module (exact and fast, both references)."""
    d = tmp_path_factory.mktemp("ltcube")
    out: dict[str, Path] = {}
    for name, inputs, params in (("p8v2", p8v2, P8V2), ("w323", w323, W323)):
        for precision in ("exact", "fast"):
            out[f"{name}_{precision}"] = run_cube(
                d / f"{name}_{precision}.fits",
                evfile=str(inputs["ft1"]),
                scfile=str(inputs["ft2"]),
                precision=precision,
                **params,
            )
    return out


# ---------------------------------------------------------------------- exactness


def test_grid_rules() -> None:
    assert [CubeGrid.from_params(b, 0.025).nside for b in (1, 0.5, 0.25, 0.2, 0.1, 2, 4)] == [
        64,
        128,
        256,
        512,
        512,
        32,
        16,
    ]
    assert CubeGrid.from_params(1, 0.025).nbins == 40
    assert CubeGrid.from_params(1, 0.05).nbins == 20
    assert CubeGrid.from_params(1, 0.3).nbins == 3
    with pytest.raises(ToolError, match="dcostheta"):
        CubeGrid.from_params(1, 0.0)


def test_p8v2_bit_identical(cubes: dict[str, Path], p8v2: dict[str, Path]) -> None:
    assert_same_fits(cubes["p8v2_exact"], p8v2["ref"])


def test_w323_zmax90_bit_identical(cubes: dict[str, Path], w323: dict[str, Path]) -> None:
    assert_same_fits(cubes["w323_exact"], w323["ref"])


def test_outputs_pass_fitsverify(cubes: dict[str, Path]) -> None:
    for path in cubes.values():
        assert_fitsverify(path)


def _addition_counts(ft1: Path, ft2: Path, grid: CubeGrid, zmax: float) -> np.ndarray:
    """Number of float32 additions into each cell (the kernel run with value 1 per row)."""
    with fits.open(ft1) as h:
        gti = read_gti(h["GTI"])
    d = fits.getdata(ft2, "SC_DATA")
    start, stop = d["START"].astype(float), d["STOP"].astype(float)
    keep = (start >= gti.tstart - 60) & (stop <= gti.tstop + 60)
    frac = np.zeros(start.shape)
    frac[keep] = gti.overlap_fraction(start[keep], stop[keep])
    use = frac > 0
    pix, _, _ = grid.pixel_directions()
    blocks = PixelBlocks(pix, grid.nside)
    zcut = zmax < 180
    cz = math.cos(zmax * math.pi / 180) if zcut else None
    culls = blocks.cull_thresholds(cz, math.radians(zmax) if zcut else None, 0.0 if zcut else None)
    counts = np.zeros((blocks.nblocks, grid.ncells, blocks.size))
    other = np.zeros_like(counts)
    ones = np.ones(int(use.sum()))
    accumulate(
        blocks,
        culls,
        radec_to_unit(d["RA_SCZ"][use], d["DEC_SCZ"][use]),
        radec_to_unit(d["RA_ZENITH"][use], d["DEC_ZENITH"][use]) if zcut else None,
        None,
        ones,
        ones,
        grid.nbins,
        0,
        cz,
        1.0 if zcut else None,
        counts,
        other,
    )
    return blocks.to_pixel_major(counts)


@pytest.mark.parametrize("name", ["p8v2", "w323"])
def test_fast_mode_versus_exact(
    name: str, cubes: dict[str, Path], p8v2: dict[str, Path], w323: dict[str, Path]
) -> None:
    """fast (float64 sums) vs exact (gtltcube's float32 running sums).

    A per-cell 1e-6 relative agreement is not attainable on w323: gtltcube's own float32
    accumulation drifts from the true sum by up to ~2.5e-6 relative there. The bound used is
    the textbook one for a running float32 sum of N positive terms, |exact − true| ≤ N·u·S,
    plus the final rounding of fast (u·S); N per cell is counted with the same binning.
    """
    inputs, params = (p8v2, P8V2) if name == "p8v2" else (w323, W323)
    grid = CubeGrid.from_params(params["binsz"], params["dcostheta"])
    counts = _addition_counts(inputs["ft1"], inputs["ft2"], grid, params["zmax"])
    for ext in ("EXPOSURE", "WEIGHTED_EXPOSURE"):
        exact = cosbins(cubes[f"{name}_exact"], ext).astype(np.float64)
        fast = cosbins(cubes[f"{name}_fast"], ext).astype(np.float64)
        assert np.array_equal(exact > 0, fast > 0)
        assert np.array_equal(counts > 0, exact > 0)
        bound = (counts + 1.0) * U32 * np.maximum(exact, fast)
        assert np.all(np.abs(fast - exact) <= bound)
        # Most cells do agree to 1e-6; report-level sanity that fast is not just "close".
        rel = np.abs(fast - exact) / np.where(exact > 0, exact, 1.0)
        assert np.mean(rel <= 1e-6) > 0.98


# ---------------------------------------------------------------------- invariants


def _independent_pixel_totals(
    ft1: Path, ft2: Path, nside: int, pixels: np.ndarray, zmax: float
) -> np.ndarray:
    """Σ over FT2 rows of LIVETIME × (fraction of the row inside the GTI), for the rows where
    the pixel centre is in front of the LAT (cosθ > 0) and, if zmax < 180, above the zenith
    cut — written with plain numpy and an explicit interval loop, independent of the tool."""
    with fits.open(ft1) as h:
        g = h["GTI"].data
        gs, ge = np.array(g["START"], float), np.array(g["STOP"], float)
    d = fits.getdata(ft2, "SC_DATA")
    s, e, live = (np.array(d[c], float) for c in ("START", "STOP", "LIVETIME"))
    inside = np.zeros(s.size)
    for a, b in zip(gs, ge, strict=True):
        inside += np.clip(np.minimum(e, b) - np.maximum(s, a), 0.0, None)
    frac = np.where(e > s, np.minimum(inside / np.where(e > s, e - s, 1.0), 1.0), 0.0)
    frac[(s < gs.min() - 60) | (e > ge.max() + 60)] = 0.0
    weight = live * frac

    def unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        r, t = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
        return np.stack([np.cos(t) * np.cos(r), np.cos(t) * np.sin(r), np.sin(t)], axis=1)

    z = unit(d["RA_SCZ"], d["DEC_SCZ"])
    zen = unit(d["RA_ZENITH"], d["DEC_ZENITH"])
    p = np.array(hp.pix2vec(nside, pixels, nest=True)).T
    ok = (p @ z.T) > 0
    if zmax < 180:
        ok &= (p @ zen.T) > math.cos(math.radians(zmax))
    return ok.astype(float) @ weight


@pytest.mark.parametrize("name", ["p8v2", "w323"])
def test_pixel_total_equals_independent_livetime(
    name: str, cubes: dict[str, Path], p8v2: dict[str, Path], w323: dict[str, Path]
) -> None:
    inputs, params = (p8v2, P8V2) if name == "p8v2" else (w323, W323)
    nside = CubeGrid.from_params(params["binsz"], params["dcostheta"]).nside
    rng = np.random.default_rng(323)
    pixels = np.sort(rng.choice(12 * nside * nside, size=min(600, 12 * nside**2), replace=False))
    expected = _independent_pixel_totals(
        inputs["ft1"], inputs["ft2"], nside, pixels, params["zmax"]
    )
    got = cosbins(cubes[f"{name}_fast"]).astype(np.float64)[pixels].sum(axis=1)
    assert expected.max() > 1e4  # the comparison is not between zeros
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_zmax180_is_no_cut(p8v2: dict[str, Path], cubes: dict[str, Path]) -> None:
    """zmax=180 (no zenith term) equals an explicit zenith test that cannot fail; zmax=90
    only removes livetime."""
    with fits.open(p8v2["ft1"]) as h:
        gti = read_gti(h["GTI"])
    grid = CubeGrid.from_params(4, 0.05)
    no_cut = compute_livetime(gti, [str(p8v2["ft2"])], grid)
    # The same rows with the zenith branch enabled but thresholds outside [-1, 1].
    d = fits.getdata(p8v2["ft2"], "SC_DATA")
    start, stop = d["START"].astype(float), d["STOP"].astype(float)
    keep = (start >= gti.tstart - 60) & (stop <= gti.tstop + 60)
    frac = np.zeros(start.shape)
    frac[keep] = gti.overlap_fraction(start[keep], stop[keep])
    use = frac > 0
    live = d["LIVETIME"].astype(float)[use]
    value = live * frac[use]
    wvalue = value * (live / (stop[use] - start[use]))
    pix, _, _ = grid.pixel_directions()
    blocks = PixelBlocks(pix, grid.nside)
    culls = blocks.cull_thresholds(None, None, None)
    exp = np.zeros((blocks.nblocks, grid.ncells, blocks.size), np.float32)
    wexp = np.zeros_like(exp)
    accumulate(
        blocks,
        culls,
        radec_to_unit(d["RA_SCZ"][use], d["DEC_SCZ"][use]),
        radec_to_unit(d["RA_ZENITH"][use], d["DEC_ZENITH"][use]),
        None,
        value,
        wvalue,
        grid.nbins,
        0,
        -2.0,
        2.0,
        exp,
        wexp,
    )
    assert np.array_equal(blocks.to_pixel_major(exp), no_cut.exposure)
    assert np.array_equal(blocks.to_pixel_major(wexp), no_cut.weighted)
    z90 = compute_livetime(gti, [str(p8v2["ft2"])], grid, zmax=90)
    assert np.all(z90.exposure <= no_cut.exposure)
    assert z90.exposure.sum() < 0.95 * no_cut.exposure.sum()


def test_phibins_blocks(p8v2: dict[str, Path], tmp_path: Path) -> None:
    """phibins=3: the phi blocks add up to the first nbins entries, and those are the
    phibins=0 cube except in the few cells where the re-orthogonalised instrument Z axis
    (instrument_axes) moves a pixel across a cosθ bin edge."""
    base = {"evfile": str(p8v2["ft1"]), "scfile": str(p8v2["ft2"]), **P8V2}
    nbins, nphi = 20, 3
    exact0 = cosbins(run_cube(tmp_path / "e0.fits", **base))
    exact3 = cosbins(run_cube(tmp_path / "e3.fits", phibins=nphi, **base))
    assert exact3.shape == (3072, nbins * (1 + nphi))
    differ = np.count_nonzero(exact3[:, :nbins] != exact0)
    assert differ < 1e-3 * exact0.size
    fast0 = cosbins(run_cube(tmp_path / "f0.fits", precision="fast", **base)).astype(float)
    fast3 = cosbins(run_cube(tmp_path / "f3.fits", phibins=nphi, precision="fast", **base))
    first = fast3[:, :nbins].astype(float)
    blocks = fast3[:, nbins:].astype(float).reshape(3072, nphi, nbins)
    np.testing.assert_allclose(blocks.sum(axis=1), first, rtol=1e-6, atol=1e-6)
    # The total livetime per pixel moves only where cosθ crosses 0 for one row.
    assert np.count_nonzero(np.abs(first.sum(axis=1) - fast0.sum(axis=1)) > 1e-3) < 0.01 * 3072
    assert np.all(blocks.sum(axis=(0, 2)) > 0.05 * fast0.sum())  # every phi block is used
    with fits.open(tmp_path / "e3.fits") as h:
        assert h["EXPOSURE"].header["PHIBINS"] == nphi
        assert h["EXPOSURE"].header["NBRBINS"] == nbins
        assert h["CTHETABOUNDS"].header["NAXIS2"] == nbins


def test_phi2_zmax105_bit_identical(shared_data: Path, tmp_path: Path) -> None:
    """The real gtltcube with phibins=2 and zmax=105 (PROVENANCE.md): every cell of
    EXPOSURE and WEIGHTED_EXPOSURE (cosθ block and both phi blocks), RA/DEC, CTHETABOUNDS,
    GTI and all header cards are identical."""
    ref = shared_data / "fermitools-2.4" / "ltcube_pint_w323_phi2_z105.fits.gz"
    out = run_cube(
        tmp_path / "phi2.fits",
        evfile=str(shared_data / "pint" / "J0030+0451_w323_ft1weights.fits"),
        scfile=str(shared_data / "pint" / "lat_spacecraft_weekly_w323_p202_v001.fits"),
        dcostheta=0.05,
        binsz=2,
        phibins=2,
        zmax=105,
    )
    with fits.open(ref) as h:
        assert h["EXPOSURE"].header["PHIBINS"] == 2
        assert h["EXPOSURE"].data["COSBINS"].shape == (12288, 60)
    assert_same_fits(out, ref)
    assert_fitsverify(out)


def test_instrument_axes(w323: dict[str, Path]) -> None:
    """The instrument frame is orthonormal and right-handed and within float32 rounding of
    (SCX, SCZ×SCX, SCZ), but not equal to it: SCX·SCZ is not exactly 0 in the FT2."""
    d = fits.getdata(w323["ft2"], "SC_DATA")[:2000]
    scz = radec_to_unit(d["RA_SCZ"], d["DEC_SCZ"])
    scx = radec_to_unit(d["RA_SCX"], d["DEC_SCX"])
    axes = instrument_axes(scz, scx)
    gram = np.einsum("nij,nkj->nik", axes, axes)
    assert np.abs(gram - np.eye(3)).max() < 1e-15
    det = np.einsum("ni,ni->n", np.cross(axes[:, 0], axes[:, 1]), axes[:, 2])
    assert np.abs(det - 1).max() < 1e-15
    # Y = SCZ × SCX is orthogonal to both to rounding, so it is (nearly) kept; of X and Z,
    # the one in the more nearly orthogonal pair with Y is kept and the other one moves by
    # up to the float32 non-orthogonality of SCX and SCZ. Both cases occur in real data.
    y = np.cross(scz, scx)
    y /= np.linalg.norm(y, axis=1)[:, None]
    assert np.linalg.norm(axes[:, 1] - y, axis=1).max() < 1e-15
    dz = np.linalg.norm(axes[:, 2] - scz, axis=1)
    dx = np.linalg.norm(axes[:, 0] - scx, axis=1)
    assert np.all(np.minimum(dx, dz) < 1e-15)
    assert max(dx.max(), dz.max()) < 1e-5
    assert np.count_nonzero(dz > 1e-12) > 0.1 * len(d)
    assert np.count_nonzero(dx > 1e-12) > 0.1 * len(d)


# ---------------------------------------------------------------------- lists and slices


def test_event_list_of_two_halves_equals_whole(
    w323: dict[str, Path], cubes: dict[str, Path], tmp_path: Path
) -> None:
    """An evfile list: GTI = union (the halves touch, so it is the original GTI) → the same
    cube, bit for bit, and the same GTI HDU."""
    with fits.open(w323["ft1"]) as h:
        gti = read_gti(h["GTI"])
    k = len(gti) // 2
    split = 0.5 * (gti.start[k] + gti.stop[k]) + 7.3
    a, b = gti.clip(gti.tstart, split), gti.clip(split, gti.tstop)
    fa = with_gti(w323["ft1"], tmp_path / "a.fits", a.start, a.stop)
    fb = with_gti(w323["ft1"], tmp_path / "b.fits", b.start, b.stop)
    lst = tmp_path / "events.txt"
    lst.write_text(f"# week 323 in two halves\n{fb}\n\n{fa}\n")
    out = run_cube(tmp_path / "list.fits", evfile=f"@{lst}", scfile=str(w323["ft2"]), **W323)
    assert_same_fits(out, cubes["w323_exact"])


def test_ft2_list_and_foreign_rows(
    p8v2: dict[str, Path], w323: dict[str, Path], cubes: dict[str, Path], tmp_path: Path
) -> None:
    """scfile as a list of 'weekly' files: the p8v2 FT2 split in two plus an unrelated week.
    Rows outside the GTI span are never used, so the cube is still the reference."""
    with fits.open(p8v2["ft2"]) as h:
        n = len(h["SC_DATA"].data)
        for i, sl in enumerate((slice(0, n // 2), slice(n // 2, n))):
            part = fits.HDUList(
                [h[0].copy(), fits.BinTableHDU(h["SC_DATA"].data[sl], h["SC_DATA"].header)]
            )
            part.writeto(tmp_path / f"ft2_{i}.fits")
    lst = tmp_path / "ft2.txt"
    lst.write_text(f"{w323['ft2']}\n{tmp_path / 'ft2_0.fits'}\n{tmp_path / 'ft2_1.fits'}\n")
    out = run_cube(tmp_path / "c.fits", evfile=str(p8v2["ft1"]), scfile=f"@{lst}", **P8V2)
    assert np.array_equal(cosbins(out), cosbins(cubes["p8v2_exact"]))
    assert np.array_equal(
        cosbins(out, "WEIGHTED_EXPOSURE"), cosbins(cubes["p8v2_exact"], "WEIGHTED_EXPOSURE")
    )


def test_row_window_matches_full_filter(w323: dict[str, Path]) -> None:
    """The binary-searched window holds exactly the rows of the cfitsio pre-filter."""
    from fermipipe.fits.table import FitsFile
    from fermipipe.native.gtltcube import _row_window

    table = FitsFile(w323["ft2"]).table("SC_DATA")
    start = table.column("START").astype(float)
    stop = table.column("STOP").astype(float)
    for lo, hi in ((start[100], stop[5000]), (start[0] - 1e6, stop[-1] + 1e6), (1e9, 2e9)):
        i0, i1 = _row_window(table, lo - 60, hi + 60)
        expected = np.flatnonzero((start >= lo - 60) & (stop <= hi + 60))
        assert np.array_equal(np.arange(i0, i1), expected)


# ---------------------------------------------------------------------- failures


def test_no_gti_dss_is_empty_product(p8v2: dict[str, Path], tmp_path: Path) -> None:
    with fits.open(p8v2["ft1"]) as h:
        hdus = [hdu.copy() for hdu in h]
    header = hdus[1].header
    n = header["NDSKEYS"]
    for k in range(1, n + 1):
        if header[f"DSTYP{k}"] == "TIME" and header[f"DSVAL{k}"] == "TABLE":
            header[f"DSTYP{k}"] = "ENERGY"
            header[f"DSVAL{k}"] = "200:20000"
            header[f"DSUNI{k}"] = "MeV"
            del header[f"DSREF{k}"]
    fits.HDUList(hdus).writeto(tmp_path / "nogti.fits")
    with pytest.raises(EmptyProductError, match=r"No GTIs found in input event file\(s\)\."):
        gtltcube.run(
            {
                "evfile": str(tmp_path / "nogti.fits"),
                "scfile": str(p8v2["ft2"]),
                "outfile": str(tmp_path / "x.fits"),
                **P8V2,
            }  # fmt: skip
        )
    assert not (tmp_path / "x.fits").exists()


def test_mismatched_dss_and_bad_ft2_rows(p8v2: dict[str, Path], tmp_path: Path) -> None:
    with fits.open(p8v2["ft1"]) as h:
        hdus = [hdu.copy() for hdu in h]
    for k in range(1, hdus[1].header["NDSKEYS"] + 1):
        if hdus[1].header[f"DSTYP{k}"] == "ENERGY":
            hdus[1].header[f"DSVAL{k}"] = "300:20000"
    fits.HDUList(hdus).writeto(tmp_path / "other.fits")
    lst = tmp_path / "l.txt"
    lst.write_text(f"{p8v2['ft1']}\n{tmp_path / 'other.fits'}\n")
    params = {"scfile": str(p8v2["ft2"]), "outfile": str(tmp_path / "x.fits"), **P8V2}
    with pytest.raises(ToolError, match="DSS cuts differ") as err:
        gtltcube.run({"evfile": f"@{lst}", **params})
    assert "other.fits" in str(err.value)

    with fits.open(p8v2["ft2"]) as h:
        data = h["SC_DATA"].data.copy()
        with fits.open(p8v2["ft1"]) as ev:
            t0 = ev["GTI"].data["START"][0]
        i = int(np.flatnonzero(data["START"] > t0 + 100)[0])
        data["STOP"][i] = data["START"][i] - 1.0
        fits.HDUList([h[0].copy(), fits.BinTableHDU(data, h["SC_DATA"].header)]).writeto(
            tmp_path / "bad_ft2.fits"
        )
    with pytest.raises(ToolError, match=rf"row {i + 1} has START .* > STOP"):
        gtltcube.run(
            {**params, "evfile": str(p8v2["ft1"]), "scfile": str(tmp_path / "bad_ft2.fits")}
        )
    with pytest.raises(ToolError, match="evfile is required"):
        gtltcube.run({**params, "evfile": ""})
    with pytest.raises(ToolError, match="precision"):
        gtltcube.run({**params, "evfile": str(p8v2["ft1"]), "precision": "sloppy"})
    assert not (tmp_path / "x.fits").exists()


def test_command_line(p8v2: dict[str, Path], cubes: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli.fits"
    args = [f"{k}={v}" for k, v in P8V2.items()]
    res = run_native(
        "gtltcube", f"evfile={p8v2['ft1']}", f"scfile={p8v2['ft2']}", f"outfile={out}", *args
    )
    assert res.returncode == 0, res.stderr
    assert_same_fits(out, cubes["p8v2_exact"])
    with fits.open(out) as h:
        assert h[0].header["FILENAME"] == "cli.fits"
        assert h[0].header["CREATOR"].startswith("gtltcube")


def test_out_of_order_ft2_window_falls_back_to_full_scan(
    p8v2: dict[str, Path], tmp_path: Path
) -> None:
    """Two FT2 rows swapped inside the GTI span: the binary-searched window is detected as
    out of order, the whole file is scanned instead, and the same rows contribute."""
    from fermipipe.fits.table import FitsFile
    from fermipipe.native.gtltcube import _in_order, _row_window

    with fits.open(p8v2["ft1"]) as h:
        gti = read_gti(h["GTI"])
    with fits.open(p8v2["ft2"]) as h:
        data = h["SC_DATA"].data.copy()
        i = int(np.flatnonzero(data["START"] > gti.tstart + 3600)[0])
        swapped = data.copy()
        swapped[i], swapped[i + 1] = data[i + 1], data[i]
        bad = tmp_path / "swapped_ft2.fits"
        fits.HDUList([h[0].copy(), fits.BinTableHDU(swapped, h["SC_DATA"].header)]).writeto(bad)
    table = FitsFile(bad).table("SC_DATA")
    i0, i1 = _row_window(table, gti.tstart - 60, gti.tstop + 60)
    assert not _in_order(table, i0, i1, 1000)
    grid = CubeGrid.from_params(4, 0.05)
    got = compute_livetime(gti, [str(bad)], grid, precision="fast")
    ref = compute_livetime(gti, [str(p8v2["ft2"])], grid, precision="fast")
    assert got.n_rows == ref.n_rows
    np.testing.assert_allclose(got.exposure, ref.exposure, rtol=1e-6)


def test_concurrent_runs_in_threads(p8v2: dict[str, Path], cubes: dict[str, Path]) -> None:
    """Two in-process runs at once (as in a threaded Dask worker) give the reference cube."""
    from concurrent.futures import ThreadPoolExecutor

    with fits.open(p8v2["ft1"]) as h:
        gti = read_gti(h["GTI"])
    grid = CubeGrid.from_params(4, 0.05)
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda _: compute_livetime(gti, [str(p8v2["ft2"])], grid), range(2))
        )
    for r in results:
        assert np.array_equal(r.exposure, cosbins(cubes["p8v2_exact"]))
