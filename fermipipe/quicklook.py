"""Quick-look PNG of a counts map or cube (CMAP, CCUBE or HEALPix SKYMAP), or of a flux map
made from one (farith ``DIV`` of counts by exposure, or hpx_divide).

The image is drawn in the map's own projection (WCS axes for CMAP/CCUBE, a Mollweide view
for HEALPix), summed over energy planes, on a logarithmic colour scale with a colour bar.
Only positive pixels are drawn: farith writes an undefined pixel (exposure 0) as its
``blank`` value (−999 by default) or NaN, and both are left blank. Integer images are
labelled as counts; float images (a flux map, an exposure) by what they are, summed over the
energy planes (for a flux cube: the flux integrated over the cube's energy range).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fermipipe.errors import ToolError


def _label(integer: bool) -> str:
    """Colour-bar label: counts for an integer map, else a value summed over the planes."""
    return "counts / pixel (all energies)" if integer else "sum over energy planes / pixel"


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.io import fits
    from matplotlib.colors import LogNorm

    product, png = Path(product), Path(png)
    try:
        with fits.open(product, memmap=False) as hdul:
            names = [h.name for h in hdul]
            primary = hdul[0]
            has_image = primary.data is not None and primary.header.get("NAXIS", 0) >= 2
            image = np.asarray(primary.data, dtype=float) if has_image else None
            integer = has_image and np.issubdtype(primary.data.dtype, np.integer)
            header = primary.header.copy()
    except OSError as exc:
        raise ToolError("quicklook", f"cannot read the map: {exc}", file=str(product)) from None

    fig = plt.figure(figsize=(10, 5.6))
    if image is not None:
        import warnings

        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():  # DATE-OBS → MJD-OBS notes are noise here
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header).celestial
        total = image.sum(axis=0) if image.ndim == 3 else image
        ax = fig.add_subplot(projection=wcs)
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
        fig.colorbar(im, ax=ax, label=_label(integer), shrink=0.8)
    elif "SKYMAP" in names:
        counts, coordsys, integer = _healpix_image(product)
        import healpy as hp

        plt.close(fig)
        shown = np.where(counts > 0, counts, hp.UNSEEN)
        hp.mollview(
            shown,
            norm="log",
            cmap="magma",
            unit=_label(integer),
            title=title or f"{product.name} ({coordsys})",
        )
        fig = plt.gcf()
    else:
        plt.close(fig)
        raise ToolError("quicklook", "neither an image nor a SKYMAP table", file=str(product))
    if image is not None:
        fig.suptitle(title or product.name)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, png)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return png
