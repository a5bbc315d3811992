"""Native gtpsf against the real Fermitools 2.4 product, plus independent checks.

Reference (PROVENANCE.md, fermitools-2.4 table): ``psf_w323_crab_P8R3_SOURCE_V3_evtype3.fits.gz``
= ``gtpsf expcube=w323_ltcube_z90.fits irfs=P8R3_SOURCE_V3 evtype=3 ra=83.6331 dec=22.0145
emin=100 emax=100000 nenergies=20 thetamax=10 ntheta=100``, with the CALDB in ../caldb.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_checksums
from native_cli import run_native

from fermipipe.errors import ToolError
from fermipipe.irf.aeff import load_effective_area
from fermipipe.irf.caldb import resolve_irf
from fermipipe.irf.psf import read_psf3
from fermipipe.native import gtpsf
from fermipipe.native.meanpsf import log_energies, type_exposure

#: Spec §13 keys that may differ. FILENAME is not among them: like the real gtpsf, the
#: product has none, so the primary header must match card for card.
IGNORED_KEYS = {"DATE", "CHECKSUM", "DATASUM", "CREATOR"}

REF_ARGS = {
    "irfs": "P8R3_SOURCE_V3",
    "evtype": "3",
    "ra": "83.6331",
    "dec": "22.0145",
    "emin": "100",
    "emax": "100000",
    "nenergies": "20",
    "thetamax": "10",
    "ntheta": "100",
}


def assert_same_fits(out: Path, ref: Path) -> None:
    """HDU names, header cards (ignoring the spec §13 keys) and every column byte-identical."""
    with fits.open(out) as a, fits.open(ref) as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ha, hb in zip(a, b, strict=True):
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
                # Bit-identical: the raw bytes (NaN-safe, sign-of-zero-safe).
                assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes(), (
                    f"{ha.name}.{col}"
                )


@pytest.fixture
def caldb(caldb: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared CALDB subset, as $CALDB (the real gtpsf has no CALDB parameter)."""
    monkeypatch.setenv("CALDB", str(caldb))
    return caldb


@pytest.fixture
def ltcube(shared_data: Path) -> Path:
    return shared_data / "fermitools-2.4" / "w323_ltcube_z90.fits.gz"


@pytest.fixture
def reference(shared_data: Path) -> Path:
    return shared_data / "fermitools-2.4" / "psf_w323_crab_P8R3_SOURCE_V3_evtype3.fits.gz"


def run_psf(ltcube: Path, outfile: Path, **overrides: str) -> Path:
    params = {**REF_ARGS, "expcube": str(ltcube), "outfile": str(outfile), **overrides}
    outcome = gtpsf.run(params)
    assert outcome.outputs == [str(outfile)]
    return outfile


# ---------------------------------------------------------------------- reference


def test_matches_fermitools_reference(
    caldb: Path, ltcube: Path, reference: Path, tmp_path: Path
) -> None:
    out = run_psf(ltcube, tmp_path / "psf.fits")
    assert_same_fits(out, reference)
    assert_checksums(out)


def test_cli_matches_reference(caldb: Path, ltcube: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.fits"
    args = [f"{k}={v}" for k, v in REF_ARGS.items()]
    res = run_native("gtpsf", f"expcube={ltcube}", f"outfile={out}", *args)
    assert res.returncode == 0, res.stderr
    assert "P8R3_SOURCE_V3 FRONT+BACK" in res.stdout
    assert_same_fits(out, reference)
    with fits.open(out) as h:
        assert "FILENAME" not in h[0].header


# ---------------------------------------------------------------------- refusals


def test_irfs_caldb_refused_with_one_line(caldb: Path, ltcube: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.fits"
    args = [f"{k}={v}" for k, v in {**REF_ARGS, "irfs": "CALDB"}.items()]
    res = run_native("gtpsf", f"expcube={ltcube}", f"outfile={out}", *args)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: gtpsf: irfs=CALDB"), res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"expcube": "none"}, "Please specify an exposure cube file"),
        ({"ra": "361"}, "outside [0, 360]"),
        ({"dec": "-91"}, "outside [-90, 90]"),
        ({"nenergies": "1"}, "nenergies must be at least 2"),
        ({"emax": "50"}, "emin < emax"),
        ({"ntheta": "0"}, "ntheta must be at least 1"),
        ({"emax": "1e11"}, "above the IRF table range"),
        ({"irfs": "P8R3_NOSUCH_V9"}, "P8R3_NOSUCH_V9"),
        ({"evtype": "0"}, "selects no event type"),
        ({"irfs": "P6_V3_DIFFUSE"}, "only Pass 8 tables"),
        ({"expcube": "/nonexistent/lt.fits"}, "file not found"),
        ({"bogus": "1"}, "unknown parameter"),
    ],
)
def test_bad_input_is_one_tool_error(
    caldb: Path, ltcube: Path, tmp_path: Path, override: dict[str, str], message: str
) -> None:
    out = tmp_path / "x.fits"
    with pytest.raises(ToolError) as err:
        gtpsf.run({**REF_ARGS, "expcube": str(ltcube), "outfile": str(out), **override})
    text = str(err.value)
    assert "\n" not in text and message in text, text
    assert not out.exists()


