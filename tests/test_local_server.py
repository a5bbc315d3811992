"""flows/server.py: the local Prefect server CLI runs reuse, with real `prefect server start`
processes in a temporary PREFECT_HOME (never ~/.prefect).

One test walks what a user meets: a port already taken by someone else's server (never
used: ours goes to the next one), the first run starting the server, a second run reusing
it, the server dying (its PID file is then stale: a new server is started), and the stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from processes import alive
from server_processes import free_port

from flows import server as local


class OtherUsersServer(BaseHTTPRequestHandler):
    """Someone else's server: healthy, but its PREFECT_HOME is not ours."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"true" if self.path.endswith("/health") else json.dumps({"home": "/x"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def taken_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port held by another user's (fake) server, made the first port tried; the port
    after it must be free for ours."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port + 1)) != 0:
                break
    other = HTTPServer(("127.0.0.1", port), OtherUsersServer)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    monkeypatch.setattr(local, "FIRST_PORT", port)
    try:
        yield port
    finally:
        other.shutdown()


@pytest.mark.timeout(300)
def test_start_reuse_restart_after_death_and_stop(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "prefect-home"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    first = third = local.ensure(home)
    try:
        assert first.started and first.pid is not None
        assert first.api_url == f"http://127.0.0.1:{taken_port + 1}/api"  # not theirs
        assert (home / "server.pid").read_text() == str(first.pid)  # `prefect server stop`
        assert local.server_home(first.api_url) == home  # it is ours
        assert local.health(f"http://127.0.0.1:{taken_port}/api")  # theirs still answers

        again = local.ensure(home)  # the next run
        assert (again.api_url, again.pid, again.started) == (first.api_url, first.pid, False)

        os.killpg(first.pid, signal.SIGKILL)  # the server dies; its PID file stays
        deadline = time.monotonic() + 20
        while alive(first.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (home / "server.pid").exists()
        third = local.ensure(home)
        assert third.started and third.pid != first.pid and local.health(third.api_url)
        assert (home / "server.pid").read_text() == str(third.pid)
    finally:
        said = local.stop(home)
    assert said.startswith("stopped the local Prefect server")
    assert not (home / "server.pid").exists()
    assert not local.health(third.api_url)
    assert local.stop(home).startswith("no local Prefect server")


def test_cli_line_and_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A configured server: nothing started, nothing said; telemetry off."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    assert local.use_for_cli(ephemeral=False) is None
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert not (tmp_path / "home" / "server.pid").exists()
    monkeypatch.delenv("PREFECT_API_URL")
    # A profile's PREFECT_API_URL counts as configured.
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "profiles.toml").write_text(
        'active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://h:4200/api"\n'
    )
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    assert local.configured_api_url() == "http://h:4200/api"
