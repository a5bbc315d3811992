"""A file's steps as a graph: each waits only for the steps making what it reads.

The derivation (fermipipe.step_graph, FilePlan.needs) on the real mission configs and on a
line; then the real flow against Prefect's test harness: two steps reading the same
upstream output run side by side, the shared intermediate stays until both are over, and a
failure in one of them does not hide the other.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_project import run_flow
from shared_inputs import FITS_STUB

from fermipipe.config import parse_config
from fermipipe.plan import Invocation, build_plan
from fermipipe.step_graph import ancestors, step_needs

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

# ------------------------------------------------------------------ the derivation (pure)


@pytest.mark.parametrize("name", ["mission.yaml", "mission-structured.yaml"])
def test_mission_chain_ccube_and_ltcube_wait_for_mktime_only(tmp_path: Path, name: str) -> None:
    raw = yaml.safe_load((REPO / "configs" / name).read_text())
    (tmp_path / "weekly").mkdir()
    for week in ("700", "701"):
        (tmp_path / "weekly" / f"lat_photon_weekly_w{week}_p305_v001.fits").write_bytes(FITS_STUB)
    (tmp_path / "ft2.fits").write_bytes(FITS_STUB)
    raw["input"]["directory"] = str(tmp_path / "weekly")
    raw["common_files"]["scfile"] = str(tmp_path / "ft2.fits")
    raw.pop("post_processing")  # the exposure needs a CALDB: not what is tested here
    plan = build_plan(parse_config(raw, tmp_path, root=tmp_path))
    assert len(plan.files) == 2
    for fp in plan.files:
        assert [inv.step for inv in fp.chain] == ["select", "mktime", "ccube", "ltcube"]
        # select → mktime → {ccube, ltcube}: ltcube does not wait for ccube.
        assert fp.needs == ((), (0,), (1,), (1,))
        assert ancestors(fp.needs) == (
            frozenset(),
            frozenset({0}),
            frozenset({0, 1}),
            frozenset({0, 1}),
        )


def test_a_line_stays_a_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.fits").write_bytes(FITS_STUB)
    raw = {
        "input": {"directory": str(tmp_path / "in"), "pattern": "*.fits"},
        "steps": [
            {"name": "one", "command": "cp {input} {x}", "outputs": ["x"]},
            {"name": "two", "command": "cp {x} {y}", "outputs": ["y"]},
            {"name": "three", "command": "cp {y} {z}", "outputs": ["z"]},
            # Reads no earlier step's output (only the input): the line is kept (module doc).
            {"name": "four", "command": "cp {input} {w}", "outputs": ["w"]},
        ],
    }
    (fp,) = build_plan(parse_config(raw, tmp_path, root=tmp_path)).files
    assert fp.needs == ((), (0,), (1,), (2,))
    assert ancestors(fp.needs)[3] == frozenset({0, 1, 2})


def invocation(step: str, reads: list[str], writes: list[str]) -> Invocation:
    return Invocation(
        step,
        "f",
        "shell",
        shell="true",
        inputs={name: Path(f"/w/{name}") for name in reads},
        outputs={name: Path(f"/w/{name}") for name in writes},
    )


def test_needs_follow_reads_and_rewrites() -> None:
    chain = [
        invocation("a", ["input"], ["x"]),
        invocation("b", ["x"], ["y"]),
        invocation("c", ["x"], ["z"]),
        invocation("d", ["y", "z"], ["v"]),  # a join of both branches
        invocation("e", ["x"], ["y"]),  # rewrites what b wrote and d read: after them
    ]
    assert step_needs(chain) == ((), (0,), (0,), (1, 2), (0, 1, 3))
    assert ancestors(step_needs(chain))[3] == frozenset({0, 1, 2})
    assert step_needs([]) == ()


# ------------------------------------------------------------------ through the flow

#: Sleeps, then copies its input (so the input must still be there when it ends) — or
#: fails, or ends as the Fermitools do on a file with no good time (an empty product).
COPY_AFTER = textwrap.dedent(
    """
    import shutil, sys, time
    src, dst, seconds, fail = sys.argv[1:5]
    time.sleep(float(seconds))
    if fail == "fail":
        print("Error: this step is broken", file=sys.stderr)
        sys.exit(4)
    if fail == "empty":
        print("Caught St13runtime_error at the top level: No GTIs found in input event "
              "file(s).", file=sys.stderr)
        sys.exit(1)
    shutil.copyfile(src, dst)
    """
)


def sibling_project(
    root: Path, shared_data: Path, slow: str, fast: str, fails: str = "", empty: str = ""
) -> Path:
    """One file; ``share`` (cleanup: true) read by ``slow`` (1.5 s) and ``fast`` (0.2 s),
    which come in this chain order and keep their products; ``fails`` fails at once,
    ``empty`` ends empty."""
    (root / "in").mkdir()
    shutil.copy(shared_data / "evtbin" / "ft1tiny0.fits", root / "in")
    (root / "copy_after.py").write_text(COPY_AFTER)

    def step(name: str, src: str, seconds: float) -> dict[str, Any]:
        fail = "fail" if name == fails else "empty" if name == empty else "ok"
        return {
            "name": name,
            "command": f"{PY} {{copier}} {{{src}}} {{{name}_out}} "
            + f"{0 if fail != 'ok' else seconds} {fail}",
            "outputs": [f"{name}_out"],
            "keep": name != "share",
            "cleanup": name == "share",
        }

    cfg = {
        "name": "siblings",
        "resources": {
            "cores": 2,
            "ram_disk": {"enabled": True, "path": str(root / "shm"), "min_ram_gb": 0.1},
        },
        "input": {"directory": "in", "pattern": "*.fits"},
        "output": {"directory": "products", "workdir": "work"},
        "common_files": {"copier": "copy_after.py"},
        "steps": [
            step("share", "input", 0),
            step(slow, "share_out", 1.5),
            step(fast, "share_out", 0.2),
        ],
        "merging": [],
        "post_processing": [],
    }
    (root / "shm").mkdir()
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def nothing_stray(root: Path) -> None:
    """No work folder, no staging folder, nothing in the products but the kept products
    and the cache store."""
    assert not (root / "work").exists()
    assert list((root / "shm").iterdir()) == []


def steps_of(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (f,) = summary["per_file"]
    return {r["step"]: r for r in f["steps"]}


def test_sibling_steps_overlap_and_their_shared_input_waits_for_both(
    prefect_server: dict[str, str], tmp_path: Path, shared_data: Path
) -> None:
    """``slow`` comes first in chain order, ``fast`` second and finishes first: in a line
    its drop of the shared intermediate would come before ``slow`` copies it."""
    config = sibling_project(tmp_path, shared_data, slow="slow", fast="fast")
    state, summary = run_flow(config, tmp_path / "s.json")
    assert state.is_completed() and summary["files"]["ok"] == 1
    steps = steps_of(summary)
    assert [s["status"] for s in steps.values()] == ["ok"] * 3
    slow, fast = steps["slow"], steps["fast"]
    end = {name: s["started"] + s["wall_seconds"] for name, s in steps.items()}
    # Side by side: each started before the other ended (one slot each of the two).
    assert slow["started"] < end["fast"] and fast["started"] < end["slow"]
    assert end["fast"] < end["slow"]
    assert min(slow["started"], fast["started"]) >= end["share"]
    # Both copied the shared intermediate at their very end: it was there until then.
    source = (tmp_path / "in" / "ft1tiny0.fits").read_bytes()
    products = sorted(p.name for p in (tmp_path / "products").glob("*.fits"))
    assert products == ["ft1tiny0_fast_out.fits", "ft1tiny0_slow_out.fits"]
    for name in products:
        assert (tmp_path / "products" / name).read_bytes() == source
    nothing_stray(tmp_path)


@pytest.mark.parametrize("fails", ["slow", "fast"])
def test_a_failed_sibling_does_not_hide_the_other(
    prefect_server: dict[str, str], tmp_path: Path, shared_data: Path, fails: str
) -> None:
    """The failing sibling fails at once; the other still runs to its end (reading the
    shared intermediate then), is reported and stored; the file failed at the failed step."""
    names = {"slow": "b", "fast": "c"}
    config = sibling_project(tmp_path, shared_data, slow="b", fast="c", fails=names[fails])
    state, summary = run_flow(config, tmp_path / "s.json")
    assert state.is_failed()
    assert summary["files"]["failed"] == 1
    failed, other = names[fails], names["fast" if fails == "slow" else "slow"]
    (f,) = summary["per_file"]
    assert f["status"] == "failed" and f["error"] == "exit code 4: Error: this step is broken"
    assert summary["failures"] == [
        {"file": "ft1tiny0", "step": failed, "error": "exit code 4: Error: this step is broken"}
    ]
    steps = steps_of(summary)
    assert list(steps) == ["share", "b", "c"]  # chain order, both siblings reported
    assert steps[failed]["status"] == "failed" and steps[other]["status"] == "ok"
    assert steps[other]["wall_seconds"] >= 0.2
    # The other's product was made: it is in the cache store (a failed file's products are
    # not copied to the output folder), a copy of the shared intermediate read at its end.
    stored = list(
        (tmp_path / "products" / ".fermipipe-cache" / "store").rglob(f"*_{other}_out.fits")
    )
    assert len(stored) == 1
    assert stored[0].read_bytes() == (tmp_path / "in" / "ft1tiny0.fits").read_bytes()
    assert not list((tmp_path / "products").glob("*.fits"))
    assert json.loads((tmp_path / "s.json").read_text())["state"] == "Failed"
    nothing_stray(tmp_path)


def test_an_empty_sibling_and_the_cached_rerun_report_the_same_steps(
    prefect_server: dict[str, str], tmp_path: Path, shared_data: Path
) -> None:
    """An empty step leaves its file out of the merges, but its sibling, which does not
    read its output, still runs; a rerun (every step a cache hit: one bulk task) reports
    the same steps."""
    config = sibling_project(tmp_path, shared_data, slow="b", fast="c", empty="b")
    state, first = run_flow(config, tmp_path / "s1.json")
    assert state.is_completed() and first["files"]["empty"] == 1
    steps = steps_of(first)
    assert {k: s["status"] for k, s in steps.items()} == {"share": "ok", "b": "empty", "c": "ok"}
    assert "No GTIs found" in first["per_file"][0]["error"]
    state, again = run_flow(config, tmp_path / "s2.json")
    assert state.is_completed() and again["files"]["empty"] == 1
    assert again["per_file"][0]["cached_steps"] == ["share", "b", "c"]
    assert {k: s["status"] for k, s in steps_of(again).items()} == {
        "share": "ok",
        "b": "empty",
        "c": "ok",
    }
    nothing_stray(tmp_path)
