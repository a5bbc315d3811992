"""The pipeline on a real Dask cluster: `dask scheduler` and two `dask worker` processes.

Everything is real and on 127.0.0.1: a `prefect server start` (the workers must reach a real
server: in ephemeral mode each would start its own), a scheduler and two single-threaded
workers started here as subprocesses with PREFECT_API_URL in their environment, and
configs/example.yaml (copied with the sample data into a temporary folder) run through
`python flows/fermi.py` with `runner: {kind: dask, address: …}`. Checked:

* the Dask run's products equal a local threads run's, pixel by pixel and column by column
  (ignoring DATE, CHECKSUM, DATASUM, CREATOR, FILENAME), both workers ran steps, and a step
  with ``worker_resources`` ran only on the worker that declares that resource;
* a worker killed (SIGKILL, with its tools) in the middle of a step: its file is re-run on
  the other worker and the run completes with the same products;
* a worker without PREFECT_API_URL makes the run stop at once, naming it;
* SLURM cannot be run here: configs/slurm.yaml's cluster kwargs build a real
  dask_jobqueue.SLURMCluster on loopback (nothing submitted) whose job script carries them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.io import fits
from processes import group_gone
from server_processes import (
    free_port,
    prefect_server,
    start_dask_scheduler,
    start_dask_worker,
    stop_group,
    wait_for_workers,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
IGNORED_KEYS = {"DATE", "CHECKSUM", "DATASUM", "CREATOR", "FILENAME"}
PRODUCTS = ("example_ccube.fits", "example_ltcube.fits")
#: The private staging folder of a run (fermipipe.staging): differs between any two runs.
STAGING_NAME = re.compile(r"fermipipe-run-\d+-[0-9a-f]+")

pytestmark = pytest.mark.timeout(300)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free loopback port; yields the environment for the
    flow and the Dask workers (PREFECT_API_URL exported, PREFECT_HOME temporary)."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen[Any]
    workers: dict[str, subprocess.Popen[Any]]  # name → process (pid = the worker itself)
    logs: dict[str, Path]


@contextlib.contextmanager
def dask_cluster(
    folder: Path,
    env: dict[str, str],
    resources: dict[str, str] | None = None,
    unset: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """A `dask scheduler` and two `dask worker --nthreads 1 --no-nanny` on 127.0.0.1
    (``unset``: worker name → an environment variable it does not get).

    No nanny: a killed worker stays dead (a nanny would restart it), and the worker's pid is
    the parent of the tools it starts. Each process has its own session, so killing a
    worker's group kills its tools too, as losing the node would.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[Any]] = []

    def env_of(name: str) -> dict[str, str]:
        return {k: v for k, v in env.items() if k != (unset or {}).get(name)}

    try:
        sched = start_dask_scheduler(port, env_of("scheduler"), folder / "scheduler.log", folder)
        procs.append(sched)
        workers: dict[str, subprocess.Popen[Any]] = {}
        for name in ("wa", "wb"):
            workers[name] = start_dask_worker(
                address,
                env_of(name),
                folder / f"{name}.log",
                name=name,
                resources=(resources or {}).get(name),
                cwd=folder,
            )
            procs.append(workers[name])
        wait_for_workers(address, 2, sched)
        yield Cluster(address, sched, workers, {n: folder / f"{n}.log" for n in workers})
    finally:
        for proc in reversed(procs):
            stop_group(proc, signal.SIGTERM, 10)


