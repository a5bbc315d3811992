"""Tests of fermipipe.fits.writing: atomic output, checksums, FILENAME."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from fermipipe.fits.writing import (
    add_checksums,
    atomic_output,
    checksum_words,
    encode_checksum,
    write_hdul_atomic,
)


def test_atomic_output_success_and_failure(tmp_path: Path) -> None:
    out = tmp_path / "out.fits"
    with atomic_output(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.fits.tmp-")
        assert not out.exists()
        tmp.write_bytes(b"x")
    assert out.read_bytes() == b"x"
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert out.read_bytes() == b"x"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]  # tmp removed
    with pytest.raises(FileNotFoundError), atomic_output(tmp_path / "never.fits"):
        pass
    assert not (tmp_path / "never.fits").exists()


def _raw_hdus(path: Path) -> list[tuple[bytes, bytes]]:
    """(header bytes, data bytes) per HDU, from the file itself."""
    raw = path.read_bytes()
    out = []
    with fits.open(path) as h:
        for hdu in h:
            info = hdu.fileinfo()
            hs, ds, size = info["hdrLoc"], info["datLoc"], info["datSpan"]
            out.append((raw[hs:ds], raw[ds : ds + size]))
    return out


def test_checksum_algorithm_matches_reference_files(shared_data: Path, tmp_path: Path) -> None:
    # A Fermitools 2.4 output: recompute DATASUM and CHECKSUM from the raw bytes.
    path = shared_data / "fermitools-2.4/p8v2_mktime_roicut.fits"
    with fits.open(path) as h:
        sums = [(hdu.header["CHECKSUM"], hdu.header["DATASUM"]) for hdu in h]
    for (head, data), (checksum, datasum) in zip(_raw_hdus(path), sums, strict=True):
        dsum = checksum_words(data)
        assert str(dsum) == datasum.strip() or (dsum == 0 and datasum.strip() == "0")
        # With CHECKSUM set to '0000000000000000' the encoded complement is the value.
        zeroed = head.replace(f"'{checksum}'".encode(), b"'0000000000000000'")
        assert encode_checksum(checksum_words(zeroed, dsum)) == checksum
        # And the full HDU sums to -0 (all ones).
        assert checksum_words(head, dsum) == 0xFFFFFFFF


def test_write_hdul_atomic_and_add_checksums(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "gammalib/p8v2/ft1.fits.gz"
    out = tmp_path / "copy.fits"
    with fits.open(src) as h:
        h[0].header["CHECKSUM"] = "bogus"
        write_hdul_atomic(h, out)
    with fits.open(out, checksum=True) as h:
        assert h[0].header["FILENAME"] == "copy.fits"
        keys = list(h[0].header.keys())
        assert keys[keys.index("FILENAME") + 1] == "ORIGIN"  # updated in place
        for hdu in h:
            assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
        events = h["EVENTS"].data["ENERGY"].copy()
    with pytest.raises(FileExistsError), fits.open(src) as h:
        write_hdul_atomic(h, out, overwrite=False)
    # In-place on a path, with the final name given explicitly.
    other = tmp_path / ".tmpname"
    shutil.copy(out, other)
    with fits.open(other, mode="update") as h:
        h["EVENTS"].header["NEWKEY"] = 1
    add_checksums(other, filename="final.fits")
    with fits.open(other, checksum=True) as h:
        assert h[0].header["FILENAME"] == "final.fits"
        assert all(hdu.verify_checksum() == 1 for hdu in h)
        assert np.array_equal(h["EVENTS"].data["ENERGY"], events)
    fitsverify = shutil.which("fitsverify")
    if fitsverify:
        res = subprocess.run([fitsverify, "-q", str(other)], capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.startswith("verification OK"), res.stdout


def test_add_checksums_hdul_in_memory() -> None:
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("X", "D", array=np.arange(5.0))])])  # fmt: skip
    add_checksums(hdul, filename="/a/b/name.fits")
    assert hdul[0].header["FILENAME"] == "name.fits"
    assert "CHECKSUM" in hdul[1].header and hdul[1].header["DATASUM"] != "0"
