"""What a SIGTERM guarantees, whatever Prefect's own teardown does.

During a flow run Prefect turns SIGTERM into an exception in the main thread; our ``finally``
blocks then kill the tools and remove the staging folder. That path waits for Prefect first
— task threads to wind down, the crash to be reported to the server — and a busy server can
hold it for minutes (a batch system's grace period is often 30 s). So, while
:func:`sigterm_guard` is active, a SIGTERM also starts a watchdog thread that at once kills
every tool group (:func:`fermipipe.runner.kill_all`) and runs the registered cleanups (the
run's staging folder), and, if the process is still alive ``grace`` seconds later, runs them
again and ends it with status 143. Then Prefect's handler runs as before.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fermipipe import runner

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


def _watchdog(signum: int, grace: float) -> None:
    run_cleanups()
    time.sleep(grace)  # a daemon thread: it dies with the process if teardown ends first
    sys.stderr.write(
        f"fermipipe: still running {grace:.0f} s after {signal.Signals(signum).name}; "
        "exiting now (tools killed, staging folder removed)\n"
    )
    sys.stderr.flush()
    run_cleanups()  # a task thread may have recreated a folder in the meantime
    os._exit(128 + signum)


@contextlib.contextmanager
def sigterm_guard(grace: float = GRACE) -> Iterator[None]:
    """Within the block, SIGTERM starts the watchdog, then goes to the handler found here
    (Prefect's, inside a flow). Only the main thread can set signal handlers: elsewhere this
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        if not _FIRED.is_set():
            _FIRED.set()
            threading.Thread(
                target=_watchdog, args=(signum, grace), name="sigterm-watchdog", daemon=True
            ).start()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # terminate, but through the finally blocks
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