def test_clobber_no_refuses_existing_output(caldb: Path, ltcube: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.fits"
    out.write_bytes(b"keep")
    with pytest.raises(ToolError, match="clobber"):
        run_psf(ltcube, out, clobber="no")
    assert out.read_bytes() == b"keep"


# ---------------------------------------------------------------------- independent checks


def test_psf_nodes_are_normalised(caldb: Path) -> None:
    """Every PSF node integrates to 1 over 0–90° (its own normalisation, checked here with a
    plain trapezoid on a fine grid instead of the LAT quadrature)."""
    sel = resolve_irf("P8R3_SOURCE_V3", 3)
    t = sel.event_types[0]
    rpsf, scaling = t.get("RPSF"), t.get("PSF_SCALING")
    assert rpsf is not None and scaling is not None
    table = read_psf3(rpsf, scaling)
    x = np.concatenate(([0.0], np.geomspace(1e-5, 90.0, 200_000)))
    for energy in (50.0, 316.0, 1e4):  # one numerically, two analytically normalised nodes
        k = int(np.argmin(np.abs(table.energies - energy)))
        e, th = float(table.energies[k]), float(table.thetas[4])
        y = np.array([table.value(float(v), e, th) for v in x[::100]])
        xs = x[::100]
        integrand = y * np.sin(np.radians(xs)) * 2 * math.pi * math.pi / 180
        total = float(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(xs)))
        assert total == pytest.approx(1.0, abs=2e-3), (e, th, total)


def test_output_psf_integrates_to_one(caldb: Path, ltcube: Path, tmp_path: Path) -> None:
    """The mean PSF is a density: ∫2π sinθ PSF dθ ≈ 1 out to 70° (coarse output grid)."""
    out = run_psf(ltcube, tmp_path / "wide.fits", thetamax="70", ntheta="2000")
    with fits.open(out) as h:
        theta = np.radians(h["THETA"].data["Theta"])
        for row in h["PSF"].data:
            y = 2 * math.pi * np.sin(theta) * row["Psf"]
            total = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(theta)))
            assert total == pytest.approx(1.0, abs=5e-3), row["Energy"]
            assert row["Exposure"] > 0


# ---------------------------------------------------------------------- gammapy


def test_gammapy_reads_the_psf_table(caldb: Path, ltcube: Path, tmp_path: Path) -> None:
    """gammapy's gtpsf reader (PSFMap, format="gtpsf") takes our product with the file's
    values unchanged: PSF, exposure, energies and offsets."""
    from gammapy.irf import PSFMap

    out = run_psf(ltcube, tmp_path / "psf.fits")
    psf_map = PSFMap.read(out, format="gtpsf")
    with fits.open(out) as h:
        table, theta = h["PSF"].data, h["THETA"].data["Theta"]
        psf = psf_map.psf_map
        assert psf.data.shape == (table["Energy"].size, theta.size, 1, 1)
        assert str(psf.unit) == "1 / sr"
        assert np.array_equal(psf.data[:, :, 0, 0], table["Psf"])
        assert psf_map.exposure_map is not None
        assert psf_map.exposure_map.unit.to_string() == "cm2 s"
        assert np.array_equal(psf_map.exposure_map.data[:, 0, 0, 0], table["Exposure"])
        # gammapy hands the energy nodes back through its log-scale axis transform
        # (exp(log E)), a few ulps from the stored doubles; the column itself is compared bit
        # for bit with the Fermitools in test_matches_fermitools_reference.
        energy = psf.geom.axes["energy_true"].center.to_value("MeV")
        np.testing.assert_allclose(energy, table["Energy"], rtol=1e-15, atol=0)
        assert np.array_equal(psf.geom.axes["rad"].center.to_value("deg"), theta)
    # A containment radius gammapy derives from it is a sane LAT number (68 % at 1 GeV).
    r68 = psf_map.containment_radius(0.68, energy_true=1000 * u.MeV, position=None)
    assert 0.3 < float(np.squeeze(r68.to_value("deg"))) < 1.5


# ---------------------------------------------------------------------- phi-binned cube


