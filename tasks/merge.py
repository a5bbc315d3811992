"""Prefect tasks of the merge stage: whole-list merges and the pairs of a tree reduction."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from fermipipe import merge as merging
from fermipipe import runner
from fermipipe.caching import get_store
from fermipipe.cleanup import remove_files
from fermipipe.manifest import Manifest
from fermipipe.merge import ImageHook, MergeInfo, PairJob, RunningSum
from fermipipe.plan import Invocation, MergePlan
from fermipipe.runner import StepFailedError, StepResult
from flows.prefect_compat import InProcess

#: Running sums the fold tasks add to, by handle: they live in the flow's process (counts
#: summed in memory, never a file per week).
RUNNING: InProcess[RunningSum] = InProcess("running sum")
#: What an image sum calls with its summed image before writing it (a quick-look drawn
#: while the product is written: flows.products.EarlyLook), by handle.
LOOKS: InProcess[ImageHook] = InProcess("quick-look hook")


@task(name="merge", task_run_name="merge-{plan.name}", cache_policy=NO_CACHE)
def merge_all(
    plan: MergePlan,
    inputs: list[Path],
    left_out: dict[str, str],
    *,
    run: runner.RunSpec | str,
    partials: list[Path] | None = None,
    manifest: Manifest | None = None,
    subtract: list[Path] | None = None,
    running: str | None = None,
    look: str | None = None,
) -> tuple[MergeInfo, float, float]:
    """image_sum or event concatenation of ``inputs`` into ``plan.output``.

    Returns the merge info with wall and CPU seconds. Holds one concurrency slot: the merge
    competes with the tools for the machine like any of them. ``partials``: the image sum's
    pixels, already summed in parts by :func:`merge_part` tasks; ``running``: the handle of
    a running sum (:data:`RUNNING`) holding some inputs' pixels; ``subtract``: maps taken
    out of the first input (the previous product). ``manifest``: written with the product
    (both appear together or not at all). ``look``: the handle of an image sum's
    ``image_hook`` (:data:`LOOKS`).
    """
    logger = get_run_logger()
    ctx = runner.get_run(run)
    step = f"merge:{plan.name}"
    with ctx.pool.slot(step, priority=(float("inf"), 0)):
        t0, c0 = time.perf_counter(), time.thread_time()
        if plan.strategy == "image_sum":
            info = merging.image_sum(
                inputs,
                plan.output,
                left_out=left_out,
                partials=partials,
                manifest=manifest,
                subtract=subtract or (),
                presummed=RUNNING.get(running) if running else None,
                image_hook=LOOKS.get(look) if look else None,
            )
        elif merging.use_ftmerge(plan.engine):
            info = _ftmerge(plan, inputs, left_out, run, manifest)
        else:
            info = merging.native_event_merge(
                inputs, plan.output, left_out=left_out, manifest=manifest
            )
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    for file_id, reason in sorted(left_out.items()):
        logger.warning("merge %s: left out %s (%s)", plan.name, file_id, reason)
    logger.info("merge %s: %d files → %s (%.2f s)", plan.name, info.inputs, info.output, wall)
    return info, wall, cpu


@task(name="merge-part", task_run_name="merge-{plan.name}-part{index}", cache_policy=NO_CACHE)
def merge_part(
    plan: MergePlan,
    inputs: list[Path],
    index: int,
    output: Path,
    *,
    first: Path,
    run: runner.RunSpec | str,
) -> tuple[Path, float]:
    """One part of a parallel image sum: the pixel sum of ``inputs`` (consecutive inputs of
    the merge whose first input is ``first``) into ``output``. Returns it with CPU seconds."""
    ctx = runner.get_run(run)
    with ctx.pool.slot(f"merge:{plan.name}", priority=(float("inf"), 0)):
        c0 = time.thread_time()
        merging.partial_image_sum(inputs, output, first=first)
        cpu = time.thread_time() - c0
    get_run_logger().info("merge %s part %d: %d files summed", plan.name, index, len(inputs))
    return output, cpu


def _ftmerge(
    plan: MergePlan,
    inputs: list[Path],
    left_out: dict[str, str],
    run: runner.RunSpec | str,
    manifest: Manifest | None = None,
) -> MergeInfo:
    """HEASoft ftmerge into a scratch file, then annotate and move it into place."""
    ctx = runner.get_run(run)
    ctx.scratch.mkdir(parents=True, exist_ok=True)
    listfile = ctx.scratch / f"{plan.name}.list"
    out = ctx.scratch / f"{plan.name}-ftmerge{plan.output.suffix or '.fits'}"
    inv = Invocation(
        step=f"merge:{plan.name}",
        file_id=plan.name,
        engine="fermitools",
        tool="ftmerge",
        argv=merging.ftmerge_argv(inputs, out, listfile),
        outputs={"outfile": out},
        timeout=plan.timeout,
    )
    result = runner.run_invocation(
        inv,
        log_path=ctx.log_path(f"merge-{plan.name}"),
        logger=get_run_logger(),
        scratch=ctx.scratch,
        env=ctx.env,
    )
    try:
        if result.status != "ok":
            raise StepFailedError(result)
        return merging.finish(out, plan.output, left_out, len(inputs), "ftmerge", manifest=manifest)
    finally:
        for path in (out, listfile):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@task(name="merge-pair", task_run_name="{step}[{job.label}]", cache_policy=NO_CACHE)
def merge_pair(
    job: PairJob,
    *,
    tool: str,
    engine: str,
    step: str,
    timeout: float | None,
    run: runner.RunSpec | str,
    keep: tuple[str, str] | None = None,
    priority: tuple[float, int] = (float("inf"), 0),
    drop: tuple[Path, ...] = (),
) -> StepResult:
    """One pairwise merge of a tree (e.g. gtltsum infile1 infile2 → outfile); with
    ``keep`` = (store root, node key), the product is also kept in the cache store.
    ``priority``: its place among the tools waiting for a slot (streamed: right after the
    steps of its last week, so merging keeps pace with processing). ``drop``: scratch
    files of the merges it read, deleted once it succeeded (nothing else reads them)."""
    ctx = runner.get_run(run)
    inv = merging.pair_invocation(job, tool, engine, step=step, timeout=timeout)  # type: ignore[arg-type]
    result = runner.run_invocation(
        inv,
        log_path=ctx.log_path(step.replace(":", "-")),
        logger=get_run_logger(),
        scratch=ctx.scratch,
        pool=ctx.pool,
        priority=priority,
        env=ctx.env,
        native=ctx.native,
    )
    if result.status != "ok":  # an empty pairwise merge is a failed merge
        raise StepFailedError(result)
    if keep is not None:
        store, key = keep
        get_store(store).put(key, {job.output.name: job.output}, link=True, meta={"step": step})
    remove_files(drop)
    return result


@task(name="fold", task_run_name="fold-{merge}", cache_policy=NO_CACHE)
def fold_map(
    handle: str, path: Path, *, merge: str, run: runner.RunSpec | str, priority: tuple[float, int]
) -> tuple[float, float]:
    """Add one counts map to a running sum of this process (:data:`RUNNING`), holding a
    concurrency slot like the tools (it reads a file and adds it), right after its week's
    steps in ``priority``. Returns its wall and CPU seconds (the merge's work)."""
    with runner.get_run(run).pool.slot(f"merge:{merge}", priority=priority):
        t0, c0 = time.perf_counter(), time.thread_time()
        RUNNING.get(handle).add(path)
        return time.perf_counter() - t0, time.thread_time() - c0
