"""Native tools versus their reference implementations, timed as whole processes.

Run: ``uv run python benchmarks/native.py [--tools gtselect] [--repeats 5] [--events 2000000]``

Each tool has one ``bench_<tool>(workdir, args)`` function that prepares its inputs in a
temporary directory and times the reference command and the native command side by side
(alternately, so load changes hit both) through :func:`interleaved`/:func:`run_once`, which
measure wall time and the peak RSS of the child (``os.wait4``). The issue targets are checked
on the medians: native time <= 1.0x the reference and native peak RSS <= 2x the input file.

Children run as in a normal installation: byte-code caching on (a private
``PYTHONPYCACHEPREFIX`` in the work directory, so nothing is written into the repository or
the venv, and ``PYTHONDONTWRITEBYTECODE`` removed), after one untimed warm-up run. Without a
byte-code cache every native run would first recompile numpy/astropy (~0.4 s more).

Inputs come from ``fermipipe.synth.generate_week`` (realistic weekly FT1, ~45 % selected by the
gtselect benchmark filter); ``--generator private`` uses the simple generator below instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# Common timing helper


@dataclass
class Timing:
    """Wall times (s) and peak RSS (bytes) of repeated runs of one command."""

    label: str
    seconds: list[float]
    max_rss: list[int]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_rss(self) -> int:
        return max(self.max_rss)


CHILD_ENV: dict[str, str] = {}


def run_once(argv: Sequence[str], cwd: Path | None = None) -> tuple[float, int]:
    """Run ``argv`` as a child process; return (wall seconds, peak RSS bytes). Fails loudly.

    The peak RSS comes from ``/usr/bin/time -f %M`` around the command: ``ru_maxrss`` of a
    direct child would start from *this* process's high-water mark (fork/vfork + exec keeps
    it), which is large once astropy is imported here.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv],
            cwd=cwd or REPO,
            env=CHILD_ENV or None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
        kib = int(Path(rss.name).read_text().split()[-1])
    return elapsed, kib * 1024


def interleaved(
    pairs: Sequence[tuple[str, Sequence[str]]],
    repeats: int,
    before: Callable[[], None] | None = None,
) -> list[Timing]:
    """Time several commands alternately (A B A B …) so that load changes hit all alike."""
    results = [Timing(label, [], []) for label, _ in pairs]
    for _, argv in pairs:  # untimed warm-up: page cache, byte-code cache
        if before is not None:
            before()
        run_once(argv)
    for _ in range(repeats):
        for (_, argv), result in zip(pairs, results, strict=True):
            if before is not None:
                before()
            elapsed, peak = run_once(argv)
            result.seconds.append(elapsed)
            result.max_rss.append(peak)
    return results


def report(title: str, reference: Timing, native: Timing, input_bytes: int) -> dict[str, float]:
    """Print one side-by-side block and return the key figures."""
    ratio = native.median / reference.median
    rss_ratio = native.peak_rss / input_bytes
    print(f"\n== {title}  (input {input_bytes / 1e6:.1f} MB)")
    for t in (reference, native):
        runs = " ".join(f"{s:.2f}" for s in t.seconds)
        print(
            f"  {t.label:<10} median {t.median:6.2f} s  [{runs}]  peak RSS {t.peak_rss / 1e6:7.1f} MB"
        )
    print(f"  time ratio native/reference (medians): {ratio:.2f}  (target <= 1.0)")
    print(f"  native peak RSS / input size:          {rss_ratio:.2f}  (target <= 2.0)")
    return {"time_ratio": ratio, "rss_ratio": rss_ratio}


# --------------------------------------------------------------------------------------------
# Synthetic FT1 (23 Pass 8 columns), used when fermipipe.synth is not available

