"""Every place the flow layer reaches into Prefect's internals or works around its behaviour.

Each workaround is one small function whose docstring says what Prefect does, why we need
the workaround, and what would tell us it is no longer needed; tests/test_prefect_compat.py
has a test per workaround against the installed Prefect. They were checked against Prefect
``CHECKED_AGAINST``: on another major.minor version a warning (once per process) asks for them
to be re-checked — run that test file first after an upgrade.

No Prefect import at module level: flows/server.py calls in here before Prefect is imported
(its settings must come from the environment we set up first).
"""

from __future__ import annotations

import _imp
import contextlib
import copy
import importlib.metadata
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from prefect import Task
    from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

#: The Prefect version every workaround here was checked against.
CHECKED_AGAINST = "3.9.1"

T = TypeVar("T")
TaskT = TypeVar("TaskT", bound="Task[Any, Any]")


class PrefectVersionWarning(UserWarning):
    """The installed Prefect is not the major.minor version the workarounds were checked on."""


_WARNED: set[str] = set()


def installed_prefect() -> str:
    """The installed Prefect's version, without importing Prefect."""
    return importlib.metadata.version("prefect")


def check_prefect_version(installed: str | None = None) -> str | None:
    """Warn (once per process and version) when ``installed`` (default: the installed
    Prefect) differs from :data:`CHECKED_AGAINST` in major.minor; returns the message, or
    None when they agree. A patch release is assumed to keep the internals used here."""
    installed = installed or installed_prefect()
    if installed.split(".")[:2] == CHECKED_AGAINST.split(".")[:2]:
        return None
    message = (
        f"fermipipe's Prefect workarounds (flows/prefect_compat.py) were checked against "
        f"Prefect {CHECKED_AGAINST}, this is {installed}: run tests/test_prefect_compat.py "
        "and update CHECKED_AGAINST"
    )
    if installed not in _WARNED:
        _WARNED.add(installed)
        warnings.warn(message, PrefectVersionWarning, stacklevel=2)
    return message


check_prefect_version()


# --- Submission -----------------------------------------------------------------------------


class SerializeCount:
    """What :func:`settings_serialized_once` did: ``calls`` to ``SettingsContext.serialize``,
    of which ``computed`` really serialized."""

    def __init__(self) -> None:
        self.calls = 0
        self.computed = 0


@contextlib.contextmanager
def settings_serialized_once() -> Iterator[SerializeCount]:
    """Inside the block, ``SettingsContext.serialize`` computes once per settings object.

    Prefect: prefect-dask calls ``prefect.context.serialize_context`` for every task it
    submits, and ~90% of that is ``SettingsContext.serialize`` — a model_dump of every
    Prefect setting with secret rendering, ~19 ms a call on an idle core here
    (benchmarks/scaling.py, profiled), the same result each time.
    Why: 1000 files × 4 steps is over a minute of the flow thread doing only that. The
    patch memoizes per settings object (held, so its id stays valid) and is removed on the
    way out; the settings cannot change during the block as long as the caller's thread only
    submits inside it (flows/task_runners.py ``fast_submission``).
    No longer needed when: Prefect caches the serialized settings itself, or prefect-dask
    stops serializing them per task (profile a Dask submission loop: ``serialize`` no
    longer dominates).
    """
    from prefect.context import SettingsContext

    original = SettingsContext.serialize
    memo: dict[tuple[int, bool], tuple[Any, dict[str, Any]]] = {}
    count = SerializeCount()

    def serialize(self: SettingsContext, include_secrets: bool = True) -> dict[str, Any]:
        count.calls += 1
        hit = memo.get((id(self), include_secrets))
        if hit is not None and hit[0] is self:  # the same settings object (held: id is stable)
            return hit[1]
        out = original(self, include_secrets=include_secrets)
        count.computed += 1
        memo[(id(self), include_secrets)] = (self, out)
        return out

    SettingsContext.serialize = serialize  # type: ignore[method-assign]
    try:
        yield count
    finally:
        SettingsContext.serialize = original  # type: ignore[method-assign]


def named_copy(task: TaskT, name: str) -> TaskT:
    """``task`` under another name (its ``name`` and ``task_run_name``), as a shallow copy.

    Prefect: ``Task.with_options`` builds a new Task through ``__init__`` (re-validating and
    re-hashing everything), ~1 ms a call; and it names a task run from ``task_run_name``
    only once the run starts, so a step that never ran (NotReady) keeps a generic name.
    Why: one named task per (file, step) submission, 4 s over 1000 files × 4 steps with
    ``with_options``, microseconds as a copy. The task key (from the function) and the cache
    policy are shared with ``task``, so caching is unchanged.
    No longer needed when: ``with_options`` costs microseconds, or a task run's name can be
    given at submission (a ``submit`` argument).
    """
    named = copy.copy(task)
    named.name = name
    named.task_run_name = name
    return named


