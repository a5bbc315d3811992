"""The whole mission chain on one node: generated full-size weeks through configs/mission.yaml.

    uv run python benchmarks/mission.py                 # 24 weeks × 2 M events (the issue's size)
    uv run python benchmarks/mission.py --weeks 2       # a quicker look at full size
    uv run python benchmarks/mission.py --quick         # 2 weeks × 50 k events, small CCUBE grid

Issue #13's benchmark, every figure measured in one run:

1. ``--weeks`` N + 1 weeks are generated with ``python -m fermipipe.synth`` (``--events``
   each, whole weeks; untimed, ``--workers`` generators at once, while the Prefect server
   starts). The N+1-th is held back.
   The spacecraft data are one mission FT2 (the weeks' SC_DATA rows in one file, its
   TSTART/TSTOP/DATE-OBS/DATE-END spanning them all, as a merged FSSC file has), as
   configs/mission.yaml expects (``common_files.scfile``; the pipeline slices it per week).
2. The yardstick: ``fitscopy 'week.fits[EVENTS][<filter>]'`` on each of the N weeks, one
   after the other, where the filter is the string native gtselect builds for the mission's
   gtselect parameters (benchmarks/native.py's yardstick, its ``run_once``).
   Before it (not with --quick), one untimed native gtltcube compiles the numba kernels
   into their on-disk cache if they are not there yet: a one-off cost of an installation.
3. The pipeline: ``python flows/fermi.py CONFIG --summary-json …`` (the real CLI, a child
   process) with a config made from configs/mission.yaml — its steps and merges unchanged
   (gtselect → gtmktime → gtbin CCUBE 3600×1800 0.1° AIT × 24 LOG bins and gtltcube
   nside 64 → image_sum and a gtltsum tree); ``engine: native``; ``resources.cores`` =
   ``--workers``; no post-processing (exposure and flux are not part of this benchmark);
   its RAM-disk work area in a private folder under /dev/shm, its products, work folder and
   cache store in the benchmark's folder. ``--quick`` alone shrinks the CCUBE grid.
   While it runs, a thread samples the resident memory of the whole process tree (sum of
   each process's RSS from /proc/PID/statm, every 0.2 s) and the bytes allocated under the
   work areas, the cache store and the products (an ``os.scandir`` walk, hard links counted
   once, every 0.5 s): sampled peaks, so a peak shorter than the interval can be missed.
4. Week N+1 is added (its FT1 into the input folder, the mission FT2 rewritten with its
   rows) and the same config run again: the summary must show only week N+1's steps run.
5. A full run over the N+1 weeks in a fresh cache and products folder (the first store is
   measured, then removed to make room, unless --keep); the data of its
   merged counts cube and livetime cube (every HDU's data bytes) must equal the incremental
   run's exactly.

All runs use one ``prefect server`` started here on loopback (tests/server_processes.py, as
benchmarks/scaling.py does): not in the pipeline's process tree, and not started per run.
Children run from compiled byte code kept in ~/.cache/fermipipe-benchmarks/pycache
(``PYTHONPYCACHEPREFIX``; the environment's PYTHONDONTWRITEBYTECODE would make every process
compile Prefect again), as an installed package does.

Reported: task-seconds per week by step (from the summaries: the per-file steps' and the
merges' task-seconds, their streamed folds and tree nodes included), the flow's wall (the
summary's, without the process start-up) and its three phases (before the first tool, the
files, after the last step), the
parallel efficiency task-seconds / (workers × flow wall), the peaks, the store's final size,
the same figures scaled linearly (× 934 / N) to the mission's 934 weeks — an extrapolation,
not a measurement — and the targets of the issue beside their figures, PASS or MISS.

Exit status: 0 when the runs succeeded and the two checks (only week N+1 ran; products
equal) hold, whatever the targets say; 1 otherwise. ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # server helpers

import native  # noqa: E402  (benchmarks/native.py: the fitscopy yardstick)
import server_processes as localserver  # noqa: E402
from exposure import yardstick as write_yardstick  # noqa: E402  (numpy write of N bytes)

from fermipipe.fits.dates import met_to_date  # noqa: E402
from fermipipe.fits.table import FitsFile, write_fits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
MISSION_CONFIG = REPO / "configs" / "mission.yaml"
MISSION_WEEKS = 934  # the ~934 weekly files of the mission (issue #13)
FIRST_WEEK = 500
MISSION_FT2 = "lat_spacecraft_mission.fits"
#: The children's byte-code cache (PYTHONPYCACHEPREFIX), kept between runs.
PYCACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "fermipipe-benchmarks"
    / "pycache"
)
RSS_INTERVAL = 0.2
DISK_INTERVAL = 0.5
#: ``--quick`` only: a 1° CCUBE grid instead of 0.1° (same 24 LOG energy bins).
QUICK_GRID = {"nxpix": "360", "nypix": "180", "binsz": "1"}

# Targets (issue #13, "Benchmark").
TARGET_YARDSTICK_RATIO = 2.5  # task-seconds per week ≤ 2.5 × fitscopy
TARGET_EFFICIENCY = 0.90
TARGET_DISK_INPUT_SHARE = 0.10  # peak disk ≤ final products + 10 % of the inputs
TARGET_RSS = 4e9  # bytes
TARGET_INCREMENTAL_WEEKS = 3.0  # incremental ≤ 3 × one week's task-seconds + final write


# ------------------------------------------------------------------------------- inputs


def start_generators(
    weeks: Sequence[int], events: int, out: Path, parallel: int
) -> list[subprocess.Popen[str]]:
    """``python -m fermipipe.synth`` for the weeks, ``parallel`` processes (not waited for)."""
    chunks = [weeks[i::parallel] for i in range(parallel) if weeks[i::parallel]]
    return [
        subprocess.Popen(
            [
                PY,
                "-m",
                "fermipipe.synth",
                "--weeks",
                ",".join(map(str, chunk)),
                "--events",
                str(events),
                "--out",
                str(out),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for chunk in chunks
    ]


def finish_generators(procs: Sequence[subprocess.Popen[str]]) -> dict[int, tuple[Path, Path]]:
    """Wait for the generators; week → (FT1, FT2), from their "week N: FT1 FT2" lines."""
    pairs: dict[int, tuple[Path, Path]] = {}
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"fermipipe.synth failed: {err.strip()}")
        for line in out.splitlines():
            week, ft1, ft2 = line.removeprefix("week ").replace(":", "", 1).split()
            pairs[int(week)] = (Path(ft1), Path(ft2))
    return pairs


def write_mission_ft2(parts: Sequence[Path], out: Path) -> Path:
    """One spacecraft file with the SC_DATA rows of ``parts`` (consecutive weeks), headers of
    the first with TSTART/TSTOP and DATE-OBS/DATE-END spanning all rows (a merged FT2)."""
    tables = [FitsFile(p).table("SC_DATA") for p in parts]
    rows = np.concatenate([t.rows for t in tables])
    t0, t1 = float(rows["START"][0]), float(rows["STOP"][-1])
    span = {"TSTART": t0, "TSTOP": t1, "DATE-OBS": met_to_date(t0), "DATE-END": met_to_date(t1)}
    with FitsFile(parts[0]) as first:
        primary = first.hdus[0].header.copy()
        header = first.hdu("SC_DATA").header.copy()
    for h in (primary, header):
        for key, value in span.items():
            if key in h:
                h[key] = value
    return write_fits(out, [(primary, b""), (header, rows)])


def gtselect_filter(config: dict[str, Any], ft1: Path) -> str:
    """The filter string native gtselect builds for the config's gtselect step on ``ft1``
    (spec 3.3): what fitscopy is given as the yardstick's row filter."""
    from fermipipe.native import gtselect
    from fermipipe.native.params import resolve

    command = next(s["command"] for s in config["steps"] if s["command"].startswith("gtselect"))
    params = dict(word.split("=", 1) for word in command.split()[1:])
    params.update(infile=str(ft1), outfile="unused.fits")
    p = resolve(gtselect.PARAMS, params, tool="gtselect")
    # The tool's own cut builder (private helpers: no public entry gives the string without
    # running the selection).
    return gtselect.build_cuts([gtselect._scan_input(str(ft1), "EVENTS")], p).filter


