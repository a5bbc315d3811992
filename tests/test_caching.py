"""Content-addressed caching through the real flow: reruns, changes, damage, concurrency,
incremental merges and manifests (Prefect's test harness: a real server)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from astropy.io import fits
from pipeline_project import (
    add_week,
    fits_equal,
    make_project,
    merge_modes,
    ran_steps,
    run_cli,
    run_flow,
    task_runs,
    write_config,
)
from prefect.client.orchestration import get_client

from fermipipe.cache import ProductStore, content_hash
from fermipipe.manifest import read_manifest
from fermipipe.native import ENGINE_VERSION

CHAIN = {"select", "mktime", "ccube", "ltcube"}
pytestmark = pytest.mark.timeout(300)


def task_states(flow_run_id: Any) -> dict[str, str]:
    """Task run name → state name of a flow run's task runs, as the server recorded them."""
    with get_client(sync_client=True) as client:
        for _ in range(100):
            states = {r.name: str(r.state_name) for r in task_runs(client, flow_run_id)}
            if states and all(n in ("Cached", "Completed") for n in states.values()):
                return states
            time.sleep(0.2)
    return states


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, prefect_server: Any) -> dict[str, Any]:
    """Two weeks through the pipeline once: the baseline every test below builds on."""
    root = tmp_path_factory.mktemp("caching")
    config = make_project(root)
    state, summary = run_flow(config, root / "s0.json")
    assert state.is_completed(), state
    assert ran_steps(summary) == {(w, s) for w in ("700", "701") for s in CHAIN}
    return {"root": root, "config": config}


def products(root: Path) -> dict[str, bytes]:
    out = root / "products"
    return {p.name: p.read_bytes() for p in sorted(out.glob("example_*.fits"))}


def test_noop_rerun_runs_nothing_even_after_touch(project: dict[str, Any]) -> None:
    root, config = project["root"], project["config"]
    before = products(root)
    for f in (root / "in").iterdir():  # a new mtime changes nothing: keys follow content
        os.utime(f, (time.time() + 5, time.time() + 5))
    state, summary = run_flow(config, root / "s1.json")
    assert state.is_completed()
    assert ran_steps(summary) == set()
    assert summary["files"]["cached"] == 2 == summary["files"]["total"]
    assert all(set(f["cached_steps"]) == CHAIN for f in summary["per_file"])
    assert merge_modes(summary) == {"ccube": "up_to_date", "ltcube": "up_to_date"}
    assert products(root) == before  # untouched, byte for byte
    # Fully cached files are read from the store in one task run (not 4 per file)...
    assert list(task_states(state.state_details.flow_run_id)) == ["cached[2 files]"]
    # ... which the UI shows as Cached when the same set of keys comes again.
    state, summary = run_flow(config, root / "s1b.json")
    assert ran_steps(summary) == set() and summary["files"]["cached"] == 2
    assert task_states(state.state_details.flow_run_id) == {"cached[2 files]": "Cached"}


def test_changed_byte_reruns_exactly_that_chain(project: dict[str, Any]) -> None:
    root, config = project["root"], project["config"]
    week = root / "in" / "lat_photon_weekly_w701_p305_v001.fits"
    data = bytearray(week.read_bytes())
    # One byte of a header comment: the file stays valid, its content (and key) changes.
    at = data.index(b"TELESCOP")
    slash = data.index(b"/", at)
    data[slash + 2] = ord("#") if data[slash + 2] != ord("#") else ord("*")
    week.write_bytes(bytes(data))
    state, summary = run_flow(config, root / "s2.json")
    assert state.is_completed()
    assert ran_steps(summary) == {("701", s) for s in CHAIN}
    # An old input's key changed. The counts sum takes that week's old map (still in the
    # store) out of the previous product and adds the new one; the livetime tree has no
    # node left to reuse with two weeks (its root changed). The next test checks the
    # products against a merge from scratch.
    assert merge_modes(summary) == {"ccube": "incremental", "ltcube": "full"}


