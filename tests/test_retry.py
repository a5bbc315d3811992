"""Retry of a failed run through Prefect's API (a real server), and task retries of
transient failures only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_project import (
    REPO,
    SAMPLE,
    fits_equal,
    make_project,
    ran_steps,
    run_cli,
    run_flow,
    task_runs,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
)

from fermipipe.runner import StepResult, classify_failure

pytestmark = pytest.mark.timeout(300)
CHAIN = {"select", "mktime", "ccube", "ltcube"}
PREFECT = str(Path(sys.executable).with_name("prefect"))
BAD = "lat_photon_weekly_w701_p305_v001.fits"


def test_retry_of_a_failed_run_reruns_only_the_failed_file(
    tmp_path: Path,
    prefect_server: dict[str, str],
) -> None:
    # The clean run every product must equal.
    clean = tmp_path / "clean"
    state, _ = run_flow(make_project(clean), clean / "s.json")
    assert state.is_completed()

    # A run in which one weekly file is corrupt: that file fails, the run ends Failed.
    root = tmp_path / "project"
    config = make_project(root)
    (root / "in" / BAD).write_bytes((SAMPLE / BAD).read_bytes()[:20000])
    proc = run_cli(config, root / "summary.json", prefect_server)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1, out[-3000:]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["fermipipe"]))
        )
        (run,) = [r for r in runs if r.parameters.get("config") == str(config)]
        assert run.state_type.value == "FAILED" and BAD.removesuffix(".fits") in run.state.message
    first = json.loads((root / "summary.json").read_text())
    assert first["files"]["failed"] == 1 and first["merges"] == []
    assert "deterministic failure" in out  # bad data: reported, not retried

    # The file is repaired; the run is retried (the UI's Retry: the same flow run again).
    shutil.copyfile(SAMPLE / BAD, root / "in" / BAD)
    retry = subprocess.run(
        [
            PREFECT,
            "flow-run",
            "retry",
            str(run.id),
            "--entrypoint",
            "flows/fermi.py:fermi_pipeline",
        ],
        cwd=REPO,
        env={**__import__("os").environ, **prefect_server},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    with get_client(sync_client=True) as client:
        again = client.read_flow_run(run.id)
        assert again.state_type.value == "COMPLETED", again.state
        assert again.run_count == 2
    summary = json.loads((root / "summary.json").read_text())
    # Every file that succeeded was a cache hit; only the repaired file's chain ran.
    assert ran_steps(summary) == {("701", s) for s in CHAIN}
    assert summary["files"]["ok"] == 2
    for name in ("example_ccube.fits", "example_ltcube.fits"):
        fits_equal(root / "products" / name, clean / "products" / name)


FLAKY = textwrap.dedent(
    """
    import os, shutil, sys
    src, dst = sys.argv[1:3]
    here = os.path.dirname(os.path.abspath(__file__))
    mark = os.path.join(here, "attempts-" + os.path.basename(src))
    n = int(open(mark).read()) if os.path.exists(mark) else 0
    open(mark, "w").write(str(n + 1))
    if "bad" in src:
        print("Error: column ENERGY has a NaN in row 7 of " + src, file=sys.stderr)
        sys.exit(2)
    if n == 0:
        print("Error: read of " + src + " failed: Input/output error", file=sys.stderr)
        sys.exit(5)
    shutil.copyfile(src, dst)
    """
)


def test_transient_failures_are_retried_deterministic_ones_are_not(
    tmp_path: Path,
    prefect_server: Any,
) -> None:
    (tmp_path / "in").mkdir()
    for name in ("good.fits", "bad.fits"):
        shutil.copyfile(
            SAMPLE / "lat_spacecraft_weekly_w700_p310_v001.fits", tmp_path / "in" / name
        )
    (tmp_path / "flaky.py").write_text(FLAKY)
    cfg = {
        "resources": {"cores": 2},
        "input": {"directory": "in", "pattern": "*.fits"},
        "common_files": {"flaky": "flaky.py"},
        "output": {"directory": "products", "workdir": "work"},
        "steps": [
            {
                "name": "copy",
                "command": f"{sys.executable} {{flaky}} {{input}} {{copied}}",
                "outputs": ["copied"],
                "keep": True,
            }
        ],
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg))
    state, summary = run_flow(config, tmp_path / "s.json")
    assert state.is_failed()
    assert (tmp_path / "attempts-good.fits").read_text() == "2"  # I/O error: retried once
    assert (tmp_path / "attempts-bad.fits").read_text() == "1"  # bad data: not retried
    assert (tmp_path / "products" / "good_copied.fits").exists()
    (bad,) = [f for f in summary["per_file"] if f["status"] == "failed"]
    assert bad["steps"][0]["failure_kind"] == "deterministic"
    with get_client(sync_client=True) as client:
        tasks = task_runs(client, state.state_details.flow_run_id)
        counts = {t.name: t.run_count for t in tasks}
    assert counts == {"copy · good": 2, "copy · bad": 1}, counts


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("exit code 1: Cannot open parameter file gtselect.par", "transient"),
        ("internal error: OSError: [Errno 5] Input/output error", "transient"),
        ("timed out after 60 s (process group killed)", "deterministic"),
        ("cannot read EVENTS: file is truncated", "deterministic"),
        ("exit code 1: Caught St13runtime_error: column ENERGY not found", "deterministic"),
    ],
)
def test_failure_classification(error: str, kind: str) -> None:
    result = StepResult("select", "w1", "failed", "gtselect", error=error)
    assert classify_failure(result) == kind
