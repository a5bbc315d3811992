"""Quick-look PNGs of real counts maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fermipipe.errors import ToolError
from fermipipe.quicklook import make_quicklook, sky_image


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


# ------------------------------------------------------- big maps: drawn in blocks


def _sky_header(nx: int, ny: int, nz: int, *, cd: bool = False) -> Any:
    """A gtbin-like all-sky AIT header (galactic, 0.15° pixels), optionally with a rotated
    CD matrix instead of CDELT."""
    from astropy.io import fits

    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = 32
    header["NAXIS"] = 3 if nz else 2
    header["NAXIS1"], header["NAXIS2"] = nx, ny
    if nz:
        header["NAXIS3"] = nz
    header["CTYPE1"], header["CTYPE2"] = "GLON-AIT", "GLAT-AIT"
    header["CRPIX1"], header["CRPIX2"] = (nx + 1) / 2, (ny + 1) / 2
    header["CRVAL1"], header["CRVAL2"] = 0.0, 0.0
    if cd:
        a = np.deg2rad(10.0)
        header["CD1_1"], header["CD1_2"] = -0.15 * np.cos(a), 0.15 * np.sin(a)
        header["CD2_1"], header["CD2_2"] = 0.15 * np.sin(a), 0.15 * np.cos(a)
    else:
        header["CDELT1"], header["CDELT2"] = -0.15, 0.15
    if nz:
        header["CTYPE3"], header["CRPIX3"], header["CRVAL3"], header["CDELT3"] = (
            "Energy", 1.0, 100.0, 100.0,
        )  # fmt: skip
    return header


def _cube(path: Path, data: np.ndarray, *, cd: bool = False) -> Path:
    """``data`` (z, y, x or y, x) written with the project's FITS writer."""
    from fermipipe.fits.table import write_fits

    nz = data.shape[0] if data.ndim == 3 else 0
    header = _sky_header(data.shape[-1], data.shape[-2], nz, cd=cd)
    header["BITPIX"] = {"i": 32, "f": -32}[data.dtype.kind]
    write_fits(path, [(header, data.astype(data.dtype.newbyteorder(">")))])
    return path


def _block_centres_agree(path: Path, image: Any) -> None:
    """Each block's centre is the centre of its k×k map pixels (world coordinates)."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        full = WCS(fits.getheader(path)).celestial
    k = image.block
    ny, nx = image.values.shape
    # inside the all-sky ellipse (its corners are off the sky)
    i = np.array([nx // 2, nx // 2 + 1, nx // 3, 2 * nx // 3, nx // 4 + 9, nx // 2 - 5])
    j = np.array([ny // 2, ny // 2 + 3, ny // 3, 2 * ny // 3, ny // 2 - 7, ny // 5])
    got = image.wcs.pixel_to_world(i, j)
    want = full.pixel_to_world(i * k + (k - 1) / 2, j * k + (k - 1) / 2)
    assert np.all(got.separation(want).deg < 1e-9)
    # a block is k map pixels (0.15° each) wide: the test can tell an unscaled WCS
    centre = image.wcs.pixel_to_world(nx // 2, ny // 2)
    step = image.wcs.pixel_to_world(nx // 2 + 1, ny // 2).separation(centre).deg
    assert step == pytest.approx(k * 0.15, rel=1e-2)


def test_a_big_counts_cube_is_drawn_in_blocks(tmp_path: Path) -> None:
    """2400×1200×2 int32: summed over the planes, drawn in 2×2 blocks of summed counts with
    the blocks' WCS, and the colour bar says what a pixel is."""
    rng = np.random.default_rng(7)
    data = rng.poisson(0.6, size=(2, 1200, 2400)).astype(np.int32)
    data[:, 600:640, 1190:1210] += 50  # a bright source in the middle
    path = _cube(tmp_path / "big.fits", data)
    image = sky_image(path)
    assert image is not None and image.block == 2 and image.integer
    total = data.astype(np.int64).sum(axis=0)
    blocks = total[0::2, 0::2] + total[1::2, 0::2] + total[0::2, 1::2] + total[1::2, 1::2]
    assert image.values.shape == (600, 1200) and np.array_equal(image.values, blocks)
    assert image.label == "counts / (2×2 pixels), all energies"
    _block_centres_agree(path, image)
    png = make_quicklook(path, tmp_path / "big.png")
    pixels = _png_pixels(png)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and np.std(pixels[..., :3]) > 0.05
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_big_flux_map_is_drawn_as_block_means_of_its_defined_pixels(tmp_path: Path) -> None:
    """2500×1300 float32 with blanks (NaN, farith's −999) and a CD-matrix WCS: 3×3 blocks
    (the 1 remaining column and row left out), each the mean of its defined pixels."""
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 2e-9, size=(1300, 2500)).astype(np.float32)
    data[0, 0] = np.nan  # block (0, 0): the mean of the other 8
    data[1, 4] = -999  # block (0, 1): likewise
    data[3:6, 6:9] = -999  # block (1, 2): nothing defined, not drawn
    path = _cube(tmp_path / "flux.fits", data, cd=True)
    image = sky_image(path)
    assert image is not None and image.block == 3 and not image.integer
    assert image.values.shape == (433, 833)  # 1300 // 3, 2500 // 3
    assert image.label == "sum over energy planes / pixel, mean of 3×3 pixels"
    wide = data.astype(np.float64)
    assert image.values[0, 0] == pytest.approx(np.nansum(wide[0:3, 0:3]) / 8, rel=1e-12)
    block = wide[0:3, 3:6]
    assert image.values[0, 1] == pytest.approx(block[block >= 0].mean(), rel=1e-12)
    assert np.isnan(image.values[1, 2])
    assert image.values[5, 7] == pytest.approx(wide[15:18, 21:24].mean(), rel=1e-12)
    _block_centres_agree(path, image)
    pixels = _png_pixels(make_quicklook(path, tmp_path / "flux.png"))
    assert np.std(pixels[..., :3]) > 0.05


