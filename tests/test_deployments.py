"""Deployments: prefect.yaml, deployments/serve.py and deployments/submit.py.

The fast tests need no server: they read prefect.yaml, load the flow from each entrypoint,
validate each deployment's parameters against it and build the schedules.

The server tests run what docs/running.md tells users to run, for real: `prefect server
start` on loopback (SQLite in a temporary PREFECT_HOME), `prefect --no-prompt deploy --all`
from the repository root, `prefect worker start --pool fermipipe-local --run-once` (started in
another folder, so the pull step's working directory is what makes the entrypoint resolve),
`python deployments/serve.py`, `python deployments/submit.py`, the UI's Retry (a forced
AwaitingRetry state, as the UI sets it) and `prefect flow-run retry ID --entrypoint …` for a
plain `python flows/fermi.py` run. Most runs use a tiny config of real cfitsio `fitscopy`
selections over copies of the real ft1tiny parts, merged by the native event merge, given as
the run's `config` parameter; `example` also runs on its own configs/example.yaml, copied
into a temporary folder laid out like the repository. No test writes inside the repository.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.io import fits
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.steps.utility import run_shell_script
from prefect.flows import load_flow_from_entrypoint
from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
from prefect.states import AwaitingRetry
from prefect.utilities.templating import apply_values
from prefect.workers.process import ProcessWorker
from processes import group_gone
from server_processes import prefect_server, start_group, stop_group
from shared_inputs import FITS_STUB

from deployments import serve as serve_cli
from deployments import submit as submit_cli
from fermipipe.config import load_config
from flows.cli import flow_parameters

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
PREFECT = str(Path(PY).with_name("prefect"))
POOL = "fermipipe-local"
ENTRYPOINT = "flows/fermi.py:fermi_pipeline"
ENERGY_CUT = 1000.0  # MeV: the tiny pipeline's fitscopy row filter


def prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def deployment_specs() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in prefect_yaml()["deployments"]}


def run_cli(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``argv`` run to its end in ``cwd`` with ``env``, its output captured as text."""
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------- without a server


def test_prefect_yaml_deployments() -> None:
    """The three deployments: entrypoint, work pool, and which one has which schedule."""
    doc = prefect_yaml()
    assert doc["name"] == "fermipipe"
    assert doc["prefect-version"].startswith("3.")
    specs = deployment_specs()
    assert set(specs) == {"example", "weekly", "on-demand"}
    for name, spec in specs.items():
        assert spec["entrypoint"] == ENTRYPOINT, name
        assert spec["work_pool"]["name"] == POOL, name
    assert specs["example"]["schedules"] == []
    assert specs["on-demand"]["schedules"] == []
    assert specs["example"]["parameters"]["config"] == "configs/example.yaml"
    assert specs["weekly"]["parameters"]["config"] == "configs/mission.yaml"
    assert "config" not in specs["on-demand"]["parameters"]  # given by each submit


def test_prefect_yaml_parameters_validate_against_the_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each deployment's parameters are accepted by the flow loaded from its entrypoint."""
    monkeypatch.chdir(REPO)  # entrypoints are relative to the repository, as in a worker
    for name, spec in deployment_specs().items():
        flow = load_flow_from_entrypoint(spec["entrypoint"])
        assert flow.name == "fermipipe"
        params = dict(spec["parameters"])
        params.setdefault("config", "configs/any.yaml")  # on-demand: given at submit time
        validated = flow.validate_parameters(params)
        assert {k: validated[k] for k in params} == params, name
        with pytest.raises(Exception, match="skip_merge"):  # the check can fail
            flow.validate_parameters({**params, "skip_merge": "sometimes"})


# The example's sample data is in the repository; the mission's data is the user's to provide.
@pytest.mark.parametrize(("name", "check_files"), [("example", True), ("weekly", False)])
def test_prefect_yaml_configs_exist_and_load(name: str, check_files: bool) -> None:
    """The config a scheduled/example deployment names is a valid pipeline config."""
    config = REPO / deployment_specs()[name]["parameters"]["config"]
    assert config.is_file(), f"deployment {name!r} names {config}, which does not exist"
    cfg = load_config(config, check_files=check_files)
    assert cfg.steps


def test_weekly_schedule_fires_fridays_0600_utc() -> None:
    spec = deployment_specs()["weekly"]
    (sched,) = spec["schedules"]
    assert sched.get("active", True) is True
    client_side = CronSchedule(cron=sched["cron"], timezone=sched["timezone"])
    server_side = ServerCronSchedule(cron=client_side.cron, timezone=client_side.timezone)
    start = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday
    dates = asyncio.run(server_side.get_dates(n=3, start=start))
    assert [d.astimezone(UTC).isoformat() for d in dates] == [
        "2026-11-27T06:00:00+00:00",
        "2026-12-04T06:00:00+00:00",
        "2026-12-11T06:00:00+00:00",
    ]


