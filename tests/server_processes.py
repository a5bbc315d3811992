"""A local Prefect server and Dask processes on 127.0.0.1, as subprocesses, for tests and
benchmarks.

Each process is started in a session (process group) of its own, so that stopping it also
stops whatever it started (the Prefect server's workers, a Dask worker's tools), as losing a
node would. Failures raise RuntimeError (with the server log's tail where there is one): this
module does not import pytest; tests wrap these helpers in their fixtures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
#: The console scripts (``prefect``, ``dask``) of the running interpreter's environment.
BIN = Path(sys.executable).parent
#: How much of the server log a failure quotes.
LOG_TAIL = 3000


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on loopback."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_group(
    argv: list[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[Any]:
    """``argv`` in a session of its own, stdout and stderr to ``log`` (overwritten)."""
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 10) -> None:
    """Signal ``proc``'s process group (started in its own session), then kill it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``check`` until it is true; RuntimeError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-LOG_TAIL:] if log.exists() else "(no log)"


@contextlib.contextmanager
def prefect_server(
    home: Path,
    *,
    settings: Mapping[str, str] | None = None,
    drop: Collection[str] = (),
    timeout: float = 90,
) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free loopback port, PREFECT_HOME = ``home`` (SQLite there).

    Yields the environment for the processes that use it: this process's, without any
    PREFECT_* variable nor those in ``drop``, with PREFECT_API_URL pointing at the server,
    results stored under ``home``, analytics and UI off, and ``settings`` on top. Stopped
    (SIGTERM to its group, then SIGKILL) on leaving. The log is ``home/server.log``.
    """
    port = free_port()
    api = f"http://{HOST}:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in drop}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(home / "storage"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",  # not needed; saves copying the UI's files
    )
    env.update(settings or {})
    log = home / "server.log"
    argv = [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    proc = start_group(argv, env, log)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited: {log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        try:
            wait_until(healthy, timeout, "the Prefect server's /api/health", interval=0.5)
        except RuntimeError as exc:
            if proc.poll() is not None:
                raise
            raise RuntimeError(f"{exc}: {log_tail(log)}") from None
        yield env
    finally:
        stop_group(proc, signal.SIGTERM, 20)


def start_dask_scheduler(
    port: int, env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[Any]:
    """`dask scheduler` on ``127.0.0.1:port`` (dashboard on a free port)."""
    argv = [str(BIN / "dask"), "scheduler", "--host", HOST, "--port", str(port)]
    argv += ["--dashboard-address", f"{HOST}:0"]
    return start_group(argv, env, log, cwd)


def start_dask_worker(
    address: str,
    env: Mapping[str, str],
    log: Path,
    *,
    name: str | None = None,
    resources: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[Any]:
    """`dask worker --nthreads 1 --no-nanny` on loopback, connected to ``address``.

    No nanny: a killed worker stays dead (a nanny would restart it), and the worker's pid is
    the parent of the tools it starts, so stopping its group stops them too.
    """
    argv = [str(BIN / "dask"), "worker", address]
    if name is not None:
        argv += ["--name", name]
    argv += ["--nthreads", "1", "--no-nanny", "--host", HOST, "--dashboard-address", f"{HOST}:0"]
    if resources:
        argv += ["--resources", resources]
    return start_group(argv, env, log, cwd)


def wait_for_workers(
    address: str, n: int, scheduler: subprocess.Popen[Any], timeout: float = 180
) -> None:
    """Wait until ``n`` workers are connected to the scheduler at ``address``; retries while
    the scheduler does not listen yet or a handshake or wait times out (the 2-core CI
    machine, busy, once took longer than one 10 s handshake and a 60 s wait): the OSError
    (TimeoutError is one) is raised after ``timeout`` s, or at once if the scheduler exited."""
    from distributed import Client  # only the Dask helpers need it

    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(address, timeout=10) as client:
                client.wait_for_workers(n, timeout=max(1.0, min(30.0, deadline - time.monotonic())))
            return
        except OSError:
            if time.monotonic() > deadline or scheduler.poll() is not None:
                raise
            time.sleep(0.5)