class UnknownHandle(LookupError):
    """A handle that names nothing in this process."""


class InProcess(Generic[T]):
    """Objects handed to a subflow or task running in this process, by handle.

    Prefect: a flow run's parameters are sent to the API (which refuses more than 512 KB
    of them; the plan and summaries of ~100 weekly files exceed that), and a task's
    parameters are walked for futures and hashed (seconds for 1000 files' invocations).
    Why: the subflow/task runs in this process, so it gets a short handle and finds the
    object here. ``with registry.passing(obj) as handle: ...`` registers ``obj`` under a
    fresh handle and always removes it; ``registry.get(handle)`` returns it. A run retried
    from the UI (another process) finds nothing: :class:`UnknownHandle`, said plainly.
    No longer needed when: Prefect can pass a subflow or task an in-process object without
    serializing or walking it.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._objects: dict[str, T] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def passing(self, obj: T) -> Iterator[str]:
        handle = uuid.uuid4().hex
        with self._lock:
            self._objects[handle] = obj
        try:
            yield handle
        finally:
            with self._lock:
                self._objects.pop(handle, None)

    def get(self, handle: str) -> T:
        with self._lock:
            try:
                return self._objects[handle]
            except KeyError:
                raise UnknownHandle(
                    f"no {self.what} under handle {handle!r} in this process: it is passed "
                    "only to a run started by this process (a run retried on its own, from "
                    "the UI or elsewhere, cannot find it)"
                ) from None

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    # prefect-dask ships the flow run's context — the flow, its function and the globals
    # the function names (cloudpickle, by value) — with every task: a registry a flow uses
    # travels empty (its objects belong to this process) and without its lock.
    def __getstate__(self) -> dict[str, Any]:
        return {"what": self.what}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["what"])  # type: ignore[misc]


@contextlib.contextmanager
def no_subflow_heartbeat() -> Iterator[None]:
    """Flow runs started inside (a subflow) start no heartbeat thread of their own.

    Prefect: every flow run, subflows included, runs a heartbeat thread
    (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``) and joins it when it ends; the thread sleeps in
    1 s steps, so the join costs up to a second.
    Why: the parent run's heartbeat already covers this process; that second was a fifth of a
    no-op rerun.
    No longer needed when: a subflow shares its parent's heartbeat, or the thread is
    stopped without waiting (``flow_engine._send_heartbeats`` no longer joins it).
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


# --- Task runners ---------------------------------------------------------------------------


def dask_client_if_connected(pool: TaskRunner[Any]) -> Any | None:
    """The Dask client of a DaskTaskRunner that has connected, else None (threads too).

    Prefect: ``DaskTaskRunner.client`` connects (or starts the cluster) on first use; only
    the private ``_client`` says whether that has happened.
    Why: on the way out (cancellation, SIGTERM) we must not start a cluster just to stop
    tools on it (flows/task_runners.py ``kill_remote_tools``).
    No longer needed when: prefect-dask exposes whether the runner is connected.
    """
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:  # not installed: no Dask runner to ask
        return None
    if not isinstance(pool, DaskTaskRunner):
        return None
    return pool._client


def drop_pending_threads(pool: ThreadPoolTaskRunner) -> None:
    """Cancel a ThreadPoolTaskRunner's tasks that have not started, without waiting for the
    running ones.

    Prefect: ``ThreadPoolTaskRunner.cancel_all`` sets each task's cancel event, then shuts
    its executor down *waiting* for the running threads, and so does the runner's
    ``__exit__``.
    Why: a native step (an in-process numba kernel, ~20 s for a fine gtltcube) cannot be
    interrupted; a stop would wait for it, then it would fail writing into the removed
    staging folder. Its tools are already killed; a CLI run then ends its process
    (flows/shutdown.py ``finish_stop``), which ends those threads too. We do what
    ``cancel_all`` does with ``wait=False``, through its private ``_cancel_events`` and
    ``_executor`` (set to None so ``__exit__`` does not wait either).
    No longer needed when: ``cancel_all`` (or the runner's exit) can skip waiting.
    """
    for event in getattr(pool, "_cancel_events", {}).values():
        event.set()
    executor = getattr(pool, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
        pool._executor = None


# --- Cancellation and shutdown --------------------------------------------------------------


def show_cancelling() -> None:
    """Make this process's copy of the flow run's state say Cancelling when the runner is
    cancelling it.

    Prefect: on a cancellation from the UI of a served/worker run, the runner owns the
    parent run's state (it sets Cancelled once this process is gone), so the engine here
    leaves its own copy at Running and logs "Finished in state Running()".
    Why: that line reads like a bug. ``flow_engine._termination_intent`` (private) is the
    engine's own test for a cancellation.
    No longer needed when: the engine's copy says Cancelling/Cancelled for a
    runner-delivered cancellation (the log line no longer says Running).
    """
    with contextlib.suppress(Exception):
        from prefect.context import FlowRunContext
        from prefect.flow_engine import _termination_intent
        from prefect.states import Cancelling

        ctx = FlowRunContext.get()
        if ctx is not None and ctx.flow_run is not None and _termination_intent() == "cancel":
            ctx.flow_run.state = Cancelling(message="Flow run was cancelled.")


def drain_logs_and_events(timeout: float) -> None:
    """Send the logs and events Prefect still has queued, for at most ``timeout`` seconds.

    Prefect: log records and events go to the API from background queue services
    (``APILogWorker``, ``EventsWorker``), drained at interpreter exit (``atexit``).
    Why: a stopped CLI run ends with ``os._exit`` (flows/shutdown.py ``finish_stop``),
    which skips ``atexit``: the run's last log lines would be lost. The run's final state
    is already recorded (the engine sets it through the API).
    No longer needed when: we stop ending the process with ``os._exit``.
    """

    def drain() -> None:
        with contextlib.suppress(Exception):
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=timeout)
        with contextlib.suppress(Exception):
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=timeout)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    thread.join(timeout)


