"""The run's RAM-disk staging folder through the real flow: always removed (success,
failure, SIGTERM), found and removed after a SIGKILL, disk fallback with a warning."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pipeline_project import fits_equal, make_project, run_cli, run_flow

from flows.shutdown import GRACE

pytestmark = pytest.mark.timeout(300)
PRODUCTS = ("example_ccube.fits", "example_ltcube.fits")


def staged(ram: Path) -> list[Path]:
    return sorted(ram.glob("fermipipe-*")) if ram.exists() else []


def ram_config(root: Path, **ram: Any) -> tuple[Path, Path]:
    """A project whose RAM disk is a folder of its own (so runs of other tests, which may
    use /dev/shm, cannot be mistaken for ours)."""
    ram_path = root / "shm"
    ram_path.mkdir(parents=True)
    config = make_project(root, ram_disk={"enabled": True, "path": str(ram_path), **ram})
    return config, ram_path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, prefect_server: Any) -> Path:
    """An uninterrupted run on the RAM disk: its folder is gone, nothing is left in work/."""
    root = tmp_path_factory.mktemp("staging-ref")
    config, ram = ram_config(root)
    state, summary = run_flow(config, root / "s.json")
    assert state.is_completed() and summary["files"]["ok"] == 2
    assert staged(ram) == [] and not (root / "work").exists()
    return root


def test_fallback_to_disk_with_a_warning(
    tmp_path: Path, reference: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, ram = ram_config(tmp_path, min_ram_gb=1e6)
    with caplog.at_level(logging.WARNING):
        state, _ = run_flow(config, tmp_path / "s.json")
    assert state.is_completed()
    assert any("RAM disk skipped: MemAvailable" in r.getMessage() for r in caplog.records)
    assert staged(ram) == [] and not (tmp_path / "work").exists()
    for name in PRODUCTS:
        fits_equal(tmp_path / "products" / name, reference / "products" / name)


def test_folder_removed_when_the_run_fails(tmp_path: Path, reference: Path) -> None:
    config, ram = ram_config(tmp_path)
    bad = tmp_path / "in" / "lat_photon_weekly_w701_p305_v001.fits"
    bad.write_bytes(bad.read_bytes()[:20000])  # truncated mid-table: gtselect fails
    state, summary = run_flow(config, tmp_path / "s.json")
    assert state.is_failed()
    assert summary["files"]["failed"] == 1
    assert staged(ram) == [] and not (tmp_path / "work").exists()


def _wait_for_work(ram: Path, proc: Any, timeout: float = 120) -> None:
    """Until a file's folder exists in the run's staging area (tools are running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        for area in staged(ram):
            if any(p.is_dir() and p.name.startswith("lat_") for p in area.iterdir()):
                return
        time.sleep(0.05)
    raise AssertionError("the run never started its chains")


def test_folder_removed_on_sigterm(
    tmp_path: Path,
    reference: Path,
    prefect_server: dict[str, str],
) -> None:
    config, ram = ram_config(tmp_path)
    # faulthandler: a SIGABRT prints every thread's stack, should the run ever hang.
    proc = run_cli(config, tmp_path / "s.json", {**prefect_server, "PYTHONFAULTHANDLER": "1"})
    _wait_for_work(ram, proc)
    proc.send_signal(signal.SIGTERM)
    try:
        # flows/shutdown.py ends the process GRACE s after SIGTERM at the latest.
        out, _ = proc.communicate(timeout=GRACE + 60)
    except subprocess.TimeoutExpired:
        if proc.poll() is not None:  # ended, but something it started holds its stdout
            ps = subprocess.run(["ps", "-eo", "pid,ppid,pgid,args"], capture_output=True)
            pytest.fail(f"exited {proc.returncode}; stdout still open:\n{ps.stdout.decode()}")
        proc.send_signal(signal.SIGABRT)
        out, _ = proc.communicate(timeout=30)
        pytest.fail(f"still running {GRACE + 60:.0f} s after SIGTERM; stacks:\n{out[-12000:]}")
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert staged(ram) == [], out[-3000:]
    assert not (tmp_path / "work").exists()


def test_orphan_of_a_killed_run_is_cleaned_and_the_rerun_matches(
    tmp_path: Path,
    reference: Path,
    prefect_server: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, ram = ram_config(tmp_path)
    proc = run_cli(config, tmp_path / "s.json", prefect_server)
    _wait_for_work(ram, proc)
    proc.send_signal(signal.SIGKILL)  # no finally runs: the folder is left behind
    proc.communicate(timeout=60)
    (orphan,) = staged(ram)
    with caplog.at_level(logging.WARNING):
        state, summary = run_flow(config, tmp_path / "s2.json")
    assert state.is_completed() and summary["files"]["ok"] == 2
    assert any("left by a run that was killed" in r.getMessage() for r in caplog.records)
    assert not orphan.exists() and staged(ram) == []
    for name in PRODUCTS:
        fits_equal(tmp_path / "products" / name, reference / "products" / name)


def test_a_native_first_step_reads_the_inputs_in_place_and_leaves_them_untouched(
    tmp_path: Path, reference: Path
) -> None:
    """On a RAM disk a native gtselect reads the user's input where it is (no staged copy,
    fermipipe.cleanup): every input file is byte for byte what it was, and the products
    equal the module's reference run's."""
    import hashlib

    config, ram = ram_config(tmp_path)
    inputs = sorted((tmp_path / "in").iterdir())
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs}
    state, _ = run_flow(config, tmp_path / "s.json")
    assert state.is_completed()
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs} == before
    assert sorted((tmp_path / "in").iterdir()) == inputs  # nothing written beside them
    assert staged(ram) == []
    for name in PRODUCTS:
        fits_equal(tmp_path / "products" / name, reference / "products" / name)