_FT1_COLUMNS: list[tuple[str, str, str]] = [
    ("ENERGY", "E", "MeV"),
    ("RA", "E", "deg"),
    ("DEC", "E", "deg"),
    ("L", "E", "deg"),
    ("B", "E", "deg"),
    ("THETA", "E", "deg"),
    ("PHI", "E", "deg"),
    ("ZENITH_ANGLE", "E", "deg"),
    ("EARTH_AZIMUTH_ANGLE", "E", "deg"),
    ("TIME", "D", "s"),
    ("EVENT_ID", "J", ""),
    ("RUN_ID", "J", ""),
    ("RECON_VERSION", "I", ""),
    ("CALIB_VERSION", "3I", ""),
    ("EVENT_CLASS", "32X", ""),
    ("EVENT_TYPE", "32X", ""),
    ("CONVERSION_TYPE", "I", ""),
    ("LIVETIME", "D", "s"),
    ("DIFRSP0", "E", ""),
    ("DIFRSP1", "E", ""),
    ("DIFRSP2", "E", ""),
    ("DIFRSP3", "E", ""),
    ("DIFRSP4", "E", ""),
]
_NUMPY = {"E": ">f4", "D": ">f8", "J": ">i4", "I": ">i2", "3I": (">i2", (3,)), "32X": ">u4"}


