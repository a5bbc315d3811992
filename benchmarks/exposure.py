"""Benchmark: native gtexpcube2 on the real week-323 livetime cube, against the real tool's figures.

Input: fermitools-2.4/w323_ltcube_z90.fits.gz (nside 64, 40 cosθ bins), P8R3_SOURCE_V3,
evtype 3, the CALDB subset in shared/data/caldb. Two products:

* mission grid: 3600×1800 0.1° AIT GAL, LOG 100 MeV–1 TeV, enumbins 24 → 25 EDGE planes;
* HEALPix nside 128 (hpx_order 7) RING GAL, 28 CENTER planes (8 per decade from 100 MeV).

Each run is ``python -m fermipipe.native gtexpcube2 …`` as a child process, timed end to end
(interpreter start, imports, reading, computing, writing), best of ``--repeat`` runs (the
machine is shared; every run's time is printed too); its peak RSS is ``ru_maxrss`` and its
CPU time ``ru_utime + ru_stime`` from ``os.wait4``. One untimed warm-up run of each product comes first (bytecode caches and the
page cache of the inputs). The yardstick, measured in the same run, is the time numpy needs
to write an array of the product's size to the same disk (``ndarray.tofile``).

The real gtexpcube2 (Fermitools 2.4, this machine kind, spec §14.7, PROVENANCE.md): mission
grid 360 s and 689 MB; HEALPix nside 128 × 28 planes 20.4 s (that run used
P8R3_ULTRACLEANVETO_V3; the IRF does not change the work).
Targets: ≥ 100× faster than 360 s, ≥ 20× faster than 20.4 s, peak RSS ≤ 2 × output size.

Run from the repository root::

    uv run python benchmarks/exposure.py [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LTCUBE = DATA / "fermi" / "fermitools-2.4" / "w323_ltcube_z90.fits.gz"
CALDB = DATA / "caldb"

#: The real tool on this machine kind (spec §14.7): seconds, MB.
REAL_MISSION_S, REAL_MISSION_MB = 360.0, 689.0
REAL_HPX_S = 20.4

COMMON = ["irfs=P8R3_SOURCE_V3", "evtype=3", "ebinalg=LOG", "chatter=2", "clobber=yes"]
PRODUCTS: dict[str, list[str]] = {
    "mission 3600x1800 AIT x25": [
        "cmap=none",
        "nxpix=3600",
        "nypix=1800",
        "binsz=0.1",
        "coordsys=GAL",
        "xref=0",
        "yref=0",
        "axisrot=0",
        "proj=AIT",
        "emin=100",
        "emax=1000000",
        "enumbins=24",
        "bincalc=EDGE",
    ],
    "healpix nside128 x28": [
        "cmap=hpx",
        "hpx_ordering_scheme=RING",
        "hpx_order=7",
        "coordsys=GAL",
        "emin=100",
        f"emax={100 * 10**3.5!r}",
        "enumbins=28",
        "bincalc=CENTER",
    ],
}


def run_child(args: list[str], outfile: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds user+sys) of one gtexpcube2 child process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["CALDB"] = str(CALDB)
    cmd = [sys.executable, "-m", "fermipipe.native", "gtexpcube2", f"infile={LTCUBE}"]
    cmd += [f"outfile={outfile}", *COMMON, *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"gtexpcube2 failed ({' '.join(cmd)}):\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def yardstick(nbytes: int, folder: Path) -> float:
    """Seconds to write ``nbytes`` of float32 with numpy to a file in ``folder``."""
    arr = np.full(nbytes // 4, 1.5e9, dtype=">f4")
    path = folder / "yardstick.bin"
    t0 = time.perf_counter()
    arr.tofile(path)
    wall = time.perf_counter() - t0
    path.unlink()
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per product (best of)")
    ap.add_argument("--keep", help="write the products into this folder and keep them")
    args = ap.parse_args()
    for path in (LTCUBE, CALDB / "data/glast/lat/caldb.indx"):
        if not path.exists():
            raise SystemExit(f"input not found: {path}")
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="expcube-bench-")
    folder = Path(args.keep) if args.keep else Path(tmp.name)  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    print(f"livetime cube {LTCUBE.name}; {os.cpu_count()} CPUs; output folder {folder}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    measured = []
    for name, params in PRODUCTS.items():
        out = folder / f"{name.split()[0]}.fits"
        run_child(params, out)  # warm-up, untimed
        runs = []
        for _ in range(args.repeat):
            out.unlink()  # like the real tool, which removes the old output before it starts
            runs.append(run_child(params, out))
        wall = min(r[0] for r in runs)  # best of N: the machine is shared
        rss = max(r[1] for r in runs)
        cpu = min(r[2] for r in runs)
        walls = ", ".join(f"{r[0]:.2f}" for r in runs)
        print(f"  {name}: wall s of the runs {walls}; load average {os.getloadavg()[0]:.2f}")
        measured.append((name, wall, rss, out.stat().st_size, cpu))
    # Yardsticks only after every child has run: a child started with vfork/exec inherits
    # the parent's RSS high-water mark, so the parent must not have held a big array before.
    rows = [
        (name, wall, rss, size / 2**20, yardstick(size, folder), cpu)
        for name, wall, rss, size, cpu in measured
    ]
    print()
    print(
        f"{'product':<28}{'wall s':>8}{'CPU s':>7}{'peak RSS MiB':>14}{'output MiB':>12}"
        f"{'RSS/output':>12}{'np write s':>12}{'real tool':>16}{'speed-up':>10}"
    )
    for (name, wall, rss, size_mb, yard, cpu), (real_s, real_txt) in zip(
        rows,
        ((REAL_MISSION_S, f"{REAL_MISSION_S:.0f} s/{REAL_MISSION_MB:.0f} MB"),
         (REAL_HPX_S, f"{REAL_HPX_S:.1f} s")),
        strict=True,
    ):  # fmt: skip
        print(
            f"{name:<28}{wall:>8.2f}{cpu:>7.2f}{rss:>14.0f}{size_mb:>12.0f}{rss / size_mb:>12.2f}"
            f"{yard:>12.2f}{real_txt:>16}{real_s / wall:>9.0f}x"
        )
    mission, hpx = rows
    print()
    print(f"targets: mission >= 100x ({REAL_MISSION_S / mission[1]:.0f}x), "
          f"healpix >= 20x ({REAL_HPX_S / hpx[1]:.0f}x), "
          f"peak RSS <= 2x output: mission {mission[2] / mission[3]:.2f}x, "
          f"healpix {hpx[2] / hpx[3]:.2f}x")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