def warm_up_ltcube(config: dict[str, Any], ft1: Path, ft2: Path, scratch: Path) -> None:
    """One untimed native gtltcube with the config's parameters on the first week: compiles
    the numba kernels into their on-disk cache if they are not there yet (a one-off cost of
    an installation, not of a run; every run still pays loading them, ~3 s per process)."""
    command = next(s["command"] for s in config["steps"] if s["name"] == "ltcube")
    params = [
        w for w in command.split()[1:] if w.split("=")[0] not in ("evfile", "scfile", "outfile")
    ]
    out = scratch / "warm-up-ltcube.fits"
    native.run_once(
        [PY, "-m", "fermipipe.native", "gtltcube", f"evfile={ft1}", f"scfile={ft2}",
         f"outfile={out}", *params], [out],
    )  # fmt: skip
    out.unlink(missing_ok=True)


# ------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Layout:
    """Where one pipeline setup keeps its things (the config's paths)."""

    root: Path
    data: Path  # input.directory (weekly FT1 files + the mission FT2)
    ram: Path  # resources.ram_disk.path (private, under /dev/shm when there is one)
    work: Path  # output.workdir (the disk fallback)
    products: Path  # output.directory
    cache: Path  # cache.directory (the store is cache/store)

    @property
    def disk_roots(self) -> list[Path]:
        return [self.ram, self.work, self.products, self.cache]