def stop_temporary_servers() -> None:
    """Stop the temporary Prefect server(s) this process started (no PREFECT_API_URL).

    Prefect: the temporary server is a uvicorn subprocess (``SubprocessASGIServer``, one
    instance per port in its private ``_instances``), stopped from ``atexit``.
    Why: ``os._exit`` (flows/shutdown.py, flows/cli.py) skips ``atexit``: the subprocess
    would run on for good, holding its port and our stdout.
    No longer needed when: we stop ending the process with ``os._exit``, or Prefect stops
    its server when its parent dies.
    """
    module = sys.modules.get("prefect.server.api.server")
    if module is None:  # never started one
        return
    cls = getattr(module, "SubprocessASGIServer", None)  # None: still being imported
    for server in list(getattr(cls, "_instances", {}).values()):
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            sys.stderr.write(f"fermipipe: could not stop Prefect's temporary server: {exc}\n")


def start_temporary_server_ignoring_sigint() -> None:
    """Start Prefect's temporary server now, with SIGINT blocked in the child.

    Prefect: without PREFECT_API_URL it starts a temporary server (a uvicorn subprocess) in
    our process group, so a terminal's Ctrl-C reaches it too and it dies at once; the run's
    last API calls (its Crashed state, its logs) then failed with pages of "Connection
    refused". It makes one ``SubprocessASGIServer`` per port (``None``: the temporary one)
    and reuses the one started here.
    Why: a blocked signal mask is inherited across fork and exec, so the server ignores the
    terminal's Ctrl-C; Prefect still stops it at exit (SIGTERM).
    No longer needed when: Prefect starts its temporary server in a session of its own.
    """
    import signal

    if not hasattr(signal, "pthread_sigmask"):
        return
    from prefect.server.api.server import SubprocessASGIServer

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        SubprocessASGIServer().start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


#: The PID file ``prefect server start`` writes in PREFECT_HOME and ``prefect server stop``
#: reads (``prefect.cli._server_utils.SERVER_PID_FILE_NAME``, private). flows/server.py
#: writes it for the server it starts, so ``prefect server stop`` stops ours too; it cannot
#: import it (it runs before Prefect is imported). No longer needed when: Prefect exposes the
#: name publicly (until then the test compares the two).
SERVER_PID_FILE = "server.pid"


def release_orphaned_import_lock() -> int:
    """Release Python's global import lock if this thread still holds it; returns how many
    holds were released.

    A CPython workaround, kept here because Prefect's SIGTERM handling triggers it: during
    a flow run Prefect's handler raises ``TerminationSignal`` in the main thread, and that
    exception can land between importlib's ``_imp.acquire_lock()`` and the ``try`` that
    releases it (the main thread imports lazily, e.g. inside Prefect). It then propagates
    and the lock stays held by the main thread: task threads blocked for good in
    ``_imp.acquire_lock()`` and the teardown, which waits for them, hung (stacks dumped by
    the watchdog after a SIGTERM under load). Called from our ``except`` blocks
    (flows/shutdown.py ``on_interrupt``), where no import of this thread is in progress any
    more, so a hold found there can only be such an orphan.
    No longer needed when: CPython's import lock is signal-safe (or gone), or Prefect stops
    raising from its signal handler.
    """
    released = 0
    while True:
        try:
            _imp.release_lock()
        except RuntimeError:  # not held by this thread (any more)
            return released
        released += 1
