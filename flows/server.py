"""The local Prefect server a command-line run reuses (no Prefect import: it runs before).

Without ``PREFECT_API_URL`` Prefect would start a temporary server for every run (10–20 s on
2 busy cores) and throw it away with the run's records at exit, so a CLI run could neither be
watched afterwards nor retried from the UI. Instead the first run that needs one starts
``prefect server start`` on loopback, detached (a session of its own: the terminal's Ctrl-C
does not reach it), with this user's ``PREFECT_HOME``; later runs find it and use it.

How a run finds *its* server, without taking over anyone else's:

* ``$PREFECT_HOME/server.pid`` (Prefect's own file: ``prefect server stop`` reads it) and
  ``$PREFECT_HOME/fermipipe-server.json`` (its URL) name it. It is used when that process is
  alive and its ``/api/health`` answers; a PID file whose process is gone (stale, or a
  server that died) is removed and a new server started.
* A new server takes the first free port from 4200 on. A port where something already
  listens — another user's server, say — is skipped, never used: only a server whose
  ``/api/admin/settings`` reports our PREFECT_HOME (the user's own ``prefect server start``)
  is adopted.
* Two runs starting at once: a lock file makes the second wait for the first one's server.

``--ephemeral`` (or ``FERMIPIPE_PREFECT_SERVER=ephemeral``) keeps Prefect's temporary
server instead (nothing left running, nothing kept).

    python -m flows.server start|status|stop
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flows import prefect_compat

HOST = "127.0.0.1"
FIRST_PORT = 4200  # Prefect's default
PORTS_TRIED = 20
#: Environment variable choosing the server: ``local`` (default) or ``ephemeral``.
MODE_VARIABLE = "FERMIPIPE_PREFECT_SERVER"
#: Prefect's own PID file name (``prefect server stop`` reads it).
PID_FILE = prefect_compat.SERVER_PID_FILE
STATE_FILE = "fermipipe-server.json"
LOG_FILE = "fermipipe-server.log"
#: A fresh home migrates a new SQLite database first: ~15 s on 2 busy cores.
START_TIMEOUT = 120.0


class ServerError(RuntimeError):
    """The local server could not be started (the message says why, in one line)."""


@dataclass(frozen=True)
class LocalServer:
    api_url: str
    pid: int | None  # None: adopted (started by the user, not by fermipipe)
    started: bool  # started by this call

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def prefect_home() -> Path:
    """PREFECT_HOME as Prefect resolves it (default ``~/.prefect``)."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active profile (profiles.toml)."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    path = Path(
        os.environ.get("PREFECT_PROFILES_PATH") or prefect_home() / "profiles.toml"
    ).expanduser()
    try:
        import tomllib

        doc = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    name = os.environ.get("PREFECT_PROFILE") or doc.get("active", "ephemeral")
    url = doc.get("profiles", {}).get(name, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def health(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def server_home(api_url: str) -> Path | None:
    """The PREFECT_HOME the server at ``api_url`` reports (None: not a Prefect server)."""
    try:
        with urllib.request.urlopen(f"{api_url}/admin/settings", timeout=3) as r:
            return Path(json.loads(r.read())["home"]).expanduser()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def alive(pid: int) -> bool:
    """The process exists and is a Prefect server (a recycled PID is not ours)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"prefect" in cmd and b"server" in cmd


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with (home / "fermipipe-server.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recorded(home: Path) -> tuple[int, str] | None:
    """(pid, api url) of the server recorded in ``home``, if its process is alive; a stale
    record (process gone) is removed."""
    try:
        pid = int((home / PID_FILE).read_text().strip())
        url = str(json.loads((home / STATE_FILE).read_text())["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        pid, url = 0, ""
    if pid and url and alive(pid):
        return pid, url
    forget(home)
    return None


def forget(home: Path) -> None:
    for name in (PID_FILE, STATE_FILE):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()


def wait_healthy(
    api_url: str,
    pid: int,
    home: Path,
    timeout: float = START_TIMEOUT,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait for ``/api/health``; ``proc``: the server this process just started (checked
    with ``poll``: right after the fork its command line is still ours, not the server's)."""
    deadline = time.monotonic() + timeout
    while not health(api_url):
        if (proc.poll() is not None) if proc is not None else not alive(pid):
            forget(home)
            raise ServerError(
                f"the local Prefect server exited while starting; see {home / LOG_FILE}"
            )
        if time.monotonic() > deadline:
            raise ServerError(f"the local Prefect server did not answer within {timeout:.0f} s")
        time.sleep(0.3)


def free_port() -> int:
    for port in range(FIRST_PORT, FIRST_PORT + PORTS_TRIED):
        if listening(port):
            continue  # someone's server (or anything else): never ours to use
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        return port
    raise ServerError(f"no free port in {FIRST_PORT}-{FIRST_PORT + PORTS_TRIED - 1}")


def start(home: Path) -> LocalServer:
    """``prefect server start`` on a free loopback port, detached, recorded in ``home``."""
    port = free_port()
    api_url = f"http://{HOST}:{port}/api"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",  # no telemetry (and no error offline)
    )
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect), "server", "start", "--host", HOST, "--port", str(port)]
    with (home / LOG_FILE).open("ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the caller's terminal must not stop it
            close_fds=True,
        )
    (home / PID_FILE).write_text(str(proc.pid))  # `prefect server stop` reads it
    (home / STATE_FILE).write_text(json.dumps({"api_url": api_url, "pid": proc.pid}))
    wait_healthy(api_url, proc.pid, home, proc=proc)
    return LocalServer(api_url, proc.pid, started=True)


