"""First run vs no-op rerun: what the content-addressed cache saves.

    uv run python benchmarks/rerun.py --example       # configs/example.yaml: start-up, Ctrl-C
    uv run python benchmarks/rerun.py                 # 1000 tiny synthetic weeks
    uv run python benchmarks/rerun.py --weeks 100     # a quicker look

``--example``: what a user of the quick start waits for, as they run it (``python
flows/fermi.py configs/example.yaml`` with no PREFECT_API_URL, a fresh PREFECT_HOME in a
temporary folder): the first run (it starts the local Prefect server, flows/server.py), then
fully cached reruns side by side with the floor ``python -c "import prefect"`` (medians of
three, interleaved), then Ctrl-C (SIGINT to the process group, as a terminal sends it) in the
middle of the gtltcube steps of an uncached run: seconds to exit, staging folder left, the
line printed. The local server is stopped at the end.

Generates N tiny weekly FT1/FT2 pairs (``python -m fermipipe.synth``, few events, a short
span), runs the example chain (gtselect → gtmktime → gtbin CCUBE and gtltcube, image_sum and
a gtltsum tree; coarse grids) through the real entry point ``python flows/fermi.py`` twice,
and reports both wall times — the process's and the flow run's own (from the run summary,
which excludes the temporary Prefect server's start-up) — and their ratio. The second run
must run no tool at all (the summary shows every file cached); the target is a ratio below
10 %.

Uses ``PREFECT_API_URL`` if set (a real server records every task run); otherwise each run
starts Prefect's temporary server (its start-up is in the process wall time, not in the
flow's). With a server, a rerun started at once is measured too: the server is then still
writing the first run's thousands of task runs and the rerun's first writes wait behind
them; the reported ratio is that of a rerun once the server has recorded the first run (a
weekly update finds it idle).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def make_config(root: Path, workers: int) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "example.yaml").read_text())
    cfg["resources"] = {"cores": workers, "ram_disk": {"enabled": True, "path": "/dev/shm"}}
    cfg["input"] = {"directory": "data", "pattern": "lat_photon_weekly_w*_p305_v001.fits"}
    cfg["output"] = {"directory": "products", "workdir": "work"}
    for step in cfg["steps"]:
        if "scfile" in step.get("inputs", {}):
            step["inputs"]["scfile"] = (
                "{config_dir}/data/lat_spacecraft_weekly_w{week}_p310_v001.fits"
            )
        if step["name"] == "ccube":
            step["params"].update({"nxpix": 36, "nypix": 18, "binsz": 10.0, "enumbins": 2})
        if step["name"] == "ltcube":
            step["params"].update({"binsz": 30, "dcostheta": 0.2})
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    """``prefect server start`` on loopback with its own home; returns when it answers."""
    import urllib.request

    env = {**os.environ, "PREFECT_HOME": str(home)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
         "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    sys.exit("the Prefect server did not start")


def run(config: Path, summary: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "flows" / "fermi.py"), str(config),
         "--summary-json", str(summary)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, json.loads(summary.read_text())


def wait_until_recorded(api: str, settle: float = 6.0, timeout: float = 900.0) -> float:
    """Wait until the server has stored the previous run's task runs: the count of completed
    task runs stops growing for ``settle`` seconds. Returns the seconds waited.

    A Prefect server records task runs from the events the flow sends; right after a run of
    thousands of tasks it is still writing them (SQLite), and a new run's first writes queue
    behind that backlog. A weekly rerun finds the server idle.
    """
    import urllib.request

    body = json.dumps({"task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}).encode()

    def count() -> int:
        req = urllib.request.Request(
            f"{api}/task_runs/count", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.read())

    t0 = time.monotonic()
    last, since = count(), time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(1.0)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            break
    return time.monotonic() - t0


def shadow_example(folder: Path) -> Path:
    """configs/example.yaml as is, in a folder laid out like the repository (its relative
    paths reach the committed sample data through a symlink; products land in ``folder``)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "sample").symlink_to(REPO / "data" / "sample")
    config = folder / "configs" / "example.yaml"
    shutil.copy(REPO / "configs" / "example.yaml", config)
    return config


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(
            f"{argv} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return wall, proc.stdout + proc.stderr


def interrupt_figure(folder: Path, env: dict[str, str]) -> str:
    """Ctrl-C in the middle of an uncached run's gtltcube steps."""
    import signal

    config = shadow_example(folder)
    text = config.read_text().replace("output:\n", "cache:\n  enabled: false\noutput:\n", 1)
    config.write_text(text)
    log = folder / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "flows" / "fermi.py"), str(config)],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while log.read_text().count("Task run 'ccube") < 3:  # the ltcube steps are running
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the run to interrupt did not get going:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    time.sleep(1.0)
    before = set(Path("/dev/shm").glob("fermipipe-run-*"))
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait()
    wall = time.perf_counter() - t0
    left = before & set(Path("/dev/shm").glob("fermipipe-run-*"))
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("fermipipe: stopped")]
    tracebacks = log.read_text().count("Traceback")
    return (
        f"Ctrl-C during gtltcube: exit {code} after {wall:.1f} s; staging folders left: "
        f"{len(left)}; tracebacks: {tracebacks}; said: {lines}"
    )


