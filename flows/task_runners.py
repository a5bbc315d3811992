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
from collections.abc import Iterator
from typing import Any

from prefect.settings import PREFECT_API_URL
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from fermipipe.config import RunnerConfig
from fermipipe.errors import ConfigError


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
            cluster_kwargs=dict(runner.cluster.kwargs),
            adapt_kwargs=dict(runner.cluster.adapt) if runner.cluster.adapt else None,
        )
    # A local cluster sized like the thread pool: one single-threaded worker per core.
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": max(1, threads), "threads_per_worker": 1},
    )


@contextlib.contextmanager
def worker_resources(runner: RunnerConfig, resources: dict[str, float] | None) -> Iterator[None]:
    """Tasks submitted inside need these Dask worker resources (no-op on threads)."""
    if not is_dask(runner) or not resources:
        yield
        return
    import dask

    with dask.annotate(resources=dict(resources)):
        yield
