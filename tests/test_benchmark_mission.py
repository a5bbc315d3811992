"""benchmarks/mission.py --quick: the real benchmark, small (2 weeks × 50 k events, 1° CCUBE).

It runs once for the module (a real ``prefect server``, three real CLI runs of the mission
chain); the tests read its printed report and its --json figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAIN = ["select", "mktime", "ccube", "ltcube"]  # configs/mission.yaml's steps, in order
MERGES = ["merge:ccube", "merge:ltcube"]

pytestmark = pytest.mark.skipif(
    shutil.which("fitscopy") is None, reason="fitscopy not found (Debian libcfitsio-bin)"
)


@pytest.fixture(scope="module")
def quick(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    folder = tmp_path_factory.mktemp("mission-bench")
    figures = folder / "figures.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "mission.py"), "--quick",
         "--keep", str(folder / "run"), "--json", str(figures)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert figures.exists(), f"no report ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(figures.read_text())


def test_report_has_every_figure(
    quick: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    proc, d = quick
    assert d["quick"] is True and d["weeks"] == 2 and d["events_per_week"] == 50_000
    assert d["workers"] == 2
    # task-seconds per week by step: the four chain steps and the two merges, all measured
    assert list(d["seconds_per_week_by_step"]) == CHAIN + MERGES
    assert all(v > 0 for v in d["seconds_per_week_by_step"].values())
    chain = sum(d["seconds_per_week_by_step"][s] for s in CHAIN)
    assert d["chain_seconds_per_week"] == pytest.approx(chain)
    assert d["task_seconds"] == pytest.approx(2 * sum(d["seconds_per_week_by_step"].values()))
    assert d["parallel_efficiency"] == pytest.approx(d["task_seconds"] / (2 * d["flow_wall"]))
    assert 0 < d["flow_wall"] < d["process_wall"]
    phases = d["flow_phases"]  # before the first tool, the files, after the last step
    assert all(v > 0 for v in phases.values())
    assert sum(phases.values()) == pytest.approx(d["flow_wall"], abs=0.01)
    assert len(d["yardstick_seconds"]) == 2 and all(s > 0 for s in d["yardstick_seconds"])
    # sampled peaks: the tree held at least a Python interpreter, the disk the store's objects
    assert d["samples"]["rss"] > 0 and d["samples"]["disk"] > 0
    assert d["peak_rss_bytes"] > 20e6
    assert d["peak_disk_bytes"] >= d["store_bytes"] > 0
    assert d["store_bytes_after_incremental"] >= d["store_bytes"]
    assert d["products_bytes"] >= d["merged_bytes"] > 0
    x = d["extrapolated_934"]
    assert x["task_seconds"] == pytest.approx(d["task_seconds"] * 934 / 2)
    assert x["store_bytes"] == pytest.approx(d["store_bytes"] * 934 / 2)
    # every target of the issue, with a verdict that follows from its figure
    names = [t["target"] for t in d["targets"]]
    assert len(names) == 5 and len(set(names)) == 5
    for t in d["targets"]:
        assert t["pass"] == (
            t["value"] >= t["limit"] if t["unit"] == "%" else t["value"] <= t["limit"]
        )
    out = proc.stdout
    assert "--quick: NOT the mission grid" in out
    assert "EXTRAPOLATION to 934 weeks" in out and "not measured" in out
    assert "sampled every 0.2 s" in out and "sampled every 0.5 s" in out
    for t in d["targets"]:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(t["target"]))
        assert line.rstrip().endswith("PASS" if t["pass"] else "MISS"), line
    # the exit status says whether the two checks held
    inc = d["incremental"]
    assert proc.returncode == (0 if inc["only_new_week_ran"] and d["products_equal"] else 1)


def test_incremental_products_equal_a_full_rerun(
    quick: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, d = quick
    inc, full = d["digests"]["incremental"], d["digests"]["full"]
    assert sorted(inc) == ["ccube", "ltcube"]
    assert len(inc["ltcube"]) >= 3  # primary, EXPOSURE, WEIGHTED_EXPOSURE, … every HDU
    assert inc == full
    assert d["products_equal"] is True


def test_incremental_runs_only_the_new_week(
    quick: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, d = quick
    inc = d["incremental"]
    assert inc["files_total"] == 3
    assert inc["ran"] == {inc["new_week"]: CHAIN}
    assert inc["files_cached"] == 2
    assert inc["only_new_week_ran"] is True
