"""Prefect task: one file's whole chain on one worker, in that node's own RAM-disk folder.

Used on a Dask cluster whose workers are on other nodes (``runner.node_local``): a RAM disk
belongs to one node, so a file's steps must all run where its intermediates are. The task
opens a folder on the node (RAM disk when ``MemAvailable`` and free space allow, else the
shared work folder), stages the input there, runs the steps in order — each through the
function of a per-step task (``tasks.steps.run_step.fn``: cache store; transient failures
retried) — copies what outlives the chain (merge inputs, kept products) to the
shared folder atomically, and removes its folder whatever happens. Orphans of killed
workers on the node are removed by the next chain there.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from fermipipe import runner
from fermipipe.fits.writing import atomic_output
from fermipipe.plan import Invocation, rebase, rebase_path, relocate
from fermipipe.runner import StepFailedError, StepResult
from fermipipe.staging import NodeStaging
from tasks.steps import RETRY_DELAYS, StepCache, run_step


def rebase_cache(cache: StepCache | None, old: Path, new: Path) -> StepCache | None:
    """The StepCache of a step whose work-folder files moved from ``old`` to ``new``."""
    if cache is None:
        return None

    def move(path: str) -> str:
        return rebase_path(path, old, new)

    return dataclasses.replace(
        cache,
        upstream=tuple((move(p), key, name) for p, key, name in cache.upstream),
        workdir=str(new),
        drop=tuple(move(p) for p in cache.drop),
        stage=(cache.stage[0], move(cache.stage[1])) if cache.stage else None,
    )


def export(path: Path, destination: Path) -> None:
    """Copy a chain's product from the node folder to the shared folder, atomically (a
    temporary named by its writer, so a killed worker's is removed by the next run)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(destination) as tmp:
        shutil.copyfile(path, tmp)


@task(name="run-chain", task_run_name="chain[{file_id}]", cache_policy=NO_CACHE)
def run_chain(
    file_id: str,
    chain: tuple[Invocation, ...],
    caches: tuple[StepCache | None, ...],
    exports: tuple[str, ...],
    *,
    run: runner.RunSpec,
    order: int,
    node: NodeStaging,
    need_bytes: int,
) -> list[StepResult]:
    """Run ``chain`` (one file's steps) here; returns each step's result, in order.

    A failed step ends the chain: its result (status ``failed``) is the last one. ``exports``
    names the outputs (placeholders) read after the chain — by the merges, or kept for the
    user: a non-stored one is copied to its planned path in the shared work folder.
    """
    logger = get_run_logger()
    area, choice, orphans = node.open(need_bytes)
    for folder in orphans:
        logger.warning("removed %s, left on this node by a killed worker", folder)
    planned, here = Path(node.planned), area.path
    logger.info("%s: chain in %s (%s)", file_id, here, choice.reason)
    results: list[StepResult] = []
    try:
        moved = [rebase(inv, planned, here) for inv in chain]
        if any(inv is None for inv in moved):  # a shell step cannot be moved: stay put
            logger.warning("%s: a shell step cannot be moved; chain in %s", file_id, planned)
            moved, here = list(chain), planned
        invs = [inv for inv in moved if inv is not None]
        if choice.on_ram_disk and here != planned:
            invs = stage_spacecraft(invs, here, logger)
        cache_list = [rebase_cache(c, planned, here) for c in caches]
        previous: StepResult | None = None
        for k, (inv, cache) in enumerate(zip(invs, cache_list, strict=True)):
            result = _step_with_retries(inv, previous, run, order, k, cache, logger)
            results.append(result)
            if result.status == "failed":
                break
            if result.status != "skipped":
                previous = result
            _export(result, chain[k], exports, here, planned)
    finally:
        area.close()
    return results


def stage_spacecraft(invs: list[Invocation], folder: Path, logger: Any) -> list[Invocation]:
    """Copy each spacecraft file the chain reads (a week's FT2 or its slice of the mission
    file) into the node's folder, and let the steps read that copy: gtmktime and gtltcube
    read it whole, from RAM then rather than from the shared file system."""
    produced = {Path(p) for inv in invs for p in inv.outputs.values()}
    sources = sorted(
        {
            Path(inv.inputs["scfile"])
            for inv in invs
            if "scfile" in inv.inputs and Path(inv.inputs["scfile"]) not in produced
        }
    )
    for src in sources:
        copy = folder / "spacecraft" / src.name
        export(src, copy)
        moved = [relocate(inv, src, copy) for inv in invs]
        if any(inv is None for inv in moved):  # a shell step that cannot be rewritten
            copy.unlink()
            continue
        invs = [inv for inv in moved if inv is not None]
        logger.info("staged spacecraft file %s on this node", src.name)
    return invs


def _step_with_retries(
    inv: Invocation,
    previous: StepResult | None,
    run: runner.RunSpec,
    order: int,
    k: int,
    cache: StepCache | None,
    logger: Any,
) -> StepResult:
    """One step; a transient failure is tried again after each of RETRY_DELAYS."""
    for attempt in range(len(RETRY_DELAYS) + 1):
        try:
            return run_step.fn(inv, previous, run=run, order=order, step_index=k, cache=cache)
        except StepFailedError as exc:
            if exc.result.failure_kind != "transient" or attempt == len(RETRY_DELAYS):
                return exc.result
            time.sleep(RETRY_DELAYS[attempt])
    raise AssertionError("unreachable")


def _export(
    result: StepResult, planned_inv: Invocation, exports: tuple[str, ...], here: Path, planned: Path
) -> None:
    """Copy the outputs read after the chain out of the node folder; point the result at
    their shared copies (stored outputs are already in the shared cache store)."""
    if here == planned:
        return
    for name, path in list(result.outputs.items()):
        if name not in exports or not Path(path).is_relative_to(here):
            continue
        destination = Path(planned_inv.outputs[name])
        if Path(path).exists():
            export(Path(path), destination)
            result.outputs[name] = str(destination)
