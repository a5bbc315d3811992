"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

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
