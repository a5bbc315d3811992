"""Quick-look PNG of a counts map or cube (CMAP, CCUBE or HEALPix SKYMAP), or of a flux map
made from one (farith ``DIV`` of counts by exposure, or hpx_divide).

The image is drawn in the map's own projection (WCS axes for CMAP/CCUBE, a Mollweide view
for HEALPix), summed over energy planes, on a logarithmic colour scale with a colour bar.
Only positive pixels are drawn: farith writes an undefined pixel (exposure 0) as its
``blank`` value (−999 by default) or NaN, and both are left blank. Integer images are
labelled as counts; float images (a flux map, an exposure) by what they are, summed over the
energy planes (for a flux cube: the flux integrated over the cube's energy range).

A big image is read memory-mapped and summed plane by plane (no float copy of the cube), then
drawn at screen resolution: wider or taller than :data:`MAX_SIDE` pixels, it is drawn in k×k
blocks (:func:`sky_image`) with a WCS describing the blocks, and the colour bar says so.

The steps are apart so that a merge can draw its product before writing it: :func:`image_of`
(the picture's values from an image in memory, e.g. an image sum's accumulator),
:func:`render` (PNG bytes), :func:`write_png` (the file, atomically); :func:`make_quicklook`
chains them for a file.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.errors import ToolError

#: The largest image side drawn pixel for pixel: the PNG's map is ~900 pixels wide, so finer
#: pixels would not show (a 0.1° all-sky 3600×1800 map is drawn in 3×3 blocks, 1200×600).
MAX_SIDE = 1200


def preload() -> None:
    """Import what drawing needs (matplotlib with Agg, astropy's WCS axes), ahead of
    the first drawing: the flow calls it in the background while the files run, so a run's
    last product is not followed by the imports before its quick-look."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    from astropy.visualization import wcsaxes  # noqa: F401


def _label(integer: bool, block: int = 1) -> str:
    """Colour-bar label: counts for an integer map, else a value summed over the planes; per
    pixel, or per k×k block (summed counts; the mean of a float map's pixels)."""
    if block == 1:
        return "counts / pixel (all energies)" if integer else "sum over energy planes / pixel"
    if integer:
        return f"counts / ({block}×{block} pixels), all energies"
    return f"sum over energy planes / pixel, mean of {block}×{block} pixels"


@dataclass
class SkyImage:
    """What :func:`make_quicklook` draws of a primary image."""

    values: np.ndarray  # 2-D: summed over the energy planes, in blocks when ``block`` > 1
    wcs: Any  # astropy WCS (celestial) of ``values``' pixels
    block: int  # k: each drawn pixel is k×k map pixels
    integer: bool
    label: str


def _plane_sum(data: np.ndarray, integer: bool, stored: np.dtype[Any] | None = None) -> np.ndarray:
    """The image summed over its leading (energy) axes, plane by plane into int64 (counts) or
    float64: a memory-mapped cube is read once, without a float copy of the whole of it.
    ``stored``: the type the image is written in, when ``data`` is another (a merge's float64
    sum of a float32 map): each plane is first converted to it, as the written image is."""
    planes = data.reshape(-1, *data.shape[-2:])
    total = np.zeros(data.shape[-2:], np.int64 if integer else np.float64)
    native = stored.newbyteorder("=") if stored is not None else None
    convert = native is not None and data.dtype.newbyteorder("=") != native
    for plane in planes:
        total += plane.astype(native) if convert else plane
    return total


def _blocks(total: np.ndarray, k: int, integer: bool) -> np.ndarray:
    """``total`` in k×k blocks: counts summed; a float map's pixels averaged over those that
    are defined — NaN and farith's blank (−999) make a pixel's plane sum NaN or negative and
    are left out, so a block is the mean flux over its defined area (no defined pixel: NaN,
    not drawn). The last rows/columns that do not fill a block (fewer than k, at the top and
    right edges) are left out: a partial block would be drawn as a whole one, too faint."""
    ny, nx = total.shape[0] // k, total.shape[1] // k
    cells = total[: ny * k, : nx * k].reshape(ny, k, nx, k)
    if integer:
        return cells.sum(axis=(1, 3))
    defined = np.isfinite(cells) & (cells >= 0)
    n = defined.sum(axis=(1, 3))
    summed = np.where(defined, cells, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, summed / np.maximum(n, 1), np.nan)


def _block_wcs(wcs: Any, k: int) -> Any:
    """The WCS of k×k blocks of ``wcs``' pixels (block (0, 0) covers pixels 0…k−1): astropy's
    slicing with a step rescales CRPIX and CDELT — a CD matrix, which it would leave as it is,
    is first written as PC with unit CDELT (the same transformation)."""
    if wcs.wcs.has_cd():
        wcs = wcs.deepcopy()
        cd = wcs.wcs.cd.copy()
        del wcs.wcs.cd
        wcs.wcs.pc = cd
        wcs.wcs.cdelt = [1.0] * cd.shape[0]
        wcs.wcs.set()
    return wcs[::k, ::k]


def sky_image(product: Path, max_side: int = MAX_SIDE) -> SkyImage | None:
    """The primary image of ``product`` as drawn: summed over its energy planes and, wider or
    taller than ``max_side``, in k×k blocks (k the smallest bringing it within ``max_side``).
    None when the primary HDU holds no image (NAXIS < 2)."""
    from astropy.io import fits

    try:
        with fits.open(product, memmap=True) as hdul:
            return _sky_image(hdul, max_side)
    except OSError as exc:
        raise ToolError("quicklook", f"cannot read the map: {exc}", file=str(product)) from None


def _sky_image(hdul: Any, max_side: int = MAX_SIDE) -> SkyImage | None:
    """:func:`sky_image` of an open (memory-mapped) HDU list."""
    primary = hdul[0]
    if primary.header.get("NAXIS", 0) < 2 or primary.data is None:
        return None
    return image_of(primary.data, primary.header, max_side=max_side)


def image_of(
    data: np.ndarray,
    header: Any,
    stored: np.dtype[Any] | None = None,
    *,
    max_side: int = MAX_SIDE,
) -> SkyImage:
    """:func:`sky_image` of a primary image given as ``data`` (≥ 2 axes, unscaled) with its
    ``header``; ``stored``: the type it is written in when ``data`` is of another (see
    :func:`_plane_sum`). A merge draws its product from its sum before writing it: the same
    picture as from the file."""
    from astropy.wcs import WCS, FITSFixedWarning

    kind = stored if stored is not None else data.dtype
    integer = bool(np.issubdtype(kind, np.integer))
    with warnings.catch_warnings():  # DATE-OBS → MJD-OBS notes are noise here
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    shape = data.shape[-2:]
    k = math.ceil(max(shape) / max_side)
    k = max(1, min(k, *shape))  # a sliver of an image stays at least one block wide
    if k > 1:
        return SkyImage(_block_sums(data, k, integer, stored), _block_wcs(wcs, k), k, integer,
                        _label(integer, k))  # fmt: skip
    return SkyImage(_plane_sum(data, integer, stored), wcs, 1, integer, _label(integer))


#: Image rows summed at a time for a picture in blocks: a band's sums (3600 × 60 × 8 bytes,
#: 1.7 MB) are made again and again in the same memory; a whole 3600×1800 sum (52 MB) cost
#: about as much in first-touch page faults as in the adding.
_BAND_ROWS = 60


def _block_sums(
    data: np.ndarray, k: int, integer: bool, stored: np.dtype[Any] | None
) -> np.ndarray:
    """:func:`_blocks` of :func:`_plane_sum`, band by band of rows (whole rows of blocks:
    each block's value is the one the whole image gives)."""
    planes = data.reshape(-1, *data.shape[-2:])
    rows = planes.shape[1] // k * k  # the rows that fill blocks (_blocks leaves out the rest)
    step = k * max(1, _BAND_ROWS // k)
    return np.concatenate([
        _blocks(_plane_sum(planes[:, lo : min(lo + step, rows)], integer, stored), k, integer)
        for lo in range(0, rows, step)
    ])  # fmt: skip


def _healpix_image(path: Path) -> tuple[np.ndarray, str, bool]:
    import healpy as hp
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        hdu = hdul["SKYMAP"]
        chans = [c for c in hdu.columns.names if c.upper().startswith("CHANNEL")]
        integer = all(np.issubdtype(hdu.data[c].dtype, np.integer) for c in chans)
        counts = np.sum([np.asarray(hdu.data[c], dtype=float) for c in chans], axis=0)
        nside = int(hdu.header["NSIDE"])
        nest = str(hdu.header.get("ORDERING", "RING")).upper().startswith("NEST")
        coordsys = str(hdu.header.get("COORDSYS", "CEL"))
        if "PIX" in hdu.columns.names:  # explicit (partial-sky) map
            full = np.zeros(hp.nside2npix(nside))
            full[np.asarray(hdu.data["PIX"])] = counts
            counts = full
    if nest:
        counts = hp.reorder(counts, n2r=True)
    return counts, coordsys, integer


def make_quicklook(product: Path, png: Path, *, title: str | None = None) -> Path:
    """Render ``product`` to ``png`` (written atomically) and return the PNG path."""
    from astropy.io import fits

    product, png = Path(product), Path(png)
    try:
        with fits.open(product, memmap=True) as hdul:
            names = [h.name for h in hdul]
            header = hdul[0].header.copy()
            image = _sky_image(hdul)
    except OSError as exc:
        raise ToolError("quicklook", f"cannot read the map: {exc}", file=str(product)) from None
    if image is not None:
        picture = render(image, header, title or product.name)
    elif "SKYMAP" in names:
        picture = _render_healpix(product, title)
    else:
        raise ToolError("quicklook", "neither an image nor a SKYMAP table", file=str(product))
    return write_png(picture, png)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png_bytes(fig: Any) -> bytes:
    """``fig`` as PNG bytes (closed after)."""
    out = io.BytesIO()
    try:
        fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return out.getvalue()


def render(image: SkyImage, header: Any, title: str) -> bytes:
    """The PNG of a primary image (:func:`sky_image`, :func:`image_of`) whose primary header
    is ``header`` (its axis names label the axes). pyplot is not thread-safe: one thread
    renders at a time."""
    from matplotlib.colors import LogNorm

    fig = _pyplot().figure(figsize=(10, 5.6))
    total = image.values
    ax = fig.add_subplot(projection=image.wcs)
    positive = total[total > 0]  # NaN and farith's blank (−999) fail this
    # Counts are ≥ 1 where positive; a flux map's smallest positive value sets its scale.
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    shown = np.where(total > 0, total, np.nan)
    im = ax.imshow(shown, origin="lower", norm=norm, cmap="magma", interpolation="nearest")
    ax.set_facecolor("black")
    lon, lat = ax.coords[0], ax.coords[1]
    lon.set_axislabel(str(header.get("CTYPE1", "lon")).split("-")[0])
    lat.set_axislabel(str(header.get("CTYPE2", "lat")).split("-")[0])
    ax.coords.grid(color="white", alpha=0.25, linestyle=":")
    fig.colorbar(im, ax=ax, label=image.label, shrink=0.8)
    fig.suptitle(title)
    return _png_bytes(fig)


def _render_healpix(product: Path, title: str | None) -> bytes:
    import healpy as hp

    counts, coordsys, integer = _healpix_image(product)
    shown = np.where(counts > 0, counts, hp.UNSEEN)
    hp.mollview(
        shown,
        norm="log",
        cmap="magma",
        unit=_label(integer),
        title=title or f"{product.name} ({coordsys})",
    )
    return _png_bytes(_pyplot().gcf())


def write_png(picture: bytes, png: Path) -> Path:
    """``picture`` (PNG bytes) written to ``png`` under a temporary name and renamed."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp-{os.getpid()}.png")
    try:
        tmp.write_bytes(picture)
        os.replace(tmp, png)
    finally:
        tmp.unlink(missing_ok=True)
    return png
