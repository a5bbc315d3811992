"""The staging area: a per-run work folder on the RAM disk (or on disk as a fallback).

Lifecycle, owned by the flow's work subflow (and, for node-local chains on a Dask cluster,
by each chain on its worker's node):
1. :func:`cleanup_orphans` removes folders left by runs that were killed (their owner process
   is gone), so a crash never leaks RAM-disk memory for long; tool process groups still
   running there are killed first (:func:`fermipipe.tool_groups.kill_leftover_groups`).
2. :func:`choose_workdir` checks ``MemAvailable`` and the free space of the RAM-disk path
   against the estimated need and falls back to a disk folder, with a reason, when either is
   short.
3. :class:`StagingArea` creates the folder with an owner marker and removes it on exit —
   success, failure, Ctrl-C or cancellation — unless asked to keep it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fermipipe.fits.writing import atomic_copy, pid_alive
from fermipipe.tool_groups import kill_leftover_groups

MARKER = ".fermipipe-owner.json"
PREFIX = "fermipipe-"
GIB = 1024**3


def mem_available() -> int:
    """Bytes of ``MemAvailable`` from /proc/meminfo (0 if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def free_space(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


@dataclass(frozen=True)
class WorkdirChoice:
    root: Path
    on_ram_disk: bool
    reason: str  # why this root was chosen (logged; a warning when falling back)


def choose_workdir(
    *,
    ram_disk_enabled: bool,
    ram_disk_path: Path | None,
    min_ram_gb: float,
    need_bytes: int,
    fallback: Path,
) -> WorkdirChoice:
    """Pick the RAM disk when it is enabled and has room, else the disk fallback."""
    if not ram_disk_enabled or ram_disk_path is None:
        return WorkdirChoice(fallback, False, "RAM disk disabled in config")
    avail = mem_available()
    space = free_space(ram_disk_path)
    want_mem = max(int(min_ram_gb * GIB), need_bytes)
    if space < need_bytes:
        return WorkdirChoice(
            fallback,
            False,
            f"RAM disk skipped: {ram_disk_path} has {space / GIB:.1f} GiB free < needed "
            f"{need_bytes / GIB:.1f} GiB; using {fallback}",
        )
    if avail < want_mem:
        return WorkdirChoice(
            fallback,
            False,
            f"RAM disk skipped: MemAvailable {avail / GIB:.1f} GiB < needed "
            f"{want_mem / GIB:.1f} GiB; using {fallback}",
        )
    return WorkdirChoice(Path(ram_disk_path), True, f"RAM disk {ram_disk_path}")


def cleanup_orphans(root: Path) -> list[Path]:
    """Remove staging folders under ``root`` whose owner process on this host is gone
    (folders kept with ``--keep-intermediate`` are the user's and stay)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    host = socket.gethostname()
    for folder in root.glob(f"{PREFIX}*"):
        marker = folder / MARKER
        try:
            owner = json.loads(marker.read_text())
        except (OSError, ValueError):
            # A folder without a readable marker that is older than a minute was left by a
            # run killed while creating it.
            try:
                if time.time() - folder.stat().st_mtime < 60:
                    continue
            except OSError:
                continue
            owner = {"host": host, "pid": -1}
        if owner.get("kept") or owner.get("host") != host or pid_alive(int(owner.get("pid", -1))):
            continue  # kept on request (--keep-intermediate), another host's, or in use
        # Its tools may outlive it (the reaper was killed too): they would keep writing
        # into the folder being removed, so their process groups go first.
        kill_leftover_groups(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class StagingArea:
    """A run's private work folder; removed on exit unless ``keep``."""

    def __init__(
        self, root: Path, *, keep: bool = False, label: str = "run", path: Path | None = None
    ) -> None:
        self.root = Path(root)
        self.keep = keep
        #: ``path``: a folder under ``root`` named when the plan was made (its name must
        #: start with PREFIX, so an orphan is found by :func:`cleanup_orphans`).
        self.path = path or self.root / f"{PREFIX}{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> StagingArea:
        self.root.mkdir(parents=True, exist_ok=True)
        self.path.mkdir()
        owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "kept": self.keep,  # a kept folder is the user's: never removed as an orphan
        }
        (self.path / MARKER).write_text(json.dumps(owner))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)

    def stage(self, src: Path, subdir: str = "") -> Path:
        """Copy ``src`` into the area (atomically) and return the copy's path."""
        dest_dir = self.path / subdir if subdir else self.path
        return atomic_copy(src, dest_dir / Path(src).name)


@dataclass(frozen=True)
class NodeStaging:
    """Where a node-local chain keeps its intermediates, decided on the node that runs it.

    Small and picklable (sent with each chain to a Dask worker): the RAM-disk settings,
    the shared fallback folder, and the planned work folder whose paths the chain moves.
    """

    planned: str  # the work folder the plan's paths are under
    fallback: str  # a folder every node shares (output.workdir)
    ram_path: str | None  # None: RAM disk disabled
    min_ram_gb: float = 0.0
    keep: bool = False

    def open(self, need_bytes: int) -> tuple[StagingArea, WorkdirChoice, list[Path]]:
        """On this node: remove orphans, choose RAM disk or disk, create a chain's folder.
        Returns the area (entered), the choice, and the orphans removed."""
        roots = {Path(self.fallback)} | ({Path(self.ram_path)} if self.ram_path else set())
        orphans = [folder for root in roots for folder in cleanup_orphans(root)]
        choice = choose_workdir(
            ram_disk_enabled=self.ram_path is not None,
            ram_disk_path=Path(self.ram_path) if self.ram_path else None,
            min_ram_gb=self.min_ram_gb,
            need_bytes=need_bytes,
            fallback=Path(self.fallback),
        )
        area = StagingArea(choice.root, keep=self.keep, label="chain")
        area.__enter__()
        return area, choice, orphans
