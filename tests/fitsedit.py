"""Test inputs made from real files with one thing changed (never the shared originals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from fitscheck import DSS_STEMS


def with_gti(src: Path, dst: Path, starts: np.ndarray, stops: np.ndarray) -> Path:
    """A copy of an event file whose GTI extension holds the given intervals."""
    with fits.open(src) as h:
        hdus = [hdu.copy() for hdu in h]
        gti = fits.BinTableHDU(
            data=np.rec.fromarrays([starts, stops], names="START,STOP"),
            header=h["GTI"].header,
        )
        hdus[[x.name for x in hdus].index("GTI")] = gti
        fits.HDUList(hdus).writeto(dst, overwrite=True)
    return dst


def remove_dss(header: fits.Header) -> None:
    """Delete every DSS entry's keywords (NDSKEYS itself stays: the caller rewrites it)."""
    for k in range(1, header["NDSKEYS"] + 1):
        for stem in DSS_STEMS:
            header.remove(f"{stem}{k}", ignore_missing=True)


def set_dss(header: fits.Header, entries: list[tuple[str, str, str, str | None]]) -> None:
    """Replace the header's DSS by ``entries`` (DSTYP, DSUNI, DSVAL, DSREF or None), in order."""
    remove_dss(header)
    for k, (typ, uni, val, ref) in enumerate(entries, start=1):
        header[f"DSTYP{k}"], header[f"DSUNI{k}"], header[f"DSVAL{k}"] = typ, uni, val
        if ref:
            header[f"DSREF{k}"] = ref
    header["NDSKEYS"] = len(entries)