def make_layout(root: Path, name: str, data: Path, shm: Path) -> Layout:
    return Layout(
        root=root,
        data=data,
        ram=shm / name,
        work=root / f"work-{name}",
        products=root / f"products-{name}",
        cache=root / f"cache-{name}",
    )


def mission_config(layout: Layout, workers: int, quick: bool) -> dict[str, Any]:
    """configs/mission.yaml's steps and merges with this benchmark's paths."""
    cfg = yaml.safe_load(MISSION_CONFIG.read_text())
    cfg.pop("post_processing", None)  # exposure and flux: not part of this benchmark
    cfg.pop("caldb", None)
    ram = dict(cfg["resources"].get("ram_disk", {}), path=str(layout.ram))
    cfg["resources"] = {**cfg["resources"], "cores": workers, "ram_disk": ram}
    cfg["input"]["directory"] = str(layout.data)
    cfg["common_files"] = {"scfile": str(layout.data / MISSION_FT2)}
    cfg["output"] = {"directory": str(layout.products), "workdir": str(layout.work)}
    cfg["cache"] = {"directory": str(layout.cache)}
    cfg["engine"] = "native"
    if quick:
        ccube = next(s for s in cfg["steps"] if s["name"] == "ccube")
        for key, value in QUICK_GRID.items():
            ccube["command"], n = re.subn(rf"\b{key}=\S+", f"{key}={value}", ccube["command"])
            if n != 1:
                raise SystemExit(f"configs/mission.yaml's ccube step has no single {key}=")
    return cfg


def write_config(layout: Layout, cfg: dict[str, Any], name: str) -> Path:
    path = layout.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ------------------------------------------------------------------------------- sampling


PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants (from /proc/PID/task/TID/children)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in Path(task.path, "children").read_text().split()]
    return out


