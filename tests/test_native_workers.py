"""Native tools in worker processes (fermipipe/native_workers.py) through the runner: the same
products and errors as in the flow's own thread, workers reused, timeouts and cancellations
kill them, and they die with the pipeline."""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from fermipipe import runner
from fermipipe.compact_counts import expand, is_compact
from fermipipe.native_workers import AUTO_MIN_RUNS_PER_WORKER, NativeWorkers, use_workers
from fermipipe.plan import Invocation, Plan, prepare
from tests.pipeline_project import fits_equal, make_project
from tests.processes import alive, group_gone

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    config = make_project(tmp_path, ("700",))
    _cfg, _install, plan, _choices = prepare(config, root=tmp_path, workers=1)
    return plan


def moved(inv: Invocation, folder: Path) -> Invocation:
    """``inv`` writing its outputs into ``folder`` (same names), reading the same inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    outputs = {name: folder / Path(path).name for name, path in inv.outputs.items()}
    params = dict(inv.params)
    for name, path in inv.outputs.items():
        for key, value in params.items():
            if str(value) == str(path):
                params[key] = str(outputs[name])
    return dataclasses.replace(inv, outputs=outputs, params=params)


def dense(path: Path) -> Path:
    """A compact counts map expanded (its ORIGCRC covers the dense file's dates), else as is."""
    if not is_compact(path):
        return path
    return expand(path, path.with_name(f"dense-{path.name}"))


def test_a_chain_in_workers_equals_the_chain_in_this_thread(plan: Plan, tmp_path: Path) -> None:
    chain = plan.files[0].chain
    pool = NativeWorkers(tmp_path / "scratch" / "native", prestart=1)
    try:
        for inv in chain:  # the plan's own paths: in this thread
            assert runner.run_invocation(inv).status == "ok"
        for inv in chain:  # the same commands, outputs elsewhere: in the worker
            here = moved(inv, tmp_path / "in-worker")
            # Its inputs: the worker's products of the earlier steps.
            params = {
                k: str(tmp_path / "in-worker" / Path(v).name)
                if (tmp_path / "in-worker" / Path(str(v)).name).exists()
                and Path(str(v)).parent == Path(chain[0].outputs["chunk_sel"]).parent
                else v
                for k, v in here.params.items()
            }
            result = runner.run_invocation(dataclasses.replace(here, params=params), native=pool)
            assert result.status == "ok", result.error
            assert result.cpu_seconds > 0
            for name, path in inv.outputs.items():
                fits_equal(*(dense(Path(p)) for p in (path, result.outputs[name])))
        assert pool.started == 1  # one worker ran the four tools, one after the other
        (pgid,) = pool.groups()
    finally:
        pool.close()
    assert group_gone(pgid)
    assert not (tmp_path / "scratch" / "native").exists()


def test_a_tool_error_is_the_same_line_in_a_worker(plan: Plan, tmp_path: Path) -> None:
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    inv = plan.files[0].chain[0]
    bad = dataclasses.replace(inv, params={**inv.params, "infile": str(broken)})
    here = runner.run_invocation(bad)
    pool = NativeWorkers(tmp_path / "native")
    try:
        there = runner.run_invocation(bad, native=pool)
    finally:
        pool.close()
    assert here.status == there.status == "failed"
    assert there.error == here.error and str(broken) in (there.error or "")


def test_a_timeout_kills_the_worker_and_the_next_tool_gets_a_new_one(
    plan: Plan, tmp_path: Path
) -> None:
    ltcube = next(inv for inv in plan.files[0].chain if inv.step == "ltcube")
    for inv in plan.files[0].chain[:2]:  # its input: the selected, GTI-filtered events
        assert runner.run_invocation(inv).status == "ok"
    pool = NativeWorkers(tmp_path / "native", prestart=1)
    try:
        (first,) = pool.groups()
        slow = dataclasses.replace(ltcube, timeout=0.05)
        result = runner.run_invocation(slow, native=pool)
        assert result.status == "failed"
        assert result.error == "timed out after 0.05 s (native worker killed)"
        assert group_gone(first) and pool.groups() == []
        out = Path(ltcube.outputs["chunk_ltcube"])
        assert not out.exists()  # nothing half-written, and no temporary left beside it
        assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]
        assert runner.run_invocation(ltcube, native=pool).status == "ok"
        assert pool.started == 2
    finally:
        pool.close()