def example_mode() -> None:
    root = Path(tempfile.mkdtemp(prefix="fermipipe-rerun-example-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(PREFECT_HOME=str(root / "prefect-home"), FERMIPIPE_PREFECT_SERVER="local")
    try:
        config = shadow_example(root / "project")
        argv = [sys.executable, str(REPO / "flows" / "fermi.py"), str(config)]
        floor_argv = [sys.executable, "-c", "import prefect"]
        first, out = timed(argv, env, root / "project")
        said = [ln for ln in out.splitlines() if ln.startswith("fermipipe: Prefect UI")]
        import prefect

        compiled = any(Path(prefect.__file__).parent.glob("__pycache__/*.pyc"))
        print(
            f"Prefect byte-compiled: {compiled} (without .pyc files, e.g. under "
            "PYTHONDONTWRITEBYTECODE=1 with no `uv sync --compile-bytecode`, every run "
            "recompiles it: ~2 s more, floor included)"
        )
        print(f"first run (starts the local server): {first:5.1f} s  {said}")
        reruns, floors = [], []
        for _ in range(3):
            wall, out = timed(argv, env, root / "project")
            if "cached 3" not in out:
                sys.exit(f"the rerun was not fully cached:\n{out[-3000:]}")
            reruns.append(wall)
            floors.append(timed(floor_argv, env, root)[0])
        rerun, floor = sorted(reruns)[1], sorted(floors)[1]
        noise = sum(1 for ln in out.splitlines() if "| WARNING |" in ln or "| ERROR |" in ln)
        print(f"fully cached rerun:  {rerun:5.1f} s  (median of {[round(w, 1) for w in reruns]})")
        print(f"floor, python -c 'import prefect': {floor:5.1f} s  (median of "
              f"{[round(w, 1) for w in floors]}); rerun - floor = {rerun - floor:.1f} s")  # fmt: skip
        print(f"WARNING/ERROR lines in the last rerun's output: {noise}")
        print(interrupt_figure(root / "interrupt", env))
    finally:
        subprocess.run(
            [sys.executable, "-m", "flows.server", "stop"], cwd=REPO, env=env, check=False
        )
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weeks", type=int, default=1000, help="number of weekly files")
    p.add_argument("--events", type=int, default=20, help="events per week")
    p.add_argument("--span-days", type=float, default=0.05, help="days of data per week")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the temporary project")
    p.add_argument(
        "--server",
        action="store_true",
        help="start a real Prefect server on loopback for both runs (else PREFECT_API_URL, "
        "or each run's temporary server)",
    )
    p.add_argument(
        "--example",
        action="store_true",
        help="configs/example.yaml as a user runs it: first run, cached reruns vs the "
        "`import prefect` floor, Ctrl-C (the other options are ignored)",
    )
    args = p.parse_args()
    if args.example:
        example_mode()
        return

    root = Path(tempfile.mkdtemp(prefix="fermipipe-rerun-"))
    server = None
    if args.server:
        server = start_server(root / "prefect-home", 4297)
        os.environ["PREFECT_API_URL"] = "http://127.0.0.1:4297/api"
        os.environ["PREFECT_HOME"] = str(root / "prefect-home")
    try:
        first_week = 400  # synth weeks start in MET > 0
        weeks = f"{first_week}-{first_week + args.weeks - 1}"
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "fermipipe.synth", "--weeks", weeks, "--events",
             str(args.events), "--span-days", str(args.span_days), "--out", str(root / "data")],
            cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        print(f"generated {args.weeks} weeks in {time.perf_counter() - t0:.1f} s ({root})")
        config = make_config(root, args.workers)
        wall1, s1 = run(config, root / "first.json")
        api = os.environ.get("PREFECT_API_URL")
        if api:  # a rerun right away: behind the server's backlog of the first run
            wall0, s0 = run(config, root / "at-once.json")
            print(f"rerun at once (server still recording the first run): process "
                  f"{wall0:7.1f} s, flow {s0['wall_seconds']:7.1f} s "
                  f"({wall0 / wall1:.1%}, {s0['wall_seconds'] / s1['wall_seconds']:.1%})")  # fmt: skip
            waited = wait_until_recorded(api)
            print(f"server idle after {waited:.0f} s more")
        wall2, s2 = run(config, root / "second.json")
        flow1, flow2 = s1["wall_seconds"], s2["wall_seconds"]
        ran = sum(
            1 for f in s2["per_file"] for r in f["steps"] if r["step"] not in f["cached_steps"]
        )
        print(f"first run : process {wall1:7.1f} s, flow {flow1:7.1f} s "
              f"({s1['files']['ok']} ok, {s1['files']['empty']} empty)")  # fmt: skip
        print(f"no-op rerun: process {wall2:7.1f} s, flow {flow2:7.1f} s "
              f"({s2['files']['cached']} of {s2['files']['total']} files cached, "
              f"{ran} steps ran; merges {[m['mode'] for m in s2['merges']]})")  # fmt: skip
        print(f"ratio: process {wall2 / wall1:.1%}, flow {flow2 / flow1:.1%} (target < 10%)")
        left = list(Path("/dev/shm").glob("fermipipe-run-*")) + list((root / "work").glob("*"))
        print(f"left in /dev/shm or work/: {len(left)}")
    finally:
        if server is not None:
            os.killpg(server.pid, 15)
            server.wait()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    main()
