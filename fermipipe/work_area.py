"""Where the run's work area is: decided once, when the plan is made.

The per-file intermediates of a run live in a private folder ``fermipipe-run-<pid>-<id>``
under the RAM disk (``resources.ram_disk``) when it is enabled, every task runs on this
node, and both ``MemAvailable`` and the disk's free space cover the estimated need — else
under ``output.workdir``. The plan's paths are rendered into that folder once; the work
subflow creates it and removes it (``flows/stagectl.py``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fermipipe.config import PipelineConfig, RunnerConfig
from fermipipe.staging import PREFIX, WorkdirChoice, choose_workdir

#: Bytes of RAM disk each step of a file may need, per byte of its input: a step's output is
#: at most about the size of what it reads (selection, GTI cut, binning), and a file's
#: intermediates are removed once no later step reads them.
STEP_FACTOR = 1.0

#: Hosts that name this node in a scheduler address.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"}
#: Cluster classes whose workers all run on this node.
LOCAL_CLUSTERS = {"distributed.LocalCluster", "dask.distributed.LocalCluster"}


@dataclass(frozen=True)
class WorkArea:
    choice: WorkdirChoice  # RAM disk or disk, and why
    folder: Path  # this run's private folder under choice.root (created by the run)


def workers_on_this_node(runner: RunnerConfig) -> bool:
    """True when every task runs on this node: threads, a LocalCluster, a scheduler on
    loopback. A RAM disk (node-local) can then hold intermediates that later steps and the
    merges read; otherwise they must be on a folder every node shares."""
    if runner.kind != "dask":
        return True
    if runner.address:
        host = runner.address.split("://", 1)[-1].rsplit(":", 1)[0]
        return host in LOCAL_HOSTS or host in {socket.gethostname(), socket.getfqdn()}
    if runner.cluster is not None:
        return runner.cluster.class_path in LOCAL_CLUSTERS
    return True  # the default: a LocalCluster


def estimate_need(inputs: Iterable[Path], depth: int, workers: int) -> int:
    """Bytes the work area needs at once: the largest inputs that can be in flight (two
    per worker: one running, one staged) × chain length × :data:`STEP_FACTOR`."""
    sizes = []
    for path in inputs:
        try:
            sizes.append(Path(path).stat().st_size)
        except OSError:
            continue
    in_flight = sorted(sizes, reverse=True)[: max(1, 2 * workers)]
    return int(sum(in_flight) * max(1, depth) * STEP_FACTOR)


def choose_work_area(
    cfg: PipelineConfig, inputs: Iterable[Path], depth: int, workers: int
) -> WorkArea:
    """RAM disk or disk (see the module docstring), and this run's folder name there."""
    ram = cfg.resources.ram_disk
    choice = choose_workdir(
        ram_disk_enabled=ram.enabled and workers_on_this_node(cfg.runner),
        ram_disk_path=Path(ram.path),
        min_ram_gb=ram.min_ram_gb,
        need_bytes=estimate_need(inputs, depth, workers),
        fallback=Path(cfg.output.workdir),
    )
    if ram.enabled and not workers_on_this_node(cfg.runner):
        choice = WorkdirChoice(
            choice.root,
            False,
            "Dask workers on other nodes: intermediates in the shared work folder",
        )
    folder = choice.root / f"{PREFIX}run-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return WorkArea(choice, folder)
