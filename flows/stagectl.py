"""The run's staging area: where per-file intermediates live (RAM disk or disk).

Lifecycle (the work subflow owns it, in a try/finally around everything that uses it — the
per-file chains, then the merges and post-processing):

1. folders left under the RAM-disk path and under ``output.workdir`` by runs that were
   killed (SIGKILL, power loss) are removed (:func:`fermipipe.staging.cleanup_orphans`);
2. where it is was decided with the plan (:mod:`fermipipe.work_area`): the RAM disk when it
   has room, else the disk work folder, with a warning saying which was short;
3. the private folder ``fermipipe-run-<pid>-<id>`` the plan was rendered into is made (so
   two runs of one config never share intermediates);
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
    cleanup_orphans,
)
from fermipipe.work_area import workers_on_this_node
from flows.shutdown import register_cleanup


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


def open_staging(cfg: PipelineConfig, plan: Plan, keep: bool, logger: Any) -> Staging:
    """Clean orphans, then create the run's folder where the plan put it."""
    assert plan.work_area is not None, "a plan made for a dry run cannot run"
    ram = cfg.resources.ram_disk
    fallback = Path(cfg.output.workdir)
    for root in {Path(ram.path), fallback} if ram.enabled else {fallback}:
        for folder in cleanup_orphans(root):
            logger.warning("removed %s, left by a run that was killed", folder)
    choice = plan.work_area.choice
    if ram.enabled and not choice.on_ram_disk and workers_on_this_node(cfg.runner):
        logger.warning(choice.reason)
    else:
        logger.info("work folder: %s", choice.reason)
    root_existed = choice.root.exists()
    area = StagingArea(choice.root, keep=keep, path=plan.work_area.folder)
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
        wanted = cfg.runner.kind == "dask" and not workers_on_this_node(cfg.runner)
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
