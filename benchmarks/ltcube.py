"""Benchmark: native gtltcube (exact and fast) against fermipy's ``fill_livetime_hist``.

Input: the real week-323 FT2 (pint/lat_spacecraft_weekly_w323_p202_v001.fits, 17305 rows) and
the GTI of fermitools-2.4/w323_gti_events.fits; grid binsz=1 (nside 64, 49152 pixels),
dcostheta=0.025 (40 bins), zmax=90 — the parameters of the Fermitools reference cube.

Run from the repository root::

    uv run python benchmarks/ltcube.py [--repeat 3] [--fermipy-python PATH]

fermipy is not a project dependency. Without ``--fermipy-python`` the script creates a
throwaway virtual environment in a temporary directory with ``uv venv`` and installs fermipy
from PyPI into it (``uv pip install fermipy six``: fermipy 1.4.3 imports ``six`` without
declaring it), then deletes it at the end (``--keep-venv`` keeps it and prints its path). Give
``--fermipy-python /path/to/python`` to use an existing environment with fermipy instead.

Each method runs in its own child process (so each peak RSS is its own): inputs are loaded,
one untimed warm-up call is made (for the native kernel: loading the numba cache / JIT), then
``--repeat`` timed calls; the median is reported. What is timed:

* native: ``compute_livetime`` — FT2 row window from the memmap, GTI fractions, directions,
  the compiled kernel and the final reordering (the FT2 file is read inside the timing);
* fermipy: ``fill_livetime_hist(skydir, tab_sc, tab_gti, zmax, costh_edges)`` with the FT2 and
  GTI tables already in memory (reading them is not timed).

Targets (issue "Native livetime cubes"): exact ≥ 2× and fast ≥ 10× faster than fermipy at
nside 64; peak memory < 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "fermi"
FT2 = DATA / "pint" / "lat_spacecraft_weekly_w323_p202_v001.fits"
FT1 = DATA / "fermitools-2.4" / "w323_gti_events.fits"
BINSZ, DCOSTHETA, ZMAX = 1.0, 0.025, 90.0

# Runs inside the fermipy environment (no fermipipe there): same grid = NESTED pixel centres
# of nside 64 and the 41 cosθ edges 1 − (i/40)², ascending as fermipy expects.
FERMIPY_CHILD = r"""
import json, resource, statistics, sys, time
import numpy as np, healpy as hp
from astropy.table import Table
from astropy.coordinates import SkyCoord
from fermipy.ltcube import fill_livetime_hist
ft1, ft2, nside, nbins, zmax, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
sc = Table.read(ft2, hdu="SC_DATA")
gti = Table.read(ft1, hdu="GTI")
theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside), nest=True)
sky = SkyCoord(np.degrees(phi), 90.0 - np.degrees(theta), unit="deg")
edges = (1.0 - (np.arange(nbins + 1) / nbins) ** 2)[::-1]
t0 = time.perf_counter(); lt, _ = fill_livetime_hist(sky, sc, gti, zmax, edges); first = time.perf_counter() - t0
times = []
for _ in range(repeat):
    t0 = time.perf_counter(); lt, _ = fill_livetime_hist(sky, sc, gti, zmax, edges); times.append(time.perf_counter() - t0)
