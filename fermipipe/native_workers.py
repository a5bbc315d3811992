"""Native tools in worker processes: each tool running at once has an interpreter of its own.

Native tools are numpy/numba/astropy code holding Python's interpreter lock for much of
their time. Run as threads of the flow's process, two tools share one lock — with Prefect's
orchestration in the same process besides (benchmarks/mission.py: the chain per week went
from 2.75× to ~2.4× fitscopy with this and the session's other changes; README).
So the runner hands a native invocation to a worker process of the run
(:class:`NativeWorkers`, one per concurrent tool, reused for the run's tools), holding the
same concurrency slot as before: what is computed, and by which code, does not change.

A worker is ``python -m fermipipe.native_workers``: it reads requests (tool name and
parameters, a length-prefixed pickle) on stdin and answers on stdout; its own prints go to
stderr. It is killed like a tool: it runs in its own process group, listed with the reaper
(:mod:`fermipipe.tool_groups`, so it dies with the pipeline even under SIGKILL) and recorded
in a folder under the run's scratch (the next run kills what a dead run left); it also exits
when its parent is gone. A timeout, a cancellation or a crash kills the worker (its tool's
output is written under a temporary name: nothing half-written remains) and the next tool
gets a new one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fermipipe.tool_groups import reaper, write_group_record

_HEADER = struct.Struct("!Q")  # the length of the pickle that follows
#: How often a worker checks that the process that started it is still there (seconds).
_PARENT_CHECK = 0.5


@dataclass
class Reply:
    """What a worker reports for one tool run (``status`` as the runner's StepResult)."""

    status: str  # "ok", "empty" or "failed"
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0


class WorkerLost(Exception):
    """The worker ended without answering (killed, crashed, timed out): ``reason`` says how."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


# ------------------------------------------------------------------- the worker side


def _send(stream: BinaryIO, message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None  # the parent closed the channel: the run is over
    (size,) = _HEADER.unpack(head)
    return pickle.loads(stream.read(size))


def _exit_with_parent(parent: int) -> None:
    """Leave when the process that started us is gone (a watchdog thread)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK)
    os._exit(1)


def run_request(tool: str, params: dict[str, Any]) -> Reply:
    """Run one native tool here, as the runner's in-thread path does (same errors)."""
    from fermipipe.errors import EmptyProductError, ToolError
    from fermipipe.native import run_tool

    c0 = time.process_time()
    try:
        outcome = run_tool(tool, params)
        reply = Reply("ok", messages=list(outcome.messages), warnings=list(outcome.warnings))
    except EmptyProductError as exc:
        reply = Reply("empty", exc.detail)
    except ToolError as exc:
        reply = Reply("failed", str(exc))
    except Exception as exc:  # a bug in a native tool must not take the worker down
        reply = Reply("failed", f"internal error: {type(exc).__name__}: {exc}")
    reply.cpu_seconds = time.process_time() - c0
    return reply


def serve(parent: int) -> None:
    """The worker's loop: requests on stdin, replies on stdout, until stdin closes."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a tool's stray print must not corrupt the reply channel
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    # The tools of a mission chain and gtltcube's compiled kernel, loaded while the run
    # starts rather than in the first tools' time.
    from fermipipe.native import gtbin, gtltcube, gtmktime, gtselect  # noqa: F401
    from fermipipe.native.ltcube_kernel import load_kernels

    load_kernels()

    while (request := _receive(requests)) is not None:
        tool, params = request
        _send(replies, run_request(tool, params))


# ------------------------------------------------------------------- the parent side


class _Worker:
    def __init__(self, folder: Path, cwd: Path, threads: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        package_root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        # Workers share the CPUs: a parallel kernel (gtltcube's) gets its share of them,
        # not all of them in every worker at once (unless the user set it).
        env.setdefault("NUMBA_NUM_THREADS", str(threads))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fermipipe.native_workers", str(os.getpid())],
            cwd=cwd,  # relative paths in parameters mean what they mean to the flow
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # own process group, killed as a whole
        )
        self.pgid = self.proc.pid
        reaper().add(self.pgid)
        write_group_record(folder, self.pgid)
        self.folder = folder
        self._reaping = threading.Lock()  # no signal to a group id freed by the reaping

    def call(self, tool: str, params: dict[str, Any], timeout: float | None) -> Reply:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            _send(self.proc.stdin, (tool, dict(params)))  # type: ignore[arg-type]
        except (BrokenPipeError, OSError):
            raise WorkerLost(self._ended()) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        head = self._read(fd, _HEADER.size, deadline, timeout)
        (size,) = _HEADER.unpack(head)
        body = self._read(fd, size, deadline, timeout)
        try:
            reply = pickle.loads(body)
        except Exception as exc:  # noqa: BLE001 - a broken channel, reported as such
            raise WorkerLost(f"native worker sent an unreadable reply: {exc}") from None
        if not isinstance(reply, Reply):
            raise WorkerLost(f"native worker sent {type(reply).__name__}, not a reply")
        return reply

    def _read(self, fd: int, n: int, deadline: float | None, timeout: float | None) -> bytes:
        chunks: list[bytes] = []
        while n:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                self.kill()
                raise WorkerLost(f"timed out after {timeout:g} s (native worker killed)", True)
            chunk = os.read(fd, n)
            if not chunk:
                raise WorkerLost(self._ended())
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _ended(self) -> str:
        """Why the worker's channel closed: it exited (or is about to: waited for without
        reaping, a little while, then killed)."""
        deadline = time.monotonic() + 5.0
        while self.proc.returncode is None and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitid(os.P_PID, self.pgid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    break
            time.sleep(0.01)
        else:
            self.signal_kill()
        code = self._reap()
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return f"native worker killed by {name}"
        return f"native worker exited with code {code}"

    def _reap(self) -> int:
        with self._reaping:
            reaper().discard(self.pgid)  # before the reaping frees the id for reuse
            return self.proc.wait()

    def signal_kill(self) -> None:
        """SIGKILL the worker's group; the thread talking to it sees the channel close."""
        with self._reaping:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pgid, signal.SIGKILL)

    def kill(self) -> None:
        """Kill, reap and forget the worker (idempotent). Only by the thread that owns it:
        its pipes are closed here."""
        self.signal_kill()
        self._reap()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(OSError):
            for entry in self.folder.iterdir():
                entry.unlink()
            self.folder.rmdir()


