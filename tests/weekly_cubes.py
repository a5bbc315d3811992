"""Weekly counts cubes made as the mission chain makes them: a generated week
(``fermipipe.synth``) binned by the native gtbin with configs/mission.yaml's energy binning
(24 LOG bins, 100 MeV–1 TeV) on a coarser all-sky grid (1° instead of 0.1°: same code, small
files)."""

from __future__ import annotations

from pathlib import Path

from native_cli import run_native

from fermipipe.synth import generate_week

#: The mission's gtbin parameters but the sky grid (360×180 at 1° rather than 3600×1800).
GTBIN = (
    "algorithm=CCUBE",
    "ebinalg=LOG",
    "emin=100",
    "emax=1000000",
    "enumbins=24",
    "nxpix=360",
    "nypix=180",
    "binsz=1",
    "coordsys=GAL",
    "xref=0",
    "yref=0",
    "axisrot=0",
    "proj=AIT",
)


def weekly_cube(folder: Path, week: int, *, seed: int = 0, events: int = 20_000) -> Path:
    """The CCUBE of generated ``week`` (``seed`` gives another version of the same week)."""
    ft1, ft2 = generate_week(week, folder / f"w{week}-s{seed}", events=events, seed=seed)
    out = folder / f"w{week}-s{seed}_ccube.fits"
    res = run_native("gtbin", f"evfile={ft1}", f"scfile={ft2}", f"outfile={out}", *GTBIN)
    assert res.returncode == 0, res.stderr
    return out
