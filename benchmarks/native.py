"""Native tools as whole processes versus the issue's yardstick, fitscopy, on one week.

Run: ``uv run python benchmarks/native.py [--tools gtselect,gtmktime,gtbin] [--repeats 5]
[--events 2000000] [--workdir DIR]``

The issue defines every speed target against one yardstick: the time of the whole process
``fitscopy 'week.fits[EVENTS][<gtselect filter>]' out.fits`` on a generated week of
``--events`` events (2M ≈ 196 MB), where the filter is exactly the string gtselect builds
for :data:`GTSELECT_PARAMS` (spec 3.3). Targets, on medians of ``--repeats`` runs:

* ``python -m fermipipe.native gtselect`` on the week: ≤ 1.0 × fitscopy;
* ``python -m fermipipe.native gtmktime`` on that selection (~45 % of the events) with the
  week's FT2: ≤ 0.5 × fitscopy;
* ``python -m fermipipe.native gtbin`` (all-sky 3600×1800 AIT CCUBE, 0.1°) on the gtmktime
  output: ≤ 1.0 × fitscopy;
* each: peak RSS ≤ 2 × the tool's input event file.

Procedure: the week (FT1 + FT2) is generated once with ``fermipipe.synth`` in a child
process; the gtmktime and gtbin inputs are made once by the native tools (untimed). Then
every command — fitscopy and the selected tools — runs once untimed (warm-up: page cache and
byte-code), and ``--repeats`` rounds run them in turn (fitscopy, gtselect, gtmktime, gtbin,
fitscopy, …) so load changes on the shared machine hit all alike. Wall time and the child's
peak RSS come from ``/usr/bin/time``.

Byte code: the environment sets ``PYTHONDONTWRITEBYTECODE=1``, under which every native run
would recompile numpy and fermipipe first (~0.4 s). Children therefore run as in a normal
installation — ``PYTHONDONTWRITEBYTECODE`` removed and a private ``PYTHONPYCACHEPREFIX`` in
the work directory (nothing written into the repository or the venv) — and the warm-up run
fills that cache before any timing.

Outputs are checked outside the timing: gtselect's EVENTS rows byte-identical to fitscopy's,
gtmktime's rows identical to ``fitscopy evfile[EVENTS][gtifilter("<its GTI>")]``, and the
cube holding every event of [emin, emax).
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("gtselect", "gtmktime", "gtbin")

GTSELECT_PARAMS = {"emin": "100", "emax": "100000", "zmax": "90", "evclass": "128", "evtype": "3"}
#: The filter string gtselect builds for GTSELECT_PARAMS on a weekly file (spec 3.3); the
#: yardstick copies the week through it with fitscopy.
GTSELECT_FILTER = (
    "((EVENT_CLASS&o200) != o0) && ((EVENT_TYPE&o3) != o0) && 100 < ENERGY && "
    "ENERGY <= 100000 && 0 < ZENITH_ANGLE && ZENITH_ANGLE <= 90 && gtifilter()"
)
GTMKTIME_FILTER = "DATA_QUAL>0 && LAT_CONFIG==1"
GTBIN_PARAMS = {
    "algorithm": "CCUBE", "nxpix": "3600", "nypix": "1800", "binsz": "0.1", "proj": "AIT",
    "coordsys": "CEL", "xref": "0", "yref": "0", "axisrot": "0",
    "ebinalg": "LOG", "emin": "100", "emax": "100000", "enumbins": "1",
}  # fmt: skip
#: Time targets: native median / fitscopy median.
TIME_TARGET = {"gtselect": 1.0, "gtmktime": 0.5, "gtbin": 1.0}
RSS_TARGET = 2.0  # peak RSS / input event file size

CHILD_ENV: dict[str, str] = {}


@dataclass
class Timing:
    """Wall times (s) and peak RSS (bytes) of repeated runs of one command."""

    label: str
    argv: list[str]
    seconds: list[float] = field(default_factory=list)
    max_rss: list[int] = field(default_factory=list)
    input_bytes: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_rss(self) -> int:
        return max(self.max_rss)


def run_once(argv: Sequence[str], outputs: Sequence[Path] = ()) -> tuple[float, int]:
    """Run ``argv`` as a child; return (wall seconds, peak RSS bytes). Fails loudly.

    ``outputs`` are deleted first (every run writes a fresh file). The peak RSS comes from
    ``/usr/bin/time -f %M``: ``ru_maxrss`` of a direct child would start from this process's
    high-water mark (fork + exec keeps it).
    """
    for p in outputs:
        p.unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv],
            cwd=REPO,
            env=CHILD_ENV or None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}): {proc.stderr.strip()}")
        kib = int(Path(rss.name).read_text().split()[-1])
    return elapsed, kib * 1024


def native(tool: str, *params: str) -> list[str]:
    return [sys.executable, "-m", "fermipipe.native", tool, *params]


def child_python(code: str, *args: str) -> str:
    """Run Python code in a child (keeps numpy/astropy work out of this process)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, check=True, env=CHILD_ENV or None, cwd=REPO,
    )  # fmt: skip
    return proc.stdout