def example_project(folder: Path) -> Path:
    """configs/example.yaml in a folder laid out like the repository (sample data linked)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "sample").symlink_to(REPO / "data" / "sample")
    shutil.copy(REPO / "configs" / "example.yaml", folder / "configs" / "example.yaml")
    return folder / "configs" / "example.yaml"


def variant(config: Path, name: str, **changes: Any) -> tuple[Path, Path]:
    """A copy of ``config`` with its own output/work/cache folders and ``changes``; returns
    the config and its products folder."""
    cfg = yaml.safe_load(config.read_text())
    cfg["output"] = {"directory": f"../products/{name}", "workdir": f"../work/{name}"}
    cfg["cache"] = {"directory": f"../cache/{name}"}  # each run computes for itself
    cfg.update(changes)
    path = config.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, config.parent.parent / "products" / name


def run_pipeline(
    config: Path, env: dict[str, str], log: Path, timeout: float = 180
) -> tuple[int, dict[str, Any]]:
    summary = log.with_suffix(".json")
    with log.open("w") as out:
        proc = subprocess.run(
            [PY, "flows/fermi.py", str(config), "--summary-json", str(summary)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return proc.returncode, data


def start_pipeline(
    config: Path, env: dict[str, str], out: Any, *extra: str
) -> subprocess.Popen[Any]:
    """``python flows/fermi.py CONFIG`` started in a session of its own, output to ``out``."""
    return subprocess.Popen(
        [PY, "flows/fermi.py", str(config), *extra],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def comparable_cards(header: fits.Header) -> list[tuple[str, Any]]:
    """Cards but the ignored keywords, in order; the HISTORY text (joined: a long path is
    wrapped over cards) with each run's private staging folder name made neutral — gtbin
    copies the input's history naming the input's path (spec §13: not compared)."""
    cards = [
        (c.keyword, c.value)
        for c in header.cards
        if c.keyword not in IGNORED_KEYS and c.keyword != "HISTORY"
    ]
    history = "".join(str(v) for v in header.get("HISTORY", []))
    return [*cards, ("HISTORY", STAGING_NAME.sub("fermipipe-run-*", history))]


def assert_same_fits(a: Path, b: Path, *, history: bool = True) -> None:
    """Same HDUs, same header cards (but the ignored ones) in order, same data.
    ``history=False``: the HISTORY text is not compared (another chain made ``b``)."""
    with fits.open(a) as ha, fits.open(b) as hb:
        assert [h.name for h in ha] == [h.name for h in hb], a.name
        for x, y in zip(ha, hb, strict=True):
            cards_x, cards_y = comparable_cards(x.header), comparable_cards(y.header)
            if not history:
                cards_x, cards_y = cards_x[:-1], cards_y[:-1]
            assert cards_x == cards_y, f"{a.name}[{x.name}] headers differ"
            if x.data is None:
                assert y.data is None
            elif isinstance(x, fits.BinTableHDU):
                assert x.columns.names == y.columns.names
                for col in x.columns.names:
                    np.testing.assert_array_equal(x.data[col], y.data[col], err_msg=col)
            else:
                np.testing.assert_array_equal(x.data, y.data, err_msg=f"{a.name}[{x.name}]")


def task_runs_in(log: Path, step: str) -> list[str]:
    """Weeks (``w700``) of the ``step`` task runs a worker's log shows as Completed (a
    per-step task run is named ``<step> · w<week>``)."""
    found = []
    for line in log.read_text().splitlines():
        if f"Task run '{step} · " in line and "Finished in state Completed" in line:
            found.append(line.split(f"Task run '{step} · ", 1)[1].split("'", 1)[0])
    return found


def week_label(file_id: str) -> str:
    return "w" + file_id.split("weekly_w", 1)[1][:3]


# ------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def local_run(
    server: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """configs/example.yaml run locally (threads): the reference products."""
    project = tmp_path_factory.mktemp("example")
    config = example_project(project)
    local, products = variant(config, "local")
    code, summary = run_pipeline(local, server, project / "local.log")
    assert code == 0, (project / "local.log").read_text()[-3000:]
    assert summary["files"]["ok"] == 3
    return config, products


def test_example_on_dask_equals_local_run(
    server: dict[str, str], local_run: tuple[Path, Path], tmp_path: Path
) -> None:
    config, local_products = local_run
    with dask_cluster(tmp_path / "dask", server, resources={"wb": "ramdisk=1"}) as cluster:
        cfg = yaml.safe_load(config.read_text())
        for step in cfg["steps"]:  # only wb declares a RAM disk: every ltcube must go there
            if step["name"] == "ltcube":
                step["worker_resources"] = {"ramdisk": 1}
        dask_config, products = variant(
            config, "dask", steps=cfg["steps"], runner={"kind": "dask", "address": cluster.address}
        )
        log = tmp_path / "dask-run.log"
        code, summary = run_pipeline(dask_config, server, log)
        assert code == 0, log.read_text()[-4000:]
        logs = {name: path.read_text() for name, path in cluster.logs.items()}

    assert summary["state"] == "Completed"
    assert summary["files"]["ok"] == 3 and summary["files"]["failed"] == 0
    for name in PRODUCTS:
        assert_same_fits(local_products / name, products / name)
    # The steps ran on the workers, both of them, not in the flow's process.
    assert "Task run 'select · " not in log.read_text()
    for name, text in logs.items():
        assert "Finished in state Completed" in text, f"worker {name} ran nothing"
        assert "Failed to reach API" not in text and "Traceback" not in text, text[-3000:]
    # worker_resources → dask.annotate: ltcube only where the resource exists.
    assert sorted(task_runs_in(cluster.logs["wb"], "ltcube")) == sorted(
        week_label(f["file"]) for f in summary["per_file"]
    )
    assert task_runs_in(cluster.logs["wa"], "ltcube") == []
    # What a person sees: the quick-look PNG beside the merged counts cube, in the summary.
    png = products / "example_ccube.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    merges = {m["name"]: m for m in summary["merges"]}
    assert Path(merges["ccube"]["quicklook"]).resolve() == png.resolve()
    assert merges["ltcube"]["quicklook"] is None  # a livetime cube is not a counts map


STAGE_STEP = {
    # Records which worker runs it (the tool's parent is the worker process), then is slow
    # enough to be killed in the middle.
    "name": "stage",
    "command": "mkdir -p {output_dir}/stamps && echo $$ > {output_dir}/stamps/{stem}.$PPID"
    " && sleep 4 && cp {input} {staged}",
    "outputs": {"staged": "{stem}_staged.fits"},
    "cleanup": True,
}


@pytest.mark.parametrize("node_local", [False, True], ids=["per-step", "node-local"])
def test_a_worker_killed_mid_run_has_its_files_rerun_elsewhere(
    server: dict[str, str], local_run: tuple[Path, Path], tmp_path: Path, node_local: bool
) -> None:
    config, local_products = local_run
    cfg = yaml.safe_load(config.read_text())
    cfg["steps"][0]["inputs"]["infile"] = "{staged}"
    with dask_cluster(tmp_path / "dask", server) as cluster:
        kill_config, products = variant(
            config,
            "kill-node" if node_local else "kill",  # own products, stamps and cache
            steps=[STAGE_STEP, *cfg["steps"]],
            runner={"kind": "dask", "address": cluster.address, "node_local": node_local},
        )
        stamps = products / "stamps"
        log = tmp_path / "kill-run.log"
        summary_path = log.with_suffix(".json")
        pids = {str(p.pid): name for name, p in cluster.workers.items()}
        with log.open("w") as out:
            run = start_pipeline(kill_config, server, out, "--summary-json", str(summary_path))
            try:
                # Kill the first worker seen running a stage (mid-sleep: its tool is alive).
                wait_until(
                    lambda: stamps.is_dir() and any(stamps.iterdir()), 120, "a stage to start"
                )
                first = sorted(stamps.iterdir(), key=lambda p: p.stat().st_mtime)[0]
                victim = pids[first.suffix[1:]]
                killed_file = first.stem
                os.killpg(cluster.workers[victim].pid, signal.SIGKILL)
                cluster.workers[victim].wait(timeout=10)
                code = run.wait(timeout=180)
            finally:
                stop_group(run, signal.SIGINT, 20)
        survivor = next(n for n in cluster.workers if n != victim)

    assert code == 0, log.read_text()[-4000:]
    summary = json.loads(summary_path.read_text())
    assert summary["state"] == "Completed"
    assert summary["files"]["ok"] == 3 and summary["files"]["failed"] == 0
    # The killed worker's file was staged again, by the survivor.
    survivor_pid = str(cluster.workers[survivor].pid)
    assert (stamps / f"{killed_file}.{survivor_pid}").exists(), sorted(
        p.name for p in stamps.iterdir()
    )
    for name in PRODUCTS:  # the staged copy's path is in the HISTORY (cfitsio filter text)
        assert_same_fits(local_products / name, products / name, history=False)


def test_a_worker_without_the_prefect_server_is_refused(
    server: dict[str, str], local_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """A worker without PREFECT_API_URL would start a Prefect server of its own per task:
    the run stops at once, naming it, before any step is submitted."""
    config, _ = local_run
    with dask_cluster(tmp_path / "dask", server, unset={"wb": "PREFECT_API_URL"}) as cluster:
        bad_config, products = variant(
            config, "noapi", runner={"kind": "dask", "address": cluster.address}
        )
        log = tmp_path / "noapi.log"
        code, _summary = run_pipeline(bad_config, server, log, timeout=120)
        worker_log = cluster.logs["wb"].read_text()
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert "have no PREFECT_API_URL" in text and "restart them with PREFECT_API_URL=" in text
    assert "Task run" not in worker_log  # nothing ran on it
    assert not (products / "example_ccube.fits").exists()


# ---------------------------------------------------------------------------------- SLURM


def test_slurm_config_builds_a_job_script_with_its_directives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configs/slurm.yaml cannot run here (no SLURM): build its SLURMCluster on loopback —
    the pipeline's own mapping — and check the job script, submitting nothing."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from fermipipe.config import load_config
    from flows.task_runners import cluster_kwargs

    cfg = load_config(REPO / "configs" / "slurm.yaml", check_files=False)
    assert cfg.runner.kind == "dask" and cfg.runner.cluster is not None
    assert cfg.runner.cluster.class_path == "dask_jobqueue.SLURMCluster"
    assert cfg.runner.cluster.adapt == {"minimum": 1, "maximum": 20}
    # No Prefect server configured (the session's test server is set in this process).
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        kwargs = cluster_kwargs(cfg.runner.cluster)
    from dask_jobqueue import SLURMCluster

    kwargs.update(
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        log_directory=str(tmp_path),
    )
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    assert "PREFECT_API_URL" not in script  # none configured here: nothing to export
    assert "#SBATCH -p normal" in script
    assert "#SBATCH -A fermi" in script
    assert "#SBATCH -t 04:00:00" in script
    assert "#SBATCH --tmp=20G" in script
    assert "#SBATCH --cpus-per-task=8" in script
    assert "--resources memory=32,ltcube=2" in script
    assert "--nthreads 8" in script
    assert "tcp://127.0.0.1:" in script
    # The workers report to the flow's Prefect server: its URL is exported in the job.
    with temporary_settings({PREFECT_API_URL: "http://login1:4200/api"}):
        exported = cluster_kwargs(cfg.runner.cluster)
    assert exported["job_script_prologue"] == ["export PREFECT_API_URL=http://login1:4200/api"]
    with SLURMCluster(**{**kwargs, **exported, "log_directory": str(tmp_path)}) as cluster:
        assert "export PREFECT_API_URL=http://login1:4200/api" in cluster.job_script()
    # Every ltcube invocation asks for one `ltcube` resource: two per 8-core worker at most.
    ltcube = next(s for s in cfg.steps if s.name == "ltcube")
    assert ltcube.worker_resources == {"ltcube": 1}


def test_sigterm_stops_the_runs_tools_on_the_workers(
    server: dict[str, str], local_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """Cancelling Dask futures does not stop a running task: the flow asks every worker to
    kill this run's tool groups. The workers themselves live on."""
    config, _local_products = local_run
    cfg = yaml.safe_load(config.read_text())
    cfg["steps"][0]["inputs"]["infile"] = "{staged}"
    slow = {**STAGE_STEP, "command": STAGE_STEP["command"].replace("sleep 4", "sleep 300")}
    with dask_cluster(tmp_path / "dask", server) as cluster:
        stop_config, products = variant(
            config,
            "stop",
            steps=[slow, *cfg["steps"]],
            runner={"kind": "dask", "address": cluster.address},
        )
        stamps = products / "stamps"
        log = tmp_path / "stop-run.log"
        with log.open("w") as out:
            run = start_pipeline(stop_config, server, out)
            try:
                wait_until(
                    lambda: stamps.is_dir() and len(list(stamps.iterdir())) == 2,
                    120,
                    "both workers to start a tool",
                )
                wait_until(lambda: all(p.read_text().strip() for p in stamps.iterdir()), 10, "pids")
                tools = [int(p.read_text()) for p in stamps.iterdir()]
                assert not any(group_gone(g) for g in tools)
                run.send_signal(signal.SIGTERM)
                code = run.wait(timeout=90)
            finally:
                stop_group(run, signal.SIGKILL, 5)
            text = log.read_text()
            assert code == 128 + signal.SIGTERM, text[-4000:]
            wait_until(lambda: all(group_gone(g) for g in tools), 20, "the tools to be killed")
            assert "stopped this run's tools on the Dask workers" in text, text[-4000:]
            assert all(w.poll() is None for w in cluster.workers.values())  # workers live on


