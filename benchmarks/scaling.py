"""Scale-out: the example pipeline on threads, 1 and 2 local Dask workers; submission cost.

    uv run python benchmarks/scaling.py                      # 8 generated weeks, N=1000
    uv run python benchmarks/scaling.py --weeks 4 --tasks 200  # a quicker run
    uv run python benchmarks/scaling.py --profile            # + where Dask submission goes

Everything against a real ``prefect server start`` on loopback (temporary PREFECT_HOME),
started here: a Dask run needs one (its workers report to it) and the comparison is fair
only if the threads run uses the same.

1. **Pipeline.** ``--weeks`` synthetic weeks (``python -m fermipipe.synth``, ``--span-days``
   long: 1 like data/sample, 7 for whole weeks) through configs/example.yaml's steps and merges, via the real entry
   point ``python flows/fermi.py``, with ``runner`` = threads (resources.cores 2), Dask
   ``distributed.LocalCluster`` with 1 worker, and with 2 workers (one thread each), each
   with its own cache folder (every run computes everything); then the same on long-lived
   `dask worker` processes (1, then 2) after a warm-up run. Reported: the flow's wall
   time (from --summary-json), the process wall time, the speed-up of 2 workers against 1,
   and the overhead per task of Dask against threads at the same 2-way parallelism:
   (wall(dask, 2) − wall(threads, 2)) × 2 / tasks.
2. **Submission.** N tasks of a trivial step (``/bin/sh -c true``), submitted in one flow
   run the way ``process_files`` does (``run_step``, a RunSpec, an Invocation per file), on
   the threads runner and on a 2-worker LocalCluster: the submission loop's ms per task
   (what the flow thread spends before the last task is handed over) and the total —
   ``dask`` as the pipeline submits (flows.task_runners.fast_submission: Prefect's settings
   serialized once per loop), ``dask-as-is`` as prefect-dask does by itself (per task).
   ``--profile`` adds a cProfile of the Dask submission: the share of Prefect's
   ``serialize_context`` and of pickling our parameters.

The machine has 2 cores shared with other work: treat the figures as orders of magnitude
and rerun to see the spread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the server helpers live with the tests
import server_processes as localserver  # noqa: E402

PY = sys.executable


# ------------------------------------------------------------------------ the server


def prefect_server(home: Path) -> contextlib.AbstractContextManager[dict[str, str]]:
    """`prefect server start` on loopback; yields the environment pointing at it."""
    return localserver.prefect_server(
        home, settings={"PREFECT_LOGGING_LEVEL": "WARNING"}, timeout=120
    )


# ---------------------------------------------------------------------- the pipeline


def make_project(folder: Path, weeks: int, events: int, span_days: int) -> Path:
    """Generated weeks in ``folder/data/sample`` and configs/example.yaml beside them."""
    data = folder / "data" / "sample"
    subprocess.run(
        [PY, "-m", "fermipipe.synth", "--weeks", f"700-{699 + weeks}", "--events", str(events)]
        + ["--span-days", str(span_days), "--out", str(data)],
        check=True,
        cwd=REPO,
    )
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "example.yaml", folder / "configs" / "example.yaml")
    return folder / "configs" / "example.yaml"


RUNNERS: dict[str, dict[str, Any]] = {
    "threads": {"kind": "threads"},
    "dask-1": {
        "kind": "dask",
        "cluster": {
            "class": "distributed.LocalCluster",
            "kwargs": {"n_workers": 1, "threads_per_worker": 1, "dashboard_address": None},
        },
    },
    "dask-2": {
        "kind": "dask",
        "cluster": {
            "class": "distributed.LocalCluster",
            "kwargs": {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None},
        },
    },
}


@contextlib.contextmanager
def dask_workers(n: int, env: dict[str, str], folder: Path) -> Iterator[str]:
    """`dask scheduler` + ``n`` × `dask worker --nthreads 1` on loopback: long-lived workers,
    as on a cluster (a LocalCluster made per run would pay the workers' start-up and the
    numba kernels' loading in every run). Yields the scheduler address."""
    folder.mkdir(parents=True, exist_ok=True)
    port = localserver.free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[Any]] = []
    try:
        scheduler = localserver.start_dask_scheduler(port, env, folder / "dask-0.log")
        procs.append(scheduler)
        for i in range(1, n + 1):
            procs.append(localserver.start_dask_worker(address, env, folder / f"dask-{i}.log"))
        localserver.wait_for_workers(address, n, scheduler)
        yield address
    finally:
        for proc in reversed(procs):
            localserver.stop_group(proc, signal.SIGTERM, 30)


