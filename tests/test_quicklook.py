"""Quick-look PNGs of real counts maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fermipipe.errors import ToolError
from fermipipe.quicklook import make_quicklook


def _png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(path)


@pytest.mark.parametrize(
    "rel",
    [
        "evtbin/outref/CM2.fits",
        "gammalib/p8v2/cntmap.fits.gz",
        "fermitools-2.4/p8v2_hpx_nest.fits",
    ],
)
def test_quicklook_of_reference_maps(shared_data: Path, tmp_path: Path, rel: str) -> None:
    png = make_quicklook(shared_data / rel, tmp_path / "look.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = _png_pixels(png)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    # A map with counts is not a blank picture.
    assert np.std(pixels[..., :3]) > 0.05
    assert not list(tmp_path.glob(".*tmp*"))


def test_quicklook_rejects_a_table_without_map(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="neither an image nor a SKYMAP"):
        make_quicklook(shared_data / "evtbin/outref/LC1.lc", tmp_path / "x.png")


def test_quicklook_of_a_flux_map_with_undefined_pixels(shared_data: Path, tmp_path: Path) -> None:
    """A farith DIV product: float values ~1e-9 (far below counts' 1), and undefined pixels
    written as farith's blank (-999) or NaN: drawn from the positive values only."""
    from astropy.io import fits

    from fermipipe.native import run_tool

    counts = shared_data / "gammalib" / "p8v2" / "cntmap.fits.gz"
    flux = tmp_path / "flux.fits"
    # counts / (counts * 1e9): 1e-9 where counted, 0/0 = undefined (blank) elsewhere
    with fits.open(counts) as h:
        data = h[0].data.astype(np.float32)
        fits.PrimaryHDU(data * np.float32(1e9), h[0].header).writeto(tmp_path / "exp.fits")
    run_tool("farith", {"infil1": str(counts), "infil2": str(tmp_path / "exp.fits"),
                        "outfil": str(flux), "ops": "DIV"})  # fmt: skip
    values = fits.getdata(flux)
    assert (values == -999).any() and (values > 0).any() and values.max() < 1e-6
    png = make_quicklook(flux, tmp_path / "flux.png")
    pixels = _png_pixels(png)
    assert np.std(pixels[..., :3]) > 0.05
