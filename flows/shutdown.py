"""What a SIGTERM guarantees, whatever Prefect's own teardown does.

During a flow run Prefect turns SIGTERM (a batch system's stop, ``kill``, or the runner
acting on a cancellation from the UI) into a ``TerminationSignal`` exception in the main
thread; our ``except``/``finally`` blocks then kill the tools and remove the staging folder.
That path waits for Prefect first — task threads to wind down, the crash or cancellation to
be reported to the server — and a busy server can hold it for minutes, while a batch
system's grace period is often 30 s. So the first of those blocks to see the exception calls
:func:`on_interrupt`, which starts a watchdog thread that at once kills every tool group
(:func:`fermipipe.runner.kill_all`) and runs the registered cleanups (the run's staging
folder), and, if the process is still alive ``GRACE`` seconds later, runs them again and
ends it with status 143.

Prefect's SIGTERM handler itself is left in place: it must be the installed handler for the
runner's cancellation protocol (a cancelled run ends Cancelled, not Crashed).
"""

from __future__ import annotations

import faulthandler
import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from fermipipe import runner
from flows import prefect_compat

#: Seconds between SIGTERM and the forced exit, when the normal teardown has not ended.
GRACE = 30.0

_CLEANUPS: dict[int, Callable[[], None]] = {}
_IDS = itertools.count()
_LOCK = threading.Lock()
_FIRED = threading.Event()


def register_cleanup(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` (idempotent, quick) when a SIGTERM arrives; returns the unregister call."""
    with _LOCK:
        key = next(_IDS)
        _CLEANUPS[key] = fn

    def unregister() -> None:
        with _LOCK:
            _CLEANUPS.pop(key, None)

    return unregister


def run_cleanups() -> None:
    """Kill every tool group, then run each registered cleanup (errors reported, not raised:
    one failing cleanup must not stop the others)."""
    runner.kill_all()
    with _LOCK:
        cleanups = list(_CLEANUPS.values())
    for fn in cleanups:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            sys.stderr.write(f"fermipipe: cleanup after SIGTERM failed: {exc}\n")


#: A command-line run (:func:`cli_stops`): Ctrl-C is handled like SIGTERM, the process
#: ends at most ``CLI_GRACE`` s after the signal, and it says so in one line.
_CLI = threading.Event()
CLI_GRACE = 7.0
_SAID = threading.Event()


def cli_stops() -> None:
    """For ``python flows/fermi.py``: Ctrl-C or SIGTERM end the process within
    ``CLI_GRACE`` seconds (tools killed and staging folder removed at once), with one line
    and no traceback (:func:`finish_stop`)."""
    _CLI.set()


def stopping() -> bool:
    """A stop (SIGTERM, or Ctrl-C in a CLI run) has started the watchdog."""
    return _FIRED.is_set()


def _say_stopped(signum: int) -> None:
    if not _SAID.is_set():
        _SAID.set()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        sys.stdout.flush()
        sys.stderr.write(f"fermipipe: stopped by {name}: tools killed, staging folder removed\n")
        sys.stderr.flush()


def finish_stop(signum: int) -> None:
    """End a stopped CLI run now: tools killed, cleanups run, queued logs sent (briefly),
    one line, exit 128 + signum. ``os._exit``: a native step computing in a task thread
    cannot be interrupted, and a normal exit would wait for it (concurrent.futures joins
    its threads at exit)."""
    run_cleanups()
    prefect_compat.drain_logs_and_events(2.0)
    prefect_compat.stop_temporary_servers()
    _say_stopped(signum)  # the last line
    os._exit(128 + signum)


def _watchdog(signum: int, grace: float) -> None:
    run_cleanups()
    time.sleep(grace)  # a daemon thread: it dies with the process if teardown ends first
    if _CLI.is_set():  # a CLI run: the normal stop (finish_stop) did not come in time
        run_cleanups()
        _say_stopped(signum)
        prefect_compat.stop_temporary_servers()
        os._exit(128 + signum)
    sys.stderr.write(
        f"fermipipe: still running {grace:.0f} s after {signal.Signals(signum).name}; "
        "exiting now (tools killed, staging folder removed). Where each thread was:\n"
    )
    sys.stderr.flush()
    faulthandler.dump_traceback(all_threads=True)  # for the bug report: what hung
    run_cleanups()  # a task thread may have recreated a folder in the meantime
    prefect_compat.stop_temporary_servers()
    os._exit(128 + signum)


class _TeardownInOneLine(logging.Filter):
    """A task stopped by the run's teardown (:class:`fermipipe.runner.RunnerShutdown`: a
    fold or a tree node waiting for a slot when the run was stopped) is logged without its
    traceback: the line says what happened, the stack says nothing more. Prefect logs a
    failed task's traceback unless it has retries left to decline, so step tasks never
    showed one and merge tasks did."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], runner.RunnerShutdown):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_teardown_tracebacks() -> None:
    """Install :class:`_TeardownInOneLine` on Prefect's task-run logger (once)."""
    task_runs = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _TeardownInOneLine) for f in task_runs.filters):
        task_runs.addFilter(_TeardownInOneLine())


def on_interrupt(exc: BaseException, grace: float = GRACE) -> None:
    """Called from ``except BaseException`` blocks: on a SIGTERM (Prefect's
    ``TerminationSignal``) start the watchdog, once. Anything else: nothing (Ctrl-C and
    errors take the normal path)."""
    from prefect.exceptions import TerminationSignal

    if isinstance(exc, TerminationSignal):
        signum = exc.signal
    elif isinstance(exc, KeyboardInterrupt) and _CLI.is_set():
        signum = signal.SIGINT
    else:
        return
    if _FIRED.is_set():
        return
    _FIRED.set()
    if _CLI.is_set():
        grace = min(grace, CLI_GRACE)
    if prefect_compat.release_orphaned_import_lock():
        sys.stderr.write("fermipipe: released the import lock the SIGTERM left held\n")
    threading.Thread(
        target=_watchdog, args=(signum, grace), name="sigterm-watchdog", daemon=True
    ).start()
