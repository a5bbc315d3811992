"""Every file through its chain of steps, as Prefect tasks (part of the work subflow).

Three ways a file's chain is submitted, one step runner behind them all
(:func:`fermipipe.step_run.run_file_step`) and one summary builder
(:func:`fermipipe.summary.summarize_file`):

* files whose whole chain is a verified cache hit: one bulk task run for all of them;
* by default, each step of each file is a task submitted with the futures of the file's
  steps it waits for (:mod:`fermipipe.step_graph`: those making what it reads), so it starts
  as soon as they are done (no barrier between files; two steps reading the same upstream
  output, like the mission chain's ccube and ltcube, run side by side);
* with ``node``: one node-local chain task per file (Dask workers on other nodes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.logging import get_run_logger

from fermipipe import native, runner
from fermipipe.caching import CacheSetup, StepCache
from fermipipe.cleanup import Cleanup, Joins, remove_files
from fermipipe.config import PipelineConfig
from fermipipe.plan import FilePlan, Plan
from fermipipe.runner import StepFailedError, StepResult
from fermipipe.staging import NodeStaging
from fermipipe.summary import FileSummary, summarize_file
from fermipipe.work_area import STEP_FACTOR
from flows.prefect_compat import named_copy
from flows.progress import Progress
from flows.shutdown import on_interrupt
from flows.task_runners import (
    build_task_runner,
    cancel_pending,
    check_dask_workers,
    fast_submission,
    kill_remote_tools,
    worker_resources,
)
from tasks.chain import run_chain
from tasks.steps import HIT_CHAINS, cached_chains, run_step


def process_files(
    plan: Plan,
    run: runner.RunSpec,
    n_workers: int,
    cfg: PipelineConfig,
    cleanup: Cleanup,
    cache: CacheSetup | None,
    node: NodeStaging | None,
    progress: Progress,
    on_done: Callable[[Sequence[FileSummary]], None] = lambda _summaries: None,
) -> list[FileSummary]:
    """Every file's summary, in plan order (see the module docstring). ``on_done`` is
    called with the summaries of files whose chain is over, as soon as it is (streaming
    merges): all cache hits at once, then file by file."""

    def done_with(summary: FileSummary) -> None:
        progress.file_done(summary.status, cached=summary.cached)
        on_done([summary])

    hits = cached_summaries(plan, cache)
    for hit in hits.values():
        progress.file_done(hit.status, cached=True)
    on_done(list(hits.values()))
    files = tuple(fp for fp in plan.files if fp.file_id not in hits)
    if node is not None:
        done = process_chains(plan, files, run, cfg, cleanup, cache, node, done_with)
    else:
        done = process_steps(files, run, n_workers, cfg, cleanup, cache, done_with)
    return [hits.get(fp.file_id) or done[fp.file_id] for fp in plan.files]


def cached_summaries(plan: Plan, cache: CacheSetup | None) -> dict[str, FileSummary]:
    """Summaries of the files whose whole chain is a cache hit, from one bulk task run."""
    if cache is None:
        return {}
    hits = [fp for fp in plan.files if cache.fully_cached(fp.file_id)]
    if not hits:
        return {}
    chains = [
        (fp.chain, tuple(sc for sc, _must in cache.steps[fp.file_id] or []), fp.needs)
        for fp in hits
    ]
    digest = hashlib.sha256("".join(sc.key for _c, scs, _n in chains for sc in scs).encode())
    with HIT_CHAINS.passing(chains) as handle:
        task = cached_chains.with_options(result_storage=cache.result_storage)
        state = task(digest.hexdigest(), len(hits), handle, return_state=True)
        results: list[list[StepResult]] = state.result()
    return {
        fp.file_id: summarize_file(fp.file_id, str(fp.input), steps)
        for fp, steps in zip(hits, results, strict=True)
    }


# ------------------------------------------------------------------ per-step tasks


def process_steps(
    files: Sequence[FilePlan],
    run: runner.RunSpec,
    n_workers: int,
    cfg: PipelineConfig,
    cleanup: Cleanup,
    cache: CacheSetup | None,
    done_with: Callable[[FileSummary], None],
) -> dict[str, FileSummary]:
    """Submit every step of every file, each after the futures of the steps it waits for.

    On Dask, a step with ``worker_resources`` is submitted under ``dask.annotate`` so that a
    worker never runs more of it than its declared resources allow."""
    resources = {s.name: s.worker_resources for s in cfg.steps if s.worker_resources}
    # The native tools' modules are imported here, once, not by the task threads at the
    # moment they first run a tool. Measured: a SIGTERM that lands while this thread holds
    # Python's import lock leaves it held, and threads importing then block for good.
    for name in sorted({inv.tool for fp in files for inv in fp.chain if inv.engine == "native"}):
        if name:
            native.get_tool(name)
    depth = max((len(f.chain) for f in files), default=0)
    # A task whose upstream steps are still running holds a thread while it waits, so the
    # pool has room for `depth` waiting tasks per running tool (threads are cheap, slots
    # are not: the runner's semaphores decide what actually runs).
    threads = max(1, min(len(files) * depth, n_workers * (depth + 1)))
    futures: list[list[PrefectFuture[StepResult]]] = []  # per file, its steps in order
    with build_task_runner(cfg.runner, threads) as pool:
        try:
            check_dask_workers(pool)
            variants = step_variants(cache)
            # Depth first: a file's whole chain, then the next file's. The pool starts tasks
            # in submission order, so the files in flight are the first ones, their
            # intermediates do not pile up, and their merges can start early.
            with fast_submission(cfg.runner):
                for i, fp in enumerate(files):
                    chain: list[PrefectFuture[StepResult]] = []
                    for k, inv in enumerate(fp.chain):
                        upstream = tuple(chain[j] for j in fp.needs[k])
                        with worker_resources(cfg.runner, resources.get(inv.step)):
                            chain.append(
                                submit_step(pool, variants, fp, i, k, upstream, run, cleanup, cache)
                            )
                    futures.append(chain)
            where = {id(f): (i, k) for i, chain in enumerate(futures) for k, f in enumerate(chain)}
            left = [len(chain) for chain in futures]
            joins = Joins(cleanup)
            done: dict[str, FileSummary] = {}
            # A file is done when all its steps are: its last step may finish before another.
            for fut in as_completed([fut for chain in futures for fut in chain]):
                i, k = where[id(fut)]
                remove_files(joins.over(files[i].file_id, k))
                left[i] -= 1
                if not left[i]:
                    done[files[i].file_id] = summarize_futures(files[i], futures[i])
                    done_with(done[files[i].file_id])
            for i, fp in enumerate(files):
                if fp.file_id not in done:  # a file without steps
                    done[fp.file_id] = summarize_futures(fp, futures[i])
                    done_with(done[fp.file_id])
            wait([fut for chain in futures for fut in chain])
        except BaseException as exc:
            abort_submitted(exc, pool, run.name, [fut for chain in futures for fut in chain])
            raise
    return done


def step_variants(cache: CacheSetup | None) -> dict[str, Any]:
    """How a step is submitted, by the cache decision (fermipipe.caching): uncached, cached
    (Prefect returns the stored result when its key is known) or ``refresh_cache`` (it must
    run: its product is missing or damaged, or a running step needs its output)."""
    variants = {
        "uncached": run_step.with_options(cache_policy=NO_CACHE, persist_result=False),
    }
    if cache is not None:
        for kind in ("cached", "refresh"):
            variants[kind] = run_step.with_options(
                result_storage=cache.result_storage, refresh_cache=kind == "refresh"
            )
    return variants


def submit_step(
    pool: Any,
    variants: dict[str, Any],
    fp: FilePlan,
    i: int,
    k: int,
    upstream: tuple[Any, ...],
    run: runner.RunSpec,
    cleanup: Cleanup,
    cache: CacheSetup | None,
) -> Any:
    """Submit step ``k`` of file ``fp`` (number ``i``), after the futures of ``upstream``."""
    entries = cache.steps.get(fp.file_id) if cache is not None else None
    sc: StepCache | None = None
    kind = "uncached"
    if entries is not None:
        sc, must = entries[k]
        kind = "refresh" if must else "cached"
    # Named by step and file from the start: a step that never ran (NotReady) would
    # otherwise keep the generic "run-step-08b".
    task = named_copy(variants[kind], task_label(fp, k))
    parameters = {
        "invocation": fp.chain[k],
        "upstream": upstream,
        "run": run,
        "order": i,
        "step_index": k,
        "cache": sc,
        "drops": cleanup.after_step(fp.file_id, k),
        "stage": cleanup.stage.get(fp.file_id) if k == 0 else None,
    }
    return pool.submit(task, parameters)


def task_label(fp: FilePlan, k: int) -> str:
    """``select · w712``: the step and the file (its week when the name has one)."""
    return f"{fp.chain[k].step} · {'w' + fp.week if fp.week else fp.file_id}"


def summarize_futures(fp: FilePlan, futures: Sequence[PrefectFuture[StepResult]]) -> FileSummary:
    """One file's summary from its step futures (a flow never fails by itself on failed
    tasks: every state is read). Every step that ran is reported, also after a failed
    sibling; a step that never ran (an upstream step failed) is not."""
    results: list[StepResult] = []
    for inv, fut in zip(fp.chain, futures, strict=True):
        fut.wait()  # else .state may be read from the API, which can lag (still RUNNING)
        state = fut.state
        if state.is_completed():
            result: StepResult = state.result()
            if state.name == "Cached":  # Prefect returned the stored result: no tool ran
                result.from_store = True
            results.append(result)
            continue
        if state.is_pending():  # NotReady: a step it waits for failed, it never ran
            continue
        exc = state.result(raise_on_failure=False)
        results.append(
            exc.result
            if isinstance(exc, StepFailedError)
            else failed_result(fp, inv.step, inv.render(), state, exc)
        )
    return summarize_file(fp.file_id, str(fp.input), results)


def failed_result(fp: FilePlan, step: str, command: str, state: Any, exc: Any) -> StepResult:
    """A crashed, cancelled or lost task (a bug outside the tool, a dead worker)."""
    why = exc if isinstance(exc, BaseException) else state.message
    return StepResult(step, fp.file_id, "failed", command, error=f"{state.name}: {why}")


# ------------------------------------------------------------------ node-local chains


def process_chains(
    plan: Plan,
    files: Sequence[FilePlan],
    run: runner.RunSpec,
    cfg: PipelineConfig,
    cleanup: Cleanup,
    cache: CacheSetup | None,
    node: NodeStaging,
    done_with: Callable[[FileSummary], None],
) -> dict[str, FileSummary]:
    """One :func:`tasks.chain.run_chain` task per file: each file's steps run together on
    one Dask worker, with the intermediates on that node's RAM disk."""
    merge_names = {m.output_name for m in plan.merges}
    caches, exports = [], []
    for fp in files:
        kept = {Path(src) for src, _dst in fp.keep}
        entries = cache.steps.get(fp.file_id) if cache is not None else None
        caches.append(tuple(sc for sc, _must in entries) if entries else (None,) * len(fp.chain))
        exports.append(
            tuple(
                sorted(
                    {
                        name
                        for inv in fp.chain
                        for name, path in inv.outputs.items()
                        if name in merge_names or Path(path) in kept
                    }
                )
            )
        )
    # A chain needs, on its worker, the most of each resource any of its steps declares.
    need: dict[str, float] = {}
    for step in cfg.steps:
        for res, amount in (step.worker_resources or {}).items():
            need[res] = max(need.get(res, 0.0), amount)
    futures: list[PrefectFuture[list[StepResult]]] = []
    with build_task_runner(cfg.runner, max(1, len(files))) as pool:
        try:
            check_dask_workers(pool)
            with fast_submission(cfg.runner), worker_resources(cfg.runner, need or None):
                futures = list(
                    pool.map(
                        run_chain,
                        {
                            "file_id": [fp.file_id for fp in files],
                            "chain": [fp.chain for fp in files],
                            "caches": caches,
                            "drops": [cleanup.in_order(fp.file_id) for fp in files],
                            "exports": exports,
                            "run": unmapped(run),
                            "order": list(range(len(files))),
                            "node": unmapped(node),
                            "need_bytes": [chain_need(fp) for fp in files],
                        },
                    )
                )
            index = {id(fut): i for i, fut in enumerate(futures)}
            done: dict[str, FileSummary] = {}
            for fut in as_completed(futures):
                fp = files[index[id(fut)]]
                done[fp.file_id] = summarize_chain(fp, fut)
                done_with(done[fp.file_id])
        except BaseException as exc:
            abort_submitted(exc, pool, run.name, futures)
            raise
    return done


