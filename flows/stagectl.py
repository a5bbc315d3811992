"""The run's staging area: where per-file intermediates live (RAM disk or disk).

Lifecycle (the work subflow owns it, in a try/finally around everything that uses it — the
per-file chains, then the merges and post-processing):

1. folders left under the RAM-disk path and under ``output.workdir`` by runs that were
   killed (SIGKILL, power loss) are removed (:func:`fermipipe.staging.cleanup_orphans`);
2. the RAM disk is chosen when ``resources.ram_disk.enabled`` and both ``MemAvailable`` and
   the free space of its path cover the estimated need, else the disk work folder, with a
   warning saying which was short;
3. a private folder ``fermipipe-run-<pid>-<id>`` is made there; the plan is rendered into it
   (so two runs of one config never share intermediates);
4. on the way out — success, failure, Ctrl-C, SIGTERM, a UI cancellation — running tools
   are killed first (their process groups), then the folder is removed, unless
   ``--keep-intermediate``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fermipipe import runner
from fermipipe.config import PipelineConfig
from fermipipe.plan import Plan
from fermipipe.staging import (
    NodeStaging,
    StagingArea,
    WorkdirChoice,
    choose_workdir,
    cleanup_orphans,
)
from flows.shutdown import register_cleanup
from flows.task_runners import is_dask, workers_on_this_node

#: Bytes of RAM disk each step of a file may need, per byte of its input: a step's output is
#: at most about the size of what it reads (selection, GTI cut, binning), and a file's
#: intermediates are removed once its chain is done.
STEP_FACTOR = 1.0


@dataclass
class Staging:
    area: StagingArea
    choice: WorkdirChoice
    root_existed: bool
    #: Drops the SIGTERM cleanup of this folder (flows.shutdown) once it is closed.
    unregister: Callable[[], None] = field(default=lambda: None)

    @property
    def path(self) -> Path:
        return self.area.path


def estimate_need(plan: Plan, workers: int) -> int:
    """Bytes the staging area needs at once: the largest inputs that can be in flight
    (two per worker: one running, one staged) × chain length × :data:`STEP_FACTOR`."""
    sizes = []
    for fp in plan.files:
        with contextlib.suppress(OSError):
            sizes.append(Path(fp.input).stat().st_size)
    depth = max((len(f.chain) for f in plan.files), default=0)
    in_flight = sorted(sizes, reverse=True)[: max(1, 2 * workers)]
    return int(sum(in_flight) * max(1, depth) * STEP_FACTOR)


def open_staging(cfg: PipelineConfig, plan: Plan, workers: int, keep: bool, logger: Any) -> Staging:
    """Clean orphans, choose RAM disk or disk, create this run's folder."""
    ram = cfg.resources.ram_disk
    fallback = Path(cfg.output.workdir)
    for root in {Path(ram.path), fallback} if ram.enabled else {fallback}:
        for folder in cleanup_orphans(root):
            logger.warning("removed %s, left by a run that was killed", folder)
    # A RAM disk is per node: on a Dask cluster with workers on other nodes, a file's next
    # step may run elsewhere and the merges run here, so intermediates go to the shared
    # work folder instead (flows.task_runners.workers_on_this_node).
    on_node = workers_on_this_node(cfg.runner)
    if ram.enabled and not on_node:
        logger.info("Dask workers on other nodes: intermediates in the shared work folder")
    choice = choose_workdir(
        ram_disk_enabled=ram.enabled and on_node,
        ram_disk_path=Path(ram.path),
        min_ram_gb=ram.min_ram_gb,
        need_bytes=estimate_need(plan, workers),
        fallback=fallback,
    )
    if ram.enabled and not choice.on_ram_disk:
        logger.warning(choice.reason)
    else:
        logger.info("work folder: %s", choice.reason)
    root_existed = choice.root.exists()
    area = StagingArea(choice.root, keep=keep, label="run")
    area.__enter__()
    staging = Staging(area, choice, root_existed)
    staging.unregister = register_cleanup(lambda: remove_staging(staging))
    return staging


def close_staging(staging: Staging, logger: Any | None = None) -> None:
    """Kill what still runs in the folder, then remove it (unless kept)."""
    if runner.running_groups():
        runner.kill_all()
    staging.unregister()
    remove_staging(staging)
    if staging.area.keep and logger is not None:
        logger.info("intermediates kept in %s (--keep-intermediate)", staging.path)


def remove_staging(staging: Staging) -> None:
    """Remove the run's folder (unless kept), and its root when this run made it and it is
    empty now. Idempotent: the SIGTERM watchdog may call it from another thread."""
    staging.area.close()
    if not staging.area.keep and not staging.root_existed:
        with contextlib.suppress(OSError):
            staging.area.root.rmdir()  # only if empty: nothing of ours is left in it


def node_staging(cfg: PipelineConfig, plan: Plan, keep: bool, logger: Any) -> NodeStaging | None:
    """Node-local chains or not (``runner.node_local``; by default: on a Dask cluster whose
    workers are on other nodes, where a RAM disk holds only what its own node ran)."""
    wanted = cfg.runner.node_local
    if wanted is None:
        wanted = is_dask(cfg.runner) and not workers_on_this_node(cfg.runner)
    if not wanted:
        return None
    ram = cfg.resources.ram_disk
    logger.info(
        "node-local chains: each file's steps run on one worker, intermediates on its node's %s",
        f"RAM disk ({ram.path})" if ram.enabled else "work folder",
    )
    return NodeStaging(
        planned=str(plan.workdir),
        fallback=str(Path(cfg.output.workdir)),
        ram_path=str(ram.path) if ram.enabled else None,
        min_ram_gb=ram.min_ram_gb,
        keep=keep,
    )