def test_build_step_records_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's own build step and templating turn prefect.yaml's build and pull steps into
    `set_working_directory(<repository>)`: $FERMIPIPE_HOME, else where deploy runs."""
    doc = prefect_yaml()
    for cwd, home, expected in ((REPO, None, str(REPO)), (tmp_path, "/srv/fp", "/srv/fp")):
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("PWD", str(cwd))
        if home is None:
            monkeypatch.delenv("FERMIPIPE_HOME", raising=False)
        else:
            monkeypatch.setenv("FERMIPIPE_HOME", home)
        (build,) = doc["build"]
        inputs = dict(build["prefect.deployments.steps.run_shell_script"])
        step_id = inputs.pop("id")
        # Prefect's step function itself (run_steps would also resolve blocks and variables
        # through an API, i.e. start a temporary server).
        outputs = {step_id: asyncio.run(run_shell_script(**inputs))}
        pull = apply_values(doc["pull"], outputs, remove_notset=False)  # as `prefect deploy`
        assert pull == [
            {"prefect.deployments.steps.set_working_directory": {"directory": expected}}
        ]


def test_serve_builds_deployments(tmp_path: Path, shared_data: Path) -> None:
    """serve.py: a generic deployment plus one per config, with schedule and flags."""
    config = tiny_project(tmp_path, shared_data).rename(tmp_path / "mission.yaml")
    args = serve_cli.parse_args([str(config), "--weekly", "--skip-post", "--workers", "3"])
    generic, mission = serve_cli.build_deployments(args)
    assert generic.name == "served"
    assert generic.parameters == {}
    assert not generic.schedules
    assert mission.name == "served-mission"
    assert mission.parameters == {"config": str(config), "skip_post": True, "workers": 3}
    (sched,) = mission.schedules
    assert (sched.schedule.cron, sched.schedule.timezone) == ("0 6 * * 5", "UTC")
    # The same weekly time as prefect.yaml's weekly deployment.
    assert sched.schedule.cron == deployment_specs()["weekly"]["schedules"][0]["cron"]
    with pytest.raises(SystemExit):
        serve_cli.parse_args(["--weekly"])  # a schedule without a config to run
    (tmp_path / "bad.yaml").write_text("stpes: []\n")
    with pytest.raises(SystemExit) as exc:
        serve_cli.parse_args([str(tmp_path / "bad.yaml")])
    assert exc.value.code == 2


def test_submit_parameters_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = submit_cli.parse_args(
        ["cfg.yaml", "--steps", "select,ccube", "--keep-intermediate", "--summary-json", "s.json"]
    )
    assert args.deployment == "fermipipe/on-demand"
    assert flow_parameters(args, args.config) == {
        "config": str(tmp_path / "cfg.yaml"),
        "steps": ["select", "ccube"],
        "keep_intermediate": True,
        "summary_json": str(tmp_path / "s.json"),
    }


def test_submit_config_error_before_any_server(tmp_path: Path) -> None:
    """A bad config is refused at once (exit 2), as by flows/fermi.py, before submitting."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {directory: nowhere}\nstpes: []\n")
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing listens
    out = run_cli([PY, str(REPO / "deployments" / "submit.py"), str(bad)], tmp_path, env, 60)
    assert out.returncode == 2, out.stderr
    assert "config error" in out.stderr and "bad.yaml" in out.stderr


# ------------------------------------------------------------------------ with a server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free loopback port; PREFECT_HOME in a temporary folder.

    Module-scoped (not session): it is stopped as soon as this file's tests are done.
    Yields the environment for the subprocesses; this process's client points at it too.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    with (
        prefect_server(
            home,
            drop={"FERMIPIPE_HOME"},
            # serve.py: pick up runs within a second
            settings={"PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        ) as env,
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: str(home)}),
    ):
        yield env


@pytest.fixture(scope="module")
def client(server: dict[str, str]) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as c:
        yield c