def chain_need(fp: FilePlan) -> int:
    """Bytes a chain's folder may need: its input × the number of steps."""
    try:
        size = Path(fp.input).stat().st_size
    except OSError:
        size = 0
    return int(size * max(1, len(fp.chain)) * STEP_FACTOR)


def summarize_chain(fp: FilePlan, fut: PrefectFuture[list[StepResult]]) -> FileSummary:
    """The summary of one node-local chain from its task's state."""
    fut.wait()
    state = fut.state
    if state.is_completed():
        results: list[StepResult] = state.result()
    else:  # crashed, cancelled, lost with every worker…
        exc = state.result(raise_on_failure=False)
        step = fp.chain[0].step if fp.chain else "chain"
        results = [failed_result(fp, step, "", state, exc)]
    return summarize_file(fp.file_id, str(fp.input), results)


def abort_submitted(exc: BaseException, pool: Any, run_name: str, futures: list[Any]) -> None:
    """Ctrl-C, SIGTERM (Prefect's TerminationSignal), anything while tasks are out: stop
    every tool group now — the pool's exit would otherwise wait for tools that never saw the
    signal — here and on the Dask workers, and cancel what has not started."""
    on_interrupt(exc)  # SIGTERM: staging folder removed at once, exit bounded
    runner.kill_all()
    kill_remote_tools(pool, run_name, get_run_logger())
    cancel_pending(pool, futures)
