"""A weekly counts cube in compact form: dense gtbin + ``compact()`` against the native gtbin
writing the compact form directly (``outform=compact``), side by side on one full-size week.

Run: ``uv run python benchmarks/gtbin_compact.py [--events 2000000] [--workdir DIR]``

The week is made as benchmarks/compact_counts.py makes it (``fermipipe.synth`` week 500,
seed 1; native gtselect → gtmktime as configs/mission.yaml), once per work directory. Then,
each step a child process timed alone (wall time; peak RSS from GNU time):

* dense: ``gtbin`` CCUBE 3600×1800 0.1° AIT GAL × 24 LOG bins → the 622 MB file, then
  ``python -m fermipipe.compact_counts compact`` → the compact file (the dense one deleted
  after: it held ~622 MB of disk meanwhile);
* direct: ``gtbin … outform=compact`` → the compact file; disk held: the compact file only.

Checks: both compact files hold the same voxels, the same original size and the same
stored primary header but for DATE and the checksum cards (the clocks differ between the
runs; tests/test_gtbin_compact.py pins them and compares the files byte for byte), and
expand to files of the same size. Also timed in-process: the direct writer's CRC-32 of the
dense bytes (the one O(voxels) step left).

Measured on this machine (2 cores shared with other agents; load average 1.0 during the
run, a quiet moment), 2 M-event week (907,140 events after the cuts, in 797,429 nonzero
voxels; VOXELS columns J, B); one run each;
``uv run python benchmarks/gtbin_compact.py --workdir /tmp/gtbin-compact-bench``:

=============================  ======  ===========  ============
path                           wall s  peak RSS MB  disk held MB
=============================  ======  ===========  ============
dense: gtbin                   4.17    664          622.1
dense: compact()               1.50    691          626.1
dense: total                   5.67    691          626.1
direct: gtbin outform=compact  1.52    130          4.0
=============================  ======  ===========  ============

Of the direct run's 1.52 s, ~0.8 s is the interpreter and imports (the same in both
paths), ~0.3–0.4 s projecting and binning the events, 0.14 s the CRC-32 of the dense bytes
and < 0.1 s counting the voxels and writing the file. A first run of the same command a
minute earlier gave 3.79 + 1.54 s against 1.65 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from fermipipe.compact_counts import open_compact
from fermipipe.compact_write import SparseImage

REPO = Path(__file__).resolve().parents[1]
GTSELECT = ("ra=INDEF", "dec=INDEF", "rad=INDEF", "tmin=INDEF", "tmax=INDEF", "emin=100",
            "emax=1000000", "zmin=0", "zmax=90", "evclass=128", "evtype=3")  # fmt: skip
GTBIN = ("algorithm=CCUBE", "ebinalg=LOG", "emin=100", "emax=1000000", "enumbins=24",
         "nxpix=3600", "nypix=1800", "binsz=0.1", "coordsys=GAL", "xref=0", "yref=0",
         "axisrot=0", "proj=AIT")  # fmt: skip
_TIME_CARDS = ("DATE", "CHECKSUM", "DATASUM")


def run(*argv: str) -> tuple[float, float]:
    """Run ``python argv…`` in the repository; (wall s, peak RSS MB) of that child alone.

    Peak RSS comes from GNU time's %M: a child's own ``ru_maxrss`` (wait4) starts at its
    parent's RSS when it is forked, and this parent holds the generated week.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        t0 = time.perf_counter()
        res = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report.name, sys.executable,
                              *argv], cwd=REPO, check=False)  # fmt: skip
        wall = time.perf_counter() - t0
        if res.returncode:
            raise SystemExit(f"failed ({res.returncode}): {' '.join(argv)}")
        return wall, int(report.read().split()[-1]) / 1024  # KiB


