"""The README quick start, configs/example.yaml as committed, end to end through the real flow:
the per-file chain and merges, then its post-processing — native gtexpcube2 (the synthetic
SYNTH_SOURCE_V1 IRFs of data/sample/caldb) and a farith flux map with its quick-look PNG.
No Fermitools, no download."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from pipeline_project import REPO, run_flow

from fermipipe.native import run_tool

pytestmark = pytest.mark.timeout(300)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory, prefect_server: Any) -> Path:
    """configs/example.yaml, unchanged, in a folder laid out like the repository (the sample
    weeks and CALDB linked), run once."""
    root = tmp_path_factory.mktemp("example")
    (root / "configs").mkdir()
    (root / "data").mkdir()
    (root / "data" / "sample").symlink_to(REPO / "data" / "sample")
    config = root / "configs" / "example.yaml"
    shutil.copyfile(REPO / "configs" / "example.yaml", config)
    state, summary = run_flow(config, root / "summary.json")
    assert state.is_completed(), summary
    assert [p["step"] for p in summary["post"]] == ["expcube", "flux"]
    assert all(p["status"] == "ok" for p in summary["post"]), summary["post"]
    return root / "products" / "example"


def test_exposure_is_a_native_gtexpcube2_run_of_the_merged_cubes(
    products: Path, tmp_path: Path
) -> None:
    ccube, expcube = products / "example_ccube.fits", products / "example_expcube.fits"
    assert expcube.is_file()
    with fits.open(ccube) as c, fits.open(expcube) as e:
        # bincalc=CENTER: one exposure plane per counts plane, same sky grid
        assert e[0].data.shape == c[0].data.shape == (8, 360, 720)
        for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "CRPIX1"):
            assert e[0].header[key] == c[0].header[key], key
        assert np.nanmax(e[0].data) > 0
        exposure = e[0].data.copy()
    # The same tool on the same merged cubes outside the flow: the flow ran it as configured
    # (CALDB from the config's caldb: key, the sample's synthetic IRF).
    again = tmp_path / "expcube.fits"
    run_tool(
        "gtexpcube2",
        {
            "infile": str(products / "example_ltcube.fits"),
            "cmap": str(ccube),
            "outfile": str(again),
            "irfs": "SYNTH_SOURCE_V1",
            "evtype": "3",
            "bincalc": "CENTER",
            "caldb": str(REPO / "data" / "sample" / "caldb"),
        },
    )
    assert fits.getdata(again).tobytes() == exposure.tobytes()


def test_flux_is_counts_over_exposure(products: Path) -> None:
    flux_path = products / "example_flux.fits"
    assert flux_path.is_file()
    counts = fits.getdata(products / "example_ccube.fits").astype(np.float64)
    exposure = fits.getdata(products / "example_expcube.fits").astype(np.float64)
    flux = fits.getdata(flux_path)
    assert flux.dtype == np.dtype(">f4")  # DIV of an integer and a float image: float
    covered = exposure != 0
    assert covered.any() and (~covered).any()  # the AIT ellipse's outside has no exposure
    # farith: computed in double, written as float; a 0 divisor makes the pixel undefined,
    # written as blank = -999 (null=no, the default).
    expected = np.full(counts.shape, -999.0)
    expected[covered] = counts[covered] / exposure[covered]
    assert flux.tobytes() == expected.astype(">f4").tobytes()
    assert np.count_nonzero(flux > 0) == np.count_nonzero(counts[covered])


def test_quicklook_of_the_flux_map(products: Path) -> None:
    png = products / "example_flux.png"
    assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 10_000  # a drawn sky, not an empty canvas
    assert (products / "example_ccube.png").is_file()  # the merged counts' one is still made
