"""Checks on FITS products shared by the test modules."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from fermipipe.fits.dates import met_to_date

#: The four keyword stems of one data-subspace (DSS) entry.
DSS_STEMS = ("DSTYP", "DSUNI", "DSVAL", "DSREF")


def assert_fitsverify(path: Path) -> None:
    """``fitsverify -q -e`` reports no error (HEASARC's FITS conformance checker).

    fitsverify is a test requirement (Debian package ``fitsverify``, installed by .ci/run):
    its absence is a failure, not a skip.
    """
    exe = shutil.which("fitsverify")
    assert exe is not None, "fitsverify not found: apt-get install fitsverify"
    res = subprocess.run([exe, "-q", "-e", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "verification OK" in res.stdout, res.stdout + res.stderr


def assert_checksums(path: Path) -> None:
    """fitsverify clean and CHECKSUM/DATASUM right on every HDU."""
    assert_fitsverify(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bad checksum is an astropy warning
        with fits.open(path, checksum=True) as hdul:
            for hdu in hdul:
                assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1, hdu.name


def assert_valid_product(path: Path) -> None:
    """fitsverify clean, checksums right on every HDU, FILENAME = the file's name."""
    assert_checksums(path)
    assert fits.getheader(path, 0)["FILENAME"] == path.name


def raw_rows(hdu: fits.BinTableHDU) -> np.ndarray:
    """The table's rows as opaque byte records, for bit-exact row comparisons."""
    return np.frombuffer(np.asarray(hdu.data).tobytes(), dtype=f"V{hdu.header['NAXIS1']}")


def dss(header: fits.Header) -> list[tuple[str, str, str, str | None]]:
    """The DSS entries of a header as (DSTYP, DSUNI, DSVAL, DSREF or None), in order."""
    return [
        (header[f"DSTYP{k}"], header[f"DSUNI{k}"], header[f"DSVAL{k}"], header.get(f"DSREF{k}"))
        for k in range(1, header["NDSKEYS"] + 1)
    ]


def cosbins(path: Path, ext: str = "EXPOSURE") -> np.ndarray:
    """The COSBINS column of a livetime-cube table, as float32."""
    with fits.open(path) as h:
        return np.array(h[ext].data["COSBINS"], dtype=np.float32)


def assert_time_span(hdul: fits.HDUList, tstart: float, tstop: float) -> None:
    """An event product covering [tstart, tstop]: TSTART/TSTOP and DATE-OBS/DATE-END in the
    primary, EVENTS and GTI headers (spec 1.5), and the GTI's TELAPSE."""
    for name in ("PRIMARY", "EVENTS", "GTI"):
        h = hdul[name].header
        assert (h["TSTART"], h["TSTOP"]) == (tstart, tstop), name
        assert h["DATE-OBS"] == met_to_date(tstart), name
        assert h["DATE-END"] == met_to_date(tstop), name
    assert hdul["GTI"].header["TELAPSE"] == tstop - tstart
