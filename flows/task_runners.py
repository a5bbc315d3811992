"""Where tasks run: the one module that turns the config's ``runner`` into a task runner.

* ``threads`` (default): Prefect's ThreadPoolTaskRunner in the flow's process. Tools run as
  subprocesses or release the GIL in numpy/numba, so threads are enough on one machine; the
  exact caps are the runner's semaphores (fermipipe.runner), not the pool size.
* ``dask``: prefect-dask's DaskTaskRunner, on an existing scheduler (``address``) or on a
  cluster class the run starts (``cluster.class`` with ``kwargs`` and ``adapt``) — e.g.
  ``dask_jobqueue.SLURMCluster`` on HPC. Workers must reach a real Prefect server
  (``PREFECT_API_URL``); with the ephemeral server each worker would start its own
  (prefect-3-facts), so a Dask run without one is refused up front.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prefect.settings import PREFECT_API_URL
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from fermipipe.config import ClusterConfig, RunnerConfig
from fermipipe.errors import ConfigError
from flows import prefect_compat


def is_dask(runner: RunnerConfig) -> bool:
    return runner.kind == "dask"


def check_server_for_dask(runner: RunnerConfig) -> None:
    """A Dask run needs a Prefect server its workers can reach."""
    if is_dask(runner) and not (PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")):
        raise ConfigError(
            "runner.kind: dask needs a Prefect server: start one (prefect server start) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api before running"
        )


def build_task_runner(runner: RunnerConfig, threads: int) -> TaskRunner[Any]:
    """The task runner for the per-file chains (``threads`` sizes the local pool)."""
    if not is_dask(runner):
        return ThreadPoolTaskRunner(max_workers=threads)
    from prefect_dask import DaskTaskRunner

    if runner.address:
        return DaskTaskRunner(address=runner.address)
    if runner.cluster is not None:
        return DaskTaskRunner(
            cluster_class=runner.cluster.class_path,
            cluster_kwargs=cluster_kwargs(runner.cluster),
            adapt_kwargs=dict(runner.cluster.adapt) if runner.cluster.adapt else None,
        )
    # A local cluster sized like the thread pool: one single-threaded worker per core.
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": max(1, threads), "threads_per_worker": 1},
    )


def worker_api_url() -> str | None:
    """The Prefect API this process reports to."""
    return PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL") or None


def check_dask_workers(pool: TaskRunner[Any]) -> None:
    """Refuse to run on Dask workers that would not reach our Prefect server.

    A worker without PREFECT_API_URL starts a temporary server of its own for every task
    ("Failed to reach API", orphaned servers, task runs lost: prefect-3-facts); one pointing
    at another server files this run's task runs there. Workers that join later (adaptive
    clusters) cannot be checked here: start them with the same environment.
    """
    if not isinstance(pool, ThreadPoolTaskRunner):
        from prefect_dask import DaskTaskRunner

        if not isinstance(pool, DaskTaskRunner):
            return
    else:
        return
    client = pool.client  # made on first use: connects to (or starts) the cluster now
    ours = worker_api_url()

    def api_url_on_worker() -> str | None:  # nested: sent by value (a worker may run older code)
        import os

        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL") or None

    urls: dict[str, str | None] = client.run(api_url_on_worker)
    missing = sorted(addr for addr, url in urls.items() if not url)
    if missing:
        raise ConfigError(
            f"Dask worker(s) {', '.join(missing)} have no PREFECT_API_URL (each would start a "
            f"Prefect server of its own): restart them with PREFECT_API_URL={ours} exported"
        )
    other = sorted(f"{addr} → {url}" for addr, url in urls.items() if url != ours)
    if other:  # localhost vs 127.0.0.1 is the same server: warn, do not refuse
        from prefect.logging import get_logger

        get_logger("fermipipe").warning(
            "Dask workers report to another Prefect API URL than this run (%s): %s",
            ours,
            ", ".join(other),
        )


def cluster_kwargs(cluster: ClusterConfig) -> dict[str, Any]:
    """The cluster class's keyword arguments: the config's, plus, for a dask-jobqueue class,
    a job-script line exporting this process's PREFECT_API_URL — the batch jobs' workers
    must report to the same Prefect server as the flow (SLURM usually exports the submit
    environment, but not every site or scheduler does)."""
    kwargs = dict(cluster.kwargs)
    api = PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")
    if cluster.class_path.startswith("dask_jobqueue.") and api:
        prologue = list(kwargs.get("job_script_prologue") or [])
        if not any("PREFECT_API_URL" in line for line in prologue):
            prologue.append(f"export PREFECT_API_URL={shlex.quote(api)}")
        kwargs["job_script_prologue"] = prologue
    return kwargs


@contextlib.contextmanager
def fast_submission(runner: RunnerConfig) -> Iterator[None]:
    """Serialize Prefect's settings once per submission loop instead of once per Dask task.

    Measured (benchmarks/scaling.py, profile): prefect-dask calls
    ``prefect.context.serialize_context`` for every task it submits, and ~90% of that is
    ``SettingsContext.serialize`` — a model_dump of every Prefect setting with secret
    rendering, ~19 ms a call on an idle core here, the same result each time. Inside this
    block it is computed once per settings object and reused
    (:func:`flows.prefect_compat.settings_serialized_once`); outside (and on threads)
    Prefect is untouched. The settings cannot change during the block: the flow thread only
    submits inside it. ``FERMIPIPE_DASK_SERIALIZE_SETTINGS_EACH_TASK=1`` turns this off.
    """
    if not is_dask(runner) or os.environ.get("FERMIPIPE_DASK_SERIALIZE_SETTINGS_EACH_TASK"):
        yield
        return
    with prefect_compat.settings_serialized_once():
        yield


@contextlib.contextmanager
def worker_resources(runner: RunnerConfig, resources: dict[str, float] | None) -> Iterator[None]:
    """Tasks submitted inside need these Dask worker resources (no-op on threads)."""
    if not is_dask(runner) or not resources:
        yield
        return
    import dask

    with dask.annotate(resources=dict(resources)):
        yield


#: Seconds the flow waits for the workers to confirm that a cancelled run's tools are dead.
REMOTE_KILL_TIMEOUT = 15.0


def kill_remote_tools(pool: TaskRunner[Any], run_name: str, logger: Any) -> None:
    """On every Dask worker, stop this run's tools (:func:`fermipipe.runner.kill_run`).

    Cancelling Dask futures does not stop a task that is already running, and a Fermitools
    step runs for minutes in a process of its own on the worker's node: without this, Ctrl-C,
    SIGTERM or a cancellation from the UI left those tools running. Other runs sharing the
    workers are not touched. Bounded: an unreachable scheduler must not hold up the exit.
    No-op on threads (the flow's own process kills its tools).
    """
    client = prefect_compat.dask_client_if_connected(pool)
    if client is None:  # threads, or never connected
        return
    from fermipipe import runner

    done: dict[str, Any] = {}

    def call() -> None:
        try:
            done["groups"] = client.run(runner.kill_run, run_name)
        except Exception as exc:  # noqa: BLE001 - reported below; the run is ending anyway
            done["error"] = exc

    thread = threading.Thread(target=call, name="kill-remote-tools", daemon=True)
    thread.start()
    thread.join(REMOTE_KILL_TIMEOUT)
    if "groups" in done:
        killed = {addr: g for addr, g in done["groups"].items() if g}
        logger.warning("stopped this run's tools on the Dask workers: %s", killed or "none running")
    else:
        logger.error(
            "could not stop this run's tools on the Dask workers: %s",
            done.get("error", f"no answer within {REMOTE_KILL_TIMEOUT:g} s"),
        )


def cancel_pending(pool: TaskRunner[Any], futures: Iterable[Any]) -> None:
    """Cancel the submitted tasks that have not started (threads: the pool's own
    ``cancel_all``; Dask, whose runner has none: each future's Dask future)."""
    if isinstance(pool, ThreadPoolTaskRunner):
        # Not pool.cancel_all(): it waits for the running threads (a native step cannot be
        # interrupted). Its tools are already killed; the rest is dropped without waiting.
        prefect_compat.drop_pending_threads(pool)
        return
    for fut in futures:
        with contextlib.suppress(Exception):  # already finished or lost with its worker
            fut.wrapped_future.cancel()