def week_inputs(workdir: Path, events: int) -> tuple[Path, Path]:
    """The gtmktime output (events) and FT2 of the generated week, made once."""
    ft2 = workdir / f"week-{events}" / "ft2.fits"
    gti = workdir / f"gti-{events}.fits"
    if gti.exists() and ft2.exists():
        return gti, ft2
    from fermipipe.synth import generate_week

    ft1, made_ft2 = generate_week(500, workdir / f"week-{events}", events=events, seed=1)
    made_ft2.replace(ft2)
    sel = workdir / f"sel-{events}.fits"
    run("-m", "fermipipe.native", "gtselect", f"infile={ft1}", f"outfile={sel}", *GTSELECT)
    run("-m", "fermipipe.native", "gtmktime", f"scfile={ft2}", f"evfile={sel}",
        f"outfile={gti}", "filter=(DATA_QUAL>0)&&(LAT_CONFIG==1)", "roicut=no")  # fmt: skip
    sel.unlink()
    return gti, ft2


def _header_cards(header_bytes: bytes) -> list[str]:
    cards = [header_bytes[i : i + 80].decode() for i in range(0, len(header_bytes), 80)]
    return [c for c in cards if c[:8].strip() not in _TIME_CARDS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gtbin-compact-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    events, ft2 = week_inputs(workdir, args.events)
    gtbin = ("-m", "fermipipe.native", "gtbin", f"evfile={events}", f"scfile={ft2}", *GTBIN)
    for d in ("dense", "direct"):
        (workdir / d).mkdir(exist_ok=True)
    dense = workdir / "dense" / "ccube.fits"
    compacted = workdir / "dense" / "ccube-compact.fits"
    direct = workdir / "direct" / "ccube.fits"
    load = os.getloadavg()

    t_bin, rss_bin = run(*gtbin, f"outfile={dense}")
    dense_mb = dense.stat().st_size / 1e6
    t_compact, rss_compact = run("-m", "fermipipe.compact_counts", "compact", str(dense),
                                 str(compacted))  # fmt: skip
    t_direct, rss_direct = run(*gtbin, f"outfile={direct}", "outform=compact")
    load_after = os.getloadavg()

    a, b = open_compact(compacted), open_compact(direct)
    same = (
        np.array_equal(a.index, b.index)
        and np.array_equal(a.values, b.values)
        and a.size == b.size
        and len(a.extension_bytes) == len(b.extension_bytes)
        and _header_cards(a.header_bytes) == _header_cards(b.header_bytes)
        and len(a.header_bytes) == len(b.header_bytes)
    )
    with fits.open(direct) as hdul:
        columns = [hdul["VOXELS"].columns[n].format for n in ("INDEX", "VALUE")]
    image = SparseImage(b.shape, b.index, b.values.astype(np.int32))
    t0 = time.perf_counter()
    crc = zlib.crc32(b.header_bytes)
    for chunk in image.dense_chunks():
        crc = zlib.crc32(chunk, crc)
    t_crc = time.perf_counter() - t0
    dense.unlink()

    small = direct.stat().st_size / 1e6
    print(f"\nweek: {b.values.sum()} counts in {b.index.size} nonzero voxels of {b.shape}; "
          f"VOXELS columns {columns}")  # fmt: skip
    print(f"load average before {load[0]:.1f}, after {load_after[0]:.1f} (2 cores)")
    print(f"\n{'path':<26} {'wall s':>7} {'peak RSS MB':>12} {'disk held MB':>13}")
    print(f"{'dense: gtbin':<26} {t_bin:7.2f} {rss_bin:12.0f} {dense_mb:13.1f}")
    print(f"{'dense: compact()':<26} {t_compact:7.2f} {rss_compact:12.0f} "
          f"{dense_mb + small:13.1f}")  # fmt: skip
    print(f"{'dense: total':<26} {t_bin + t_compact:7.2f} {max(rss_bin, rss_compact):12.0f} "
          f"{dense_mb + small:13.1f}")  # fmt: skip
    print(f"{'direct: gtbin outform=compact':<26} {t_direct:7.2f} {rss_direct:12.0f} "
          f"{small:13.1f}")  # fmt: skip
    print(f"  of which CRC-32 of the dense bytes (in-process, again): {t_crc:.2f} s")
    print(f"\nsame voxels, size and header (but time cards): {same}; work dir {workdir}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