# --------------------------------------------------------------------------------------------
# Inputs


def make_week(workdir: Path, events: int) -> tuple[Path, Path]:
    """The synthetic week (FT1, FT2), generated once per work directory."""
    code = (
        "import sys; from pathlib import Path; from fermipipe.synth import generate_week; "
        "print(*generate_week(500, Path(sys.argv[1]), events=int(sys.argv[2]), seed=1))"
    )
    stamp = workdir / f"week-{events}.txt"
    if stamp.exists():
        ft1, ft2 = (Path(p) for p in stamp.read_text().split())
        if ft1.exists() and ft2.exists():
            return ft1, ft2
    t0 = time.perf_counter()
    out = child_python(code, str(workdir / f"week-{events}"), str(events))
    stamp.write_text(out)
    ft1, ft2 = (Path(p) for p in out.split())
    print(f"generated the week in {time.perf_counter() - t0:.0f} s: {ft1.name} "
          f"({ft1.stat().st_size / 1e6:.1f} MB), {ft2.name}")  # fmt: skip
    return ft1, ft2


# --------------------------------------------------------------------------------------------
# Checks (outside the timing; astropy is imported in children only)

_SAME_ROWS = """
import sys
import numpy as np
from fermipipe.fits.table import open_table
a, b = (open_table(p, "EVENTS") for p in sys.argv[1:3])
same = a.nrows == b.nrows and np.asarray(a.rows).tobytes() == np.asarray(b.rows).tobytes()
print(int(same), a.nrows)
"""

_CUBE = """
import sys
import numpy as np
from fermipipe.fits.table import FitsFile, open_table
ev = open_table(sys.argv[1], "EVENTS")
energy = ev.column("ENERGY").astype(np.float64)
expected = int(np.sum((energy >= 100.0) & (energy < 100000.0)))
ff = FitsFile(sys.argv[2])
h = ff.hdus[0].header
shape = tuple(int(h[f"NAXIS{i}"]) for i in range(h["NAXIS"], 0, -1))
types = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
data = np.frombuffer(ff.data_bytes(0).tobytes(), dtype=types[int(h["BITPIX"])])
print(int(data.sum(dtype=np.float64)), expected, *shape)
"""


def check_same_rows(a: Path, b: Path, what: str) -> None:
    same, n = child_python(_SAME_ROWS, str(a), str(b)).split()
    if same != "1":
        raise RuntimeError(f"{what}: native and fitscopy outputs differ")
    print(f"  check {what}: {n} rows, byte-identical to fitscopy's")


def check_cube(evfile: Path, cube: Path) -> None:
    total, expected, *shape = (int(x) for x in child_python(_CUBE, str(evfile), str(cube)).split())
    if total != expected or tuple(shape) != (1, 1800, 3600):
        raise RuntimeError(f"gtbin cube holds {total} counts {shape}, expected {expected}")
    print(f"  check gtbin: cube {tuple(shape)} holds {total} counts = events in [100, 1e5) MeV")


# --------------------------------------------------------------------------------------------


