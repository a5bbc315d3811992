"""Tools die with a SIGKILLed pipeline, and the next run kills what a dead run left.

Real processes only: a pipeline process (the runner running a real shell tool chain whose
command starts a child of its own, as a templated ``command:`` step does) is SIGKILLed and
the tool's process group must be gone within seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from processes import alive, group_gone

from fermipipe.staging import StagingArea, cleanup_orphans
from fermipipe.tool_groups import GROUP_RECORD, REAPER_MARK

REPO = Path(__file__).resolve().parents[1]
INPUT = REPO / "data" / "sample" / "lat_spacecraft_weekly_w700_p310_v001.fits"

#: A pipeline process: a staging folder, and the runner running a shell step that reads
#: the input and then keeps running with a child of its own (a tool chain `a && b`).
PIPELINE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fermipipe.plan import Invocation
    from fermipipe.runner import run_invocation
    from fermipipe.staging import StagingArea

    root, src = Path(sys.argv[1]), sys.argv[2]
    with StagingArea(root, label="run") as area:
        inv = Invocation(
            step="chain", file_id="w700", engine="shell",
            shell=f"cat '{src}' > copy.fits && sleep 300 & sleep 301; wait",
        )
        run_invocation(inv, scratch=area.path / ".fermipipe-tmp-x")
    """
)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_pipeline(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the pipeline process; return it and its tool's process group (from the
    record the runner writes in the tool's working folder)."""
    proc = subprocess.Popen([sys.executable, "-c", PIPELINE, str(root), str(INPUT)], cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = list(root.rglob(GROUP_RECORD))
        if records:
            pgid = int(json.loads(records[0].read_text())["pgid"])
            # Both sleeps are running: the group has the shell and its children.
            members = [p for p in _pids() if _pgid(p) == pgid]
            if len(members) >= 3:
                return proc, pgid
        assert proc.poll() is None, "the pipeline process ended early"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the tool never started")


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if group_gone(pgid):
            return True
        time.sleep(0.05)
    return group_gone(pgid)


def test_sigkilled_pipeline_takes_its_tool_group_with_it(tmp_path: Path) -> None:
    before = sha(INPUT)
    proc, pgid = start_pipeline(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_gone(pgid, 5), f"tool group {pgid} still running after the pipeline died"
    finally:
        if not group_gone(pgid):
            os.killpg(pgid, signal.SIGKILL)
    assert sha(INPUT) == before


def test_next_run_kills_dead_runs_tool_groups_before_removing_its_folder(
    tmp_path: Path,
) -> None:
    """Pipeline and reaper killed together (e.g. the OOM killer takes both): the parent-death
    signal kills the direct child, the next run's cleanup kills the rest of the group."""
    before = sha(INPUT)
    proc, pgid = start_pipeline(tmp_path)
    try:
        reapers = [
            c for c in _children(proc.pid)
            if REAPER_MARK in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
        ]  # fmt: skip
        assert len(reapers) == 1
        os.kill(reapers[0], signal.SIGKILL)
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while alive(pgid) and time.monotonic() < deadline:  # the shell: parent-death signal
            time.sleep(0.05)
        assert not alive(pgid), "the direct child did not get its parent-death signal"
        assert not group_gone(pgid), "test premise: the shell's children outlive it"
        (folder,) = tmp_path.glob("fermipipe-run-*")
        removed = cleanup_orphans(tmp_path)
        assert removed == [folder] and not folder.exists()
        assert wait_gone(pgid, 5)
    finally:
        if not group_gone(pgid):
            os.killpg(pgid, signal.SIGKILL)
    assert sha(INPUT) == before


def test_cleanup_leaves_live_runs_and_their_tools_alone(tmp_path: Path) -> None:
    before = sha(INPUT)
    proc, pgid = start_pipeline(tmp_path)
    try:
        assert cleanup_orphans(tmp_path) == []
        assert not group_gone(pgid) and list(tmp_path.glob("fermipipe-run-*"))
    finally:
        proc.kill()
        proc.wait()
        wait_gone(pgid, 5)
    assert len(cleanup_orphans(tmp_path)) == 1  # now dead: removed
    with StagingArea(tmp_path) as area:  # our own live folder stays
        assert cleanup_orphans(tmp_path) == [] and area.path.is_dir()
    assert sha(INPUT) == before