#: Native tool runs per worker from which "auto" starts worker processes: a worker's start
#: (an interpreter, numpy/astropy, gtltcube's kernel) is not repaid by a few tool runs — the
#: test suite's small runs, in the pytest process that has all of it loaded already, were
#: markedly slower with workers — while a mission's weeks repay it (benchmarks/mission.py).
AUTO_MIN_RUNS_PER_WORKER = 8


def use_workers(setting: bool | str, native_runs: int, workers: int) -> bool:
    """Whether a run's native tools go to worker processes (``resources.native_processes``):
    ``setting`` true/false, or "auto" — when there are at least
    :data:`AUTO_MIN_RUNS_PER_WORKER` native tool runs per worker and more than one worker."""
    if setting != "auto":
        return bool(setting) and native_runs > 0
    return workers > 1 and native_runs >= AUTO_MIN_RUNS_PER_WORKER * workers


class NativeWorkers:
    """The worker processes of one pipeline run. ``run`` takes an idle worker (or starts
    one), so there are as many as tools ran at once (the runner's slots cap that);
    ``prestart`` start while the run gets ready. ``close`` kills them all, idle or busy."""

    def __init__(self, folder: Path, prestart: int = 0) -> None:
        self.folder = Path(folder)
        self.cwd = Path.cwd()
        from fermipipe.config import available_cpus  # the parent's import: workers skip it

        self.threads = max(1, available_cpus() // max(1, prestart))
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._count = 0
        self._closed = False
        for _ in range(prestart):
            self._idle.append(self._start())

    def _start(self) -> _Worker:
        self._count += 1
        return _Worker(self.folder / f"native-worker-{self._count}", self.cwd, self.threads)

    def run(self, tool: str, params: dict[str, Any], timeout: float | None = None) -> Reply:
        """Run ``tool`` in a worker; WorkerLost if the worker ended without an answer."""
        with self._lock:
            if self._closed:
                raise WorkerLost("the run's native workers are closed")
            worker = self._idle.pop() if self._idle else self._start()
            self._busy.add(worker)
        try:
            reply = worker.call(tool, params, timeout)
        except BaseException:
            worker.kill()  # an interrupted exchange leaves the channel unusable
            with self._lock:
                self._busy.discard(worker)
            raise
        with self._lock:
            self._busy.discard(worker)
            if self._closed:
                worker.kill()
            else:
                self._idle.append(worker)
        return reply

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: the run is over or being torn down."""
        return self._closed

    @property
    def started(self) -> int:
        """Workers started so far (tests check that they are reused)."""
        return self._count

    def groups(self) -> list[int]:
        """Process-group ids of the live workers."""
        with self._lock:
            return [w.pgid for w in (*self._idle, *self._busy) if w.proc.returncode is None]

    def close(self) -> None:
        """Kill every worker (a busy one's caller gets WorkerLost); later runs refused."""
        with self._lock:
            self._closed = True
            idle, busy = list(self._idle), list(self._busy)
            self._idle.clear()
        for worker in busy:  # their callers clean up after them
            worker.signal_kill()
        for worker in idle:
            worker.kill()
        with contextlib.suppress(OSError):
            self.folder.rmdir()


if __name__ == "__main__":  # by its package name: replies must unpickle as ours
    from fermipipe import native_workers

    native_workers.serve(int(sys.argv[1]))