def test_a_small_map_is_drawn_pixel_for_pixel(shared_data: Path) -> None:
    from astropy.io import fits

    path = shared_data / "evtbin" / "outref" / "test.ccube"  # 100×100×100
    image = sky_image(path)
    assert image is not None and image.block == 1
    assert image.label == "counts / pixel (all energies)"
    expected = fits.getdata(path).astype(np.int64).sum(axis=0)
    assert np.array_equal(image.values, expected) and expected.sum() > 0


# ------------------------------------- an image sum's quick-look, drawn from its sum


class _Hook:
    """An image sum's ``image_hook`` keeping what a quick-look is drawn from: the sky image
    of the sum (computed in the call: the write byteswaps the sum after) and its header."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, pixels: np.ndarray, header: Any, dtype: np.dtype[Any]) -> None:
        from fermipipe.quicklook import image_of

        self.calls.append((image_of(pixels, header, dtype), header))


def _same_picture(hook: _Hook, product: Path, tmp_path: Path) -> None:
    """The hook's picture is the one drawn from the written product: the same sky image
    (values, block WCS, label) and the same PNG bytes."""
    from fermipipe.quicklook import render

    (image, header), = hook.calls  # fmt: skip
    written = sky_image(product)
    assert written is not None
    assert image.values.dtype == written.values.dtype
    assert np.array_equal(image.values, written.values, equal_nan=True)
    assert (image.block, image.integer, image.label) == (
        written.block, written.integer, written.label,
    )  # fmt: skip
    assert image.wcs.to_header() == written.wcs.to_header()
    title = f"ccube: {product.name}"
    drawn = make_quicklook(product, tmp_path / "drawn.png", title=title).read_bytes()
    assert render(image, header, title) == drawn


def test_an_image_sum_gives_its_quick_look_before_it_is_written(tmp_path: Path) -> None:
    """Real weekly cubes (native gtbin, int32), compact, summed with a running sum: the
    picture computed from the sum before the write is the one drawn from the product."""
    from weekly_cubes import weekly_cube

    from fermipipe import merge
    from fermipipe.compact_counts import compact

    weeks = [weekly_cube(tmp_path, w) for w in (700, 701)]
    weeks = [compact(w, w.with_name(w.stem + ".compact.fits")) for w in weeks]
    running = merge.RunningSum(weeks[1])
    for week in reversed(weeks):
        running.add(week)
    hook = _Hook()
    product = merge.image_sum(weeks, tmp_path / "sum.fits", presummed=running, image_hook=hook)
    _same_picture(hook, product.output, tmp_path)


@pytest.mark.parametrize("kind", ["i", "f"])
def test_a_big_image_sum_gives_its_quick_look_in_blocks_before_it_is_written(
    tmp_path: Path, kind: str
) -> None:
    """2400×1200×2 cubes (drawn in 2×2 blocks): int32 counts, and float32 maps whose sum is
    kept in float64 and written as float32 (the picture is of the float32 product)."""
    from fermipipe import merge

    rng = np.random.default_rng(11)
    cubes = []
    for i in range(2):
        data = rng.poisson(0.6, size=(2, 1200, 2400))
        data[:, 600:640, 1190:1210] += 50
        if kind == "f":  # values whose float64 sum is not a float32
            data = data * np.float32(1.1) + np.float32(1e-3)
        cubes.append(_cube(tmp_path / f"c{i}.fits", data.astype(f"{kind}4")))
    hook = _Hook()
    product = merge.image_sum(cubes, tmp_path / "sum.fits", image_hook=hook).output
    assert hook.calls[0][0].block == 2
    _same_picture(hook, product, tmp_path)


def test_no_hook_for_a_healpix_sum(shared_data: Path, tmp_path: Path) -> None:
    from fermipipe import merge

    hpx = shared_data / "fermitools-2.4" / "p8v2_hpx_nest.fits"
    hook = _Hook()
    merge.image_sum([hpx, hpx], tmp_path / "hpx.fits", image_hook=hook)
    assert hook.calls == []


@pytest.mark.parametrize("kind", ["i", "f"])
def test_blocks_summed_band_by_band_are_those_of_the_whole_image(kind: str) -> None:
    """A picture in blocks is summed a band of rows at a time: every block, float ones too
    (NaN and blank pixels left out), is the one the whole image's plane sum gives, bit for
    bit; the rows that do not fill a block are left out."""
    from fermipipe import quicklook

    rng = np.random.default_rng(2)
    data = rng.uniform(0, 3, size=(3, 1301, 2500))
    if kind == "i":
        data = data.astype(np.int32)
    else:
        data = (data * 1e-9).astype(np.float32)
        data.reshape(-1)[rng.integers(0, data.size, 2000)] = -999
        data.reshape(-1)[rng.integers(0, data.size, 2000)] = np.nan
    integer = kind == "i"
    whole = quicklook._blocks(quicklook._plane_sum(data, integer), 3, integer)
    banded = quicklook._block_sums(data, 3, integer, None)
    assert whole.shape == banded.shape == (433, 833) and whole.dtype == banded.dtype
    assert np.array_equal(whole, banded, equal_nan=True)
    rows = 1301 // 3 * 3  # several bands, the last one partial
    assert rows > quicklook._BAND_ROWS and rows % quicklook._BAND_ROWS