def ensure(home: Path | None = None) -> LocalServer:
    """This user's local server: the recorded one, the user's own on 4200, or a new one."""
    home = home or prefect_home()
    with locked(home):
        if (found := recorded(home)) is not None:
            pid, url = found
            wait_healthy(url, pid, home)  # may still be starting (another run's start)
            return LocalServer(url, pid, started=False)
        default = f"http://{HOST}:{FIRST_PORT}/api"
        if listening(FIRST_PORT) and same_home(server_home(default), home):
            return LocalServer(default, None, started=False)  # the user's own server
        return start(home)


def same_home(a: Path | None, b: Path) -> bool:
    try:
        return a is not None and a.resolve() == b.resolve()
    except OSError:
        return False


def stop(home: Path | None = None) -> str:
    home = home or prefect_home()
    with locked(home):
        found = recorded(home)
        if found is None:
            return "no local Prefect server started by fermipipe is running"
        pid, url = found
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)  # its session: uvicorn and its children
            deadline = time.monotonic() + grace
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not alive(pid):
                break
        if alive(pid):
            raise ServerError(f"the local Prefect server (pid {pid}) did not stop")
        forget(home)
        return f"stopped the local Prefect server at {url.removesuffix('/api')}"


def stop_hint(home: Path) -> str:
    default = Path.home() / ".prefect"
    if "PREFECT_HOME" in os.environ and not same_home(home, default):
        return f"PREFECT_HOME={home} python -m flows.server stop"
    return "python -m flows.server stop"


def use_for_cli(ephemeral: bool) -> str | None:
    """Point this process at a server before Prefect is imported; returns the one line to
    print (None: nothing to say). ``ephemeral``: Prefect's temporary server."""
    # Telemetry off for any server this process starts (the temporary one inherits it).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if configured_api_url():
        return None
    if ephemeral or os.environ.get(MODE_VARIABLE, "local") == "ephemeral":
        # Its first start migrates a new database, ~15 s on 2 busy cores, against a
        # default timeout of 20 s: give it room.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        prefect_compat.start_temporary_server_ignoring_sigint()
        return None
    home = prefect_home()
    server = ensure(home)
    os.environ["PREFECT_API_URL"] = server.api_url
    how = "started; it keeps running for later runs" if server.started else "running"
    stop_how = f"stop it: {stop_hint(home)}" if server.pid is not None else "your own server"
    return f"fermipipe: Prefect UI at {server.ui_url} (local server {how}; {stop_how})"


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m flows.server", description="The local Prefect server of CLI runs."
    )
    p.add_argument("action", choices=["start", "status", "stop"])
    args = p.parse_args(argv)
    home = prefect_home()
    try:
        if args.action == "stop":
            print(stop(home))
        elif args.action == "start":
            server = ensure(home)
            print(f"Prefect UI at {server.ui_url} (PREFECT_HOME={home})")
        else:
            found = recorded(home)
            print(f"running at {found[1].removesuffix('/api')}" if found else "not running")
    except ServerError as exc:
        print(f"fermipipe: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