def run_variant(
    config: Path, name: str, env: dict[str, str], runner: dict[str, Any] | None = None
) -> dict[str, Any]:
    cfg = yaml.safe_load(config.read_text())
    cfg["resources"]["cores"] = 2
    cfg["output"] = {"directory": f"../products/{name}", "workdir": f"../work/{name}"}
    cfg["cache"] = {"directory": f"../cache/{name}"}  # each variant computes everything
    cfg["runner"] = runner or RUNNERS[name]
    path = config.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = config.parent / f"{name}.json"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [PY, "flows/fermi.py", str(path), "--summary-json", str(summary)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    s = json.loads(summary.read_text())
    tasks = sum(len(f["steps"]) for f in s["per_file"])
    return {"runner": name, "flow_wall": s["wall_seconds"], "process_wall": wall, "tasks": tasks}


def pipeline_section(args: argparse.Namespace, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    config = make_project(tmp / "project", args.weeks, args.events, args.span_days)
    rows = [run_variant(config, name, env) for name in ("threads", "dask-1", "dask-2")]
    for n in (1, 2):  # long-lived workers: one warm-up run, then the measured one
        with dask_workers(n, env, tmp / f"workers-{n}") as address:
            runner = {"kind": "dask", "address": address}
            run_variant(config, f"warmup-{n}", env, runner)
            rows.append(run_variant(config, f"workers-{n}", env, runner))
    by = {r["runner"]: r for r in rows}
    tasks = by["threads"]["tasks"]
    return {
        "weeks": args.weeks,
        "span_days": args.span_days,
        "tasks": tasks,
        "rows": rows,
        "speedup_2_vs_1": by["dask-1"]["flow_wall"] / by["dask-2"]["flow_wall"],
        "dask_overhead_ms_per_task": 1000
        * (by["dask-2"]["flow_wall"] - by["threads"]["flow_wall"])
        * 2
        / tasks,
        "warm_speedup_2_vs_1": by["workers-1"]["flow_wall"] / by["workers-2"]["flow_wall"],
        "warm_dask_overhead_ms_per_task": 1000
        * (by["workers-2"]["flow_wall"] - by["threads"]["flow_wall"])
        * 2
        / tasks,
    }


# ----------------------------------------------------------------- submission cost


def submission_flow(kind: str, n: int, profile: bool) -> dict[str, Any]:
    """One flow run: submit ``n`` trivial run_step tasks as process_files does, time it."""
    from prefect import flow, unmapped
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import wait

    from fermipipe import runner
    from fermipipe.config import RunnerConfig
    from fermipipe.plan import Invocation
    from flows.task_runners import build_task_runner, fast_submission
    from tasks.steps import run_step

    cfg = RunnerConfig.model_validate(RUNNERS["threads" if kind == "threads" else "dask-2"])
    if kind == "dask-as-is":  # Prefect's settings serialized for every task, as shipped
        os.environ["FERMIPIPE_DASK_SERIALIZE_SETTINGS_EACH_TASK"] = "1"

    @flow(name=f"submission-{kind}")
    def submit_many() -> dict[str, Any]:
        scratch = Path(tempfile.mkdtemp(prefix="fermipipe-bench-"))
        ctx = runner.open_run(f"bench-{kind}", workers=2, scratch=scratch, log_dir=scratch)
        spec = runner.run_spec(ctx)
        invs = [
            Invocation(step="noop", file_id=f"f{i:04d}", engine="shell", shell="true")
            for i in range(n)
        ]
        task = run_step.with_options(cache_policy=NO_CACHE, persist_result=False)
        prof = None
        with build_task_runner(cfg, threads=4) as pool:
            if profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            t0 = time.perf_counter()
            with fast_submission(cfg):
                futures = pool.map(
                    task,
                    {
                        "invocation": invs,
                        "previous": [None] * n,
                        "run": unmapped(spec),
                        "order": list(range(n)),
                        "step_index": unmapped(0),
                        "cache": [None] * n,
                    },
                )
            submitted = time.perf_counter() - t0
            if prof is not None:
                prof.disable()
            wait(list(futures))
            total = time.perf_counter() - t0
            failed = sum(1 for f in futures if not f.state.is_completed())
        runner.close_run(ctx.name)
        shutil.rmtree(scratch, ignore_errors=True)
        out: dict[str, Any] = {
            "runner": kind,
            "tasks": n,
            "submit_ms_per_task": 1000 * submitted / n,
            "total_ms_per_task": 1000 * total / n,
            "failed": failed,
        }
        if prof is not None:
            out["profile"] = profile_shares(prof, submitted)
        return out

    return submit_many()


def profile_shares(prof: Any, submitted: float) -> dict[str, float]:
    """Share of the submission time in a few functions (cumulative time)."""
    import pstats

    stats = pstats.Stats(prof)
    wanted = {
        "serialize_context": "prefect/context.py",
        "submit": "distributed/client.py",
        "dumps": "cloudpickle",
        "collect_task_run_inputs_sync": "prefect/utilities/engine.py",
        "_optimize_futures": "prefect_dask/task_runners.py",
    }
    shares: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for name, where in wanted.items():
            if func == name and where in file:
                shares[name] = max(shares.get(name, 0.0), ct / submitted)
    return {k: round(v, 3) for k, v in shares.items()}


def submission_section(args: argparse.Namespace, env: dict[str, str]) -> list[dict[str, Any]]:
    """Run each submission measurement in a fresh process pointed at the server."""
    rows = []
    for kind in ("threads", "dask", "dask-as-is"):
        code = (
            "import json, sys; sys.path.insert(0, 'benchmarks'); import scaling; "
            f"print(json.dumps(scaling.submission_flow({kind!r}, {args.tasks}, {args.profile})))"
        )
        proc = subprocess.run(
            [PY, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"submission {kind} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# ---------------------------------------------------------------------------- report


def report(pipeline: dict[str, Any] | None, submission: list[dict[str, Any]] | None) -> str:
    lines = []
    if pipeline:
        lines += [
            f"## Example pipeline, {pipeline['weeks']} generated weeks of "
            f"{pipeline['span_days']} day(s) ({pipeline['tasks']} step tasks)",
            "",
            "| runner | flow wall s | process wall s |",
            "|---|---:|---:|",
        ]
        for r in pipeline["rows"]:
            lines.append(f"| {r['runner']} | {r['flow_wall']:.1f} | {r['process_wall']:.1f} |")
        lines += [
            "",
            "dask-N: a LocalCluster made by the run; workers-N: long-lived `dask worker`s",
            "(after one warm-up run).",
            "",
            f"speed-up, 2 Dask workers vs 1: LocalCluster {pipeline['speedup_2_vs_1']:.2f}×, "
            f"long-lived workers {pipeline['warm_speedup_2_vs_1']:.2f}×",
            "Dask overhead vs threads (2-way): LocalCluster "
            f"{pipeline['dask_overhead_ms_per_task']:.0f} ms per task, long-lived workers "
            f"{pipeline['warm_dask_overhead_ms_per_task']:.0f} ms per task",
            "",
        ]
    if submission:
        lines += [
            f"## Submission cost, {submission[0]['tasks']} trivial tasks",
            "",
            "| runner | submit ms/task | total ms/task | failed |",
            "|---|---:|---:|---:|",
        ]
        for r in submission:
            lines.append(
                f"| {r['runner']} | {r['submit_ms_per_task']:.1f} | "
                f"{r['total_ms_per_task']:.1f} | {r['failed']} |"
            )
        for r in submission:
            if "profile" in r:
                lines += ["", f"{r['runner']} submission profile (share of submit time):"]
                lines += [f"- {k}: {v:.0%}" for k, v in sorted(r["profile"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--weeks", type=int, default=8)
    p.add_argument("--events", type=int, default=15000, help="FT1 events per week")
    p.add_argument("--span-days", type=int, default=1, help="days of each week (7: whole)")
    p.add_argument("--tasks", type=int, default=1000, help="N of the submission section")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--skip-submission", action="store_true")
    p.add_argument("--profile", action="store_true", help="profile the Dask submission")
    p.add_argument(
        "--numba-threads",
        type=int,
        help="NUMBA_NUM_THREADS for every process: gtltcube's kernel is a parallel numba loop "
        "using every core, so on one machine a single worker already fills it; 1 measures "
        "how the runners scale with single-threaded tools",
    )
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fermipipe-scaling-") as tmp:
        home = Path(tmp) / "prefect-home"
        home.mkdir()
        with prefect_server(home) as env:
            if args.numba_threads:
                env["NUMBA_NUM_THREADS"] = str(args.numba_threads)
            pipeline = None if args.skip_pipeline else pipeline_section(args, env, Path(tmp))
            submission = None if args.skip_submission else submission_section(args, env)
    text = report(pipeline, submission)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"pipeline": pipeline, "submission": submission}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