def run_benchmark(workdir: Path, tools: Sequence[str], repeats: int, events: int) -> bool:
    """Prepare, time, check and print the summary; True when every target is met."""
    ft1, ft2 = make_week(workdir, events)
    week_bytes = ft1.stat().st_size
    sel = workdir / "selected.fits"  # gtmktime's input
    mkt = workdir / "mktime.fits"  # gtbin's input
    gtsel_params = [f"{k}={v}" for k, v in GTSELECT_PARAMS.items()]
    mkt_params = [f"scfile={ft2}", f"filter={GTMKTIME_FILTER}", "roicut=no", f"evfile={sel}"]
    if "gtmktime" in tools or "gtbin" in tools:
        run_once(native("gtselect", f"infile={ft1}", f"outfile={sel}", *gtsel_params))
    if "gtbin" in tools:
        run_once(native("gtmktime", *mkt_params, f"outfile={mkt}"))

    out = {name: workdir / f"out_{name}.fits" for name in ("fitscopy", *TOOLS)}
    commands: dict[str, Timing] = {
        "fitscopy": Timing(
            "fitscopy", ["fitscopy", f"{ft1}[EVENTS][{GTSELECT_FILTER}]", str(out["fitscopy"])],
            input_bytes=week_bytes,
        ),
        "gtselect": Timing(
            "gtselect",
            native("gtselect", f"infile={ft1}", f"outfile={out['gtselect']}", *gtsel_params),
            input_bytes=week_bytes,
        ),
        "gtmktime": Timing(
            "gtmktime", native("gtmktime", *mkt_params, f"outfile={out['gtmktime']}"),
        ),
        "gtbin": Timing(
            "gtbin",
            native("gtbin", f"evfile={mkt}", f"outfile={out['gtbin']}",
                   *(f"{k}={v}" for k, v in GTBIN_PARAMS.items())),
        ),
    }  # fmt: skip
    if sel.exists():
        commands["gtmktime"].input_bytes = sel.stat().st_size
    if mkt.exists():
        commands["gtbin"].input_bytes = mkt.stat().st_size
    order = ["fitscopy", *(t for t in TOOLS if t in tools)]

    startup = Timing("python -c 'import numpy'", [sys.executable, "-c", "import numpy"])
    print(f"warm-up run of every command (byte-code cache {CHILD_ENV['PYTHONPYCACHEPREFIX']})")
    for name in order:
        run_once(commands[name].argv, [out[name]])
    run_once(startup.argv)
    for r in range(repeats):
        for name in order:
            t = commands[name]
            elapsed, peak = run_once(t.argv, [out[name]])
            t.seconds.append(elapsed)
            t.max_rss.append(peak)
        elapsed, peak = run_once(startup.argv)
        startup.seconds.append(elapsed)
        startup.max_rss.append(peak)
        print(f"  round {r + 1}: " + "  ".join(
            f"{n} {commands[n].seconds[-1]:.2f}s" for n in order))  # fmt: skip

    # output checks (untimed)
    if "gtselect" in tools:
        check_same_rows(out["fitscopy"], out["gtselect"], "gtselect")
    if "gtmktime" in tools:
        ref = workdir / "mktime_ref.fits"
        run_once(["fitscopy", f'{sel}[EVENTS][gtifilter("{out["gtmktime"]}")]', str(ref)], [ref])
        check_same_rows(ref, out["gtmktime"], "gtmktime")
    if "gtbin" in tools:
        check_cube(mkt, out["gtbin"])

    # summary
    yard = commands["fitscopy"]
    print(f"\n== {events}-event week ({week_bytes / 1e6:.1f} MB), {repeats} rounds, medians; "
          f"yardstick = fitscopy of the week with gtselect's filter")  # fmt: skip
    head = f"{'command':<10} {'median s':>9} {'runs':<32} {'peak RSS':>9} {'input':>9}"
    print(head + f" {'time/fitscopy':>14} {'RSS/input':>10}  result")
    ok = True
    for name in order:
        t = commands[name]
        runs = " ".join(f"{s:.2f}" for s in t.seconds)
        line = (f"{name:<10} {t.median:9.2f} {runs:<32} {t.peak_rss / 1e6:7.0f}MB "
                f"{t.input_bytes / 1e6:7.0f}MB")  # fmt: skip
        if name == "fitscopy":
            print(line)
            continue
        ratio = t.median / yard.median
        rss = t.peak_rss / t.input_bytes
        good = ratio <= TIME_TARGET[name] and rss <= RSS_TARGET
        ok &= good
        verdict = "PASS" if good else "FAIL"
        print(f"{line} {ratio:6.2f} (<={TIME_TARGET[name]:.1f}) {rss:5.2f} (<=2)  {verdict}")
    print(f"(interpreter + numpy start-up alone: median {startup.median:.2f} s = "
          f"{startup.median / yard.median:.2f} x fitscopy)")  # fmt: skip
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tools", nargs="+", default=[",".join(TOOLS)],
        help="tools to time, comma- or space-separated (default: all)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument(
        "--workdir", type=Path, default=None,
        help="keep the generated week and outputs here (reused by later runs); default: a "
        "temporary directory",
    )  # fmt: skip
    args = parser.parse_args(argv)
    tools = [t for item in args.tools for t in item.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tools {unknown} (have {', '.join(TOOLS)})")
    if shutil.which("fitscopy") is None:
        print("fitscopy not found (Debian package libcfitsio-bin)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir if args.workdir is not None else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        CHILD_ENV.clear()
        CHILD_ENV.update(os.environ)
        CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        CHILD_ENV["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
        ok = run_benchmark(workdir, tools, args.repeats, args.events)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
