"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# A `python flows/fermi.py` run without PREFECT_API_URL starts a local server kept for later
# runs (flows/server.py); a test never leaves one behind: its runs get Prefect's temporary
# server unless it passes a server of its own (prefect_server) or asks for the local one.
os.environ.setdefault("FERMIPIPE_PREFECT_SERVER", "ephemeral")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "fermi"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real LAT data and Fermitools references in ../shared/data/fermi."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"reference data not found at {SHARED_DATA} (CI always has ../shared beside the clone)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def caldb(shared_data: Path) -> Path:
    """The real subset of the LAT CALDB in ../shared/data/caldb (IRFs for exposure and PSF)."""
    root = shared_data.parent / "caldb"
    if not (root / "data" / "glast" / "lat" / "caldb.indx").is_file():
        pytest.skip(f"the CALDB subset was not found at {root} (CI has ../shared)")
    return root


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real Prefect server for the whole session; state and results in temporary folders.

    One per session, here: a module importing a session fixture from another test module
    registers a second copy of it, and a second harness server breaks the first one's
    event stream (task runs of later flows then never reach the server).
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with (
        temporary_settings(
            {PREFECT_HOME: str(home), PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(home / "storage")}
        ),
        prefect_test_harness(server_startup_timeout=60),
    ):
        yield {
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_HOME": str(home),
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        }