def test_damaged_store_entries_are_recomputed(project: dict[str, Any]) -> None:
    root, config = project["root"], project["config"]
    reference = products(root)
    store = ProductStore(root / "products" / ".fermipipe-cache" / "store")
    stored = root / "products" / ".fermipipe-cache" / "store"
    # The entries the last run used (an earlier test changed week 701: its old entry stays).
    ccube = max(stored.rglob("*w700*_ccube.fits"), key=lambda p: p.stat().st_mtime_ns)
    ltcube = max(stored.rglob("*w701*_ltcube.fits"), key=lambda p: p.stat().st_mtime_ns)
    ccube.unlink()  # missing
    with open(ltcube, "r+b") as fh:  # truncated
        fh.truncate(2880)
    state, summary = run_flow(config, root / "s3.json")
    assert state.is_completed()
    # The damaged products and the intermediates they need ran again; nothing else did.
    assert ran_steps(summary) == {
        ("700", "select"), ("700", "mktime"), ("700", "ccube"),
        ("701", "select"), ("701", "mktime"), ("701", "ltcube"),
    }  # fmt: skip
    assert ccube.exists() and ltcube.stat().st_size > 2880
    for entry in (root / "products" / ".fermipipe-cache" / "store" / "objects").glob("*/*"):
        assert store.lookup(entry.name) is not None, entry
    # Same inputs, same merged products (the manifest proves them up to date).
    assert merge_modes(summary) == {"ccube": "up_to_date", "ltcube": "up_to_date"}
    assert products(root) == reference


def test_adding_a_week_runs_one_chain_and_an_incremental_merge(
    project: dict[str, Any], tmp_path: Path
) -> None:
    root, config = project["root"], project["config"]
    add_week(root, "702")
    state, summary = run_flow(config, root / "s4.json")
    assert state.is_completed()
    assert ran_steps(summary) == {("702", s) for s in CHAIN}
    assert merge_modes(summary) == {"ccube": "incremental", "ltcube": "incremental"}

    # The same three weeks (w701 as changed above) merged from scratch, in a fresh project.
    fresh = tmp_path / "fresh"
    fresh_config = make_project(fresh, ())
    for f in (root / "in").iterdir():
        shutil.copyfile(f, fresh / "in" / f.name)
    state, full = run_flow(fresh_config, fresh / "s.json")
    assert state.is_completed() and merge_modes(full) == {"ccube": "full", "ltcube": "full"}
    for name in ("example_ccube.fits", "example_ltcube.fits"):
        fits_equal(root / "products" / name, fresh / "products" / name)

    # The manifest: every input with its hash, week and time range; config and versions.
    manifest = read_manifest(root / "products" / "example_ccube.fits")
    assert manifest is not None
    assert [i.week for i in manifest.inputs] == ["700", "701", "702"]
    for item in manifest.inputs:
        assert item.blake3 == content_hash(root / "in" / item.source)
        assert item.tstart is not None and item.tstop is not None and item.tstart < item.tstop
    assert manifest.left_out == {} and manifest.tool_versions["ccube"] == f"native-{ENGINE_VERSION}"
    assert manifest.product_blake3 == content_hash(root / "products" / "example_ccube.fits")
    header = fits.getheader(root / "products" / "example_ccube.fits")
    assert header["FPNINPUT"] == 3 and header["NMERGED"] == 3
    assert header["FPCONFIG"] == manifest.config_hash[:16]
    history = [str(h) for h in header["HISTORY"]]
    assert sum(h.startswith("fermipipe input ") for h in history) == 3


def test_gtbin_parameter_change_reruns_only_gtbin(
    tmp_path: Path,
    prefect_server: Any,
) -> None:
    # gtmktime's output kept: it is in the store, so gtbin can start from it.
    config = make_project(tmp_path, keep_mktime=True)
    state, _ = run_flow(config, tmp_path / "a.json")
    assert state.is_completed()
    cfg = yaml.safe_load(config.read_text())
    next(s for s in cfg["steps"] if s["name"] == "ccube")["params"]["enumbins"] = 3
    write_config(tmp_path, cfg)
    # A deleted intermediate of the output folder is put back from the store, too.
    gti = next((tmp_path / "products").glob("*w700*_gti.fits"))
    gti.unlink()
    state, summary = run_flow(config, tmp_path / "b.json")
    assert state.is_completed()
    assert ran_steps(summary) == {("700", "ccube"), ("701", "ccube")}
    assert merge_modes(summary) == {"ccube": "full", "ltcube": "up_to_date"}
    assert fits.getheader(tmp_path / "products" / "example_ccube.fits")["NAXIS3"] == 3
    assert gti.exists()


