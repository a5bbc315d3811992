"""RAM-disk staging area: capacity checks, lifecycle and orphan clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fermipipe.staging import MARKER, StagingArea, choose_workdir, cleanup_orphans, mem_available


def test_mem_available_reads_proc_meminfo() -> None:
    assert mem_available() > 0


def test_choose_workdir_falls_back_with_reason(tmp_path: Path) -> None:
    ram = tmp_path / "ram"
    ok = choose_workdir(
        ram_disk_enabled=True, ram_disk_path=ram, min_ram_gb=0.001, need_bytes=1, fallback=tmp_path
    )
    assert ok.on_ram_disk and ok.root == ram
    short = choose_workdir(
        ram_disk_enabled=True,
        ram_disk_path=ram,
        min_ram_gb=10**6,
        need_bytes=1,
        fallback=tmp_path / "disk",
    )
    assert not short.on_ram_disk and "MemAvailable" in short.reason
    no_space = choose_workdir(
        ram_disk_enabled=True,
        ram_disk_path=ram,
        min_ram_gb=0,
        need_bytes=2**62,
        fallback=tmp_path / "disk",
    )
    assert not no_space.on_ram_disk and "free" in no_space.reason
    off = choose_workdir(
        ram_disk_enabled=False, ram_disk_path=ram, min_ram_gb=0, need_bytes=1, fallback=tmp_path
    )
    assert not off.on_ram_disk


def test_staging_area_removed_on_exception(tmp_path: Path) -> None:
    src = tmp_path / "in.fits"
    src.write_bytes(b"data")
    with pytest.raises(RuntimeError), StagingArea(tmp_path / "ram") as area:
        staged = area.stage(src)
        assert staged.read_bytes() == b"data"
        raise RuntimeError("task crashed")
    assert not area.path.exists()
    assert src.read_bytes() == b"data"


def test_keep_leaves_folder(tmp_path: Path) -> None:
    with StagingArea(tmp_path, keep=True) as area:
        pass
    assert (area.path / MARKER).exists()


def test_kept_folder_is_not_removed_as_an_orphan(tmp_path: Path) -> None:
    """--keep-intermediate means kept: the next run on the host must not remove the folder
    of a finished run that kept it (its owner process is gone, but it was not killed)."""
    code = (
        "import sys; from pathlib import Path; from fermipipe.staging import StagingArea\n"
        "with StagingArea(Path(sys.argv[1]), keep=True) as area: print(area.path)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    kept = Path(out.stdout.strip())
    assert kept.is_dir()  # its owner has exited
    assert cleanup_orphans(tmp_path) == []
    assert kept.is_dir()


CHILD = """
import sys, time
from pathlib import Path
from fermipipe.staging import StagingArea
area = StagingArea(Path(sys.argv[1])).__enter__()
print(area.path, flush=True)
time.sleep(60)
"""


def test_orphan_of_killed_run_is_cleaned(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    folder = Path(proc.stdout.readline().strip())
    assert folder.is_dir()
    # A live owner is never touched.
    assert cleanup_orphans(tmp_path) == []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert folder.is_dir()  # SIGKILL ran no clean-up
    assert cleanup_orphans(tmp_path) == [folder]
    assert not folder.exists()


def test_markerless_fresh_folder_is_left_alone(tmp_path: Path) -> None:
    fresh = tmp_path / "fermipipe-run-1-abc"
    fresh.mkdir()
    assert cleanup_orphans(tmp_path) == []
    old = time.time() - 3600
    os.utime(fresh, (old, old))
    assert cleanup_orphans(tmp_path) == [fresh]