def test_a_cancelled_run_kills_its_busy_worker(plan: Plan, tmp_path: Path) -> None:
    """kill_all (Ctrl-C, SIGTERM, a UI cancel) while a tool runs in a worker: the worker is
    killed at once and the tool's caller gets RunnerShutdown, as for a subprocess tool."""
    for inv in plan.files[0].chain[:2]:
        assert runner.run_invocation(inv).status == "ok"
    ltcube = next(inv for inv in plan.files[0].chain if inv.step == "ltcube")
    ctx = runner.open_run(
        "cancel-native", workers=1, scratch=tmp_path / "s", log_dir=tmp_path / "l",
        native_processes=True,
    )  # fmt: skip
    assert ctx.native is not None
    (pgid,) = ctx.native.groups()
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(runner.run_invocation(ltcube, pool=ctx.pool, native=ctx.native))
        except runner.RunnerShutdown as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    try:
        thread.start()
        time.sleep(0.3)  # the tool is running in the worker
        runner.kill_all(grace=1)
        thread.join(10)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], runner.RunnerShutdown), outcome
        assert group_gone(pgid)
    finally:
        runner.close_run(ctx.name)
        runner.reset_shutdown()


def test_workers_die_with_the_pipeline(tmp_path: Path) -> None:
    """A pipeline process killed with SIGKILL (no cleanup runs) leaves no worker behind."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from pathlib import Path
        from fermipipe.native_workers import AUTO_MIN_RUNS_PER_WORKER, NativeWorkers, use_workers
        pool = NativeWorkers(Path({str(tmp_path / "native")!r}), prestart=2)
        print(" ".join(map(str, pool.groups())), flush=True)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "a native worker outlived its pipeline"


def test_a_flow_run_runs_native_tools_in_workers_and_leaves_none(tmp_path: Path) -> None:
    """The flow's run: its native tools' CPU time is its (reaped) children's, and no worker
    of this process is left when it ends."""
    from tests.pipeline_project import run_flow

    config = make_project(tmp_path, ("700",))
    cfg = yaml.safe_load(config.read_text())
    cfg["resources"]["native_processes"] = True  # "auto" keeps a run this small in threads
    config.write_text(yaml.safe_dump(cfg))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    state, summary = run_flow(config, tmp_path / "summary.json")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert state.is_completed(), summary.get("failures")
    tools_cpu = sum(s["cpu_seconds"] for f in summary["per_file"] for s in f["steps"])
    children_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert tools_cpu > 0 and children_cpu >= tools_cpu
    assert my_workers() == []
    # The merged counts map's quick-look, drawn in the background while the livetime merge
    # finished: beside the product, in the summary, and an image artifact of the run.
    (ccube,) = [m for m in summary["merges"] if m["strategy"] == "image_sum"]
    assert ccube["quicklook"] and Path(ccube["quicklook"]).read_bytes()[:4] == b"\x89PNG"
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    parent = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
            )
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[parent, *(c.id for c in children)])
            )
        )
    assert f"fermipipe-quicklook-{ccube['name']}" in {a.key for a in artifacts}


def my_workers() -> list[int]:
    """Live native workers started by this process (their argv names its PID)."""
    mine = f"fermipipe.native_workers\0{os.getpid()}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mine in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in found if alive(pid)]


def test_auto_uses_workers_for_runs_that_repay_them() -> None:
    """resources.native_processes: "auto" — processes from AUTO_MIN_RUNS_PER_WORKER native
    runs per worker (a mission: yes; a 3-week example: no); true/false as said."""
    per = AUTO_MIN_RUNS_PER_WORKER
    assert use_workers("auto", 24 * 4, 2)  # 24 mission weeks × 4 native steps
    assert not use_workers("auto", 3 * 4, 2)  # the 3-week example
    assert use_workers("auto", 2 * per, 2) and not use_workers("auto", 2 * per - 1, 2)
    assert not use_workers("auto", 1000, 1)  # one worker: no lock to share
    assert use_workers(True, 1, 1) and not use_workers(True, 0, 2)
    assert not use_workers(False, 1000, 8)