def test_two_concurrent_runs_share_the_store(
    tmp_path: Path,
    prefect_server: dict[str, str],
) -> None:
    config = make_project(tmp_path)
    procs = [run_cli(config, tmp_path / f"c{i}.json", prefect_server) for i in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-3000:]
    summaries = [json.loads((tmp_path / f"c{i}.json").read_text()) for i in range(2)]
    # Each stored product (ccube, ltcube of each week) was computed by exactly one run;
    # the other took it from the store (it waited on the entry's lock).
    for week in ("700", "701"):
        for step in ("ccube", "ltcube"):
            computed = [s for s in summaries if (week, step) in ran_steps(s)]
            assert len(computed) == 1, (week, step)
    store_root = tmp_path / "products" / ".fermipipe-cache" / "store"
    store = ProductStore(store_root)
    entries = list((store_root / "objects").glob("*/*"))
    assert len(entries) == 4
    assert all(store.lookup(e.name) is not None for e in entries)
    assert not list(store_root.rglob(".*.tmp-*"))
    with fits.open(tmp_path / "products" / "example_ccube.fits", checksum=True) as hdul:
        assert hdul[0].header["NMERGED"] == 2


def mission_ft2(root: Path, weeks: tuple[str, ...]) -> Path:
    """One spacecraft file with the rows of several weekly ones (as FSSC's mission file)."""
    parts = [fits.open(root / "in" / f"lat_spacecraft_weekly_w{w}_p310_v001.fits") for w in weeks]
    try:
        tables = [p["SC_DATA"] for p in parts]
        n = sum(len(t.data) for t in tables)
        table = fits.BinTableHDU.from_columns(tables[0].columns, nrows=n, header=tables[0].header)
        at = 0
        for t in tables:
            for col in t.columns.names:
                table.data[col][at : at + len(t.data)] = t.data[col]
            at += len(t.data)
        table.header["TSTART"] = float(table.data["START"][0])
        table.header["TSTOP"] = float(table.data["STOP"][-1])
        out = root / "in" / "mission_ft2.fits"
        fits.HDUList([fits.PrimaryHDU(header=parts[0][0].header), table]).writeto(
            out, overwrite=True, checksum=True
        )
    finally:
        for p in parts:
            p.close()
    return out


def test_slice_scfile_false_gives_tools_the_whole_spacecraft_file(
    tmp_path: Path,
    prefect_server: Any,
) -> None:
    """The existing runner's ``resources.slice_scfile: false``: no per-week slices."""
    config = make_project(tmp_path)
    mission_ft2(tmp_path, ("700", "701"))
    cfg = yaml.safe_load(
        config.read_text().replace(
            "{config_dir}/in/lat_spacecraft_weekly_w{week}_p310_v001.fits",
            "{config_dir}/in/mission_ft2.fits",
        )
    )
    cfg["resources"]["slice_scfile"] = False
    write_config(tmp_path, cfg)
    state, summary = run_flow(config, tmp_path / "a.json")
    assert state.is_completed(), state
    for f in summary["per_file"]:
        mktime = next(s for s in f["steps"] if s["step"] == "mktime")
        assert "mission_ft2.fits " in mktime["command"]
        assert "mission_ft2_slice_" not in mktime["command"]
    assert not list((tmp_path / "products" / ".fermipipe-cache").rglob("mission_ft2_slice_*"))


def test_mission_spacecraft_file_is_sliced_per_week(
    tmp_path: Path,
    prefect_server: Any,
) -> None:
    config = make_project(tmp_path)
    mission_ft2(tmp_path, ("700", "701"))
    text = config.read_text().replace(
        "{config_dir}/in/lat_spacecraft_weekly_w{week}_p310_v001.fits",
        "{config_dir}/in/mission_ft2.fits",
    )
    config.write_text(text)
    state, summary = run_flow(config, tmp_path / "a.json")
    assert state.is_completed(), state
    for f in summary["per_file"]:
        week = f["file"].split("weekly_w")[1][:3]
        mktime = next(s for s in f["steps"] if s["step"] == "mktime")
        # Each week's tools read its own slice, not the mission file.
        assert (
            "mission_ft2_slice_" in mktime["command"]
            and "mission_ft2.fits " not in mktime["command"]
        )
        assert week in ("700", "701")
    slices = sorted((tmp_path / "products" / ".fermipipe-cache" / "store").rglob("*_slice_*.fits"))
    assert len(slices) == 2
    # Next week's rows appended to the mission file: the old weeks' slices are the same
    # bytes, so their keys — and their products — stay cached.
    add_week(tmp_path, "702")
    mission_ft2(tmp_path, ("700", "701", "702"))
    state, summary = run_flow(config, tmp_path / "b.json")
    assert state.is_completed()
    assert ran_steps(summary) == {("702", s) for s in CHAIN}
    assert merge_modes(summary) == {"ccube": "incremental", "ltcube": "incremental"}
