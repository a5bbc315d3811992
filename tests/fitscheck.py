"""Checks on FITS products shared by the test modules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def assert_fitsverify(path: Path) -> None:
    """``fitsverify -q -e`` reports no error (HEASARC's FITS conformance checker).

    fitsverify is a test requirement (Debian package ``fitsverify``, installed by .ci/run):
    its absence is a failure, not a skip.
    """
    exe = shutil.which("fitsverify")
    assert exe is not None, "fitsverify not found: apt-get install fitsverify"
    res = subprocess.run([exe, "-q", "-e", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "verification OK" in res.stdout, res.stdout + res.stderr