def tiny_project(folder: Path, shared_data: Path) -> Path:
    """Copies of two real ft1tiny parts and a config: fitscopy per file, then an event merge."""
    (folder / "in").mkdir(parents=True)
    for i in (0, 1):
        shutil.copy(shared_data / "evtbin" / f"ft1tiny{i}.fits", folder / "in")
    config = {
        "name": "deploytest",
        "resources": {"cores": 2},
        "input": {"directory": "in", "pattern": "*.fits"},
        "steps": [
            {
                "name": "select",
                "command": f"fitscopy '{{input}}[EVENTS][ENERGY>{ENERGY_CUT:g}]' {{sel}}",
                "outputs": {"sel": "{stem}_sel.fits"},
                "keep": True,  # the per-file selections are checked too
            }
        ],
        "merging": [
            {
                "name": "events",
                "input_pattern": "{sel}",
                "output_file": "events.fits",
                "strategy": "ftmerge",
            }
        ],
        "output": {"directory": "products"},
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_products(project: Path) -> None:
    """The merged event list holds exactly the inputs' events above the cut."""
    products = project / "products"
    expected = []
    for i in (0, 1):
        energy = fits.getdata(project / "in" / f"ft1tiny{i}.fits", "EVENTS")["ENERGY"]
        kept = fits.getdata(products / f"ft1tiny{i}_sel.fits", "EVENTS")["ENERGY"]
        np.testing.assert_array_equal(kept, energy[energy > ENERGY_CUT])
        expected.append(kept)
    merged = fits.getdata(products / "events.fits", "EVENTS")["ENERGY"]
    assert len(merged) == sum(len(e) for e in expected) > 0
    np.testing.assert_array_equal(np.sort(merged), np.sort(np.concatenate(expected)))
    assert not (project / "work").exists()  # intermediates cleaned up


def wait_final(client: SyncPrefectClient, run_id: uuid.UUID, timeout: float) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"flow run {run_id} still {run.state and run.state.name} after {timeout} s")
        time.sleep(1)


