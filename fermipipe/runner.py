"""Run one :class:`~fermipipe.plan.Invocation`: a native call or a tool in a subprocess.

What every invocation gets, whatever its engine:

* a concurrency slot from a :class:`SlotPool` (global cap = workers, per-step cap =
  ``Invocation.max_parallel``), taken here, around the tool itself, so the caps are exact and
  cost microseconds (Prefect's tag/global limits poll and hand out slots in seconds);
* a :class:`StepResult`: status ``ok`` / ``empty`` / ``failed``, exit code, the last stderr
  lines, wall and CPU seconds, the outputs.

Subprocess engines (``fermitools`` argv lists and templated ``shell`` commands) also get:

* a private working directory holding a private PFILES directory — parallel Fermitools
  rewrite ``<tool>.par`` in the user part of PFILES, and "." is part of it (spec §11), so
  sharing either makes runs collide ("Cannot open parameter file", Ape error 19);
* stdin from /dev/null and a non-interactive environment;
* their own session/process group (``start_new_session``) registered in a process-wide
  registry: a timeout, Ctrl-C, SIGTERM or a cancellation kills the whole group (Prefect does
  not kill subprocesses; orphaned tools keep writing into a staging area being deleted);
* stdout/stderr streamed line by line to a per-file log file and a logger.

No Prefect import here: the Prefect layer (``tasks/``) passes its run logger in.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from fermipipe.errors import FermipipeError, ToolError
from fermipipe.fermitools import private_env
from fermipipe.fits.writing import remove_dead_temporaries
from fermipipe.native_workers import NativeWorkers, Reply, WorkerLost, run_request
from fermipipe.plan import Invocation
from fermipipe.tool_groups import (
    group_members,
    parent_death_preexec,
    reaper,
    write_group_record,
)

Status = Literal["ok", "empty", "failed", "skipped"]

#: Messages by which the Fermitools report an empty product rather than an error.
#: "No GTIs found in input event file(s)" — gtbin/gtltcube/gtmktime with no good time
#: (Fermitools-conda issue #39); "Zero rows returned from FT2 file" — gtmktime/gtltcube when
#: the FT2 filter selects nothing (spec §4.3).
EMPTY_MESSAGES: tuple[str, ...] = ("No GTIs found", "Zero rows returned from FT2 file")

STDERR_TAIL_LINES = 20
#: Seconds between SIGTERM and SIGKILL when a process group is stopped.
KILL_GRACE = 3.0


class RunnerShutdown(FermipipeError):
    """The runner is shutting down (Ctrl-C, SIGTERM, cancellation): nothing new starts."""


@dataclass
class StepResult:
    """What running one invocation produced. Small and picklable: it travels through Prefect."""

    step: str
    file_id: str
    status: Status
    command: str
    exit_code: int | None = None
    error: str | None = None  # one line: why it failed / why it is empty
    stderr_tail: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)  # name → path (str: JSON-friendly)
    started: float = 0.0  # time.time() when the tool started (after its slot was granted)
    #: The product came from the content-addressed store: no tool ran for it this time.
    from_store: bool = False
    #: For a failure: "transient" (worth retrying) or "deterministic" (bad data, no retry).
    failure_kind: str | None = None
    #: Data-quality findings of a native tool (one line each, naming the file and the size
    #: of the problem): logged at WARNING and listed in the run summary.
    warnings: list[str] = field(default_factory=list)
    #: The file's earlier steps' data warnings ("step: warning"), kept with a stored product
    #: so that a cache hit still reports them when those earlier steps do not run again.
    upstream_warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """One line for logs and errors: step, file, status and the reason."""
        text = f"{self.step} [{self.file_id}]: {self.status}"
        if self.exit_code is not None and self.status == "failed":
            text += f" (exit code {self.exit_code})"
        if self.error:
            text += f": {self.error}"
        return text


class StepFailedError(ToolError):
    """Raised by the Prefect layer for a failed step; carries the :class:`StepResult`."""

    def __init__(self, result: StepResult) -> None:
        tail = "\n".join(result.stderr_tail[-5:])
        message = result.describe().split(": ", 1)[-1]
        if tail:
            message += f"\nlast stderr lines:\n{tail}"
        super().__init__(result.step, message, result.file_id)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the custom __init__
        return (StepFailedError, (self.result,))


# --------------------------------------------------------------------------- slots


class SlotPool:
    """Exact concurrency caps: ``total`` tools at once, and ``caps[group]`` per step.

    Waiting requests are served by priority (lowest first), skipping a request whose step is
    at its cap so that it never blocks other steps. The flow passes ``(file order, step
    index)``: among the work that is ready, earlier files' next steps go first, so each
    file's chain progresses as soon as its upstream steps are done and intermediates do not
    pile up. Slots are handed over directly by the releasing thread (no polling, no
    thundering herd).
    """

    def __init__(self, total: int, caps: Mapping[str, int] | None = None) -> None:
        if total < 1:
            raise ValueError("a slot pool needs at least one slot")
        self.total = total
        self.caps: dict[str, int] = dict(caps or {})
        self._lock = threading.Lock()
        self._used = 0
        self._used_by: dict[str, int] = {}
        self._waiters: list[tuple[Any, int, _Waiter]] = []  # a heap by (priority, arrival)
        self._seq = itertools.count()
        self._closed = False
        self.peak = 0  # the most slots ever in use at once (tests check the caps with it)
        self.peak_by: dict[str, int] = {}

    def _fits(self, group: str) -> bool:
        cap = self.caps.get(group)
        return self._used < self.total and (cap is None or self._used_by.get(group, 0) < cap)

    def _take(self, group: str) -> None:
        self._used += 1
        n = self._used_by.get(group, 0) + 1
        self._used_by[group] = n
        self.peak = max(self.peak, self._used)
        self.peak_by[group] = max(self.peak_by.get(group, 0), n)

    def _dispatch(self) -> None:
        """Grant slots to the best waiting requests that fit (called with the lock held)."""
        skipped: list[tuple[Any, int, _Waiter]] = []
        while self._waiters and self._used < self.total:
            item = heapq.heappop(self._waiters)
            waiter = item[2]
            if self._fits(waiter.group):
                self._take(waiter.group)
                waiter.granted = True
                waiter.event.set()
            else:  # its step is at its cap: it must not hold up the other steps
                skipped.append(item)
        for item in skipped:
            heapq.heappush(self._waiters, item)

    def acquire(self, group: str, priority: Any = 0) -> None:
        """Block until a slot for ``group`` is granted (RunnerShutdown if the pool closes)."""
        waiter = _Waiter(group)
        with self._lock:
            if self._closed:
                raise RunnerShutdown("the runner is shutting down")
            heapq.heappush(self._waiters, (priority, next(self._seq), waiter))
            self._dispatch()
        waiter.event.wait()
        if not waiter.granted:
            raise RunnerShutdown("the runner is shutting down")

    def release(self, group: str) -> None:
        with self._lock:
            self._used -= 1
            self._used_by[group] -= 1
            self._dispatch()

    @contextlib.contextmanager
    def slot(self, group: str, priority: Any = 0) -> Iterator[None]:
        self.acquire(group, priority)
        try:
            yield
        finally:
            self.release(group)

    def close(self) -> None:
        """Wake every waiter with RunnerShutdown; later acquires fail at once."""
        with self._lock:
            self._closed = True
            for _p, _s, waiter in self._waiters:
                waiter.event.set()  # granted stays False
            self._waiters.clear()


@dataclass
class _Waiter:
    group: str
    granted: bool = False
    event: threading.Event = field(default_factory=threading.Event)


@dataclass
class RunContext:
    """What every invocation of one pipeline run shares, looked up by name.

    Tasks receive only the name (Prefect task parameters stay small) and find the slot pool,
    the tools' base environment and the folders here.
    """

    name: str
    pool: SlotPool
    scratch: Path  # private working directories are made under it
    log_dir: Path  # per-file log files
    env: dict[str, str] | None = None  # base environment of subprocess tools (None: ours)
    #: Worker processes for native tools (None: they run as threads of this process).
    native: NativeWorkers | None = None

    def log_path(self, label: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in label)
        return self.log_dir / f"{safe}.log"


@dataclass(frozen=True)
class RunSpec:
    """A picklable description of a run, passed to tasks instead of a bare name.

    In the flow's process :func:`get_run` finds the registered context; on a Dask worker
    (another process, another machine) it opens an equivalent one from the spec on first use,
    so caps and folders hold there too (per worker).
    """

    name: str
    workers: int
    caps: tuple[tuple[str, int], ...] = ()
    scratch: str = ""
    log_dir: str = ""
    env: tuple[tuple[str, str], ...] | None = None


_RUNS: dict[str, RunContext] = {}
_RUNS_LOCK = threading.Lock()
#: Runs stopped by :func:`kill_run` in this process: their later steps refuse to start.
_CANCELLED: set[str] = set()


def open_run(
    name: str,
    *,
    workers: int,
    caps: Mapping[str, int] | None = None,
    scratch: Path,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    native_processes: bool = False,
) -> RunContext:
    """Register the context of a run (``workers`` tools at once, ``caps`` per step); with
    ``native_processes`` native tools run in ``workers`` worker processes, started now."""
    ctx = RunContext(name, SlotPool(workers, caps), Path(scratch), Path(log_dir), env and dict(env))
    if native_processes:
        ctx.native = NativeWorkers(Path(scratch) / "native-workers", prestart=workers)
    with _RUNS_LOCK:
        _RUNS[name] = ctx
        _CANCELLED.discard(name)
    _SHUTDOWN.clear()
    return ctx


def run_spec(ctx: RunContext) -> RunSpec:
    """The spec that re-creates ``ctx`` in another process."""
    return RunSpec(
        ctx.name,
        ctx.pool.total,
        tuple(sorted(ctx.pool.caps.items())),
        str(ctx.scratch),
        str(ctx.log_dir),
        tuple(sorted(ctx.env.items())) if ctx.env is not None else None,
    )


def get_run(run: str | RunSpec) -> RunContext:
    """The context of ``run`` in this process (opened from the spec on a Dask worker)."""
    name = run if isinstance(run, str) else run.name
    with _RUNS_LOCK:
        if name in _CANCELLED:
            raise RunnerShutdown(f"pipeline run {name!r} was cancelled")
        ctx = _RUNS.get(name)
        if ctx is None and isinstance(run, RunSpec):
            ctx = RunContext(
                run.name,
                SlotPool(run.workers, dict(run.caps)),
                Path(run.scratch),
                Path(run.log_dir),
                dict(run.env) if run.env is not None else None,
            )
            _RUNS[name] = ctx
    if ctx is None:
        raise RunnerShutdown(f"no active pipeline run {name!r} in this process")
    return ctx


def close_run(name: str) -> None:
    with _RUNS_LOCK:
        ctx = _RUNS.pop(name, None)
    if ctx is not None:
        _close(ctx)


def _close(ctx: RunContext) -> None:
    """No more tools for this run: waiting ones are refused, native workers killed."""
    ctx.pool.close()
    if ctx.native is not None:
        ctx.native.close()


# ------------------------------------------------------------------ process registry

_PROCS: dict[int, subprocess.Popen[bytes]] = {}
_PROC_DIRS: dict[int, Path] = {}  # group → its private working directory (under a scratch)
_PROCS_LOCK = threading.Lock()
_SHUTDOWN = threading.Event()


def running_groups() -> list[int]:
    """Process-group ids of the tools running now."""
    with _PROCS_LOCK:
        return list(_PROCS)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in group ``pgid``.

    ``killpg(pgid, 0)`` is not enough: a killed leader stays a zombie until it is reaped, and
    signalling a zombie succeeds. So on Linux look at the group members' states in /proc.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():
        return True
    return pgid in group_members()


def kill_group(pgid: int, grace: float = KILL_GRACE) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def kill_all(grace: float = KILL_GRACE) -> list[int]:
    """Stop every running tool group and refuse new ones (Ctrl-C, SIGTERM, cancel).

    Returns the process-group ids that were signalled. Idempotent.
    """
    _SHUTDOWN.set()
    with _RUNS_LOCK:
        runs = list(_RUNS.values())
    for ctx in runs:
        _close(ctx)
    return _terminate(running_groups(), grace)


def kill_run(name: str, grace: float = KILL_GRACE) -> list[int]:
    """Stop one pipeline run's tools in this process, leaving other runs alone.

    For a Dask worker, which outlives runs and may serve several: the flow calls it on every
    worker when it is cancelled or interrupted. The run's queued steps refuse to start (now
    and when they arrive later), its running tool groups are killed (SIGTERM, then SIGKILL).
    Returns the groups signalled.
    """
    with _RUNS_LOCK:
        _CANCELLED.add(name)
        ctx = _RUNS.pop(name, None)
    if ctx is None:
        return []
    _close(ctx)
    with _PROCS_LOCK:
        groups = [g for g, cwd in _PROC_DIRS.items() if cwd.is_relative_to(ctx.scratch.resolve())]
    return _terminate(groups, grace)


def _terminate(groups: list[int], grace: float) -> list[int]:
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.05)
    for pgid in groups:
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    return groups


def reset_shutdown() -> None:
    """Allow tools to start again (a new flow run in the same process, e.g. in tests)."""
    _SHUTDOWN.clear()


# ------------------------------------------------------------------ failure classes

#: Failures that another attempt may not repeat: I/O trouble, and the Ape parameter-file
#: error the Fermitools give when their .par file is being rewritten by another process
#: (spec §11: "Cannot open parameter file", Ape error 19). A timeout is not among them: a
#: tool slower than its timeout would only be slow again, three times over.
TRANSIENT_MARKERS: tuple[str, ...] = (
    "Input/output error",
    "I/O error",
    "Resource temporarily unavailable",
    "Stale file handle",
    "Cannot open parameter file",
    "ApeException",
    "Ape error",
    "Connection reset",
    "Device or resource busy",
    "Too many open files",
    # A full disk is the machine's state, not the data's: retried (space may be freed).
    "No space left on device",
    "Disk quota exceeded",
)


def classify_failure(result: StepResult) -> str:
    """``transient`` when the failure looks like the machine's fault, else ``deterministic``.

    Deterministic failures (a corrupt file, a bad parameter, a tool's own error on the data)
    fail again identically; retrying them only delays the run's report.
    """
    if result.status != "failed":
        return "deterministic"
    text = "\n".join([result.error or "", *result.stderr_tail])
    if any(marker.lower() in text.lower() for marker in TRANSIENT_MARKERS):
        return "transient"
    return "deterministic"


# ------------------------------------------------------------------------ environment


# ------------------------------------------------------------------------ the runner

#: A context manager factory holding a concurrency slot while a tool runs.
Slot = Callable[[], contextlib.AbstractContextManager[None]]


@dataclass
class _Capture:
    """Line handling for one run: log file, logger, stderr tail, empty markers."""

    log_file: IO[str] | None
    logger: logging.Logger | logging.LoggerAdapter[Any] | None
    prefix: str
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    empty_message: str | None = None

    def line(self, stream: str, text: str) -> None:
        text = text.rstrip("\r\n")
        if stream == "stderr":
            self.tail.append(text)
        if self.empty_message is None:
            for marker in EMPTY_MESSAGES:
                if marker in text:
                    self.empty_message = text.strip()
        if self.log_file is not None:
            self.log_file.write(f"[{stream}] {text}\n")
        if self.logger is not None:
            self.logger.info("%s %s", self.prefix, text)

    def warning(self, text: str) -> None:
        """A data-quality finding: in the log file and at WARNING through the logger."""
        if self.log_file is not None:
            self.log_file.write(f"[warning] {text}\n")
        if self.logger is not None:
            self.logger.warning("%s data warning: %s", self.prefix, text)


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _empty_event_table(path: Path) -> bool:
    """True when ``path`` is a FITS file whose EVENTS table has zero rows (gtselect/fitscopy
    with nothing selected exits 0 and writes such a file: the pipeline calls it empty)."""
    if path.suffix.lower() not in (".fits", ".fit", ".fts", ".evt") and not path.name.endswith(
        ".fits.gz"
    ):
        return False
    from astropy.io import fits

    try:
        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            for hdu in hdul[1:]:
                if str(hdu.header.get("EXTNAME", "")).upper() == "EVENTS":
                    return int(hdu.header.get("NAXIS2", 0)) == 0
    except (OSError, ValueError):
        return False  # not for us to judge: the next step will report a broken file
    return False


def run_invocation(
    inv: Invocation,
    *,
    log_path: Path | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    scratch: Path | None = None,
    pool: SlotPool | None = None,
    priority: Any = 0,
    env: Mapping[str, str] | None = None,
    prepare: Callable[[], object] | None = None,
    native: NativeWorkers | None = None,
) -> StepResult:
    """Run ``inv`` once and report what happened; never raises for a tool's failure.

    ``scratch`` is where the private working directory (with its PFILES) is made (default:
    the system temp dir); ``log_path`` receives the output lines (appended, so one file's
    steps share one log); ``pool`` caps concurrency; ``prepare`` runs once the slot is
    granted, just before the tool (staging its input: only the tools running hold a
    staged copy); ``native``: the run's worker processes, where a native tool then runs
    (else in this thread). RunnerShutdown is raised only when the run is being torn down.
    """
    command = inv.render()
    if _SHUTDOWN.is_set():
        raise RunnerShutdown("the runner is shutting down")
    # The slot is held only while the tool itself runs: preparing its folder and environment
    # before, and checking outputs, logging and cleaning after, happen outside it, so a
    # finished tool's slot goes to the next one at once.
    granted: Slot = (
        (lambda: pool.slot(inv.step, priority)) if pool is not None else contextlib.nullcontext
    )

    @contextlib.contextmanager
    def slot() -> Iterator[None]:
        with granted():
            if prepare is not None:
                prepare()
            yield

    for path in inv.outputs.values():  # tools write into folders, they do not make them
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    log_file: IO[str] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        capture = _Capture(log_file, logger, f"{inv.step}[{inv.file_id}]")
        if log_file is not None:
            log_file.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {inv.step}: {command}\n")
            log_file.flush()
        if inv.engine == "native":
            result = _run_native(inv, command, capture, slot, native)
        else:
            result = _run_subprocess(inv, command, capture, scratch, env, slot)
        apply_data_policy(inv, result)
        if log_file is not None:
            log_file.write(f"=== {result.describe()} ({result.wall_seconds:.2f} s)\n")
    finally:
        if log_file is not None:
            log_file.close()
    return result


def apply_data_policy(inv: Invocation, result: StepResult) -> None:
    """``on_data_warning: fail``: a step with a data warning is a failed step whose error is
    the (first) warning, deterministic (the same data warn again: not retried).

    The one place the policy is decided. It travels in the Invocation because it changes
    what a step yields: it is part of the step's cache key (``Invocation.params_digest``), so
    a stored result made under "warn" is never reused under "fail", and every way a result
    can come back (store, Prefect's cache, bulk cache hits) agrees with a fresh run.
    """
    if inv.on_data_warning != "fail" or not result.warnings or result.status == "failed":
        return
    more = len(result.warnings) - 1
    result.status = "failed"
    result.error = "data warning (on_data_warning: fail): " + result.warnings[0]
    if more:
        result.error += f" (and {more} more)"
    result.failure_kind = "deterministic"


def _run_native(
    inv: Invocation, command: str, capture: _Capture, slot: Slot, native: NativeWorkers | None
) -> StepResult:
    result = StepResult(inv.step, inv.file_id, "failed", command)
    reply = None
    with slot():
        if _SHUTDOWN.is_set():
            raise RunnerShutdown("the runner is shutting down")
        result.started = time.time()
        t0 = time.perf_counter()
        try:
            reply = _native_call(inv, native)
        except WorkerLost as exc:
            # What the killed worker was writing (a temporary named after its PID) goes now,
            # not at the next run's start.
            for folder in {Path(path).parent for path in inv.outputs.values()}:
                remove_dead_temporaries(folder)
            if _SHUTDOWN.is_set() or (native is not None and native.closed):
                raise RunnerShutdown("the runner is shutting down") from None
            result.error = exc.reason
        result.wall_seconds = time.perf_counter() - t0
    if _SHUTDOWN.is_set():  # stopped meanwhile: its folder may be gone, its result is moot
        raise RunnerShutdown("the runner is shutting down")
    if reply is not None:
        result.cpu_seconds = reply.cpu_seconds
        result.status, result.error = reply.status, reply.error  # type: ignore[assignment]
    if reply is None or reply.status != "ok":
        capture.line("stderr", result.error or "")
    else:
        for message in reply.messages:
            capture.line("stdout", message)
        for warning in reply.warnings:
            capture.warning(warning)
        result.warnings = list(reply.warnings)
        result.outputs = {name: str(path) for name, path in inv.outputs.items()}
        _mark_empty(inv, result)  # the same rule as for the Fermitools, below
    result.stderr_tail = list(capture.tail)
    return result


def _native_call(inv: Invocation, native: NativeWorkers | None) -> Reply:
    """The tool in a worker process of the run (its timeout enforced there), or here."""
    tool, params = inv.tool or inv.step, dict(inv.params)
    if native is not None:
        return native.run(tool, params, inv.timeout)
    c0 = time.thread_time()
    reply = run_request(tool, params)
    reply.cpu_seconds = time.thread_time() - c0
    return reply


def _mark_empty(inv: Invocation, result: StepResult) -> None:
    """An event list with no rows makes the file ``empty`` (left out of merges), whichever
    engine wrote it."""
    for name, path in inv.outputs.items():
        if _empty_event_table(Path(path)):
            result.status = "empty"
            result.error = f"no events selected ({name} has 0 rows)"
            return


def _run_subprocess(
    inv: Invocation,
    command: str,
    capture: _Capture,
    scratch: Path | None,
    env: Mapping[str, str] | None,
    slot: Slot,
) -> StepResult:
    result = StepResult(inv.step, inv.file_id, "failed", command)
    if inv.shell is not None:
        argv: list[str] = ["/bin/sh", "-c", inv.shell]
    elif inv.argv:
        argv = list(inv.argv)
    else:
        result.error = "invocation has neither argv nor a shell command"
        return result
    before = {name: _stat_key(Path(p)) for name, p in inv.outputs.items()}
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in inv.file_id)[:60]
    rundir = Path(tempfile.mkdtemp(prefix=f"{inv.step}-{safe_id}-", dir=scratch))
    try:
        pfiles = rundir / "pfiles"
        pfiles.mkdir()
        run_env = private_env(pfiles, base=os.environ if env is None else env)
        finished = _execute(
            argv, rundir, run_env, inv.timeout, capture, result, slot, run_in=inv.cwd
        )
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    result.stderr_tail = list(capture.tail)
    # "No GTIs found" etc. make the file empty whatever the exit code, but a tool that was
    # killed (timeout, cancellation) failed whatever it printed before.
    if capture.empty_message is not None and finished:
        result.status = "empty"
        result.error = capture.empty_message
        return result
    if result.status != "ok":
        return result
    missing = [
        name
        for name, path in inv.outputs.items()
        if _stat_key(Path(path)) is None or _stat_key(Path(path)) == before[name]
    ]
    if missing:
        result.status = "failed"
        result.error = "exited 0 but did not write " + ", ".join(
            f"{name}={inv.outputs[name]}" for name in missing
        )
        return result
    result.outputs = {name: str(path) for name, path in inv.outputs.items()}
    _mark_empty(inv, result)
    return result


def _execute(
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout: float | None,
    capture: _Capture,
    result: StepResult,
    slot: Slot,
    run_in: Path | None = None,
) -> bool:
    """Start ``argv`` in its own session, stream its output, enforce ``timeout``.

    ``cwd`` is the invocation's private folder (its PFILES; the run's tools are found by it
    when they must be killed); the process starts in ``run_in`` when given (the run root of
    an existing-form command), else in ``cwd``. Fills ``result``; returns True when the tool
    ran to its own end (any exit code), False when it could not start, timed out or was
    killed by a signal.
    """
    with slot():
        if _SHUTDOWN.is_set():
            raise RunnerShutdown("the runner is shutting down")
        result.started = time.time()
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=run_in or cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # own process group: killable as a whole
                # SIGKILL when this thread dies: it supervises the tool until it is reaped,
                # so it outlives it unless the pipeline itself dies (tool_groups, layer 1).
                preexec_fn=parent_death_preexec(),
            )
        except OSError as exc:
            result.error = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            result.wall_seconds = time.perf_counter() - t0
            return False
        timed_out = _supervise(proc, timeout, capture, result, cwd)
        result.wall_seconds = time.perf_counter() - t0
    code = proc.returncode
    result.exit_code = code
    if timed_out:
        result.error = f"timed out after {timeout:g} s (process group killed)"
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        result.error = f"killed by {name}" + (" (run cancelled)" if _SHUTDOWN.is_set() else "")
    elif code != 0:
        last = next((line for line in reversed(capture.tail) if line.strip()), "")
        result.error = f"exit code {code}" + (f": {last.strip()}" if last else "")
    else:
        result.status = "ok"
    return not timed_out and code >= 0


def _supervise(
    proc: subprocess.Popen[bytes],
    timeout: float | None,
    capture: _Capture,
    result: StepResult,
    cwd: Path,
) -> bool:
    """Register, stream, enforce the timeout, reap; True if the tool timed out."""
    pgid = proc.pid  # session leader: pgid == pid
    with _PROCS_LOCK:
        _PROCS[pgid] = proc
        _PROC_DIRS[pgid] = Path(cwd).resolve()
    # If this process dies now, the reaper kills the group, and the next run finds the
    # record in the dead run's folder (tool_groups, layers 2 and 3).
    reaper().add(pgid)
    write_group_record(cwd, pgid)
    timed_out = False
    try:
        if _SHUTDOWN.is_set():  # kill_all ran between our check and the registration
            _signal_group(pgid, signal.SIGKILL)
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = _pump(proc, capture, deadline)
        if timed_out:
            capture.line("stderr", f"fermipipe: timeout after {timeout:g} s, killing the tool")
            kill_group(pgid)
            # Drain what the dying group still wrote (bounded: a descendant that left the
            # group could hold the pipes open forever).
            _pump(proc, capture, time.monotonic() + KILL_GRACE)
        # Wait for the leader without reaping it: while it is a zombie its pgid cannot be
        # reused, so killing what it left behind in its group cannot hit another process.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        _signal_group(pgid, signal.SIGKILL)
        reaper().discard(pgid)  # before the reaping frees the id for reuse
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        # wait4's rusage covers the child and every descendant it reaped (a shell's tool).
        result.cpu_seconds = usage.ru_utime + usage.ru_stime
    finally:
        with _PROCS_LOCK:
            _PROCS.pop(pgid, None)
            _PROC_DIRS.pop(pgid, None)
        if proc.returncode is None:  # an exception on the way: leave nothing running
            _signal_group(pgid, signal.SIGKILL)
            reaper().discard(pgid)
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return timed_out


def _pump(proc: subprocess.Popen[bytes], capture: _Capture, deadline: float | None) -> bool:
    """Forward output lines until both pipes close; True if ``deadline`` passed first."""
    sel = selectors.DefaultSelector()
    partial: dict[str, bytes] = {}
    for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        if stream is not None and not stream.closed:
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ, name)
            partial[name] = b""
    try:
        while sel.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return True
            for key, _ in sel.select(timeout=wait):
                name = key.data
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    if partial[name]:
                        capture.line(name, partial[name].decode("utf-8", "replace"))
                        partial[name] = b""
                    continue
                data = partial[name] + chunk
                *lines, partial[name] = data.split(b"\n")
                for line in lines:
                    capture.line(name, line.decode("utf-8", "replace"))
            if capture.log_file is not None:
                capture.log_file.flush()
        return False
    finally:
        sel.close()