def generate_ft1(path: Path, n_events: int, seed: int = 1) -> None:
    """Write a weekly-like P8R3 FT1 file (EVENTS + GTI) with ``n_events`` rows.

    Values are drawn so that the benchmark filter keeps about half the events: energy
    log-uniform 20 MeV–300 GeV, zenith uniform 0–115 deg, SOURCE bit set on 90 %.
    """
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    tstart, tstop = 600000000.0, 600000000.0 + 7 * 86400.0
    dtype = np.dtype([(name, _NUMPY[form]) for name, form, _ in _FT1_COLUMNS])
    rows = np.zeros(n_events, dtype=dtype)
    rows["ENERGY"] = 10 ** rng.uniform(np.log10(20.0), np.log10(3e5), n_events)
    rows["RA"] = rng.uniform(0.0, 360.0, n_events)
    rows["DEC"] = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n_events)))
    rows["L"] = rng.uniform(0.0, 360.0, n_events)
    rows["B"] = rng.uniform(-90.0, 90.0, n_events)
    rows["THETA"] = rng.uniform(0.0, 80.0, n_events)
    rows["PHI"] = rng.uniform(0.0, 360.0, n_events)
    rows["ZENITH_ANGLE"] = rng.uniform(0.0, 115.0, n_events)
    rows["EARTH_AZIMUTH_ANGLE"] = rng.uniform(0.0, 360.0, n_events)
    rows["TIME"] = np.sort(rng.uniform(tstart, tstop, n_events))
    rows["EVENT_ID"] = np.arange(n_events, dtype=np.int32)
    rows["RUN_ID"] = (rows["TIME"] // 5400).astype(np.int32)
    rows["RECON_VERSION"] = 0
    rows["CALIB_VERSION"] = 1
    source = rng.random(n_events) < 0.9
    rows["EVENT_CLASS"] = np.where(source, 128 | 256 | 2048, 2048 | 4).astype(np.uint32)
    psf = rng.integers(0, 4, n_events)
    rows["EVENT_TYPE"] = (
        (1 + (psf & 1)) | (4 << psf) | (64 << rng.integers(0, 4, n_events))
    ).astype(np.uint32)
    rows["CONVERSION_TYPE"] = psf & 1
    rows["LIVETIME"] = rng.uniform(0.0, 10.0, n_events)

    # GTI: 30-minute orbits-like pieces with gaps
    starts = np.arange(tstart, tstop, 5760.0)
    gti = np.zeros(len(starts), dtype=[("START", ">f8"), ("STOP", ">f8")])
    gti["START"] = starts
    gti["STOP"] = np.minimum(starts + 5000.0, tstop)

    time_keys = [
        ("TELESCOP", "GLAST"),
        ("INSTRUME", "LAT"),
        ("TSTART", tstart),
        ("TSTOP", tstop),
        ("MJDREFI", 51910),
        ("MJDREFF", 7.428703703703703e-4),
        ("TIMEUNIT", "s"),
        ("TIMEZERO", 0.0),
        ("TIMESYS", "TT"),
        ("TIMEREF", "LOCAL"),
    ]
    primary = fits.Header()
    primary["SIMPLE"] = True
    primary["BITPIX"] = 8
    primary["NAXIS"] = 0
    primary["EXTEND"] = True
    for key, value in time_keys:
        primary[key] = value
    primary["DATE-OBS"] = "2017-01-08T00:53:17.0000"
    primary["DATE-END"] = "2017-01-15T00:53:17.0000"

    cols = [fits.Column(name=n, format=f, unit=u or None) for n, f, u in _FT1_COLUMNS]
    ev = fits.BinTableHDU.from_columns(cols, nrows=1).header
    ev["NAXIS2"] = n_events
    ev["EXTNAME"] = "EVENTS"
    for key, value in time_keys:
        ev[key] = value
    ev["HDUCLASS"] = "OGIP"
    ev["HDUCLAS1"] = "EVENTS"
    ev["PASS_VER"] = "P8R3"
    ev["NDSKEYS"] = 2
    ev["DSTYP1"] = "BIT_MASK(EVENT_CLASS,128,P8R3)"
    ev["DSUNI1"] = "DIMENSIONLESS"
    ev["DSVAL1"] = "1:1"
    ev["DSTYP2"] = "TIME"
    ev["DSUNI2"] = "s"
    ev["DSVAL2"] = "TABLE"
    ev["DSREF2"] = ":GTI"

    gcols = [fits.Column(name=n, format="D", unit="s") for n in ("START", "STOP")]
    gh = fits.BinTableHDU.from_columns(gcols, nrows=1).header
    gh["NAXIS2"] = len(gti)
    gh["EXTNAME"] = "GTI"
    for key, value in time_keys:
        gh[key] = value
    gh["ONTIME"] = float(np.sum(gti["STOP"] - gti["START"]))

    def padded(data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % 2880)

    with path.open("wb") as out:
        for header, data in ((primary, b""), (ev, rows.tobytes()), (gh, gti.tobytes())):
            out.write(header.tostring().encode("ascii"))
            out.write(padded(data))


# --------------------------------------------------------------------------------------------
# gtselect

GTSELECT_PARAMS = {"emin": "100", "emax": "100000", "zmax": "90", "evclass": "128", "evtype": "3"}


def make_week(workdir: Path, args: argparse.Namespace) -> Path:
    """A weekly FT1 file with ``args.events`` rows (synth generator unless --generator private)."""
    if args.generator == "synth":
        from fermipipe.synth import generate_week

        ft1, _ft2 = generate_week(500, workdir / "synth", events=args.events)
        return ft1
    infile = workdir / "week.fits"
    generate_ft1(infile, args.events)
    return infile


def bench_gtselect(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    """fitscopy with gtselect's filter string versus ``python -m fermipipe.native gtselect``."""
    infile = make_week(workdir, args)
    size = infile.stat().st_size
    out_ref = workdir / "ref.fits"
    out_nat = workdir / "nat.fits"
    # Exactly the filter string gtselect builds for these parameters (spec 3.3)
    filt = (
        "((EVENT_CLASS&o200) != o0) && ((EVENT_TYPE&o3) != o0) && 100 < ENERGY && "
        "ENERGY <= 100000 && 0 < ZENITH_ANGLE && ZENITH_ANGLE <= 90 && gtifilter()"
    )
    reference = ["fitscopy", f"{infile}[EVENTS][{filt}]", str(out_ref)]
    native = [
        sys.executable,
        "-m",
        "fermipipe.native",
        "gtselect",
        f"infile={infile}",
        f"outfile={out_nat}",
        *(f"{k}={v}" for k, v in GTSELECT_PARAMS.items()),
    ]

    def clean() -> None:
        for p in (out_ref, out_nat):
            p.unlink(missing_ok=True)

    ref, nat = interleaved([("fitscopy", reference), ("native", native)], args.repeats, clean)
    # Same rows in both outputs (checked once, outside the timing)
    run_once(reference)
    run_once(native)
    _check_same_rows(out_ref, out_nat, infile)
    return report(f"gtselect ({args.events}-event week, {args.generator})", ref, nat, size)


def _check_same_rows(a: Path, b: Path, infile: Path | None = None) -> None:
    """Fail unless both outputs hold byte-identical EVENTS rows."""
    from astropy.io import fits

    with fits.open(a, memmap=True) as ha, fits.open(b, memmap=True) as hb:
        ra, rb = ha["EVENTS"].data, hb["EVENTS"].data
        same = len(ra) == len(rb) and np.asarray(ra).tobytes() == np.asarray(rb).tobytes()
        if not same:
            raise RuntimeError("native and fitscopy outputs differ")
        if infile is None:
            print(f"  rows: {len(ra)}, byte-identical in both outputs")
            return
        total = fits.getheader(infile, "EVENTS")["NAXIS2"]
        print(f"  rows selected: {len(ra)} of {total} ({len(ra) / total:.0%}), byte-identical")


# --------------------------------------------------------------------------------------------
# gtmktime

GTMKTIME_FILTER = "DATA_QUAL>0 && LAT_CONFIG==1"
GTMKTIME_TARGET = 0.5  # native wall time <= 0.5x fitscopy with gtmktime's gtifilter copy

_INPROCESS = """
import sys, time
from fermipipe.native import gtmktime
params = dict(arg.split("=", 1) for arg in sys.argv[1:])
t0 = time.perf_counter()
gtmktime.run(params)
print(time.perf_counter() - t0)
"""


def bench_gtmktime(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    """fitscopy ``evfile[EVENTS][gtifilter("gti")]`` versus ``python -m fermipipe.native gtmktime``.

    Input: a synthetic week (fermipipe.synth, ``--events`` rows, its ~20000-row FT2) passed
    through native gtselect with the gtselect benchmark's parameters; that selection is the
    gtmktime evfile. The reference is the copy cfitsio makes inside gtmktime: the event file
    filtered by ``gtifilter()`` on a file holding the new GTI (here: the native output, whose
    GTI extension is that GTI). Also prints the in-process time of ``gtmktime.run`` alone
    (without interpreter start-up and imports).
    """
    # Generated in a child process: a child's ru_maxrss starts from the parent's peak RSS
    # (vfork + exec keeps the old mm's high-water mark), so the parent must stay small.
    gen = (
        "import sys; from pathlib import Path; from fermipipe.synth import generate_week; "
        "print(*generate_week(500, Path(sys.argv[1]), events=int(sys.argv[2]), seed=1))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", gen, str(workdir), str(args.events)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    ft1, ft2 = (Path(p) for p in proc.stdout.split())
    evfile = workdir / "mktime_in.fits"
    run_once(
        [sys.executable, "-m", "fermipipe.native", "gtselect", f"infile={ft1}",
         f"outfile={evfile}", *(f"{k}={v}" for k, v in GTSELECT_PARAMS.items())]
    )  # fmt: skip
    size = evfile.stat().st_size
    out_nat = workdir / "mktime_nat.fits"
    out_ref = workdir / "mktime_ref.fits"
    gtifile = workdir / "mktime_gti.fits"
    params = [f"scfile={ft2}", f"filter={GTMKTIME_FILTER}", "roicut=no", f"evfile={evfile}"]
    native = [sys.executable, "-m", "fermipipe.native", "gtmktime", *params,
              f"outfile={out_nat}"]  # fmt: skip
    run_once([*native[:-1], f"outfile={gtifile}"])  # the GTI file for the reference
    reference = ["fitscopy", f'{evfile}[EVENTS][gtifilter("{gtifile}")]', str(out_ref)]

    def clean() -> None:
        for p in (out_ref, out_nat):
            p.unlink(missing_ok=True)

    ref, nat = interleaved([("fitscopy", reference), ("native", native)], args.repeats, clean)
    inproc = []
    for _ in range(args.repeats):
        clean()
        proc = subprocess.run(
            [sys.executable, "-c", _INPROCESS, *params, f"outfile={out_nat}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        inproc.append(float(proc.stdout.strip().splitlines()[-1]))
    run_once(reference)
    run_once(native)
    _check_same_rows(out_ref, out_nat)
    figures = report("gtmktime (gtselect output of the week, FT2 of the week)", ref, nat, size)
    run_median = statistics.median(inproc)
    print(f"  in-process gtmktime.run() median {run_median:.3f} s "
          f"= {run_median / ref.median:.2f} x fitscopy")  # fmt: skip
    verdict = "meets" if figures["time_ratio"] <= GTMKTIME_TARGET else "MISSES"
    print(f"  gtmktime target: native/fitscopy <= {GTMKTIME_TARGET} -> {verdict}")
    return {**figures, "run_ratio": run_median / ref.median}


# --------------------------------------------------------------------------------------------
# gtbin

GTBIN_PARAMS = {
    "algorithm": "CCUBE", "nxpix": "3600", "nypix": "1800", "binsz": "0.1", "proj": "AIT",
    "coordsys": "CEL", "xref": "0", "yref": "0", "axisrot": "0",
    "ebinalg": "LOG", "emin": "100", "emax": "100000", "enumbins": "1",
}  # fmt: skip


def bench_gtbin(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    """fitscopy of the ``--events`` week with gtselect's filter versus native gtbin CCUBE.

    The target of the gtbin issue: a whole ``python -m fermipipe.native gtbin`` process making
    an all-sky 3600×1800 AIT counts cube (0.1°) from a week of ``--events``/2 events takes at
    most the time fitscopy needs to copy the ``--events`` week through gtselect's filter,
    with a peak RSS of at most twice the gtbin input file. Both inputs come from
    fermipipe.synth (generated in a child, so that this process stays small).
    """
    gen = (
        "import sys; from pathlib import Path; from fermipipe.synth import generate_week; "
        "print(generate_week(500, Path(sys.argv[1]), events=int(sys.argv[2]), seed=int(sys.argv[3]))[0])"
    )
    files = []
    for sub, n, seed in (("bin_week", args.events, 1), ("bin_half", args.events // 2, 2)):
        proc = subprocess.run(
            [sys.executable, "-c", gen, str(workdir / sub), str(n), str(seed)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        files.append(Path(proc.stdout.split()[-1]))
    week, evfile = files
    size = evfile.stat().st_size
    out_ref = workdir / "bin_ref.fits"
    out_nat = workdir / "bin_nat.fits"
    filt = (
        "((EVENT_CLASS&o200) != o0) && ((EVENT_TYPE&o3) != o0) && 100 < ENERGY && "
        "ENERGY <= 100000 && 0 < ZENITH_ANGLE && ZENITH_ANGLE <= 90 && gtifilter()"
    )
    reference = ["fitscopy", f"{week}[EVENTS][{filt}]", str(out_ref)]
    native = [
        sys.executable, "-m", "fermipipe.native", "gtbin", f"evfile={evfile}",
        f"outfile={out_nat}", *(f"{k}={v}" for k, v in GTBIN_PARAMS.items()),
    ]  # fmt: skip

    def clean() -> None:
        for p in (out_ref, out_nat):
            p.unlink(missing_ok=True)

    ref, nat = interleaved([("fitscopy", reference), ("native", native)], args.repeats, clean)
    run_once(native)
    _check_cube(evfile, out_nat)
    return report(
        f"gtbin CCUBE 3600x1800 AIT, {args.events // 2} events (vs fitscopy of {args.events})",
        ref, nat, size,
    )  # fmt: skip


def _check_cube(evfile: Path, cube: Path) -> None:
    """The all-sky cube holds every event of [emin, emax) exactly once."""
    from astropy.io import fits

    with fits.open(evfile, memmap=True) as ev, fits.open(cube, memmap=True) as out:
        energy = ev["EVENTS"].data["ENERGY"].astype(np.float64)
        expected = int(np.sum((energy >= 100.0) & (energy < 100000.0)))
        total = int(out[0].data.sum(dtype=np.int64))
        shape = out[0].data.shape
    if total != expected or shape != (1, 1800, 3600):
        raise RuntimeError(f"gtbin cube holds {total} counts {shape}, expected {expected}")
    print(f"  cube {shape}: {total} counts = events with 100 <= E < 100000 MeV")


# --------------------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[Path, argparse.Namespace], dict[str, float]]] = {
    "gtselect": bench_gtselect,
    "gtmktime": bench_gtmktime,
    "gtbin": bench_gtbin,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--generator", choices=["synth", "private"], default="synth")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args(argv)
    if shutil.which("fitscopy") is None:
        print("fitscopy not found (Debian package libcfitsio-bin)", file=sys.stderr)
        return 2
    failed = False
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        CHILD_ENV.clear()
        CHILD_ENV.update(os.environ)
        CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        CHILD_ENV["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
        for tool in args.tools:
            figures = BENCHES[tool](Path(tmp), args)
            failed |= figures["time_ratio"] > 1.0 or figures["rss_ratio"] > 2.0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