def test_node_local_chains_use_the_workers_ram_disk(
    server: dict[str, str], local_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """``runner.node_local``: each file's chain is one task on one worker, staged in a folder
    of its own on that node's RAM disk (here a folder standing for it), removed afterwards;
    the products equal the local run's. On loopback the workers share the node, so the mode
    is forced; on a cluster with workers elsewhere it is the default."""
    config, local_products = local_run
    ram = tmp_path / "shm"
    ram.mkdir()
    cfg = yaml.safe_load(config.read_text())
    with dask_cluster(tmp_path / "dask", server) as cluster:
        node_config, products = variant(
            config,
            "node",
            resources={"cores": 2, "ram_disk": {"enabled": True, "path": str(ram)}},
            steps=cfg["steps"],
            runner={"kind": "dask", "address": cluster.address, "node_local": True},
        )
        log = tmp_path / "node-run.log"
        code, summary = run_pipeline(node_config, server, log)
        assert code == 0, log.read_text()[-4000:]
        logs = {name: path.read_text() for name, path in cluster.logs.items()}

    assert summary["state"] == "Completed"
    assert summary["files"]["ok"] == 3 and summary["files"]["failed"] == 0
    for name in PRODUCTS:
        assert_same_fits(local_products / name, products / name, history=False)
    # One chain task per file, run by the workers, each in a fresh folder on the RAM disk.
    chains = [
        line
        for text in logs.values()
        for line in text.splitlines()
        if re.search(rf"chain in {re.escape(str(ram))}/fermipipe-chain-\d+-[0-9a-f]+ ", line)
    ]
    assert len(chains) == 3, "\n".join(chains)
    # Each week's spacecraft file was read from a copy on the node's RAM disk.
    staged = [
        line for text in logs.values() for line in text.splitlines() if "staged spacecraft" in line
    ]
    assert len(staged) == 3, "\n".join(staged)
    assert all(
        any("Task run 'chain[" in line and "Completed" in line for line in text.splitlines())
        for text in logs.values()
    ), "both workers ran chains"
    assert "Task run 'select · " not in "".join(logs.values())  # no per-step tasks
    assert not any(ram.glob("fermipipe-*")), sorted(ram.iterdir())  # every folder removed
    assert [s["status"] for f in summary["per_file"] for s in f["steps"]] == ["ok"] * 12
