"""One file's whole chain on one worker, in that node's own folder (RAM disk or disk).

Used on a Dask cluster whose workers are on other nodes: a RAM disk belongs to one node, so
a file's steps must all run where its intermediates are. The chain opens a folder on the
node (RAM disk when ``MemAvailable`` and free space allow, else the shared work folder),
moves the file's work-area paths there, copies the spacecraft file there, runs the steps in
order through :func:`fermipipe.step_run.run_file_step` (one retry policy:
:func:`~fermipipe.step_run.with_retries`), copies what outlives the chain (merge inputs,
kept products that are not in the cache store) to the shared work folder atomically, and
removes its folder whatever happens. Orphans of killed workers are removed by the next
chain on the node.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

from fermipipe import runner
from fermipipe.caching import StepCache
from fermipipe.fits.writing import atomic_copy
from fermipipe.plan import Invocation, rebase, rebase_path, relocate
from fermipipe.runner import StepResult
from fermipipe.staging import NodeStaging
from fermipipe.step_run import run_file_step, with_retries


def run_chain_on_node(
    file_id: str,
    chain: tuple[Invocation, ...],
    caches: tuple[StepCache | None, ...],
    drops: tuple[tuple[str, ...], ...],
    exports: tuple[str, ...],
    *,
    run: runner.RunSpec,
    order: int,
    node: NodeStaging,
    need_bytes: int,
    logger: Any,
) -> list[StepResult]:
    """Run ``chain`` here; returns each step's result in order (a failed one is the last).

    ``exports`` names the outputs (placeholders) read after the chain — by the merges, or
    kept for the user: one not in the store is copied to its planned work-area path."""
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
            invs = _stage_spacecraft(invs, here, logger)

        def move(path: str) -> str:
            return rebase_path(path, planned, here)

        previous: StepResult | None = None
        for k, inv in enumerate(invs):
            cache = caches[k]
            if cache is not None:
                cache = dataclasses.replace(
                    cache,
                    upstream=tuple((move(p), key, name) for p, key, name in cache.upstream),
                    workdir=str(here),
                )
            step_drops = tuple(move(p) for p in (drops[k] if k < len(drops) else ()))

            result = with_retries(
                partial(
                    run_file_step, inv, () if previous is None else (previous,), run=run,
                    order=order, step_index=k,
                    logger=logger, cache=cache, drops=step_drops,
                )
            )  # fmt: skip
            results.append(result)
            if result.status == "failed":
                break
            if result.status != "skipped":
                previous = result
            _export(result, chain[k], exports, here, planned)
    finally:
        area.close()
    return results


def _stage_spacecraft(invs: list[Invocation], folder: Path, logger: Any) -> list[Invocation]:
    """Copy each spacecraft file the chain reads (a week's FT2 or its slice of the mission
    file) into the node's folder: gtmktime and gtltcube read it whole, from RAM then."""
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
        atomic_copy(src, copy)
        moved = [relocate(inv, src, copy) for inv in invs]
        if any(inv is None for inv in moved):  # a shell step that cannot be rewritten
            copy.unlink()
            continue
        invs = [inv for inv in moved if inv is not None]
        logger.info("staged spacecraft file %s on this node", src.name)
    return invs


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
            atomic_copy(Path(path), destination)
            result.outputs[name] = str(destination)
