"""Run a native tool the way the pipeline's subprocess runner does: ``python -m fermipipe.native``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_native(tool: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m fermipipe.native TOOL key=value …`` from the repository root (not checked:
    the tests assert on the return code and the one-line error)."""
    return subprocess.run(
        [sys.executable, "-m", "fermipipe.native", tool, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