def tree_rss(root: int) -> int:
    """Bytes resident in ``root``'s process tree now (sum over processes: shared pages
    count once per process, so this is an upper bound of the tree's own memory)."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


def allocated_bytes(roots: Sequence[Path]) -> int:
    """Bytes allocated to the files under ``roots`` (st_blocks; each inode once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    todo = [str(r) for r in roots]
    while todo:
        with contextlib.suppress(OSError), os.scandir(todo.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_blocks * 512
    return total


@dataclass
class Peaks:
    rss: int = 0
    disk: int = 0
    rss_samples: int = 0
    disk_samples: int = 0


@contextlib.contextmanager
def sampling(pid: int, roots: Sequence[Path]) -> Iterator[Peaks]:
    """Sample the tree's RSS every RSS_INTERVAL s and the disk every DISK_INTERVAL s."""
    peaks = Peaks()
    stop = threading.Event()

    def loop() -> None:
        next_disk = 0.0
        while not stop.is_set():
            peaks.rss = max(peaks.rss, tree_rss(pid))
            peaks.rss_samples += 1
            if time.monotonic() >= next_disk:
                peaks.disk = max(peaks.disk, allocated_bytes(roots))
                peaks.disk_samples += 1
                next_disk = time.monotonic() + DISK_INTERVAL
            stop.wait(RSS_INTERVAL)

    thread = threading.Thread(target=loop, name="sampler", daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One pipeline run: its summary and what was measured around it."""

    name: str
    summary: dict[str, Any]
    process_wall: float
    peaks: Peaks

    @property
    def flow_wall(self) -> float:
        return float(self.summary["wall_seconds"])

    def phases(self) -> tuple[float, float, float]:
        """The flow wall in three: before the first tool started (plan, slices, hashing the
        inputs), from then until the last per-file step ended (the files, with streamed
        merges), and after it (the merges' last steps, quick-looks, the summary)."""
        steps = [
            (float(r["started"]), float(r["started"]) + float(r["wall_seconds"]))
            for f in self.summary["per_file"]
            for r in f["steps"]
            if r.get("started")
        ]
        t0, t1 = float(self.summary["started"]), float(self.summary["finished"])
        if not steps:
            return t1 - t0, 0.0, 0.0
        first, last = min(a for a, _ in steps), max(b for _, b in steps)
        return first - t0, last - first, t1 - last

    def step_seconds(self) -> dict[str, float]:
        """Wall seconds of the per-file steps that ran a tool, by step."""
        out: dict[str, float] = {}
        for f in self.summary["per_file"]:
            for r in f["steps"]:
                if r["step"] not in f["cached_steps"] and not r.get("from_store"):
                    out[r["step"]] = out.get(r["step"], 0.0) + float(r["wall_seconds"])
        return out

    def merge_seconds(self) -> dict[str, float]:
        return {
            f"merge:{m['name']}": float(m["wall_seconds"])
            for m in self.summary["merges"]
            if m["status"] != "skipped"
        }

    def ran(self) -> set[tuple[str, str]]:
        """(file, step) of every per-file step that ran a tool."""
        return {
            (f["file"], r["step"])
            for f in self.summary["per_file"]
            for r in f["steps"]
            if r["step"] not in f["cached_steps"] and not r.get("from_store")
        }

    def merged(self) -> dict[str, Path]:
        return {k: Path(v) for k, v in self.summary["outputs"]["merged"].items()}


def run_pipeline(config: Path, name: str, env: dict[str, str], roots: Sequence[Path]) -> Run:
    """``python flows/fermi.py CONFIG --summary-json``, its tree's RSS and ``roots`` sampled."""
    summary = config.with_name(f"{name}.summary.json")
    log = config.with_name(f"{name}.log")
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [PY, str(REPO / "flows" / "fermi.py"), str(config), "--summary-json", str(summary)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        with sampling(proc.pid, roots) as peaks:
            code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0 or not summary.exists():
        raise SystemExit(f"run {name} failed ({code}); its output, {log}:\n"
                         f"{log.read_text()[-4000:]}")  # fmt: skip
    return Run(name, json.loads(summary.read_text()), wall, peaks)


def file_id_of(run: Run, ft1: Path) -> str:
    """The summary's file id of the input ``ft1``."""
    ids = [f["file"] for f in run.summary["per_file"] if Path(f["input"]).name == ft1.name]
    if len(ids) != 1:
        raise SystemExit(f"run {run.name}: {ft1.name} is not one of its files")
    return ids[0]


def data_digests(path: Path) -> list[str]:
    """sha256 of every HDU's data bytes (headers left out: dates and history differ)."""
    with FitsFile(path) as ff:
        return [hashlib.sha256(ff.data_bytes(h.index).tobytes()).hexdigest() for h in ff.hdus]


def fitscopy_yardstick(ft1s: Sequence[Path], filt: str, scratch: Path) -> list[float]:
    """Seconds of ``fitscopy week[EVENTS][filter] out`` for each week (run_once: wall)."""
    out = scratch / "fitscopy-out.fits"
    seconds = []
    for ft1 in ft1s:
        wall, _rss = native.run_once(["fitscopy", f"{ft1}[EVENTS][{filt}]", str(out)], [out])
        seconds.append(wall)
    out.unlink(missing_ok=True)
    return seconds


# ------------------------------------------------------------------------------- report


@dataclass
class Report:
    weeks: int
    events: int
    workers: int
    quick: bool
    input_bytes: int
    yardstick_seconds: list[float]
    first: Run
    incremental: Run
    full: Run
    store_bytes: int
    store_after_bytes: int  # after the incremental run
    products_bytes: int
    merged_bytes: int
    final_write_seconds: float
    new_week: str
    digests: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    # ---- figures

    @property
    def yardstick_per_week(self) -> float:
        return sum(self.yardstick_seconds) / len(self.yardstick_seconds)

    def first_seconds(self) -> dict[str, float]:
        return {**self.first.step_seconds(), **self.first.merge_seconds()}

    @property
    def chain_per_week(self) -> float:
        return sum(self.first.step_seconds().values()) / self.weeks

    @property
    def task_seconds(self) -> float:
        return sum(self.first_seconds().values())

    @property
    def efficiency(self) -> float:
        return self.task_seconds / (self.workers * self.first.flow_wall)

    @property
    def incremental_seconds(self) -> float:
        inc = self.incremental
        return sum(inc.step_seconds().values()) + sum(inc.merge_seconds().values())

    def ran_by_file(self) -> dict[str, list[str]]:
        """The incremental run's per-file steps that ran a tool, by file (step order)."""
        ran = self.incremental.ran()
        return {
            f["file"]: [r["step"] for r in f["steps"] if (f["file"], r["step"]) in ran]
            for f in self.incremental.summary["per_file"]
            if any(file == f["file"] for file, _ in ran)
        }

    @property
    def only_new_week_ran(self) -> bool:
        ran = self.incremental.ran()
        return bool(ran) and {f for f, _ in ran} == {self.new_week}

    @property
    def products_equal(self) -> bool:
        inc, full = self.digests["incremental"], self.digests["full"]
        return bool(inc) and inc.keys() == full.keys() and all(inc[k] == full[k] for k in inc)

    def targets(self) -> list[dict[str, Any]]:
        disk_limit = self.products_bytes + TARGET_DISK_INPUT_SHARE * self.input_bytes
        inc_limit = TARGET_INCREMENTAL_WEEKS * self.chain_per_week + self.final_write_seconds
        rows = [
            ("task-seconds per week / fitscopy per week",
             self.chain_per_week / self.yardstick_per_week, TARGET_YARDSTICK_RATIO, "x"),
            ("parallel efficiency", self.efficiency, TARGET_EFFICIENCY, "%"),
            ("peak disk (GB)", self.first.peaks.disk / 1e9, disk_limit / 1e9, "GB"),
            ("peak RSS (GB)", self.first.peaks.rss / 1e9, TARGET_RSS / 1e9, "GB"),
            ("incremental week task-seconds", self.incremental_seconds, inc_limit, "s"),
        ]  # fmt: skip
        out = []
        for name, value, limit, unit in rows:
            ok = value >= limit if unit == "%" else value <= limit
            out.append({"target": name, "value": value, "limit": limit, "unit": unit,
                        "pass": ok})  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        scale = MISSION_WEEKS / self.weeks
        return {
            "weeks": self.weeks,
            "events_per_week": self.events,
            "workers": self.workers,
            "quick": self.quick,
            "input_bytes": self.input_bytes,
            "yardstick_seconds_per_week": self.yardstick_per_week,
            "yardstick_seconds": self.yardstick_seconds,
            "seconds_per_week_by_step": {
                k: v / self.weeks for k, v in self.first_seconds().items()
            },
            "chain_seconds_per_week": self.chain_per_week,
            "task_seconds": self.task_seconds,
            "flow_wall": self.first.flow_wall,
            "flow_phases": dict(
                zip(("before", "files", "after"), self.first.phases(), strict=True)
            ),
            "process_wall": self.first.process_wall,
            "parallel_efficiency": self.efficiency,
            "peak_rss_bytes": self.first.peaks.rss,
            "peak_disk_bytes": self.first.peaks.disk,
            "samples": {"rss": self.first.peaks.rss_samples, "disk": self.first.peaks.disk_samples},
            "store_bytes": self.store_bytes,
            "store_bytes_after_incremental": self.store_after_bytes,
            "products_bytes": self.products_bytes,
            "merged_bytes": self.merged_bytes,
            "final_write_seconds": self.final_write_seconds,
            "extrapolated_934": {
                "note": f"linear: the {self.weeks}-week figures x {MISSION_WEEKS}/{self.weeks}",
                "task_seconds": self.task_seconds * scale,
                "flow_wall": self.first.flow_wall * scale,
                "yardstick_seconds": sum(self.yardstick_seconds) * scale,
                "store_bytes": self.store_bytes * scale,
                "peak_disk_bytes": self.first.peaks.disk * scale,
            },
            "incremental": {
                "new_week": self.new_week,
                "ran": self.ran_by_file(),
                "seconds_by_step": {
                    **self.incremental.step_seconds(),
                    **self.incremental.merge_seconds(),
                },
                "task_seconds": self.incremental_seconds,
                "flow_wall": self.incremental.flow_wall,
                "process_wall": self.incremental.process_wall,
                "merge_modes": {m["name"]: m["mode"] for m in self.incremental.summary["merges"]},
                "files_cached": self.incremental.summary["files"]["cached"],
                "files_total": self.incremental.summary["files"]["total"],
                "peak_rss_bytes": self.incremental.peaks.rss,
                "peak_disk_bytes": self.incremental.peaks.disk,
                "only_new_week_ran": self.only_new_week_ran,
            },
            "products_equal": self.products_equal,
            "digests": self.digests,
            "targets": self.targets(),
        }

    def text(self) -> str:
        d = self.to_dict()
        x = d["extrapolated_934"]
        gb = 1e9
        grid = "1° (--quick: NOT the mission grid)" if self.quick else "0.1° 3600×1800"
        lines = [
            f"== mission chain: {self.weeks} generated weeks × {self.events:,} events "
            f"({self.input_bytes / gb:.2f} GB of FT1 + mission FT2), CCUBE {grid} AIT × 24 LOG "
            f"bins, gtltcube nside 64; {self.workers} workers, native engine",
            "",
            f"{'step':<16} {'s/week':>8} {'total s':>9}",
        ]
        for step, sec in self.first_seconds().items():
            lines.append(f"{step:<16} {sec / self.weeks:8.2f} {sec:9.1f}")
        lines += [
            f"{'chain (4 steps)':<16} {self.chain_per_week:8.2f} "
            f"{self.chain_per_week * self.weeks:9.1f}",
            f"{'all tasks':<16} {self.task_seconds / self.weeks:8.2f} {self.task_seconds:9.1f}",
            f"{'fitscopy':<16} {self.yardstick_per_week:8.2f} {sum(self.yardstick_seconds):9.1f}"
            "   (yardstick: each week with gtselect's filter, same run)",
            "",
            f"flow wall {self.first.flow_wall:.1f} s (process {self.first.process_wall:.1f} s); "
            f"parallel efficiency {self.efficiency:.1%} = {self.task_seconds:.1f} task-s / "
            f"({self.workers} × {self.first.flow_wall:.1f} s)",
            "  flow wall = before the first tool {:.1f} s + the files {:.1f} s + after the last "
            "step {:.1f} s".format(*self.first.phases()),
            f"peak RSS of the process tree {d['peak_rss_bytes'] / gb:.2f} GB "
            f"(sampled every {RSS_INTERVAL} s, {d['samples']['rss']} samples)",
            f"peak disk (work areas + cache store + products) {d['peak_disk_bytes'] / gb:.2f} GB "
            f"(sampled every {DISK_INTERVAL} s, {d['samples']['disk']} samples)",
            f"final: store {self.store_bytes / gb:.2f} GB, products folder "
            f"{self.products_bytes / gb:.2f} GB (merged products {self.merged_bytes / gb:.2f} GB); "
            f"the store after the incremental run: {self.store_after_bytes / gb:.2f} GB",
            "",
            f"EXTRAPOLATION to {MISSION_WEEKS} weeks ({x['note']}; not measured): "
            f"task-seconds {x['task_seconds']:,.0f}, flow wall at {self.workers} workers "
            f"{x['flow_wall']:,.0f} s, fitscopy {x['yardstick_seconds']:,.0f} s, store "
            f"{x['store_bytes'] / gb:,.1f} GB, peak disk {x['peak_disk_bytes'] / gb:,.1f} GB; "
            "peak RSS not scaled (a per-process peak, not a per-week sum)",
            "",
        ]
        inc = d["incremental"]
        lines += [
            f"incremental week {self.new_week}: task-seconds {inc['task_seconds']:.1f} "
            + "("
            + ", ".join(f"{k} {v:.2f}" for k, v in inc["seconds_by_step"].items())
            + "), "
            f"flow wall {inc['flow_wall']:.1f} s (process {inc['process_wall']:.1f} s); "
            f"merges {inc['merge_modes']}; peak RSS {inc['peak_rss_bytes'] / gb:.2f} GB, peak "
            f"disk {inc['peak_disk_bytes'] / gb:.2f} GB",
            f"  only week {self.new_week}'s steps ran: {'yes' if self.only_new_week_ran else 'NO'} "
            f"({inc['files_cached']} of {inc['files_total']} files fully cached; steps run: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in inc["ran"].items())
            + ")",
            f"  merged products equal a full rerun's (data of every HDU, sha256): "
            f"{'yes' if self.products_equal else 'NO'}",
            "",
            "targets (issue #13):",
        ]
        for t in d["targets"]:
            if t["unit"] == "%":
                fig, lim = f"{t['value']:.1%}", f">= {t['limit']:.0%}"
            elif t["unit"] == "x":
                fig, lim = f"{t['value']:.2f}x", f"<= {t['limit']:.1f}x"
            else:
                fig, lim = f"{t['value']:.2f} {t['unit']}", f"<= {t['limit']:.2f} {t['unit']}"
            lines.append(
                f"  {t['target']:<44} {fig:>12}  {lim:<16} {'PASS' if t['pass'] else 'MISS'}"
            )
        lines.append(
            "  (peak disk limit: final products folder + 10 % of the inputs; incremental limit: "
            f"3 × {self.chain_per_week:.2f} s + {self.final_write_seconds:.2f} s to write the "
            f"merged products' {self.merged_bytes / gb:.2f} GB with numpy)"
        )
        return "\n".join(lines)


# ------------------------------------------------------------------------------- main


_T0 = time.perf_counter()


def say(text: str) -> None:
    """A progress line with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {text}", flush=True)


def benchmark(args: argparse.Namespace, root: Path, shm: Path) -> Report:
    weeks = list(range(FIRST_WEEK, FIRST_WEEK + args.weeks + 1))
    generators = start_generators(weeks, args.events, root / "generated", args.workers)
    home = root / "prefect-home"
    home.mkdir()
    # The server starts while the weeks are generated; nothing is timed before both are done.
    with localserver.prefect_server(
        home, settings={"PREFECT_LOGGING_LEVEL": "WARNING"}, timeout=180
    ) as env:
        say("prefect server up")
        pairs = finish_generators(generators)
        say(f"generated {len(weeks)} weeks × {args.events:,} events")
        ft1s = [pairs[w][0] for w in weeks]
        ft2s = [pairs[w][1] for w in weeks]
        data = root / "data"
        data.mkdir()
        for ft1 in ft1s[:-1]:
            os.link(ft1, data / ft1.name)
        write_mission_ft2(ft2s[:-1], data / MISSION_FT2)
        input_bytes = sum(p.stat().st_size for p in data.iterdir())

        inc = make_layout(root, "mission", data, shm)
        full = make_layout(root, "full", data, shm)
        cfg = mission_config(inc, args.workers, args.quick)
        config = write_config(inc, cfg, "mission")
        full_config = write_config(full, mission_config(full, args.workers, args.quick), "full")
        if not args.quick:
            warm_up_ltcube(cfg, ft1s[0], ft2s[0], root)
            say("gtltcube warm-up done")

        filt = gtselect_filter(cfg, ft1s[0])
        yard = fitscopy_yardstick(ft1s[:-1], filt, root)
        say(f"fitscopy yardstick: {sum(yard) / len(yard):.2f} s per week ({filt})")

        first = run_pipeline(config, "first", env, inc.disk_roots)
        say(f"first run: flow wall {first.flow_wall:.1f} s, process {first.process_wall:.1f} s")
        store_bytes = allocated_bytes([inc.cache])
        products_bytes = allocated_bytes([inc.products])
        merged_bytes = sum(p.stat().st_size for p in first.merged().values())

        os.link(ft1s[-1], data / ft1s[-1].name)  # week N+1 arrives; the mission FT2 grows
        write_mission_ft2(ft2s, data / MISSION_FT2)
        incremental = run_pipeline(config, "incremental", env, inc.disk_roots)
        say(
            f"incremental run: flow wall {incremental.flow_wall:.1f} s, process "
            f"{incremental.process_wall:.1f} s"
        )
        store_after_bytes = allocated_bytes([inc.cache])
        if not args.keep:  # measured: room for the full rerun's store (~0.6 GB a week)
            shutil.rmtree(inc.cache)
        fresh = run_pipeline(full_config, "full", env, full.disk_roots)
        say(f"full rerun: flow wall {fresh.flow_wall:.1f} s, process {fresh.process_wall:.1f} s")

    write_s = write_yardstick(merged_bytes, inc.products)
    digests = {
        run.name: {k: data_digests(p) for k, p in sorted(run.merged().items())}
        for run in (incremental, fresh)
    }
    return Report(
        weeks=args.weeks,
        events=args.events,
        workers=args.workers,
        quick=args.quick,
        input_bytes=input_bytes,
        yardstick_seconds=yard,
        first=first,
        incremental=incremental,
        full=fresh,
        store_bytes=store_bytes,
        store_after_bytes=store_after_bytes,
        products_bytes=products_bytes,
        merged_bytes=merged_bytes,
        final_write_seconds=write_s,
        new_week=file_id_of(incremental, ft1s[-1]),
        digests=digests,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--weeks", type=int, help="weeks of the first run (default 24; quick 2)")
    p.add_argument("--events", type=int, help="events per week (default 2,000,000; quick 50,000)")
    p.add_argument("--workers", type=int, default=2, help="resources.cores of the runs")
    p.add_argument("--quick", action="store_true",
                   help="2 weeks × 50 k events and a 1° CCUBE grid (a smoke test, not the "
                   "issue's figures)")  # fmt: skip
    p.add_argument("--keep", type=Path, help="work in this folder and keep it")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    args.weeks = args.weeks or (2 if args.quick else 24)
    args.events = args.events or (50_000 if args.quick else 2_000_000)
    if args.weeks < 1 or args.events < 1 or args.workers < 1:
        p.error("--weeks, --events and --workers must be at least 1")
    if shutil.which("fitscopy") is None:
        print("fitscopy not found (Debian package libcfitsio-bin)", file=sys.stderr)
        return 2

    with contextlib.ExitStack() as stack:
        if args.keep:
            root = args.keep.resolve()
            root.mkdir(parents=True, exist_ok=False)
        else:
            root = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="fermipipe-mission-"))
            )
        shm_parent = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
        shm = Path(tempfile.mkdtemp(prefix="fermipipe-mission-bench-", dir=shm_parent))
        # Children run as in an installation, from compiled byte code (benchmarks/native.py
        # says why), kept in one cache all of them share across benchmark runs (compiling
        # Prefect alone takes ~20 s of a busy machine); nothing goes into the repository
        # or the venv.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
        stack.callback(shutil.rmtree, shm, True)
        report = benchmark(args, root, shm)
        print()
        print(report.text())
        if args.json:
            args.json.write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.only_new_week_ran and report.products_equal else 1


if __name__ == "__main__":
    sys.exit(main())
