"""A small real project for the caching, staging and retry tests.

The example config (gtselect → gtmktime → gtbin CCUBE and gtltcube on the 3-week sample in
data/sample, image_sum and a gtltsum tree; without its post-processing), with coarser grids so a run takes seconds, its
products and cache in a temporary folder. Runs go through the real flow against Prefect's
test harness (a real server).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
WEEKS = ("700", "701", "702")
PHOTON = "lat_photon_weekly_w{}_p305_v001.fits"
SPACECRAFT = "lat_spacecraft_weekly_w{}_p310_v001.fits"
#: Keywords that legitimately differ between two runs making the same product (spec §13).
VOLATILE = {"DATE", "CHECKSUM", "DATASUM", "CREATOR", "FILENAME"}


def make_project(
    root: Path,
    weeks: tuple[str, ...] = WEEKS[:2],
    *,
    ram_disk: dict[str, Any] | None = None,
    keep_mktime: bool = False,
    ccube: dict[str, Any] | None = None,
) -> Path:
    """A project folder: ``in/`` with the chosen weeks (photon + spacecraft), the config."""
    data = root / "in"
    data.mkdir(parents=True, exist_ok=True)
    for week in weeks:
        add_week(root, week)
    cfg = yaml.safe_load((REPO / "configs" / "example.yaml").read_text())
    # The per-file chain and merges only: the example's exposure + flux post-processing
    # (and its sample CALDB) are tested by tests/test_pipeline_example.py.
    cfg.pop("post_processing", None)
    cfg.pop("caldb", None)
    cfg["resources"] = {"cores": 2, "ram_disk": ram_disk or {"enabled": False}}
    cfg["input"] = {"directory": "in", "pattern": "lat_photon_weekly_w*_p305_v001.fits"}
    cfg["output"] = {"directory": "products", "workdir": "work"}
    for step in cfg["steps"]:
        if "scfile" in step.get("inputs", {}):
            step["inputs"]["scfile"] = (
                "{config_dir}/in/lat_spacecraft_weekly_w{week}_p310_v001.fits"
            )
        if step["name"] == "mktime" and keep_mktime:
            step["cleanup"] = False
            step["keep"] = True  # copied to the output folder (and so kept in the store)
        if step["name"] == "ccube":  # a coarse all-sky cube: seconds, not minutes
            step["params"].update({"nxpix": 72, "nypix": 36, "binsz": 5.0, "enumbins": 4})
            step["params"].update(ccube or {})
        if step["name"] == "ltcube":
            step["params"].update({"binsz": 10, "dcostheta": 0.1})
    return write_config(root, cfg)


def write_config(root: Path, cfg: dict[str, Any]) -> Path:
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def add_week(root: Path, week: str) -> None:
    for name in (PHOTON, SPACECRAFT):
        shutil.copyfile(SAMPLE / name.format(week), root / "in" / name.format(week))


def mission_ft2(parts: list[Path], out: Path) -> Path:
    """A 'mission' FT2: the SC_DATA rows of several files, headers of the first."""
    from fermipipe.fits.table import FitsFile, write_fits

    with FitsFile(parts[0]) as first:
        primary = (first.hdus[0].header, b"")
        header = first.hdu("SC_DATA").header
    rows = np.concatenate([FitsFile(p).table("SC_DATA").rows for p in parts])
    return write_fits(out, [primary, (header, rows)])


def run_flow(config: Path, summary: Path, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """Run the flow in this process; returns its final state and the summary JSON."""
    from fermipipe import runner
    from flows.fermi import fermi_pipeline

    runner.reset_shutdown()
    state = fermi_pipeline(config=str(config), summary_json=str(summary), return_state=True, **kw)
    return state, json.loads(summary.read_text())


def run_cli(
    config: Path, summary: Path, env: dict[str, str], *extra: str, **kw: Any
) -> subprocess.Popen[str]:
    """``python flows/fermi.py CONFIG`` in a subprocess (started, not waited for)."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "flows" / "fermi.py"), str(config),
         "--summary-json", str(summary), *extra],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )  # fmt: skip


def ran_steps(summary: dict[str, Any]) -> set[tuple[str, str]]:
    """(file week, step) of every step a tool actually ran for."""
    out = set()
    for f in summary["per_file"]:
        week = f["file"].split("weekly_w")[1][:3]
        for step in f["steps"]:
            if step["step"] not in f["cached_steps"]:
                out.add((week, step["step"]))
    return out


def merge_modes(summary: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mode"] for m in summary["merges"]}


def fits_equal(a: Path, b: Path) -> None:
    """Assert two FITS files are the same HDU by HDU: every header card in order but the
    volatile ones and the tools' HISTORY cards (they carry the run's work-folder paths,
    spec §13), fermipipe's own HISTORY lines, and the data bytes."""
    with fits.open(a) as ha, fits.open(b) as hb:
        assert len(ha) == len(hb), (a, b)
        for x, y in zip(ha, hb, strict=True):

            def cards(h: fits.Header) -> list[tuple[str, Any]]:
                return [
                    (c.keyword, c.value)
                    for c in h.cards
                    if c.keyword not in VOLATILE
                    and (c.keyword != "HISTORY" or str(c.value).startswith("fermipipe "))
                ]

            assert cards(x.header) == cards(y.header), (a, x.name)
            if x.data is None:
                assert y.data is None
            else:
                assert np.asarray(x.data).tobytes() == np.asarray(y.data).tobytes(), x.name


def task_runs(client: Any, flow_run_id: Any) -> list[Any]:
    """Task runs of a pipeline flow run: the steps and merges run in its ``fermipipe-work``
    subflow, so those of its subflow runs are included."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
        )
    )
    ids = [flow_run_id, *(child.id for child in children)]
    runs = client.read_task_runs(
        task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids))
    )
    # A subflow has a task run of its own in its parent (named after the flow): not a step.
    return [r for r in runs if not r.name.startswith("fermipipe")]
