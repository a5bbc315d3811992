"""Streaming merges (resources.stream_merge): they start while files are processed and give
the products a merge at the end gives (Prefect's test harness: a real server)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_project import fits_equal, make_project, run_flow, task_runs, write_config
from prefect.client.orchestration import get_client

pytestmark = pytest.mark.timeout(300)
WEEKS = ("700", "701", "702")


#: A last step that takes 3 s for the last week only: the other weeks are done long before.
SLOW_LAST = """
import shutil, sys, time
src, dst = sys.argv[1:3]
time.sleep(3 if "w702" in src else 0)
shutil.copyfile(src, dst)
"""


def project(root: Path, stream: bool) -> Path:
    config = make_project(root, WEEKS)
    (root / "slow_last.py").write_text(SLOW_LAST)
    cfg = yaml.safe_load(config.read_text())
    cfg["resources"]["stream_merge"] = stream
    cfg["steps"].append(
        {
            "name": "late",
            "command": f"{sys.executable} {root / 'slow_last.py'} {{input}} {{copy}}",
            "outputs": {"copy": "{stem}_copy.fits"},
        }
    )
    return write_config(root, cfg)


def finished_runs(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        for _ in range(100):
            runs = task_runs(client, flow_run_id)
            if runs and all(r.state_name in ("Completed", "Cached") for r in runs):
                return runs
            time.sleep(0.2)
    return runs


def test_streamed_merges_start_early_and_equal_merges_at_the_end(
    tmp_path: Path, prefect_server: Any
) -> None:
    streamed, at_end = tmp_path / "streamed", tmp_path / "at_end"
    state, summary = run_flow(project(streamed, True), streamed / "s.json")
    assert state.is_completed(), state
    other, summary_end = run_flow(project(at_end, False), at_end / "s.json")
    assert other.is_completed(), other
    for name in ("example_ccube.fits", "example_ltcube.fits"):
        fits_equal(streamed / "products" / name, at_end / "products" / name)
    assert [m["mode"] for m in summary["merges"]] == ["full", "full"]

    runs = finished_runs(state.state_details.flow_run_id)
    steps = [r for r in runs if " · w" in r.name]
    folds = [r for r in runs if r.name.startswith("fold-")]
    pairs = [r for r in runs if r.name.startswith("merge:ltcube[")]
    assert len(steps) == 5 * len(WEEKS) and len(folds) == len(WEEKS)
    assert {r.name for r in pairs} == {"merge:ltcube[L1-0]", "merge:ltcube[L2-0]"}
    last_step_end = max(r.end_time for r in steps)
    # The first weeks' maps were summed, and the first two weeks' livetime cubes added,
    # while the last week was still being processed.
    assert min(r.start_time for r in folds) < last_step_end
    first_pair = next(r for r in pairs if r.name.endswith("[L1-0]"))
    assert first_pair.start_time < last_step_end

    end_runs = finished_runs(other.state_details.flow_run_id)
    assert not [r for r in end_runs if r.name.startswith("fold-")]
    end_steps = [r for r in end_runs if " · w" in r.name]
    end_pairs = [r for r in end_runs if r.name.startswith("merge:ltcube[")]
    assert min(r.start_time for r in end_pairs) >= max(r.end_time for r in end_steps)
    assert [m["mode"] for m in summary_end["merges"]] == ["full", "full"]
