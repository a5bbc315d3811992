"""Tool processes die with the pipeline, and a dead run's leftovers are killed by the next run.

The runner starts every tool in its own session (process group), so that a timeout or a
cancellation can kill the tool with everything it started. The price: when the pipeline
process itself is SIGKILLed (OOM killer, ``kill -9``, a batch system), nothing kills those
groups and they keep writing into the dead run's folder. Three layers close that:

1. **Parent-death signal** (:func:`parent_death_preexec`): the tool process asks the kernel
   (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, Linux) for SIGKILL when its parent dies. The
   signal fires when the *thread* that forked the child exits, not the process. Here the
   forking thread is the one that then supervises the tool until it is reaped
   (``runner._execute``/``_supervise`` run in the same call), so that thread cannot exit
   while its tool runs: the signal fires exactly when the pipeline dies.
2. **A reaper process** (:class:`Reaper`): the parent-death signal reaches only the direct
   child; a shell command's own children would survive it. One small process per pipeline
   process holds the read end of a pipe and the list of running tool groups; when the
   pipeline dies the kernel closes the write end, and the reaper SIGKILLs every group still
   listed. A group is taken off the list before its leader is reaped (while the zombie
   leader still pins the group id), so a reused id is never killed.
3. **Group records** (:func:`write_group_record`, :func:`kill_leftover_groups`): each
   tool's working folder holds a record of its group id and the leader's start time. When
   the next run removes the folder of a dead run (``staging.cleanup_orphans``), it first
   kills the groups recorded there (and any process whose working directory is inside),
   in case both the pipeline and its reaper were killed together.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "GROUP_RECORD",
    "Reaper",
    "kill_leftover_groups",
    "parent_death_preexec",
    "reaper",
    "write_group_record",
]

GROUP_RECORD = ".fermipipe-tool-group.json"
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


#: Looked up once, before any fork: the child then only makes one foreign call.
_PRCTL = _load_prctl()


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child SIGKILL when the forking thread dies (Linux), or
    None where the kernel has no such thing.

    Checked against a parent that died between fork and prctl (the child would then never
    get the signal): the child exits at once.
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)

    return preexec


# ------------------------------------------------------------------------- the reaper

_REAPER_CODE = r"""
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
groups, rest = set(), b""
while True:
    try:
        chunk = os.read(0, 4096)
    except InterruptedError:
        continue
    if not chunk:
        break
    *lines, rest = (rest + chunk).split(b"\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
"""

#: In the reaper's command line, so that it can be recognised (``ps``, tests).
REAPER_MARK = "fermipipe-reaper"


class Reaper:
    """Kills the registered tool groups when this process dies (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid_owner: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> int | None:
        if self._fd is not None and self._pid_owner == os.getpid():
            return self._fd
        read_end, write_end = os.pipe()  # both non-inheritable: tools never hold them
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _REAPER_CODE, REAPER_MARK],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to the terminal must not stop it first
            )
        except OSError:
            os.close(write_end)
            return None
        finally:
            os.close(read_end)
        self._fd, self._pid_owner = write_end, os.getpid()
        return write_end

    def _send(self, text: str) -> None:
        with self._lock:
            fd = self._start()
            if fd is None:
                return
            with contextlib.suppress(OSError):  # a dead reaper: layers 1 and 3 remain
                os.write(fd, text.encode())

    def add(self, pgid: int) -> None:
        """Kill group ``pgid`` if this process dies before :meth:`discard`."""
        self._send(f"+{pgid}\n")

    def discard(self, pgid: int) -> None:
        """Forget ``pgid``: call it before reaping the group's leader."""
        self._send(f"-{pgid}\n")


_REAPER = Reaper()


def reaper() -> Reaper:
    """This process's reaper (started with the first tool)."""
    return _REAPER


# ----------------------------------------------------------------------- group records


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def write_group_record(folder: Path, pgid: int) -> None:
    """Record tool group ``pgid`` (leader = ``pgid``) in its working folder."""
    record = {"host": socket.gethostname(), "pgid": pgid, "start": _start_time(pgid)}
    with contextlib.suppress(OSError):
        (Path(folder) / GROUP_RECORD).write_text(json.dumps(record))


def group_members() -> dict[int, list[int]]:
    """Process group → member pids, from /proc (empty where there is no /proc)."""
    groups: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 2 and fields[0] not in ("Z", "X"):
                groups.setdefault(int(fields[2]), []).append(int(entry.name))
    return groups


def _cwd_inside(pid: int, folder: str) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd == folder or cwd.startswith(folder + os.sep)


def kill_leftover_groups(folder: Path, *, wait: float = 5.0) -> list[int]:
    """SIGKILL the tool groups a dead run left in ``folder``; returns the groups killed.

    A group is killed when its record in ``folder`` names it and its leader, if still
    there, is the recorded process (same start time: not a reused id), or when one of its
    processes works inside ``folder``. Never our own group. Waits up to ``wait`` seconds
    for them to be gone, so the folder can then be removed.
    """
    root = os.path.realpath(folder)
    host = socket.gethostname()
    groups = group_members()
    targets: set[int] = set()
    for record in Path(root).rglob(GROUP_RECORD):
        try:
            info = json.loads(record.read_text())
            pgid = int(info["pgid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if info.get("host") != host or pgid not in groups:
            continue
        start = _start_time(pgid)
        if start is None or info.get("start") in (None, start):
            targets.add(pgid)
    for pgid, pids in groups.items():
        if any(_cwd_inside(pid, root) for pid in pids):
            targets.add(pgid)
    targets.discard(os.getpgid(0))
    for pgid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while targets and time.monotonic() < deadline:
        alive = group_members()
        if not any(g in alive for g in targets):
            break
        time.sleep(0.05)
    return sorted(targets)
