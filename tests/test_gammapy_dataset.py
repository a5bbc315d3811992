"""gammapy reads what the native engine makes: a ``MapDataset`` from a native counts cube
(gtbin CCUBE), a native exposure cube (gtexpcube2, bincalc=EDGE, on the real week-323 livetime
cube with the real CALDB subset) and a gtpsf PSF table, as gammapy's Fermi-LAT tutorial builds
one (``Map.read`` for counts and exposure, ``PSFMap.read(..., format="gtpsf")``, the PSF kernel
from ``PSFMap.get_psf_kernel``); every value gammapy holds equals the files'.

The PSF table is the real gtpsf output of PROVENANCE.md (the native gtpsf lives on another
branch); the counts are real LAT events around the Crab (gammalib p8v2: 1 day, 15° ROI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from fermipipe.native import run_tool

CRAB = (83.6331, 22.0145)
IRF = "P8R3_SOURCE_V3"


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, caldb: Path) -> dict:
    out = tmp_path_factory.mktemp("gammapy")
    ccube, expcube = out / "ccube.fits", out / "expcube.fits"
    p8v2 = shared_data / "gammalib" / "p8v2"
    run_tool(
        "gtbin",
        {
            "algorithm": "CCUBE",
            "evfile": str(p8v2 / "ft1.fits.gz"),
            "scfile": str(p8v2 / "ft2.fits.gz"),
            "outfile": str(ccube),
            "ebinalg": "LOG",
            "emin": 200,
            "emax": 20000,
            "enumbins": 5,
            "nxpix": 40,
            "nypix": 40,
            "binsz": 0.25,
            "coordsys": "CEL",
            "xref": CRAB[0],
            "yref": CRAB[1],
            "axisrot": 0,
            "proj": "CAR",
        },
    )
    run_tool(
        "gtexpcube2",
        {
            "infile": str(shared_data / "fermitools-2.4" / "w323_ltcube_z90.fits.gz"),
            "cmap": str(ccube),
            "outfile": str(expcube),
            "irfs": IRF,
            "evtype": 3,
            "bincalc": "EDGE",
            "caldb": str(caldb),
        },
    )
    psf = shared_data / "fermitools-2.4" / f"psf_w323_crab_{IRF}_evtype3.fits.gz"
    return {"counts": ccube, "exposure": expcube, "psf": psf}


@pytest.mark.slow  # importing gammapy takes seconds
def test_gammapy_map_dataset_holds_the_files_values(products: dict) -> None:
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.datasets import MapDataset
    from gammapy.irf import PSFMap
    from gammapy.maps import Map

    counts = Map.read(products["counts"])
    exposure = Map.read(products["exposure"])
    psf = PSFMap.read(products["psf"], format="gtpsf")
    dataset = MapDataset(counts=counts, exposure=exposure, psf=psf, name="crab")

    with fits.open(products["counts"]) as f:
        assert dataset.counts is not None
        np.testing.assert_array_equal(dataset.counts.data, f[0].data)
        assert f[0].data.sum() > 100  # real Crab-region photons, not an empty cube
        # EBOUNDS: float32 keV; gammapy holds the edges in its own unit (a unit change away)
        edges = dataset.counts.geom.axes["energy"].edges.to_value("keV").astype(np.float32)
        eb = f["EBOUNDS"].data
        np.testing.assert_array_equal(edges, np.append(eb["E_MIN"], eb["E_MAX"][-1]))
        assert (
            dataset.counts.geom.center_skydir.separation(SkyCoord(*CRAB, unit="deg", frame="icrs"))
            < 0.2 * u.deg
        )

    with fits.open(products["exposure"]) as f:
        assert dataset.exposure is not None
        assert dataset.exposure.unit == u.Unit("cm2 s")
        np.testing.assert_array_equal(dataset.exposure.data, f[0].data)
        assert f[0].data.min() > 0  # the whole cube sees the sky for a week
        # bincalc=EDGE: one plane per counts-bin edge, at the ENERGIES nodes (MeV)
        true = dataset.exposure.geom.axes["energy_true"]
        # gammapy keeps node axes in log space (exp(log E)): equal to the last bits of a double
        np.testing.assert_allclose(
            true.center.to_value("MeV"), f["ENERGIES"].data["Energy"], rtol=1e-14, atol=0
        )
        assert true.nbin == dataset.counts.geom.axes["energy"].nbin + 1
        assert dataset.exposure.geom.to_image() == dataset.counts.geom.to_image()

    with fits.open(products["psf"]) as f:
        assert dataset.psf is not None
        table, theta = f["PSF"].data, f["THETA"].data["Theta"]
        psf_map = dataset.psf.psf_map
        rad = psf_map.geom.axes["rad"].center.to_value("deg")
        np.testing.assert_allclose(rad, theta, rtol=1e-14, atol=0)
        energy = psf_map.geom.axes["energy_true"].center.to_value("MeV")
        np.testing.assert_allclose(energy, table["Energy"], rtol=1e-14, atol=0)
        assert psf_map.unit == u.Unit("sr-1")
        np.testing.assert_array_equal(psf_map.data[:, :, 0, 0], table["Psf"])
        np.testing.assert_array_equal(dataset.psf.exposure_map.data[:, 0, 0, 0], table["Exposure"])
    # The PSF kernel on the exposure's grid, as the tutorial makes it: one normalised,
    # centrally peaked kernel per true-energy plane, narrower at higher energy.
    kernel = dataset.psf.get_psf_kernel(
        geom=dataset.exposure.geom,
        position=SkyCoord(*CRAB, unit="deg", frame="icrs"),
        max_radius=3 * u.deg,
    )
    data = kernel.psf_kernel_map.data
    assert data.shape[0] == dataset.exposure.geom.axes["energy_true"].nbin
    np.testing.assert_allclose(data.sum(axis=(1, 2)), 1.0, rtol=1e-6)
    centre = data.shape[1] // 2, data.shape[2] // 2
    assert np.all(data[:, centre[0], centre[1]] == data.max(axis=(1, 2)))
    assert np.all(np.diff(data[:, centre[0], centre[1]]) > 0)
