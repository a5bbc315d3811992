"""fermipipe.runner with real subprocesses: cfitsio's fitscopy on real FT1 files and small
Python programs standing in for tools that fail, print the Fermitools' empty messages, hang,
spawn children or record their environment."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from processes import alive

from fermipipe import runner
from fermipipe.plan import Invocation
from fermipipe.runner import SlotPool, run_invocation

PY = sys.executable


def program(tmp_path: Path, name: str, body: str) -> Path:
    """Write a small Python program used as a tool."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def shell(step: str, command: str, **kw: object) -> Invocation:
    return Invocation(
        step=step, file_id=kw.pop("file_id", "f"), engine="shell", shell=command, **kw
    )  # type: ignore[arg-type]


def argv(step: str, *words: str | Path, **kw: object) -> Invocation:
    return Invocation(
        step=step,
        file_id=kw.pop("file_id", "f"),  # type: ignore[arg-type]
        engine="fermitools",
        argv=tuple(str(w) for w in words),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def _fresh_runner() -> None:
    runner.reset_shutdown()


@pytest.fixture
def ft1(shared_data: Path, tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    return Path(shutil.copy(shared_data / "evtbin" / "ft1tiny0.fits", src / "ft1tiny0.fits"))


def test_fitscopy_selection_ok(ft1: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "sel.fits"
    inv = argv("select", "fitscopy", f"{ft1}[EVENTS][ENERGY>1000]", out, outputs={"evfile": out})
    logger = logging.getLogger("test-runner")
    log = tmp_path / "logs" / "f.log"
    result = run_invocation(inv, log_path=log, logger=logger, scratch=tmp_path / "scratch")
    assert result.status == "ok", result.describe()
    assert result.exit_code == 0
    assert result.outputs == {"evfile": str(out)}
    with fits.open(ft1) as a, fits.open(out) as b:
        expected = int(np.count_nonzero(a["EVENTS"].data["ENERGY"] > 1000))
        assert 0 < expected < len(a["EVENTS"].data)
        assert len(b["EVENTS"].data) == expected
    assert result.wall_seconds > 0 and result.cpu_seconds >= 0
    text = log.read_text()
    assert "fitscopy" in text and "select [f]: ok" in text
    assert list((tmp_path / "scratch").iterdir()) == []  # private run dir removed


def test_zero_selected_events_is_empty(ft1: Path, tmp_path: Path) -> None:
    out = tmp_path / "none.fits"
    inv = argv("select", "fitscopy", f"{ft1}[EVENTS][ENERGY>1e12]", out, outputs={"evfile": out})
    result = run_invocation(inv)
    assert result.status == "empty"
    assert "0 rows" in (result.error or "")


@pytest.mark.parametrize(
    "message",
    ["Caught St13runtime_error: No GTIs found in input", "Zero rows returned from FT2 file"],
)
def test_fermitools_empty_messages(tmp_path: Path, message: str) -> None:
    tool = program(
        tmp_path, "t.py", f"import sys\nprint({message!r}, file=sys.stderr)\nsys.exit(1)\n"
    )
    result = run_invocation(argv("gtmktime", PY, tool))
    assert result.status == "empty"
    assert result.exit_code == 1
    assert message in (result.error or "")


def test_failure_reports_exit_code_and_stderr_tail(tmp_path: Path) -> None:
    tool = program(
        tmp_path,
        "fail.py",
        """
        import sys
        for i in range(30):
            print(f"line {i}", file=sys.stderr)
        print("Cannot open parameter file", file=sys.stderr)
        sys.exit(19)
        """,
    )
    result = run_invocation(argv("gtselect", PY, tool))
    assert result.status == "failed"
    assert result.exit_code == 19
    assert result.stderr_tail[-1] == "Cannot open parameter file"
    assert len(result.stderr_tail) == runner.STDERR_TAIL_LINES
    assert "exit code 19" in (result.error or "")
    error = runner.StepFailedError(result)
    assert "Cannot open parameter file" in str(error) and "gtselect" in str(error)


def test_exit_zero_without_output_is_failed(tmp_path: Path) -> None:
    out = tmp_path / "never.fits"
    result = run_invocation(shell("s", "true", outputs={"x": out}))
    assert result.status == "failed"
    assert "did not write" in (result.error or "")


def test_stale_output_is_not_taken_for_a_new_one(tmp_path: Path) -> None:
    out = tmp_path / "old.fits"
    out.write_bytes(b"left over from an earlier run")
    result = run_invocation(shell("s", "true", outputs={"x": out}))
    assert result.status == "failed"


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    tool = program(
        tmp_path,
        "hang.py",
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        print("started", flush=True)
        time.sleep(60)
        """,
    )
    t0 = time.monotonic()
    result = run_invocation(argv("slow", PY, tool, timeout=1.5))
    elapsed = time.monotonic() - t0
    assert result.status == "failed"
    assert "timed out after 1.5 s" in (result.error or "")
    assert elapsed < 1.5 + runner.KILL_GRACE
    for pid in map(int, pids.read_text().split()):
        assert not alive(pid), f"process {pid} survived the timeout"


def test_a_tool_ignoring_sigterm_gets_sigkill(tmp_path: Path) -> None:
    tool = program(
        tmp_path,
        "stubborn.py",
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
        """,
    )
    t0 = time.monotonic()
    result = run_invocation(argv("slow", PY, tool, timeout=0.5))
    assert result.status == "failed" and result.exit_code == -9
    assert time.monotonic() - t0 < 0.5 + runner.KILL_GRACE + 2


def test_kill_all_stops_running_tools_and_refuses_new_ones(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    tool = program(
        tmp_path,
        "long.py",
        f"""
        import os, time
        open({str(pidfile)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    results: list[runner.StepResult] = []
    thread = threading.Thread(target=lambda: results.append(run_invocation(argv("s", PY, tool))))
    thread.start()
    deadline = time.monotonic() + 20
    # The file exists before its PID is in it (open, then write): wait for the content.
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    assert runner.running_groups() == [pid]
    assert runner.kill_all() == [pid]
    thread.join(10)
    assert not thread.is_alive()
    assert results[0].status == "failed" and "run cancelled" in (results[0].error or "")
    assert not alive(pid)
    with pytest.raises(runner.RunnerShutdown):
        run_invocation(shell("s", "true"))


def test_parallel_invocations_never_share_pfiles_or_cwd(tmp_path: Path) -> None:
    """Two tools at once, each writing its .par file where APE would: never the same place."""
    tool = program(
        tmp_path,
        "par.py",
        """
        import json, os, sys, time
        user = os.environ["PFILES"].split(";")[0]
        # Like every Fermitools run: rewrite <tool>.par in the user part of PFILES, and "."
        path = os.path.join(user, "gtselect.par")
        with open(path, "w") as f:
            f.write(sys.argv[2])
        time.sleep(0.5)
        others = sorted(os.listdir(user))
        mine = open(path).read()
        json.dump({"pfiles": os.environ["PFILES"], "cwd": os.getcwd(), "others": others,
                   "mine": mine, "stdin": sys.stdin.read()}, open(sys.argv[1], "w"))
        """,
    )
    env = dict(os.environ, PFILES=".:/home/someone/pfiles;/opt/fermitools/syspfiles")
    reports = [tmp_path / f"r{i}.json" for i in range(2)]
    invs = [
        argv(
            "gtselect", PY, tool, reports[i], f"run{i}", file_id=f"f{i}", outputs={"r": reports[i]}
        )
        for i in range(2)
    ]
    pool = SlotPool(2)
    results: list[runner.StepResult] = []
    threads = [
        threading.Thread(
            target=lambda inv=inv: results.append(
                run_invocation(inv, scratch=tmp_path / "scratch", env=env, pool=pool)
            )
        )
        for inv in invs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == ["ok", "ok"]
    assert pool.peak == 2  # they did run at the same time
    data = [json.loads(r.read_text()) for r in reports]
    users = [d["pfiles"].split(";")[0] for d in data]
    assert users[0] != users[1]
    assert all(d["pfiles"].split(";")[1] == "/opt/fermitools/syspfiles" for d in data)
    assert ".:" not in data[0]["pfiles"] and "/home/someone" not in data[0]["pfiles"]
    assert data[0]["cwd"] != data[1]["cwd"]
    assert [d["mine"] for d in data] == ["run0", "run1"]  # nobody overwrote anybody
    assert all(d["others"] == ["gtselect.par"] for d in data)
    assert all(d["stdin"] == "" for d in data)  # stdin is /dev/null: a prompt cannot hang
    assert list((tmp_path / "scratch").iterdir()) == []


def test_hostile_arguments_reach_the_tool_intact(tmp_path: Path) -> None:
    tool = program(tmp_path, "echo.py", "import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    words = ["a b;c'd $(touch pwned).fits", 'x"y`z`', "*"]
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("hostile")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    result = run_invocation(argv("echo", PY, tool, *words), logger=logger, scratch=tmp_path)
    assert result.status == "ok"
    assert json.loads(lines[0].split(" ", 1)[1]) == words
    assert not any(tmp_path.rglob("pwned"))


def test_slot_pool_caps_are_exact_with_real_processes(tmp_path: Path) -> None:
    """8 threads, 3 slots, step "heavy" capped at 1: measured overlap never exceeds either."""
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    tool = program(
        tmp_path,
        "stamp.py",
        """
        import sys, time
        t0 = time.time(); time.sleep(0.25); t1 = time.time()
        open(sys.argv[1], "w").write(f"{sys.argv[2]} {t0} {t1}")
        """,
    )
    pool = SlotPool(3, {"heavy": 1})
    invs = [
        argv(
            "heavy" if i % 2 else "light",
            PY,
            tool,
            stamps / f"{i}",
            "heavy" if i % 2 else "light",
            file_id=str(i),
        )
        for i in range(8)
    ]
    threads = [
        threading.Thread(target=run_invocation, args=(inv,), kwargs={"pool": pool}) for inv in invs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = [p.read_text().split() for p in stamps.iterdir()]
    assert len(spans) == 8

    def max_overlap(kind: str | None) -> int:
        events = []
        for name, t0, t1 in spans:
            if kind in (None, name):
                events += [(float(t0), 1), (float(t1), -1)]
        level = peak = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            level += delta
            peak = max(peak, level)
        return peak

    assert max_overlap(None) <= 3 and max_overlap("heavy") <= 1
    assert pool.peak == 3 and pool.peak_by["heavy"] == 1
    assert max_overlap(None) >= 2  # and the caps did not serialise everything


def test_slot_pool_serves_by_priority_and_skips_capped_steps() -> None:
    pool = SlotPool(1, {"capped": 1})
    pool.acquire("capped", priority=(0, 0))  # holds the only slot
    order: list[str] = []

    def want(group: str, priority: tuple[int, int], name: str) -> None:
        pool.acquire(group, priority)
        order.append(name)
        pool.release(group)

    threads = [
        threading.Thread(target=want, args=("other", (5, 0), "late file")),
        threading.Thread(target=want, args=("other", (1, 0), "early file")),
    ]
    for t in threads:
        t.start()
        time.sleep(0.1)  # queue them in this order
    pool.release("capped")
    for t in threads:
        t.join(5)
    assert order == ["early file", "late file"]
    pool.close()
    with pytest.raises(runner.RunnerShutdown):
        pool.acquire("other")


def test_native_tool_error_is_a_failed_result(tmp_path: Path) -> None:
    inv = Invocation(
        step="select",
        file_id="f",
        engine="native",
        tool="gtselect",
        params={
            "infile": str(tmp_path / "x.fits"),
            "outfile": str(tmp_path / "y.fits"),
            "emnn": "1",
        },
    )
    result = run_invocation(inv)
    assert result.status == "failed"
    assert "emnn" in (result.error or "")


def test_kill_run_stops_only_that_runs_tools(tmp_path: Path) -> None:
    """A Dask worker serves several runs: cancelling one kills its tools only, and its steps
    arriving later refuse to start."""
    specs, pidfiles, threads = {}, {}, []
    for name in ("run-a", "run-b"):
        ctx = runner.open_run(name, workers=1, scratch=tmp_path / name, log_dir=tmp_path / "l")
        specs[name] = runner.run_spec(ctx)
        pidfiles[name] = tmp_path / f"{name}.pid"
        tool = program(
            tmp_path,
            f"{name}.py",
            f"""
            import os, time
            open({str(pidfiles[name])!r}, "w").write(str(os.getpid()))
            time.sleep(60)
            """,
        )
        thread = threading.Thread(
            target=run_invocation,
            args=(argv("s", PY, tool),),
            kwargs={"pool": ctx.pool, "scratch": ctx.scratch},
        )
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + 20
    while not all(p.exists() and p.read_text() for p in pidfiles.values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = {name: int(p.read_text()) for name, p in pidfiles.items()}
    try:
        assert runner.kill_run("run-a") == [pid["run-a"]]
        threads[0].join(10)
        assert not threads[0].is_alive() and not alive(pid["run-a"])
        assert alive(pid["run-b"])  # the other run goes on
        with pytest.raises(runner.RunnerShutdown, match="cancelled"):
            runner.get_run(specs["run-a"])  # a step of the cancelled run arriving later
        assert runner.get_run(specs["run-b"]).name == "run-b"
    finally:
        runner.kill_run("run-b")
        threads[1].join(10)
    assert not alive(pid["run-b"])
