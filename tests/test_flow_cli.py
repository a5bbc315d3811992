"""The Prefect flow and its CLI, end to end, against Prefect's test harness (a real server).

Steps are real programs: cfitsio's ``fitscopy`` with a row filter (a real FTOOLS-style
selection) on copies of the real ft1tiny parts, and small Python programs (a counts-map
binner, a tool that fails, one that prints the Fermitools' "No GTIs found", a slow one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.io import fits
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from test_merge import CMAP_PROGRAM

from fermipipe.fits.gti import read_gti
from fermipipe.native import run_tool
from flows.fermi import fermi_pipeline, main

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

FAIL_IF = textwrap.dedent(
    """
    import shutil, sys
    src, dst, bad = sys.argv[1:4]
    if bad in src:
        print("checking " + src)
        print("Error: this file is broken", file=sys.stderr)
        sys.exit(4)
    shutil.copyfile(src, dst)
    """
)
EMPTY_IF = textwrap.dedent(
    """
    import shutil, sys
    src, dst, bad = sys.argv[1:4]
    if bad in src:
        print("Caught St13runtime_error at the top level: No GTIs found in input event file(s).",
              file=sys.stderr)
        sys.exit(1)
    shutil.copyfile(src, dst)
    """
)
STAMP = textwrap.dedent(
    """
    import os, shutil, sys, time
    src, dst, stamps, label, slow, seconds = sys.argv[1:7]
    t0 = time.time()
    time.sleep(float(seconds) * (8 if slow in src else 1))
    shutil.copyfile(src, dst)
    name = label + "-" + os.path.basename(src)
    open(os.path.join(stamps, name), "w").write(f"{label} {src} {t0} {time.time()}")
    """
)
SLEEPER = textwrap.dedent(
    """
    import os, sys, time
    open(os.path.join(sys.argv[1], str(os.getpid())), "w").write(sys.argv[2])
    time.sleep(float(sys.argv[3]))
    """
)
STATS = textwrap.dedent(
    """
    import json, sys
    from astropy.io import fits
    with fits.open(sys.argv[1]) as h:
        json.dump({"counts": int(h[0].data.sum()), "nmerged": h[0].header["NMERGED"]},
                  open(sys.argv[2], "w"))
    """
)


@pytest.fixture
def project(tmp_path: Path, shared_data: Path) -> Path:
    """A project folder: copies of the three real ft1tiny parts and the helper programs."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        shutil.copy(shared_data / "evtbin" / f"ft1tiny{i}.fits", tmp_path / "in")
    shutil.copy(shared_data / "evtbin" / "outref" / "CM2.fits", tmp_path / "template.fits")
    programs = {
        "cmap.py": CMAP_PROGRAM,
        "fail_if.py": FAIL_IF,
        "empty_if.py": EMPTY_IF,
        "stamp.py": STAMP,
        "sleeper.py": SLEEPER,
        "stats.py": STATS,
    }
    for name, text in programs.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def base_config(project: Path, **extra: Any) -> dict[str, Any]:
    """The existing format: shell ``command`` templates and ``outputs`` as a list of names."""
    cfg: dict[str, Any] = {
        "name": "test",
        "resources": {"cores": 2},
        "input": {"directory": "in", "pattern": "*.fits"},
        "output": {"directory": "products", "workdir": "work"},
        "common_files": {
            "template": "template.fits",
            "cmapper": "cmap.py",
            "failer": "fail_if.py",
            "emptier": "empty_if.py",
            "stats_py": "stats.py",
        },
        "steps": [
            {
                "name": "select",
                "command": "fitscopy '{input}[EVENTS][ENERGY>0]' {sel}",
                "outputs": ["sel"],
                "cleanup": True,
            },
            {
                "name": "cmap",
                "command": f"{PY} {{cmapper}} {{sel}} {{template}} {{cmap}}",
                "outputs": ["cmap"],
            },
        ],
        "merging": [
            {
                "name": "counts",
                "input_pattern": "{cmap}",
                "output_file": "counts.fits",
                "strategy": "image_sum",
            }
        ],
        "post_processing": [
            {
                "name": "stats",
                "command": f"{PY} {{stats_py}} {{counts}} {{stats}}",
                "outputs": {"stats": "stats.json"},
            }
        ],
    }
    cfg.update(extra)
    return cfg


