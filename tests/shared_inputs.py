"""Shared real inputs used by several test modules, and the facts the tests rely on."""

from __future__ import annotations

from pathlib import Path


def ft1tiny_slices(shared_data: Path) -> list[Path]:
    """ft1tiny0/1/2: consecutive gtselect time slices of evtbin's ft1tiny (PROVENANCE 2.2)."""
    return [shared_data / "evtbin" / f"ft1tiny{i}.fits" for i in range(3)]


#: DSS of any merge of the ft1tiny slices: their common cuts, with the TIME cut as the GTI
#: table (the slices' own TIME ranges are not carried over).
FT1TINY_MERGED_DSS: list[tuple[str, str, str, str | None]] = [
    ("POS(RA,DEC)", "deg", "CIRCLE(83.633208,22.014472,15)", None),
    ("TIME", "s", "TABLE", ":GTI"),
    ("ENERGY", "MeV", "30:200000", None),
]


def _fits_stub() -> bytes:
    import io

    from astropy.io import fits

    buffer = io.BytesIO()
    fits.PrimaryHDU().writeto(buffer)
    return buffer.getvalue()


#: The smallest valid FITS file (an empty primary HDU): a stand-in input where only the
#: name and the kind of file matter (the planner checks that inputs are FITS).
FITS_STUB: bytes = _fits_stub()