def test_phi_binned_exposure_matches_gtexpcube2(caldb: Path, shared_data: Path) -> None:
    """The exposure path with phi bins (phi entries, azimuths, phi-modulated effective area,
    weighted livetime, efficiency factors) against the real gtexpcube2 cube made from the
    same phi-binned livetime cube (PROVENANCE.md): gtexpcube2 adds the event types as
    float32(float32(front) + back), so our per-type exposures accumulated that way must give
    its voxels bit for bit. Without the phi modulation they would not."""
    from astropy.wcs import WCS, FITSFixedWarning

    base = shared_data / "fermitools-2.4"
    ltcube = str(base / "ltcube_pint_w323_phi2_z105.fits.gz")
    with fits.open(base / "expcube_ltcube_phi2_P8R3_SOURCE_V3_car_cel.fits.gz") as ref:
        cube = np.asarray(ref[0].data)
        ref_energies = np.asarray(ref["ENERGIES"].data["Energy"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)  # RADECSYS/MJDREF remarks
            wcs = WCS(ref[0].header).celestial
    energies = log_energies(100.0, 100000.0, 9)  # gtexpcube2's edges for enumbins=8
    assert np.array_equal(energies, ref_energies)
    aeffs = [load_effective_area(t) for t in resolve_irf("P8R3_SOURCE_V3", 3).event_types]
    factors = gtpsf.efficiency_factors(energies, aeffs)
    mismatches = {True: 0, False: 0}
    n = 0
    for j in range(2, cube.shape[1], 7):
        for i in range(3, cube.shape[2], 7):
            ra, dec = (float(v) for v in wcs.wcs_pix2world([[i, j]], 0)[0])
            cell, phibins = gtpsf.read_cell(ltcube, ra % 360.0, dec)
            assert phibins == 2
            for with_phi in (True, False):
                c = cell if with_phi else dataclasses.replace(cell, phi_deg=None)
                total = np.zeros(energies.size, dtype=np.float32)
                for area in gtpsf.effective_areas(c, energies, aeffs):
                    value = type_exposure(c, area, factors)
                    total = (total.astype(np.float64) + value).astype(np.float32)
                mismatches[with_phi] += int(np.sum(total != cube[:, j, i]))
            n += energies.size
    assert n >= 500
    assert mismatches[True] == 0, f"{mismatches[True]} of {n} voxels differ"
    assert mismatches[False] > n // 2


def test_runs_on_phi_binned_cube(caldb: Path, shared_data: Path, tmp_path: Path) -> None:
    ltcube = shared_data / "fermitools-2.4" / "ltcube_pint_w323_phi2_z105.fits.gz"
    out = tmp_path / "phi.fits"
    outcome = gtpsf.run(
        {**REF_ARGS, "expcube": str(ltcube), "outfile": str(out), "ra": "7.6143", "dec": "4.861"}
    )
    assert "2 phi bins" in outcome.messages[0]
    assert_checksums(out)
    with fits.open(out) as h:
        data = h["PSF"].data
        assert np.all(data["Exposure"] > 0)
        assert np.all(np.isfinite(data["Psf"])) and np.all(data["Psf"] > 0)


# ---------------------------------------------------------------------- quadrature


def test_dgaus8_integrates_as_slatec_promises() -> None:
    """DGAUS8 is exact for low-degree polynomials on one panel and meets its relative error
    on a sharply peaked integrand (it must subdivide); a = b gives 0."""
    from fermipipe.irf.quadrature import dgaus8, integrate

    ans, ierr = dgaus8(lambda x: 3 * x * x, 0.0, 2.0, 1e-5)
    assert ierr == 1 and ans == pytest.approx(8.0, rel=1e-14)
    calls = 0

    def peak(x: float) -> float:
        nonlocal calls
        calls += 1
        return 1.0 / (1e-6 + x * x)

    exact = 2 * math.atan(1.0 / 1e-3) / 1e-3
    assert integrate(peak, -1.0, 1.0, 1e-8) == pytest.approx(exact, rel=1e-7)
    assert calls > 100
    assert dgaus8(math.sin, 1.0, 1.0, 1e-5) == (0.0, 1)


# ---------------------------------------------------------------------- event types


def test_exposure_adds_over_event_types(caldb: Path, ltcube: Path, tmp_path: Path) -> None:
    """The exposure of evtype=3 is FRONT's plus BACK's to the bit, both with the efficiency
    factors of the first type loaded (FRONT): so BACK alone (evtype=2, its own factors) is
    not the difference. The PSF0–3 partition (evtype=60) sees nearly the same total."""
    exposure = {}
    for evtype in ("1", "2", "3", "60"):
        out = run_psf(ltcube, tmp_path / f"e{evtype}.fits", evtype=evtype)
        with fits.open(out) as h:
            exposure[evtype] = np.array(h["PSF"].data["Exposure"], dtype=np.float64)
            assert h["PSF"].header["DSVAL1"] == "P8R3_SOURCE_V3"
    energies = log_energies(100.0, 100000.0, 20)
    cell, _ = gtpsf.read_cell(str(ltcube), 83.6331, 22.0145)
    front, back = (load_effective_area(t) for t in resolve_irf("P8R3_SOURCE_V3", 3).event_types)
    area_f, area_b = gtpsf.effective_areas(cell, energies, [front, back])
    with_front = gtpsf.efficiency_factors(energies, [front])
    own_back = gtpsf.efficiency_factors(energies, [back])
    v_front = type_exposure(cell, area_f, with_front)
    assert np.array_equal(v_front, exposure["1"])
    assert np.array_equal(v_front + type_exposure(cell, area_b, with_front), exposure["3"])
    assert np.array_equal(type_exposure(cell, area_b, own_back), exposure["2"])
    assert not np.array_equal(exposure["1"] + exposure["2"], exposure["3"])
    np.testing.assert_allclose(exposure["60"], exposure["3"], rtol=0.02)
