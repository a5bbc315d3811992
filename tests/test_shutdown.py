"""SIGTERM guarantees (flows/shutdown.py, flows/cli.py), in real processes with real signals:
the tools and the staging folder go at once, the process ends within the grace period even
when the normal teardown hangs, and a SIGTERM never leaves Prefect's temporary server behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pipeline_project import REPO, make_project
from processes import alive

pytestmark = pytest.mark.timeout(240)

# A process whose normal SIGTERM teardown never ends: its SIGTERM handler raises Prefect's
# TerminationSignal (as Prefect's own does during a flow run), the except block calls
# on_interrupt as the flow's do, then the teardown hangs. A real tool (a process group of its
# own) is running and a folder is registered for cleanup.
HANGING = """
import shutil, signal, sys, threading, time
from pathlib import Path
from prefect.exceptions import TerminationSignal
from fermipipe import runner
from fermipipe.plan import Invocation
from flows.shutdown import on_interrupt, register_cleanup

folder, pidfile = Path(sys.argv[1]), Path(sys.argv[2])
folder.mkdir()
(folder / "intermediate.fits").write_bytes(b"x" * 2880)
register_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))

def prefect_like(signum, frame):
    raise TerminationSignal(signal=signum)

signal.signal(signal.SIGTERM, prefect_like)
tool = Invocation(step="s", file_id="f", engine="shell",
                  shell=f"echo $$ > {pidfile}; exec sleep 300")
threading.Thread(target=runner.run_invocation, args=(tool,), daemon=True).start()
try:
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
except BaseException as exc:
    on_interrupt(exc, grace=float(sys.argv[3]))
    print("teardown started, never ends", flush=True)
    while True:
        time.sleep(0.05)
"""


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_watchdog_cleans_at_once_and_ends_a_hanging_teardown(tmp_path: Path) -> None:
    folder, pidfile, grace = tmp_path / "staging", tmp_path / "tool.pid", 3.0
    script = tmp_path / "hanging.py"
    script.write_text(textwrap.dedent(HANGING))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder), str(pidfile), str(grace)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "the tool to start")
    tool = int(pidfile.read_text())
    assert alive(tool) and folder.exists()

    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # At once (long before the grace period): the tool's group killed, the folder removed.
    wait_for(lambda: not alive(tool) and not folder.exists(), grace - 0.5, "the cleanup")
    assert proc.poll() is None, "the process must still be in its (hanging) teardown"
    out, err = proc.communicate(timeout=grace + 20)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 128 + signal.SIGTERM
    assert "teardown started, never ends" in out  # the previous handler did run
    assert f"still running {grace:.0f} s after SIGTERM; exiting now" in err
    assert grace <= elapsed < grace + 15


@pytest.mark.timeout(300)
def test_sigterm_without_a_server_leaves_no_temporary_server(tmp_path: Path) -> None:
    """Without PREFECT_API_URL Prefect starts a temporary server (a uvicorn subprocess that
    inherits stdout). SIGTERM must stop it too: ``communicate`` returns only when nobody
    holds the pipe any more — a left-over server made it wait forever."""
    config = make_project(tmp_path, ram_disk={"enabled": True, "path": str(tmp_path / "shm")})
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL" and k != "PREFECT_PROFILE"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "flows" / "fermi.py"), str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(
        lambda: any((tmp_path / "shm").glob("fermipipe-run-*/lat_*")) or proc.poll() is not None,
        180,
        "the chains to start",
    )
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=5) if proc.poll() is None else ("", None)
        pytest.fail(f"stdout still open 90 s after SIGTERM (a server left running?)\n{out}")
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "Stopping temporary server" in out  # the run used (and stopped) one
    assert not any((tmp_path / "shm").glob("fermipipe-run-*")), out[-3000:]


# The orphaned import lock a SIGTERM can leave (prefect_compat.release_orphaned_import_lock)
# is tested in tests/test_prefect_compat.py.


def slow_native_project(folder: Path) -> Path:
    """The example chain on the sample weeks, cache off, with a fine gtltcube grid: each
    week's in-process (numba) gtltcube computes for ~20 s on this machine."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "example.yaml").read_text())
    sample = REPO / "data" / "sample"
    cfg["resources"] = {"cores": 2, "ram_disk": {"enabled": True, "path": str(folder / "shm")}}
    cfg["input"] = {"directory": str(sample), "pattern": "lat_photon_weekly_w*_p305_v001.fits"}
    cfg["output"] = {"directory": "products", "workdir": "work"}
    cfg["cache"] = {"enabled": False}
    cfg["caldb"] = str(sample / "caldb")  # the example's own path is relative to configs/
    for step in cfg["steps"]:
        if "scfile" in step.get("inputs", {}):
            step["inputs"]["scfile"] = str(sample / "lat_spacecraft_weekly_w{week}_p310_v001.fits")
        if step["name"] == "ltcube":
            step["params"]["binsz"] = 0.125
    (folder / "shm").mkdir(parents=True)
    config = folder / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_stop_while_a_native_step_computes(
    prefect_server: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C (to the process group, as a terminal sends it) or SIGTERM while gtltcube runs
    in-process: the run ends within seconds, not when the kernel is done; the staging
    folder is gone; one line says so; no traceback."""
    config = slow_native_project(tmp_path)
    log = tmp_path / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "flows" / "fermi.py"), str(config)],
            cwd=tmp_path,
            env={**os.environ, **prefect_server},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: log.read_text().count("Task run 'ccube") >= 3 or proc.poll() is not None,
            150,
            "the gtltcube steps to start",
        )
        time.sleep(1.0)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert any((tmp_path / "shm").glob("fermipipe-run-*"))
        t0 = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        code = proc.wait(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert elapsed < 10, f"{elapsed:.1f} s to stop\n{text[-3000:]}"
    assert code == 128 + sig
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    said = [ln for ln in text.splitlines() if ln.startswith("fermipipe: stopped")]
    assert said == [f"fermipipe: stopped by {name}: tools killed, staging folder removed"], text
    assert "Traceback" not in text
    assert not any((tmp_path / "shm").glob("fermipipe-run-*"))
    assert not (tmp_path / "products" / "example_ltcube.fits").exists()


TEARDOWN_SCRIPT = """
import sys
from prefect import flow, task
from fermipipe import runner
from flows.shutdown import quiet_teardown_tracebacks

@task(name="fold")
def waits_for_a_slot() -> None:
    raise runner.RunnerShutdown("the runner is shutting down")

@flow(name="teardown")
def stopped() -> None:
    if sys.argv[1] == "quiet":
        quiet_teardown_tracebacks()
    waits_for_a_slot(return_state=True)

stopped()
"""


@pytest.mark.parametrize("quiet", [True, False])
def test_a_task_stopped_by_the_teardown_is_one_line(
    prefect_server: dict[str, str], tmp_path: Path, quiet: bool
) -> None:
    """A merge task (no retries) refused its slot by a run being torn down is logged in one
    line, as step tasks are; without the filter Prefect prints the traceback (the control)."""
    res = subprocess.run(
        [sys.executable, "-c", TEARDOWN_SCRIPT, "quiet" if quiet else "loud"],
        cwd=REPO,
        env={**os.environ, **prefect_server},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = res.stdout + res.stderr
    assert "RunnerShutdown" in out and "the runner is shutting down" in out, out
    assert ("Traceback" in out) is not quiet, out