def write_config(project: Path, cfg: dict[str, Any], name: str = "pipeline.yaml") -> Path:
    path = project / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def insert_step(cfg: dict[str, Any], step: dict[str, Any]) -> None:
    """Put ``step`` between select and cmap (cmap then reads the new step's output)."""
    cfg["steps"].insert(1, step)
    out = step["outputs"][0]
    cfg["steps"][2]["command"] = cfg["steps"][2]["command"].replace("{sel}", "{" + out + "}")


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """``python flows/fermi.py …`` as a user runs it from the repository root."""
    return subprocess.run(
        [PY, str(REPO / "flows" / "fermi.py"), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


# ------------------------------------------------------------------------------ runs


def test_existing_format_config_runs_unchanged(
    prefect_server: dict[str, str],
    project: Path,
    shared_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(project, base_config(project))
    summary_path = project / "summary.json"
    assert main([str(config), "--summary-json", str(summary_path)]) == 0
    out = capsys.readouterr().out
    assert "mean s/file" in out and "select" in out  # the per-step breakdown table

    products = project / "products"
    # The merged counts map of the three parts is the Fermitools map of the whole file.
    with (
        fits.open(products / "counts.fits") as got,
        fits.open(shared_data / "evtbin" / "outref" / "CM2.fits") as ref,
    ):
        assert np.array_equal(got[0].data, ref[0].data)
        assert got[0].header["NMERGED"] == 3 and got[0].header["NLEFTOUT"] == 0
    # Post-processing ran once, on the merged file.
    stats = json.loads((products / "stats.json").read_text())
    assert stats == {"counts": int(fits.getdata(products / "counts.fits").sum()), "nmerged": 3}
    # Per-file outputs (merge inputs included) went with the work folder, as in the existing
    # runner: only merged and post-processing products are in the output folder.
    assert not list(products.glob("*_cmap.fits")) and not list(products.glob("*_sel.fits"))
    assert not (project / "work").exists()
    assert sorted(p.name for p in (products / "logs").iterdir()) == [
        "ft1tiny0.log",
        "ft1tiny1.log",
        "ft1tiny2.log",
        "post.log",
    ]
    assert "fitscopy" in (products / "logs" / "ft1tiny0.log").read_text()

    s = json.loads(summary_path.read_text())
    assert s["state"] == "Completed"
    assert s["files"] == {"total": 3, "processed": 3, "ok": 3, "empty": 0, "failed": 0, "cached": 0}
    assert [r["step"] for r in s["steps"]] == ["select", "cmap", "merge:counts", "post:stats"]
    for row in s["steps"]:
        assert row["total_seconds"] > 0 and row["cpu_seconds"] >= 0
    assert s["steps"][0]["files"] == 3
    assert s["steps"][0]["mean_seconds_per_file"] == pytest.approx(
        s["steps"][0]["total_seconds"] / 3, abs=1e-3
    )
    assert s["outputs"]["merged"] == {"counts": str(products / "counts.fits")}
    # Per-file outputs name files that exist (merge inputs: their copy in the cache store),
    # not the deleted intermediates.
    per_file = s["outputs"]["per_file"]["ft1tiny1"]
    assert list(per_file) == ["cmap"] and Path(per_file["cmap"]).exists()
    assert s["failures"] == []


def test_dry_run_touches_nothing(prefect_server: dict[str, str], project: Path) -> None:
    config = write_config(project, base_config(project))
    home = project / "fresh-prefect-home"
    before = tree(project)
    result = run_cli(
        [str(config), "--dry-run"], {**prefect_server, "PREFECT_HOME": str(home)}, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert tree(project) == before  # nothing created, deleted or modified
    lines = result.stdout.splitlines()
    for i in range(3):
        commands = [line for line in lines if f"ft1tiny{i}" in line and line.startswith("[")]
        assert len(commands) == 2, commands  # both steps of every file
        assert any(line.startswith("[shell] fitscopy") for line in commands)
    assert any("image_sum" in line for line in lines)
    assert any("stats.py" in line for line in lines)


def test_steps_flag_runs_only_those_steps(prefect_server: dict[str, str], project: Path) -> None:
    config = write_config(project, base_config(project))
    args = [str(config), "--steps", "select", "--keep-intermediate", "--summary-json"]
    assert main([*args, str(project / "s.json")]) == 0
    # Only the selection ran; its outputs (cleanup: true) survive thanks to --keep-intermediate.
    assert sorted(p.name for p in (project / "work").rglob("*.fits")) == [
        f"ft1tiny{i}_sel.fits" for i in range(3)
    ]
    assert not list(project.rglob("*_cmap.fits"))
    s = json.loads((project / "s.json").read_text())
    assert [r["step"] for r in s["steps"]] == ["select"]


def test_skip_post_and_workers_flags(prefect_server: dict[str, str], project: Path) -> None:
    config = write_config(project, base_config(project))
    summary = project / "s.json"
    assert main([str(config), "--skip-post", "--workers", "1", "--summary-json", str(summary)]) == 0
    s = json.loads(summary.read_text())
    assert s["workers"] == 1
    assert (project / "products" / "counts.fits").exists()
    assert not (project / "products" / "stats.json").exists()
    assert [r["step"] for r in s["steps"]] == ["select", "cmap", "merge:counts"]


def test_the_plan_is_built_once_per_run(
    prefect_server: dict[str, str], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line checks the config and makes the plan before Prefect loads; the flow
    run it starts takes that plan: one build per run, its paths in the run's own folder."""
    import fermipipe.plan as planning

    built: list[Path] = []
    build = planning.build_plan

    def counted(*args: Any, **kwargs: Any) -> planning.Plan:
        plan = build(*args, **kwargs)
        built.append(plan.workdir)
        return plan

    monkeypatch.setattr(planning, "build_plan", counted)
    config = write_config(project, base_config(project))
    assert main([str(config), "--summary-json", str(project / "s.json")]) == 0
    assert len(built) == 1
    assert built[0].name.startswith("fermipipe-run-") and not built[0].exists()
    # A second run is a new plan, in a new folder.
    assert main([str(config), "--summary-json", str(project / "s.json")]) == 0
    assert len(built) == 2 and built[1] != built[0]


def test_a_failing_file_does_not_stop_the_others_and_the_run_fails(
    prefect_server: dict[str, str], project: Path
) -> None:
    cfg = base_config(project)
    insert_step(
        cfg,
        {
            "name": "check",
            "command": f"{PY} {{failer}} {{sel}} {{checked}} tiny1",
            "outputs": ["checked"],
        },
    )
    config = write_config(project, cfg)
    summary_path = project / "s.json"
    state = fermi_pipeline(config=str(config), summary_json=str(summary_path), return_state=True)
    assert state.is_failed()
    assert "ft1tiny1" in state.message and "ft1tiny0" not in state.message

    s = json.loads(summary_path.read_text())
    assert s["state"] == "Failed"
    assert s["files"]["ok"] == 2 and s["files"]["failed"] == 1
    assert s["failures"] == [
        {"file": "ft1tiny1", "step": "check", "error": "exit code 4: Error: this file is broken"}
    ]
    failed = next(f for f in s["per_file"] if f["file"] == "ft1tiny1")
    assert [r["step"] for r in failed["steps"]] == ["select", "check"]  # cmap never ran
    assert failed["steps"][1]["exit_code"] == 4
    assert failed["steps"][1]["stderr_tail"] == ["Error: this file is broken"]
    # The other files went all the way; merging waited for the failure (on_failure: stop).
    products = project / "products"
    # Kept for a rerun (or a retry): in the cache store; the work folder is always removed.
    assert list((products / ".fermipipe-cache" / "store").rglob("ft1tiny0_cmap.fits"))
    assert not (project / "work").exists()
    assert not (products / "counts.fits").exists()
    assert "merging not run" in s["merge_note"]
    # The failure table artifact names the user's file (its path), the step and the reason.
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    by_key = {a.key: a for a in artifacts}
    assert {"fermipipe-steps", "fermipipe-failures", "fermipipe-summary"} <= set(by_key)
    table = by_key["fermipipe-failures"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert table == [
        {
            "file": str(project / "in" / "ft1tiny1.fits"),
            "step": "check",
            "reason": "exit code 4: Error: this file is broken",
            "stderr_tail": "Error: this file is broken",
        }
    ]
    assert "ft1tiny1" in by_key["fermipipe-summary"].data


def test_cli_exit_code_is_non_zero_when_a_file_fails(
    prefect_server: dict[str, str], project: Path
) -> None:
    """on_failure: skip merges the rest and records the timed-out file; the run still fails."""
    cfg = base_config(project, on_failure="skip")
    cfg["common_files"]["stamper"] = "stamp.py"
    (project / "stamps").mkdir()
    insert_step(
        cfg,
        {
            "name": "slow",
            "command": f"{PY} {{stamper}} {{sel}} {{slowed}} {project / 'stamps'} slow tiny1 0.3",
            "outputs": ["slowed"],
            "timeout": 1.5,
        },
    )
    config = write_config(project, cfg)
    t0 = time.monotonic()
    assert main([str(config), "--summary-json", str(project / "s.json")]) == 1
    assert time.monotonic() - t0 < 60
    s = json.loads((project / "s.json").read_text())
    assert s["failures"][0]["file"] == "ft1tiny1"
    assert "timed out after 1.5 s" in s["failures"][0]["error"]
    assert s["merges"][0]["status"] == "ok" and list(s["merges"][0]["left_out"]) == ["ft1tiny1"]
    header = fits.getheader(project / "products" / "counts.fits")
    assert header["NMERGED"] == 2 and header["NLEFTOUT"] == 1
    assert any("left out ft1tiny1: failed at slow" in str(h) for h in header["HISTORY"])


def test_empty_file_is_left_out_with_a_warning(
    prefect_server: dict[str, str], project: Path
) -> None:
    cfg = base_config(project)
    insert_step(
        cfg,
        {
            "name": "mktime",
            "command": f"{PY} {{emptier}} {{sel}} {{gti}} tiny2",
            "outputs": ["gti"],
        },
    )
    config = write_config(project, cfg)
    assert main([str(config), "--summary-json", str(project / "s.json")]) == 0
    s = json.loads((project / "s.json").read_text())
    assert s["state"] == "Completed"
    assert s["files"]["empty"] == 1 and s["files"]["ok"] == 2 and s["files"]["failed"] == 0
    empty = next(f for f in s["per_file"] if f["file"] == "ft1tiny2")
    assert empty["status"] == "empty" and "No GTIs found" in empty["error"]
    assert [r["step"] for r in empty["steps"]] == ["select", "mktime"]  # cmap skipped
    assert list(s["merges"][0]["left_out"]) == ["ft1tiny2"]
    header = fits.getheader(project / "products" / "counts.fits")
    assert header["NMERGED"] == 2
    assert any("left out ft1tiny2: empty" in str(h) for h in header["HISTORY"])


def test_hostile_file_names(prefect_server: dict[str, str], project: Path) -> None:
    hostile = "odd name;$(touch PWNED) 'q\"`id`.fits"
    shutil.move(project / "in" / "ft1tiny1.fits", project / "in" / hostile)
    cfg = base_config(project)
    # cfitsio has its own file-name syntax ("$", "(", "[" …), so copy with a Python program.
    cfg["steps"][0]["command"] = f"{PY} {{failer}} {{input}} {{sel}} NO-MATCH"
    cfg["steps"][1]["keep"] = True  # the odd name must survive as a kept product, too
    config = write_config(project, cfg)
    cwd = Path.cwd()
    os.chdir(project)  # a successful injection would create PWNED here
    try:
        assert main([str(config), "--summary-json", str(project / "s.json")]) == 0
    finally:
        os.chdir(cwd)
    assert not any(p.name == "PWNED" for p in project.rglob("*"))
    stem = hostile.removesuffix(".fits")
    assert (project / "products" / f"{stem}_cmap.fits").exists()
    s = json.loads((project / "s.json").read_text())
    assert s["files"]["ok"] == 3


def test_caps_are_exact_and_steps_have_no_barrier(
    prefect_server: dict[str, str], project: Path
) -> None:
    """3 workers; step B capped at 1. A fast file's step B starts while the slow file is
    still in step A, and no two B's ever overlap."""
    stamps = project / "stamps"
    stamps.mkdir()
    cfg = base_config(project, resources={"cores": 3})
    cfg["common_files"]["stamper"] = "stamp.py"
    cmd = f"{PY} {{stamper}} {{src}} {{dst}} {stamps} {{label}} tiny2 0.2"
    cfg["steps"] = [
        {
            "name": "a",
            "command": cmd.replace("{src}", "{input}")
            .replace("{dst}", "{a_out}")
            .replace("{label}", "a"),
            "outputs": ["a_out"],
        },
        {
            "name": "b",
            "command": cmd.replace("{src}", "{a_out}")
            .replace("{dst}", "{b_out}")
            .replace("{label}", "b"),
            "outputs": ["b_out"],
            "max_parallel": 1,
        },
    ]
    cfg["merging"], cfg["post_processing"] = [], []
    config = write_config(project, cfg)
    assert main([str(config)]) == 0
    spans = [p.read_text().split() for p in stamps.iterdir()]
    assert len(spans) == 6
    a_slow = next(s for s in spans if s[0] == "a" and "tiny2" in s[1])
    b_fast = [s for s in spans if s[0] == "b" and "tiny2" not in s[1]]
    assert all(float(b[2]) < float(a_slow[3]) for b in b_fast)  # no barrier between steps
    bs = sorted((float(s[2]), float(s[3])) for s in spans if s[0] == "b")
    assert all(nxt[0] >= prev[1] for prev, nxt in zip(bs, bs[1:], strict=False))  # cap 1
    a_starts = sorted(float(s[2]) for s in spans if s[0] == "a")
    assert a_starts[2] < min(float(s[3]) for s in spans if s[0] == "a")  # 3 ran at once


# ------------------------------------------------------------------- CLI and signals


BAD_CONFIGS = {
    "unknown key": lambda c: c.update(stepz=c["steps"]),
    "missing input dir": lambda c: c["input"].update(directory="nowhere"),
    "unknown placeholder": lambda c: c["steps"][1].update(command="echo {nope}"),
    "bad cores": lambda c: c["resources"].update(cores=0),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_config_errors_exit_2_with_one_line(
    project: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = base_config(project)
    BAD_CONFIGS[case](cfg)
    config = write_config(project, cfg)
    assert main([str(config)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    # Every problem of the config, one line each (here: one or two).
    assert 1 <= len(lines) <= 2
    assert all(line.startswith("fermipipe: config error: ") for line in lines)
    assert all(str(config) in line for line in lines)
    assert not (project / "products").exists()


def test_cli_config_error_and_unknown_step(prefect_server: dict[str, str], project: Path) -> None:
    config = write_config(project, base_config(project))
    result = run_cli([str(config), "--steps", "selct"], prefect_server, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "selct" in result.stderr and "did you mean 'select'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_kills_every_running_tool(
    prefect_server: dict[str, str], project: Path, sig: signal.Signals
) -> None:
    pids = project / "pids"
    pids.mkdir()
    cfg = base_config(project, resources={"cores": 3})
    cfg["common_files"]["sleeper"] = "sleeper.py"
    cfg["steps"] = [
        {"name": "hang", "command": f"{PY} {{sleeper}} {pids} {{input}} 120", "outputs": []}
    ]
    cfg["merging"], cfg["post_processing"] = [], []
    config = write_config(project, cfg)
    proc = subprocess.Popen(
        [PY, str(REPO / "flows" / "fermi.py"), str(config)],
        cwd=REPO,
        env={**os.environ, **prefect_server},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(pids.iterdir())) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        tools = [int(p.name) for p in pids.iterdir()]
        assert len(tools) == 3, proc.stdout.read() if proc.poll() is not None else "timeout"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    for pid in tools:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        ), f"tool {pid} survived {sig.name}"


def test_hierarchical_merge_with_native_gtltsum(
    prefect_server: dict[str, str], tmp_path: Path, shared_data: Path
) -> None:
    """Livetime cubes of the three ft1tiny parts (structured native gtltcube steps) summed by
    a tree of native gtltsum pairs (3 → 2 → 1, the odd cube carried up) equal the cube of the
    whole file to float32 rounding (spec §7)."""
    evtbin = shared_data / "evtbin"
    (tmp_path / "in").mkdir()
    for i in range(3):
        shutil.copy(evtbin / f"ft1tiny{i}.fits", tmp_path / "in")
    grid = {"dcostheta": 0.05, "binsz": 4, "zmax": 180}
    cfg = {
        "input": {"directory": "in", "pattern": "*.fits"},
        "output": {"directory": "products"},
        "common_files": {"ft2": str(evtbin / "ft2tiny.fits")},
        "resources": {"cores": 2},
        "engine": "native",
        "steps": [
            {
                "name": "ltcube",
                "tool": "gtltcube",
                "params": grid,
                "inputs": {"evfile": "{input}", "scfile": "{ft2}"},
                "outputs": {"cube": "{stem}_ltcube.fits"},
            }
        ],
        "merging": [
            {
                "name": "ltcube_sum",
                "input_pattern": "{cube}",
                "output_file": "ltcube_sum.fits",
                "strategy": "hierarchical",
                "tool": "gtltsum",
            }
        ],
    }
    config = write_config(tmp_path, cfg)
    assert main([str(config), "--summary-json", str(tmp_path / "s.json")]) == 0
    whole = tmp_path / "whole.fits"
    run_tool(
        "gtltcube",
        {
            "evfile": str(evtbin / "ft1tiny.fits"),
            "scfile": str(evtbin / "ft2tiny.fits"),
            "outfile": str(whole),
            **grid,
        },
    )
    with fits.open(tmp_path / "products" / "ltcube_sum.fits") as got, fits.open(whole) as ref:
        for table in ("EXPOSURE", "WEIGHTED_EXPOSURE"):
            expected = ref[table].data["COSBINS"]
            assert expected.sum() > 0
            assert np.allclose(got[table].data["COSBINS"], expected, rtol=1e-5, atol=1e-3)
        assert read_gti(got["GTI"]) == read_gti(ref["GTI"])
        assert got[0].header["NMERGED"] == 3
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["merges"][0]["status"] == "ok" and s["merges"][0]["strategy"] == "hierarchical"
    logs = (tmp_path / "products" / "logs" / "merge-ltcube_sum.log").read_text()
    assert logs.count("=== merge:ltcube_sum [L") == 2  # two pairwise gtltsum runs: 3 → 2 → 1