@pytest.fixture(scope="module")
def served(server: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`python deployments/serve.py` in a folder of its own. Stopped with Ctrl-C (SIGINT)
    like a user would; yields its log."""
    folder = tmp_path_factory.mktemp("serve")
    proc = start_group(
        [PY, str(REPO / "deployments" / "serve.py")], server, folder / "serve.log", folder
    )
    try:
        yield folder / "serve.log"
    finally:
        stop_group(proc, signal.SIGINT, 20)


@pytest.fixture(scope="module")
def deployed(server: dict[str, str], client: SyncPrefectClient) -> dict[str, Any]:
    """The work pool, then `prefect --no-prompt deploy --all` from the repository root."""
    template = ProcessWorker.get_default_base_job_template()
    client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=template))
    out = run_cli([PREFECT, "--no-prompt", "deploy", "--all"], REPO, server, 120)
    assert out.returncode == 0, out.stdout + out.stderr
    return {
        d.name: d
        for d in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["fermipipe"]))
        )
    }


def shadow_example(folder: Path) -> Path:
    """configs/example.yaml as is, in a folder laid out like the repository: its relative
    paths reach the committed sample data (a symlink, read only) but its products and work
    folder land in ``folder``, not in the repository."""
    (folder / "configs").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "sample").symlink_to(REPO / "data" / "sample")
    config = folder / "configs" / "example.yaml"
    shutil.copy(REPO / "configs" / "example.yaml", config)
    return config


@dataclass
class WorkerRuns:
    """Two runs of the `example` deployment executed by one `worker start --run-once`."""

    tiny: FlowRun  # config: the tiny fitscopy project
    tiny_project: Path
    example: FlowRun  # config: configs/example.yaml (relocated, see shadow_example)
    example_dir: Path
    log: str


@pytest.fixture(scope="module")
def worker_runs(
    server: dict[str, str],
    client: SyncPrefectClient,
    deployed: dict[str, Any],
    served: Path,  # started here so that its start-up overlaps the worker's
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> WorkerRuns:
    example = deployed["example"]
    tiny_project_dir = tmp_path_factory.mktemp("tiny")
    tiny_config = tiny_project(tiny_project_dir, shared_data)
    example_dir = tmp_path_factory.mktemp("shadow")
    example_config = shadow_example(example_dir)
    runs = [
        client.create_flow_run_from_deployment(example.id, parameters={"config": str(c)})
        for c in (tiny_config, example_config)
    ]
    elsewhere = tmp_path_factory.mktemp("worker-cwd")  # not the repository: pull step chdirs
    worker = run_cli(
        [PREFECT, "worker", "start", "--pool", POOL, "--run-once"], elsewhere, server, 240
    )
    log = worker.stdout + worker.stderr
    assert worker.returncode == 0, log[-6000:]
    tiny, example_run = (wait_final(client, r.id, 60) for r in runs)
    return WorkerRuns(tiny, tiny_project_dir, example_run, example_dir, log)


def test_deploy_all_matches_prefect_yaml(deployed: dict[str, Any]) -> None:
    """What the server holds after `prefect deploy --all` is what prefect.yaml says."""
    specs = deployment_specs()
    assert set(specs) <= set(deployed)
    for name, spec in specs.items():
        dep = deployed[name]
        assert dep.work_pool_name == POOL
        assert dep.entrypoint == ENTRYPOINT
        assert dep.parameters == spec["parameters"]
        assert dep.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]
        assert dep.parameter_openapi_schema["required"] == ["config"]
    assert deployed["example"].schedules == []
    assert deployed["on-demand"].schedules == []
    (weekly,) = deployed["weekly"].schedules
    assert weekly.active
    assert (weekly.schedule.cron, weekly.schedule.timezone) == ("0 6 * * 5", "UTC")
    assert deployed["weekly"].global_concurrency_limit.limit == 1


@pytest.mark.timeout(300)
def test_worker_runs_example_deployment(worker_runs: WorkerRuns, deployed: dict[str, Any]) -> None:
    """A process worker runs the `example` deployment (config: the tiny project)."""
    run = worker_runs.tiny
    assert run.state_type == StateType.COMPLETED, (run.state, worker_runs.log[-6000:])
    assert run.deployment_id == deployed["example"].id  # so the UI offers Retry
    assert run.parameters["config"] == str(worker_runs.tiny_project / "pipeline.yaml")
    assert run.parameters["skip_merge"] is False  # the deployment's own flags apply
    check_products(worker_runs.tiny_project)


@pytest.mark.timeout(300)
def test_worker_runs_example_deployment_on_sample_data(worker_runs: WorkerRuns) -> None:
    """The same deployment on its own configs/example.yaml and the sample weeks."""
    run = worker_runs.example
    errors = [line for line in worker_runs.log.splitlines() if "ERROR" in line]
    assert run.state_type == StateType.COMPLETED, (
        f"{run.state_name}: {run.state and run.state.message}\n" + "\n".join(errors)
    )
    products = worker_runs.example_dir / "products" / "example"
    with fits.open(products / "example_ccube.fits") as ccube:
        counts = ccube[0].data
        assert counts.shape == (8, 360, 720)  # enumbins, nypix, nxpix of the example
        assert counts.sum() > 0
    with fits.open(products / "example_ltcube.fits") as ltcube:
        assert "EXPOSURE" in ltcube
    assert not (worker_runs.example_dir / "work" / "example").exists()  # cleaned up


@pytest.mark.timeout(180)
def test_submit_through_served_deployment_then_retry(
    server: dict[str, str],
    client: SyncPrefectClient,
    served: Path,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    """A command-line run through serve.py's deployment, then the UI's Retry on it."""
    deadline = time.monotonic() + 90
    while True:  # serve.py registers its deployments once it has started
        try:
            client.read_deployment_by_name("fermipipe/served")
            break
        except Exception:  # noqa: BLE001 - ObjectNotFound until it is registered
            if time.monotonic() > deadline:
                pytest.fail(f"serve.py registered nothing: {served.read_text()[-3000:]}")
            time.sleep(1)

    project = tmp_path / "project"
    config = tiny_project(project, shared_data)
    out = run_cli(
        [
            PY,
            str(REPO / "deployments" / "submit.py"),
            "pipeline.yaml",  # relative to the caller's folder: submit makes it absolute
            "-d",
            "fermipipe/served",
            "--summary-json",
            "summary.json",
        ],
        project,
        server,
        150,
    )
    assert out.returncode == 0, out.stdout + out.stderr + served.read_text()[-3000:]
    run_id = uuid.UUID(re.search(r"flow run \S+ \(([0-9a-f-]{36})\)", out.stdout).group(1))
    port = server["PREFECT_API_URL"].split(":")[2].split("/")[0]
    assert f"watch it: http://127.0.0.1:{port}/runs/flow-run/{run_id}" in out.stdout
    assert f"flow run {run_id}: Completed" in out.stdout

    run = client.read_flow_run(run_id)
    assert run.state_type == StateType.COMPLETED
    assert run.deployment_id == client.read_deployment_by_name("fermipipe/served").id
    assert run.parameters == {"config": str(config), "summary_json": str(project / "summary.json")}
    assert '"state": "Completed"' in (project / "summary.json").read_text()
    check_products(project)
    assert run.run_count == 1

    # The UI's Retry button: a forced AwaitingRetry state on the same flow run. The served
    # process picks it up again and re-runs the whole flow (same id, run_count 2).
    client.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the UI"), force=True)
    again = wait_final(client, run_id, 90)
    assert again.state_type == StateType.COMPLETED, again.state
    assert again.run_count == 2
    names = [s.name for s in client.read_flow_run_states(run_id)]
    assert "AwaitingRetry" in names and names[-1] == "Completed"
    check_products(project)


@pytest.mark.timeout(180)
def test_direct_run_retried_with_entrypoint(
    server: dict[str, str], client: SyncPrefectClient, shared_data: Path, tmp_path: Path
) -> None:
    """`python flows/fermi.py` makes a run without a deployment (no Retry button in the UI);
    the documented `prefect flow-run retry ID --entrypoint …` re-runs it under its id."""
    project = tmp_path / "project"
    config = tiny_project(project, shared_data)
    out = run_cli([PY, str(REPO / "flows" / "fermi.py"), "pipeline.yaml"], project, server, 120)
    assert out.returncode == 0, out.stdout + out.stderr
    (run,) = [
        r
        for r in client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["fermipipe"])),
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(is_null_=True)),
        )
        if r.parameters.get("config") == str(config)
    ]
    assert run.deployment_id is None and run.state_type == StateType.COMPLETED
    check_products(project)

    retry = run_cli(
        [PREFECT, "flow-run", "retry", str(run.id), "--entrypoint", ENTRYPOINT], REPO, server, 120
    )
    assert retry.returncode == 0, retry.stdout + retry.stderr
    again = client.read_flow_run(run.id)
    assert again.state_type == StateType.COMPLETED, again.state
    assert again.run_count == 2
    check_products(project)


@pytest.mark.timeout(240)
def test_cancel_from_the_ui_kills_tools_and_removes_the_staging_folder(
    server: dict[str, str], client: SyncPrefectClient, served: Path, tmp_path: Path
) -> None:
    """The UI's Cancel on a run of the served deployment while a tool is in the middle of a
    long step: the flow run ends Cancelled, the tool's process group is killed and the run's
    RAM-disk folder is removed."""
    from prefect.states import Cancelling

    deadline = time.monotonic() + 90
    while True:  # serve.py registers its deployments once it has started
        try:
            deployment = client.read_deployment_by_name("fermipipe/served")
            break
        except Exception:  # noqa: BLE001 - ObjectNotFound until it is registered
            if time.monotonic() > deadline:
                pytest.fail(f"serve.py registered nothing: {served.read_text()[-3000:]}")
            time.sleep(1)
    project, ram = tmp_path / "project", tmp_path / "shm"
    (project / "in").mkdir(parents=True)
    ram.mkdir()
    (project / "in" / "week.fits").write_bytes(FITS_STUB)  # only a FITS file is an input
    pidfile = tmp_path / "tool.pid"
    config = {
        "resources": {"cores": 1, "ram_disk": {"enabled": True, "path": str(ram)}},
        "input": {"directory": "in", "pattern": "*.fits"},
        "steps": [
            {
                "name": "slow",
                "command": f"echo $$ > {pidfile} && sleep 300 && cp {{input}} {{out}}",
                "outputs": {"out": "{stem}_out.fits"},
            }
        ],
        "output": {"directory": "products"},
    }
    (project / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run = client.create_flow_run_from_deployment(
        deployment.id, parameters={"config": str(project / "pipeline.yaml")}
    )
    deadline = time.monotonic() + 120
    while not (pidfile.exists() and pidfile.read_text().strip()):
        if time.monotonic() > deadline:
            pytest.fail(f"the tool never started: {served.read_text()[-3000:]}")
        time.sleep(0.2)
    tool = int(pidfile.read_text())
    assert any(ram.glob("fermipipe-run-*")), "the run works on the RAM disk"
    assert not group_gone(tool)  # running

    client.set_flow_run_state(run.id, Cancelling(message="Cancel from the UI"), force=True)
    final = wait_final(client, run.id, 120)
    assert final.state_type == StateType.CANCELLED, final.state
    deadline = time.monotonic() + 30
    while not group_gone(tool):
        if time.monotonic() > deadline:
            pytest.fail("the tool's process group is still running after the cancellation")
        time.sleep(0.2)
    assert not any(ram.glob("fermipipe-*")), sorted(ram.iterdir())
    log = served.read_text()
    assert "Hook 'kill_tools' finished running successfully" in log
    assert "unexpected keyword argument" not in log  # hooks take (flow, flow_run, state)
    assert "Finished in state Running()" not in log