import fermipy
print(json.dumps({"first": first, "times": times, "total": float(lt.sum()),
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "version": fermipy.__version__}))
"""


def native_child(precision: str, repeat: int) -> None:
    """Child mode: time compute_livetime in this process and print JSON."""
    import resource
    import time

    import numba
    from astropy.io import fits

    from fermipipe.fits.gti import read_gti
    from fermipipe.native.gtltcube import CubeGrid, compute_livetime

    with fits.open(FT1) as h:
        gti = read_gti(h["GTI"])
    grid = CubeGrid.from_params(BINSZ, DCOSTHETA)
    t0 = time.perf_counter()
    cube = compute_livetime(gti, [str(FT2)], grid, zmax=ZMAX, precision=precision)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        cube = compute_livetime(gti, [str(FT2)], grid, zmax=ZMAX, precision=precision)
        times.append(time.perf_counter() - t0)
    result = {
        "first": first,
        "times": times,
        "total": float(cube.exposure.astype("float64").sum()),
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "threads": numba.get_num_threads(),
        "rows": cube.n_rows,
    }
    print(json.dumps(result))


def _run_child(cmd: list[str], label: str) -> dict:
    print(f"  running {label} ...", flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"{label} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _make_fermipy_venv() -> tuple[str, Path]:
    """Create a temporary venv with fermipy from PyPI; returns (python, venv dir)."""
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv not found: install uv or pass --fermipy-python")
    venv = Path(tempfile.mkdtemp(prefix="fermipy-venv-"))
    print(f"  creating a throwaway venv with fermipy in {venv} (uv venv + uv pip install) ...")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([uv, "venv", "-q", "-p", py, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    res = subprocess.run(
        [uv, "pip", "install", "-q", "--python", python, "fermipy", "six"],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise SystemExit(f"could not install fermipy from PyPI:\n{res.stderr[-3000:]}")
    return python, venv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per method (median)")
    ap.add_argument("--fermipy-python", help="python of an environment that has fermipy")
    ap.add_argument("--keep-venv", action="store_true", help="keep the temporary fermipy venv")
    ap.add_argument("--child", choices=["exact", "fast"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        native_child(args.child, args.repeat)
        return 0
    for path in (FT1, FT2):
        if not path.exists():
            raise SystemExit(f"input not found: {path}")

    from fermipipe.native.gtltcube import CubeGrid

    grid = CubeGrid.from_params(BINSZ, DCOSTHETA)
    print(
        f"w323 FT2, nside {grid.nside} ({grid.npix} pixels), {grid.nbins} cos-theta bins, "
        f"zmax {ZMAX:g}; {os.cpu_count()} CPUs; repeat {args.repeat}"
    )
    venv: Path | None = None
    fermipy_python = args.fermipy_python
    if fermipy_python is None:
        fermipy_python, venv = _make_fermipy_venv()
    try:
        results = {}
        for precision in ("exact", "fast"):
            results[f"native {precision}"] = _run_child(
                [sys.executable, __file__, "--child", precision, "--repeat", str(args.repeat)],
                f"native {precision}",
            )
        results["fermipy"] = _run_child(
            [
                fermipy_python,
                "-c",
                FERMIPY_CHILD,
                str(FT1),
                str(FT2),
                str(grid.nside),
                str(grid.nbins),
                str(ZMAX),
                str(args.repeat),
            ],  # fmt: skip
            "fermipy fill_livetime_hist",
        )
    finally:
        if venv is not None:
            if args.keep_venv:
                print(f"  kept fermipy venv: {venv / 'bin' / 'python'}")
            else:
                shutil.rmtree(venv, ignore_errors=True)

    ref = statistics.median(results["fermipy"]["times"])
    print()
    print(f"{'method':<22}{'median s':>10}{'first s':>10}{'speed-up':>10}{'peak RSS MiB':>14}")
    for name, r in results.items():
        med = statistics.median(r["times"])
        print(
            f"{name:<22}{med:>10.3f}{r['first']:>10.3f}{ref / med:>9.1f}x"
            f"{r['maxrss_kib'] / 1024:>14.0f}"
        )
    ex = statistics.median(results["native exact"]["times"])
    fa = statistics.median(results["native fast"]["times"])
    peak = max(r["maxrss_kib"] for r in results.values()) / 1024
    print()
    print(f"fermipy {results['fermipy']['version']}; numba threads "
          f"{results['native exact']['threads']}; FT2 rows used {results['native exact']['rows']}")  # fmt: skip
    dev = results["fermipy"]["total"] / results["native exact"]["total"] - 1
    print(
        f"all-sky livetime sum: fermipy/native - 1 = {dev:+.2e} (fermipy drops FT2 rows not "
        "entirely inside one GTI, so it is not expected to be 0)"
    )
    ok_exact, ok_fast, ok_mem = ref / ex >= 2, ref / fa >= 10, peak < 2048
    print(f"target exact >= 2x: {'PASS' if ok_exact else 'FAIL'} ({ref / ex:.1f}x)")
    print(f"target fast >= 10x: {'PASS' if ok_fast else 'FAIL'} ({ref / fa:.1f}x)")
    print(f"target peak RSS < 2 GiB: {'PASS' if ok_mem else 'FAIL'} ({peak:.0f} MiB)")
    return 0 if (ok_exact and ok_fast and ok_mem) else 1


if __name__ == "__main__":
    sys.exit(main())
