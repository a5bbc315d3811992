"""Orchestration overhead of the Prefect flow on a real subprocess workload.

    uv run python benchmarks/overhead.py                   # 300 files × 3 steps, 8 workers
    uv run python benchmarks/overhead.py --files 40 --quick  # a smoke run

Two workloads, each through the real entry point (``python flows/fermi.py CONFIG``):

* ``fixed``: every step of every file is a real subprocess lasting ~1 s (``sleep 1`` then a
  copy of the file);
* ``varied``: each (file, step) sleeps a duration drawn uniformly in 0.2–3 s (seeded).

For each: the wall time of the flow run (from the run summary, so the temporary Prefect
server's start-up is excluded; the process wall time is reported too), the ideal (total
work / workers), the parallel efficiency (ideal / wall) and the orchestration overhead per
task in ms ((wall − ideal) × workers / tasks). For the varied workload it also gives the
wall time of the same commands run as one static chunk of consecutive files per worker (what
a multiprocessing runner splitting the list up front does), measured, and that layout's
makespan with zero overhead (its lower bound).

Sleeping tools use no CPU, so the figures measure the orchestration, not the machine's
cores; on a shared machine they still vary with the load: rerun to see the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, n_files: int, n_steps: int, durations: list[list[float]]) -> None:
    """One small input per file; line k holds the sleep of step k (read by the command)."""
    folder.mkdir(parents=True)
    for i in range(n_files):
        lines = "".join(f"{durations[i][k]:.3f}\n" for k in range(n_steps))
        (folder / f"f{i:04d}.fits").write_text(lines)


def make_config(project: Path, n_steps: int, workers: int) -> Path:
    steps = []
    previous = "{input}"
    for k in range(n_steps):
        out = f"s{k + 1}"
        steps.append(
            {
                "name": f"step{k + 1}",
                # A real subprocess per step: /bin/sh → sleep (duration from the input), cp.
                "command": f"sleep $(sed -n {k + 1}p {{input}}) && cp {previous} {{{out}}}",
                "outputs": {out: f"{{stem}}_{out}.txt"},
                "cleanup": True,
            }
        )
        previous = "{" + out + "}"
    cfg = {
        "name": "overhead",
        "resources": {"cores": workers},
        "input": {"directory": "in", "pattern": "*.fits"},
        "steps": steps,
    }
    path = project / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def static_chunks_makespan(durations: list[list[float]], workers: int) -> float:
    """Makespan of contiguous file chunks, one per worker, without any overhead."""
    n = len(durations)
    bounds = [round(w * n / workers) for w in range(workers + 1)]
    return max(
        sum(sum(durations[i]) for i in range(bounds[w], bounds[w + 1])) for w in range(workers)
    )


def static_chunks_real(project: Path, durations: list[list[float]], workers: int) -> float:
    """Wall time of the same commands run as one static chunk of files per worker.

    What a multiprocessing runner splitting the file list up front does: worker w runs the
    whole chain of each file of its chunk, one after the other, as subprocesses (threads
    here: each waits on its subprocess, so processes would add nothing).
    """
    n, n_steps = len(durations), len(durations[0])
    files = sorted((project / "in").glob("*.fits"))
    out = project / "static"
    out.mkdir()
    bounds = [round(w * n / workers) for w in range(workers + 1)]

    def chunk(w: int) -> None:
        for path in files[bounds[w] : bounds[w + 1]]:
            previous = path
            for k in range(n_steps):
                target = out / f"{path.stem}_s{k + 1}.txt"
                command = f"sleep $(sed -n {k + 1}p {path}) && cp {previous} {target}"
                subprocess.run(["/bin/sh", "-c", command], check=True, stdin=subprocess.DEVNULL)
                previous = target

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(chunk, range(workers)))
    return time.perf_counter() - t0


def run_workload(
    name: str,
    durations: list[list[float]],
    workers: int,
    env: dict[str, str],
    with_static: bool,
) -> dict[str, float | None]:
    n_files, n_steps = len(durations), len(durations[0])
    with tempfile.TemporaryDirectory(prefix=f"fermipipe-bench-{name}-") as tmp:
        project = Path(tmp)
        make_inputs(project / "in", n_files, n_steps, durations)
        config = make_config(project, n_steps, workers)
        summary_path = project / "summary.json"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(REPO / "flows" / "fermi.py"), str(config)]
            + ["--workers", str(workers), "--summary-json", str(summary_path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        process_wall = time.perf_counter() - t0
        if proc.returncode != 0:
            log = Path(tempfile.gettempdir()) / f"fermipipe-bench-{name}.log"
            log.write_text(proc.stdout + proc.stderr)
            sys.stderr.write(f"{proc.stderr[-2000:]}\nfull output: {log}\n")
            raise SystemExit(f"{name}: the pipeline failed (exit code {proc.returncode})")
        summary = json.loads(summary_path.read_text())
        static_real = static_chunks_real(project, durations, workers) if with_static else None
    work = sum(map(sum, durations))
    ideal = work / workers
    wall = summary["wall_seconds"]
    tasks = n_files * n_steps
    assert summary["files"]["ok"] == n_files, summary["files"]
    return {
        "files": n_files,
        "steps": n_steps,
        "workers": workers,
        "tasks": tasks,
        "total_work_s": round(work, 1),
        "ideal_s": round(ideal, 2),
        "flow_wall_s": round(wall, 2),
        "process_wall_s": round(process_wall, 2),
        "efficiency": round(ideal / wall, 4),
        "overhead_ms_per_task": round((wall - ideal) * workers / tasks * 1000, 1),
        "static_chunks_no_overhead_s": round(static_chunks_makespan(durations, workers), 2),
        "static_chunks_measured_s": None if static_real is None else round(static_real, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=1.0, help="duration of a fixed step")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--only", choices=("fixed", "varied"), help="run one workload")
    p.add_argument("--quick", action="store_true", help="durations / 5 (smoke test)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    scale = 0.2 if args.quick else 1.0
    rng = random.Random(args.seed)
    workloads = {
        "fixed": [[args.seconds * scale] * args.steps for _ in range(args.files)],
        "varied": [
            [rng.uniform(0.2, 3.0) * scale for _ in range(args.steps)] for _ in range(args.files)
        ],
    }
    figures = {}
    for name, durations in workloads.items():
        if args.only and name != args.only:
            continue
        # A fresh Prefect home per workload: each temporary server starts on an empty database
        # (sharing one, the second server met "database is locked" while the first shut down).
        with tempfile.TemporaryDirectory(prefix="fermipipe-bench-prefect-") as home:
            env = {**os.environ, "PREFECT_HOME": home}
            figures[name] = run_workload(name, durations, args.workers, env, name == "varied")
        f = figures[name]
        print(
            f"{name:6s}: {f['tasks']} tasks, {f['workers']} workers: flow wall {f['flow_wall_s']} s "
            f"(process {f['process_wall_s']} s), ideal {f['ideal_s']} s, efficiency "
            f"{100 * f['efficiency']:.1f}%, overhead {f['overhead_ms_per_task']} ms/task; "
            f"static chunks: {f['static_chunks_no_overhead_s']} s without overhead, "
            f"{f['static_chunks_measured_s']} s measured",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
