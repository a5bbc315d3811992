"""fermipipe: Fermi-LAT data reduction as a Prefect flow.

    python flows/fermi.py CONFIG.yaml [--dry-run] [--steps a,b] [--workers N] ...

The pipeline, as the flow below runs it::

    config ─► plan (files × steps → commands)
                │
    work subflow: staging area (RAM disk or disk) created and checked
    ┆ file 1 ─► step 1 ─► step 2 ─► … ─┐   each file's chain runs on its own: a step starts
    ┆ file 2 ─► step 1 ─► step 2 ─► … ─┤   as soon as that file's previous step is done
    ┆ …                                │   (no barrier between steps); a failing file never
    ┆ file N ─► step 1 ─► step 2 ─► … ─┘   stops the others
    ┆           │
    ┆           ▼  every file done (merging waits for failures unless on_failure: skip)
    ┆ merges ─► post-processing ─► staging area removed (always: finally)
                │
                ▼
    summary: per-step table + artifacts + --summary-json; the run ends Failed if anything
    failed (a table of file, step, error says what).

Concurrency: ``resources.cores`` (or ``--workers``) tools at once, fewer for a step with
``max_parallel``; the caps are semaphores inside the runner (exact, microseconds), not
Prefect's polling concurrency limits. The Prefect thread pool is only sized so that tasks
waiting for their file's previous step never starve the ready ones.
"""

# ruff: noqa: E402 — the CLI's fast path (below) must run before Prefect is imported.
from __future__ import annotations

import sys

if __name__ == "__main__":  # config errors and --dry-run: answered before Prefect loads
    from flows import server as _server
    from flows.cli import exit_on_sigterm, parse_args, preflight, quiet_interrupt_until_run

    exit_on_sigterm()
    quiet_interrupt_until_run()
    _ARGS = parse_args()
    if (_code := preflight(_ARGS)) is not None:
        sys.exit(_code)
    try:  # a local server reused across runs, not a temporary one per run (flows/server.py)
        if _line := _server.use_for_cli(_ARGS.ephemeral):
            print(_line, file=sys.stderr, flush=True)
    except _server.ServerError as _exc:
        sys.exit(f"fermipipe: {_exc} (or run with --ephemeral)")

import contextlib
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, unmapped
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Cancelling, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from fermipipe import merge as merging
from fermipipe import native, runner
from fermipipe.cache import sha256_file
from fermipipe.config import PipelineConfig, RunChoices
from fermipipe.fermitools import FermitoolsInstall, locate
from fermipipe.fits.writing import remove_dead_temporaries
from fermipipe.manifest import Manifest
from fermipipe.plan import FilePlan, MergePlan, Plan, build_plan
from fermipipe.quicklook import make_quicklook
from fermipipe.runner import StepFailedError, StepResult
from fermipipe.staging import NodeStaging
from fermipipe.summary import FileSummary, MergeSummary, RunSummary, inline_png
from flows.cachectl import (
    CacheSetup,
    ProductCache,
    apply_slices,
    cached_summaries,
    map_level,
    merge_decision,
    open_cache,
    post_cache,
    product_cache,
    slice_store,
)
from flows.cli import flow_parameters, load_and_plan, parse_args, preflight, restore_interrupt
from flows.progress import Progress
from flows.shutdown import on_interrupt
from flows.stagectl import STEP_FACTOR, close_staging, node_staging, open_staging
from flows.task_runners import (
    build_task_runner,
    cancel_pending,
    check_dask_workers,
    check_server_for_dask,
    fast_submission,
    kill_remote_tools,
    worker_resources,
)
from tasks.chain import run_chain
from tasks.merge import merge_all, merge_pair, merge_part
from tasks.post import plane_parallel, quicklook_outputs, run_post, run_post_planes
from tasks.steps import get_store, run_step


@dataclass(frozen=True)
class ProductOptions:
    """What merges and post-processing need besides the plan and the per-file outcomes."""

    run: runner.RunSpec  # the runner context (picklable: rebuilt on Dask workers)
    skip_post: bool = False
    keep_intermediate: bool = False
    cache: ProductCache | None = None  # merge/post caching (None: cache disabled)
    on_failure: str = "stop"  # a merge with no input fails the run unless "skip"


@dataclass
class ProductsOutcome:
    merges: list[MergeSummary] = field(default_factory=list)
    post: list[StepResult] = field(default_factory=list)
    note: str | None = None


# ----------------------------------------------------------------------------- the flow


def kill_tools(flow: Any, flow_run: Any, state: State) -> None:
    """on_cancellation hook (Prefect calls hooks as ``hook(flow, flow_run, state)``, by
    keyword): stop every tool group of this process at once."""
    runner.kill_all()


@flow(name="fermipipe", on_cancellation=[kill_tools])
def fermi_pipeline(
    config: str,
    steps: list[str] | None = None,
    skip_merge: bool = False,
    skip_post: bool = False,
    keep_intermediate: bool = False,
    workers: int | None = None,
    summary_json: str | None = None,
    root: str | None = None,
    settings: list[str] | None = None,
    verify_cache: bool = False,
) -> RunSummary | State:
    """Run the pipeline described by the YAML file ``config`` (a path: parameters stay small).

    ``root``: the run root (default: this process's working directory); ``settings``:
    ``key=value`` config overrides (``--set``)."""
    cfg, choices, plan = load_and_plan(
        config,
        steps,
        skip_merge=skip_merge,
        skip_post=skip_post,
        keep_intermediate=keep_intermediate,
        verify_cache=verify_cache,
        root=root,
        settings=settings or (),
    )
    n_workers = workers or cfg.resources.max_workers
    check_server_for_dask(cfg.runner)
    summary = RunSummary(
        config=str(config),
        workers=n_workers,
        started=time.time(),
        science_models=dict(cfg.science_models),
        rejected=dict(plan.rejected),
    )
    logger = get_run_logger()
    for name, why in plan.rejected.items():
        logger.warning("input %s left out: %s", name, why)
    for note in plan.notes:
        logger.info("%s", note)
    # Created here, so that it belongs to this (the main) flow run, where a person looks;
    # the work subflow counts every file into it, cache hits included.
    progress = Progress(len(plan.files), logger=logger)
    run_work(WorkRequest(cfg, plan, choices, n_workers, progress), summary)
    # The summary: complete from what this process saw, whatever Prefect's server kept.
    return finish_run(summary, summary_json)


@dataclass(frozen=True)
class WorkRequest:
    """What the work subflow needs from the main flow (kept in this process: see run_work)."""

    cfg: PipelineConfig
    plan: Plan  # rendered without a work folder: sizes the staging area
    choices: RunChoices  # command-line flags over the config's run: section
    workers: int
    progress: Progress | None = None  # the main run's progress artifact and console bar


#: Inputs of work subflows running in this process, by handle (see run_work).
_WORK_INPUTS: dict[str, tuple[WorkRequest, RunSummary]] = {}


def run_work(request: WorkRequest, summary: RunSummary) -> None:
    """Run the work subflow, which fills in ``summary`` (files, merges, post-processing).

    A flow run's parameters go to the Prefect API, which refuses more than 512 KB of them:
    the plan and per-file summaries of ~100 weekly files already exceed that. So the subflow
    gets a handle and finds the objects here (a subflow runs in this process).
    """
    handle = uuid.uuid4().hex
    _WORK_INPUTS[handle] = (request, summary)
    try:
        # No heartbeat thread of its own: the parent's covers this process, and joining
        # one at the end costs up to a second (it sleeps in 1 s steps), a fifth of a rerun.
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            state = work_subflow(handle, return_state=True)
    except TerminationSignal:
        show_cancelling()
        raise
    finally:
        _WORK_INPUTS.pop(handle, None)
    if not state.is_completed() and not (state.is_failed() and summary.failures()):
        state.result()  # raises what ended it (a bug, a cancellation)


def show_cancelling() -> None:
    """A cancellation from the UI of a served/worker run: the runner owns the parent run's
    state (it sets Cancelled once this process is gone), so Prefect's engine here leaves
    its own copy at Running and logs "Finished in state Running()". Make that copy say what
    the server says, Cancelling. ``_termination_intent`` is a Prefect 3.9 internal (the
    engine's own test for a cancellation): re-check on upgrades."""
    with contextlib.suppress(Exception):
        from prefect.context import FlowRunContext
        from prefect.flow_engine import _termination_intent

        ctx = FlowRunContext.get()
        if ctx is not None and ctx.flow_run is not None and _termination_intent() == "cancel":
            ctx.flow_run.state = Cancelling(message="Flow run was cancelled.")


@flow(
    name="fermipipe-work",
    validate_parameters=False,
    task_runner=ThreadPoolTaskRunner(max_workers=32),  # merges: parts, tree-level pairs
    on_cancellation=[kill_tools],
)
def work_subflow(handle: str) -> State | None:
    """The staging area's owner: the per-file chains, merges and post-processing run in it,
    and it is removed on the way out (:func:`staged_work`). Ends Failed, like its parent,
    when a file, merge or post-processing step failed."""
    request, summary = _WORK_INPUTS[handle]
    staged_work(request, summary)
    if failures := summary.failures():
        return Failed(message=f"{len(failures)} failure(s): see the parent run's summary")
    return None


def staged_work(request: WorkRequest, summary: RunSummary) -> None:
    """Create and check the staging area (RAM disk or disk), run every file's chain in it,
    merge and post-process, and always remove it — tools still running are killed first —
    whatever happens (failure, Ctrl-C, SIGTERM, cancellation), unless --keep-intermediate."""
    logger = get_run_logger()
    cfg, choices, n_workers = request.cfg, request.choices, request.workers
    keep = choices.keep_intermediate
    install = locate(cfg.fermitools.prefix)
    staging = open_staging(cfg, request.plan, n_workers, keep, logger)
    try:
        plan = build_plan(
            cfg,
            only_steps=choices.steps,
            workdir=staging.path,
            fermitools=install,
            skip_merge=choices.skip_merge,
            skip_post=choices.skip_post,
        )
        if cfg.resources.slice_scfile:  # mission FT2 → per-week slices
            plan = apply_slices(plan, slice_store(cfg), logger)
        cache = open_cache(
            cfg, plan, install, keep, staging.choice.on_ram_disk, choices.verify_cache
        )
        # Temporaries of writers killed mid-write (a merge, a kept copy) are removed.
        for folder in {plan.outdir, *(m.output.parent for m in plan.merges)}:
            remove_dead_temporaries(folder)
        run = open_run(plan, n_workers, install)
    except BaseException:
        close_staging(staging)
        raise
    logger.info(
        "%d files × %d steps, %d workers; products in %s",
        len(plan.files),
        max((len(f.chain) for f in plan.files), default=0),
        n_workers,
        plan.outdir,
    )
    if cfg.resources.stream_merge and plan.merges:
        logger.info(
            "resources.stream_merge: merges start once every file's chain has finished "
            "(streaming merges during processing are not implemented yet)"
        )
    try:
        # 1. Every file through its chain of steps.
        node = node_staging(cfg, plan, keep, logger)
        progress = request.progress or Progress(len(plan.files), logger=logger)
        summary.files = process_files(
            plan, runner.run_spec(run), n_workers, cfg, cache, node, progress
        )
        progress.close()
        for f, fp in zip(summary.files, plan.files, strict=True):
            show_user_paths(f, fp)
            if f.status == "failed":
                logger.error("%s failed at %s: %s", f.file_id, f.failed_step, f.error)
        remove_file_intermediates(plan, summary.files, keep, cache is not None)

        # 2. Merges and post-processing, unless failures (or the user) say no.
        failed = summary.failed_files()
        if choices.skip_merge:
            summary.merge_note = "merging skipped (--skip-merge)" + (
                "; the per-file products are in the cache store" if cache is not None else ""
            )
        elif failed and cfg.on_failure != "skip":
            summary.merge_note = (
                f"merging not run: {len(failed)} file(s) failed and on_failure is 'stop' "
                + (
                    "(the other files' products are cached: fix the files and rerun or retry)"
                    if cache is not None
                    else ""
                )
            )
        elif plan.merges or plan.post:
            opts = ProductOptions(
                runner.run_spec(run),
                choices.skip_post,
                keep,
                product_cache(cfg, plan, cache),
                cfg.on_failure,
            )
            products = products_flow(plan, summary.files, opts)
            summary.merges, summary.post = products.merges, products.post
            summary.merge_note = products.note
        if not summary.merges and not summary.post:  # products_flow did not run
            clean_workdir(plan, summary.files, keep, ProductsOutcome(), logger)
        if summary.merge_note:
            logger.warning(summary.merge_note)
        relocate_outputs(plan, summary.files)
    except BaseException as exc:
        on_interrupt(exc)  # wherever a SIGTERM lands, the folder goes at once
        raise
    finally:
        runner.close_run(run.name)
        shutil.rmtree(run.scratch, ignore_errors=True)
        close_staging(staging, logger)  # kills tools still running, then removes the folder


# ------------------------------------------------------------------- per-file chains


def open_run(plan: Plan, n_workers: int, install: FermitoolsInstall | None) -> runner.RunContext:
    """Register this run's slot pool (global and per-step caps), scratch and log folders."""
    caps = {inv.step: inv.max_parallel for f in plan.files for inv in f.chain if inv.max_parallel}
    name = uuid.uuid4().hex[:12]
    return runner.open_run(
        name,
        workers=n_workers,
        caps=caps,
        scratch=plan.workdir / f".fermipipe-tmp-{name}",
        log_dir=plan.outdir / "logs",
        env=install.env() if install is not None else None,
    )


def process_files(
    plan: Plan,
    run: runner.RunSpec,
    n_workers: int,
    cfg: PipelineConfig,
    cache: CacheSetup | None = None,
    node: NodeStaging | None = None,
    progress: Progress | None = None,
) -> list[FileSummary]:
    """Map each step over the files, chaining each file's steps through their futures
    (with ``node``: one node-local chain task per file instead, :func:`process_chains`).

    With ``cache``, each (file, step) is submitted with its content key (Cached when
    unchanged) or with ``refresh_cache`` when its stored product is missing or damaged
    (:func:`flows.cachectl.map_level`).

    On Dask, a step with ``worker_resources`` is submitted under ``dask.annotate`` so that a
    worker never runs more of it than its declared resources allow.
    """
    resources = {s.name: s.worker_resources for s in cfg.steps if s.worker_resources}
    # Files whose whole chain is a verified cache hit: one bulk task run, not 4 per file.
    hits = cached_summaries(plan, cache)
    progress = progress or Progress(len(plan.files), artifact=False)
    for hit in hits.values():
        progress.file_done(hit.status, cached=True)
    files = tuple(fp for fp in plan.files if fp.file_id not in hits)
    if node is not None:  # Dask workers on other nodes: one task per chain, on one node
        done = process_chains(plan, files, run, cfg, cache, node, progress)
        return [hits.get(fp.file_id) or done[fp.file_id] for fp in plan.files]
    # The native tools' modules are imported here, once, not by the task threads at the
    # moment they first run a tool. Measured: a SIGTERM that lands while this thread holds
    # Python's import lock leaves it held, and threads importing then block for good.
    for name in sorted({inv.tool for fp in files for inv in fp.chain if inv.engine == "native"}):
        if name:
            native.get_tool(name)
    depth = max((len(f.chain) for f in files), default=0)
    # A task whose file's previous step is still running holds a thread while it waits, so
    # the pool has room for `depth` waiting tasks per running tool (threads are cheap, slots
    # are not: the runner's semaphores decide what actually runs).
    threads = max(1, min(len(files) * depth, n_workers * (depth + 1)))
    futures: list[list[PrefectFuture[StepResult]]] = []
    with build_task_runner(cfg.runner, threads) as pool:
        try:
            check_dask_workers(pool)
            previous: list[Any] = [None] * len(files)
            for k in range(depth):
                step = files[0].chain[k].step if files else ""
                with (
                    fast_submission(cfg.runner),  # Prefect's settings serialized once, not per task
                    worker_resources(cfg.runner, resources.get(step)),
                ):
                    mapped = map_level(pool, run_step, files, k, previous, run, cache)
                futures.append(list(mapped))
                previous = list(mapped)
            summaries = follow_progress(files, futures, progress)
            wait([fut for level in futures for fut in level])
        except BaseException as exc:
            abort_submitted(exc, pool, run.name, [fut for level in futures for fut in level])
            raise
    done = {
        fp.file_id: summaries.get(i) or summarize_file(fp, [level[i] for level in futures])
        for i, fp in enumerate(files)
    }
    return [hits.get(fp.file_id) or done[fp.file_id] for fp in plan.files]


def process_chains(
    plan: Plan,
    files: Sequence[FilePlan],
    run: runner.RunSpec,
    cfg: PipelineConfig,
    cache: CacheSetup | None,
    node: NodeStaging,
    progress: Progress,
) -> dict[str, FileSummary]:
    """One :func:`tasks.chain.run_chain` task per file: each file's steps run together on
    one Dask worker, with the intermediates on that node's RAM disk."""
    merge_names = {m.output_name for m in plan.merges}
    chains, caches, exports, needs = [], [], [], []
    for fp in files:
        kept = {Path(src) for src, _dst in fp.keep}
        chains.append(fp.chain)
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
        needs.append(chain_need(fp))
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
                            "chain": chains,
                            "caches": caches,
                            "exports": exports,
                            "run": unmapped(run),
                            "order": list(range(len(files))),
                            "node": unmapped(node),
                            "need_bytes": needs,
                        },
                    )
                )
            index = {id(fut): i for i, fut in enumerate(futures)}
            done: dict[str, FileSummary] = {}
            for fut in as_completed(futures):
                fp = files[index[id(fut)]]
                done[fp.file_id] = summarize_chain(fp, fut)
                progress.file_done(done[fp.file_id].status, cached=done[fp.file_id].cached)
        except BaseException as exc:
            abort_submitted(exc, pool, run.name, futures)
            raise
    return done


def abort_submitted(exc: BaseException, pool: Any, run_name: str, futures: list[Any]) -> None:
    """Ctrl-C, SIGTERM (Prefect's TerminationSignal), anything while tasks are out: stop
    every tool group now — the pool's exit would otherwise wait for tools that never saw the
    signal — here and on the Dask workers, and cancel what has not started."""
    on_interrupt(exc)  # SIGTERM: staging folder removed at once, exit bounded
    runner.kill_all()
    kill_remote_tools(pool, run_name, get_run_logger())
    cancel_pending(pool, futures)


def chain_need(fp: FilePlan) -> int:
    """Bytes a chain's folder may need: its input × the number of steps (see stagectl)."""
    try:
        size = Path(fp.input).stat().st_size
    except OSError:
        size = 0
    return int(size * max(1, len(fp.chain)) * STEP_FACTOR)


def summarize_chain(fp: FilePlan, fut: PrefectFuture[list[StepResult]]) -> FileSummary:
    """The summary of one node-local chain from its task's state."""
    fut.wait()
    state = fut.state
    summary = FileSummary(fp.file_id, str(fp.input), "ok")
    if not state.is_completed():  # crashed, cancelled, lost with every worker…
        exc = state.result(raise_on_failure=False)
        step = fp.chain[0].step if fp.chain else "chain"
        summary.status, summary.failed_step = "failed", step
        summary.error = f"{state.name}: {exc if isinstance(exc, BaseException) else state.message}"
        return summary
    for result in state.result():
        if result.status == "skipped":
            continue
        if result.from_store:  # no tool ran for it
            summary.cached_steps.append(result.step)
        summary.steps.append(result)
        if result.status == "failed":
            summary.status, summary.failed_step = "failed", result.step
            summary.error = result.error or "failed"
        elif result.status == "empty" and summary.status == "ok":
            summary.status, summary.error = "empty", f"{result.step}: {result.error}"
    return summary


def follow_progress(
    files: Sequence[FilePlan], futures: list[list[PrefectFuture[StepResult]]], progress: Progress
) -> dict[int, FileSummary]:
    """Summarize each file as its chain finishes (its last step's future is final, so are
    the earlier ones), updating the progress artifact and the console bar."""
    summaries: dict[int, FileSummary] = {}
    last = futures[-1] if futures else []
    index = {id(fut): i for i, fut in enumerate(last)}
    for fut in as_completed(last):
        i = index[id(fut)]
        summaries[i] = summarize_file(files[i], [level[i] for level in futures])
        progress.file_done(summaries[i].status, cached=summaries[i].cached)
    return summaries


def summarize_file(fp: FilePlan, futures: Sequence[PrefectFuture[StepResult]]) -> FileSummary:
    """Read every step state of one file (a flow never fails by itself on failed tasks)."""
    summary = FileSummary(fp.file_id, str(fp.input), "ok")
    for inv, fut in zip(fp.chain, futures, strict=True):
        fut.wait()  # else .state may be read from the API, which can lag (still RUNNING)
        state = fut.state
        if state.is_completed():
            result: StepResult = state.result()
            if result.status == "skipped":
                continue
            if state.name == "Cached" or result.from_store:  # no tool ran for it
                summary.cached_steps.append(inv.step)
            summary.steps.append(result)
            if result.status == "empty" and summary.status == "ok":
                summary.status, summary.error = "empty", f"{inv.step}: {result.error}"
            continue
        if state.is_pending():  # NotReady: its previous step failed, it never ran
            continue
        exc = state.result(raise_on_failure=False)
        if isinstance(exc, StepFailedError):
            result = exc.result
        else:  # crashed / cancelled / a bug outside the tool
            result = StepResult(inv.step, fp.file_id, "failed", inv.render())
            result.error = (
                f"{state.name}: {exc if isinstance(exc, BaseException) else state.message}"
            )
        summary.steps.append(result)
        summary.status, summary.failed_step = "failed", inv.step
        summary.error = result.error or state.message or "failed"
    return summary


def show_user_paths(summary: FileSummary, fp: FilePlan) -> None:
    """Name the user's input file, not its staged copy (``<work>/<file>/input/<name>`` on
    the RAM disk, gone after the run), in what the summary and the UI show of a failure."""
    staged = re.compile(
        r"[^\s()'\"]*/" + re.escape(fp.file_id) + "/input/" + re.escape(Path(fp.input).name)
    )

    def fix(text: str | None) -> str | None:
        return staged.sub(lambda _m: str(fp.input), text) if text else text

    summary.error = fix(summary.error)
    for result in summary.steps:
        result.error = fix(result.error)
        result.stderr_tail = [fix(line) or "" for line in result.stderr_tail]


def remove_file_intermediates(
    plan: Plan, files: list[FileSummary], keep: bool, cached: bool = False
) -> None:
    """Delete the intermediates of each file whose chain succeeded (unless kept).

    With the cache on, the merges read the stored copies, so each such file's whole work
    folder goes (the run tasks already dropped most of it as each file's chain advanced).
    """
    if keep:
        return
    if cached:
        ok = {f.file_id for f in files if f.status != "failed"}
        for fp in plan.files:
            if fp.file_id in ok:
                shutil.rmtree(plan.workdir / fp.file_id, ignore_errors=True)
        return
    ok = {f.file_id for f in files if f.status == "ok"}
    for fp in plan.files:
        if fp.file_id in ok:
            for path in fp.cleanup:
                with contextlib.suppress(FileNotFoundError):
                    Path(path).unlink()


def relocate_outputs(plan: Plan, files: list[FileSummary]) -> None:
    """Make the summary's per-file outputs name files that still exist: kept merge inputs
    were copied to the output folder, cleaned-up intermediates are gone."""
    moved = {str(src): str(dest) for fp in plan.files for src, dest in fp.keep}
    # A stored output is reported where the user finds it (the kept copy or the planned
    # product path), not inside the cache store.
    shown = {
        (fp.file_id, Path(p).name): str(p)
        for fp in plan.files
        for p in [*(dest for _src, dest in fp.keep), *(
            q for inv in fp.chain for q in inv.outputs.values()
            if not Path(q).is_relative_to(plan.workdir)
        )]
    }  # fmt: skip
    for f in files:
        for result in f.steps:
            outputs = {
                k: shown.get((f.file_id, Path(v).name), moved.get(v, v))
                for k, v in result.outputs.items()
            }
            result.outputs = {k: v for k, v in outputs.items() if Path(v).exists()}


# ------------------------------------------------------------- merges and post-processing


def products_flow(plan: Plan, files: list[FileSummary], opts: ProductOptions) -> ProductsOutcome:
    """Merges, then post-processing, then the per-file intermediates' cleanup (in finally).

    Whatever happens here (a failed merge, Ctrl-C, a cancellation), the merge inputs the
    user keeps are copied out and the per-file intermediates are removed on the way out
    unless --keep-intermediate. The staging folder itself is removed by the caller,
    :func:`staged_work`.
    """
    logger = get_run_logger()
    outcome = ProductsOutcome()
    try:
        for merge in plan.merges:
            outcome.merges.append(run_merge(merge, plan, files, opts))
        if opts.skip_post:
            outcome.note = "post-processing skipped (--skip-post)"
        elif any(m.status == "failed" for m in outcome.merges):
            outcome.note = "post-processing not run: a merge failed"
        else:
            for inv in plan.post:
                outcome.post.append(run_post_step(inv, opts.run, opts.cache))
                for name, path in quicklook_outputs(inv, outcome.post[-1]).items():
                    publish_quicklook(name, Path(path))  # a flux map: PNG beside it
                if outcome.post[-1].status == "failed":
                    outcome.note = f"post-processing stopped: {inv.step} failed"
                    break
    except BaseException as exc:
        on_interrupt(exc)
        runner.kill_all()
        raise
    finally:
        clean_workdir(plan, files, opts.keep_intermediate, outcome, logger)
    return outcome


def merge_inputs(
    merge: MergePlan, plan: Plan, files: list[FileSummary]
) -> tuple[list[Path], dict[str, str]]:
    """The per-file products of ``merge`` from files that succeeded, and who is left out."""
    sources, left_out = merge_sources(merge, plan, files)
    return [path for _id, path in sources], left_out


def merge_sources(
    merge: MergePlan, plan: Plan, files: list[FileSummary]
) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """(file id, path) of each per-file product of ``merge``, and who is left out.

    The path is where the product is now: the cache store when the step's outputs were
    stored (a cache hit never wrote to the work folder), else its planned path.
    """
    by_id = {f.file_id: f for f in files}
    inputs: list[tuple[str, Path]] = []
    left_out: dict[str, str] = {name: f"not used: {why}" for name, why in plan.rejected.items()}
    for fp, path in zip(plan.files, merge.inputs, strict=True):
        f = by_id[fp.file_id]
        if f.status == "ok":
            actual = next(
                (r.outputs[merge.output_name] for r in f.steps if merge.output_name in r.outputs),
                str(path),
            )
            inputs.append((fp.file_id, Path(actual)))
        else:
            reason = f"failed at {f.failed_step}" if f.status == "failed" else "empty"
            left_out[fp.file_id] = f"{reason}: {(f.error or '').splitlines()[0][:120]}"
    return inputs, left_out


def run_merge(
    merge: MergePlan, plan: Plan, files: list[FileSummary], opts: ProductOptions
) -> MergeSummary:
    sources, left_out = merge_sources(merge, plan, files)
    inputs = [path for _id, path in sources]
    out = MergeSummary(merge.name, str(merge.output), merge.strategy, "ok", len(inputs), left_out)
    if not inputs:
        # Nothing to merge (every file failed or was empty) is a failed run, not a quiet
        # success without its product; on_failure: skip asks for a loud warning instead.
        out.error = f"merge {merge.name!r} got no input: no file produced {{{merge.output_name}}}"
        if opts.on_failure == "skip":
            out.status = "skipped"
            get_run_logger().warning("%s (on_failure: skip)", out.error)
        else:
            out.status = "failed"
            get_run_logger().error(out.error)
        return out
    t0 = time.perf_counter()
    decision = (
        merge_decision(merge, sources, left_out, opts.cache, get_store(opts.cache.store).hashes)
        if opts.cache is not None
        else None
    )
    try:
        todo, out.mode = inputs, "full"
        if decision is not None:
            out.mode = decision.mode
            get_run_logger().info("merge %s: %s (%s)", merge.name, decision.mode, decision.reason)
            if decision.mode == "incremental":  # previous product + the new inputs only
                paths = dict(sources)
                todo = [Path(merge.output), *(paths[i] for i in decision.add)]
        # The product and its manifest are written together (the product renamed last), so
        # a kill never leaves one without the other.
        manifest = decision.manifest if decision is not None else None
        if out.mode == "up_to_date":
            pass  # the product and its manifest already cover exactly these inputs
        elif merge.strategy == "hierarchical":
            out.cpu_seconds = hierarchical_merge(merge, todo, left_out, opts.run, manifest)
        elif merge.strategy == "image_sum":
            out.cpu_seconds = parallel_image_sum(merge, todo, left_out, opts.run, manifest)
        else:
            _info, _wall, out.cpu_seconds = merge_all(
                merge, todo, left_out, run=opts.run, manifest=manifest
            )
    except Exception as exc:  # noqa: BLE001 - recorded, reported, the run ends Failed
        out.status, out.error = "failed", str(exc).splitlines()[0]
        get_run_logger().error("merge %s failed: %s", merge.name, exc)
    out.wall_seconds = time.perf_counter() - t0
    if out.status == "ok" and merge.strategy == "image_sum":  # image_sum: counts maps only
        png = Path(merge.output).with_suffix(".png")
        if out.mode == "up_to_date" and png.exists():  # the product did not change
            out.quicklook = str(png)
        else:
            out.quicklook = publish_quicklook(merge.name, merge.output)
    return out


def merge_how(merge: MergePlan) -> str:
    """How a merge is described in its product's HISTORY (the same for full and
    incremental merges, so both give the same header)."""
    if merge.strategy == "hierarchical":
        return f"{merge.tool} tree merge"
    return "image_sum" if merge.strategy == "image_sum" else "event merge"


def publish_quicklook(name: str, product: Path) -> str | None:
    """``<product stem>.png`` beside the merged counts map, shown in the UI.

    A browser refuses ``file://`` images in an http page and the Prefect server serves no
    files, so the image goes into the run summary's markdown as a ``data:`` URL
    (:func:`fermipipe.summary.inline_png`) and, when small enough, into an image artifact of
    its own the same way. A drawing failure is logged, never fatal: the product is fine.
    """
    png = Path(product).with_suffix(".png")
    try:
        make_quicklook(Path(product), png, title=f"{name}: {Path(product).name}")
        if image := inline_png(png):
            create_image_artifact(
                image_url=image,
                key=f"fermipipe-quicklook-{artifact_key(name)}",
                description=f"Quick-look of the merged {name} counts map ({png})",
            )
    except Exception as exc:  # noqa: BLE001 - a picture must not fail the run
        get_run_logger().warning("quick-look of %s not made: %s", product, exc)
        return None
    return str(png)


def artifact_key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "product"


#: The fewest maps worth a partial-sum task of their own in an image sum.
MIN_PER_PART = 4


def parallel_image_sum(
    merge: MergePlan,
    inputs: list[Path],
    left_out: dict[str, str],
    run: runner.RunSpec,
    manifest: Manifest | None = None,
) -> float:
    """image_sum in parallel partial sums (one per worker, consecutive inputs each), then
    one task that adds the parts and writes the product. Few inputs, one worker or
    ``resources.parallel_accum: false``: a single streaming pass. Returns CPU seconds."""
    workers = runner.get_run(run).pool.total if merge.parallel else 1
    parts = merging.split_parts(inputs, min(workers, len(inputs) // MIN_PER_PART))
    if len(parts) < 2:
        _info, _wall, cpu = merge_all(merge, inputs, left_out, run=run, manifest=manifest)
        return cpu
    scratch = runner.get_run(run).scratch / f"merge-{merge.name}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        futures = merge_part.map(
            inputs=parts,
            index=list(range(len(parts))),
            output=[scratch / f"part{i}.npz" for i in range(len(parts))],
            plan=unmapped(merge),
            first=unmapped(inputs[0]),
            run=unmapped(run),
        )
        done = futures.result()  # raises on a failed part (e.g. a map on another grid)
        _info, _wall, cpu = merge_all(
            merge,
            inputs,
            left_out,
            run=run,
            partials=[path for path, _cpu in done],
            manifest=manifest,
        )
        return cpu + sum(part_cpu for _path, part_cpu in done)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def hierarchical_merge(
    merge: MergePlan,
    inputs: list[Path],
    left_out: dict[str, str],
    run: runner.RunSpec,
    manifest: Manifest | None = None,
) -> float:
    """Tree reduction: each level's independent pairs run in parallel. Returns CPU seconds."""
    assert merge.tool is not None
    scratch = runner.get_run(run).scratch / f"merge-{merge.name}"
    scratch.mkdir(parents=True, exist_ok=True)
    level, depth, cpu = list(inputs), 1, 0.0
    while len(level) > 1:
        jobs, level = merging.next_level(level, scratch, merge.name, depth)
        futures = merge_pair.map(
            jobs,
            tool=unmapped(merge.tool),
            engine=unmapped(merge.engine),
            step=unmapped(f"merge:{merge.name}"),
            timeout=unmapped(merge.timeout),
            run=unmapped(run),
        )
        cpu += sum(result.cpu_seconds for result in futures.result())  # raises on failure
        depth += 1
    merging.finish(
        level[0], merge.output, left_out, len(inputs), merge_how(merge), manifest=manifest
    )
    shutil.rmtree(scratch, ignore_errors=True)
    return cpu


def run_post_step(inv: Any, run: runner.RunSpec, pc: ProductCache | None = None) -> StepResult:
    """Run one post-processing step; with the cache, keyed by the content of its inputs."""
    if plane_parallel(inv):  # the real gtexpcube2: one task per energy plane, then stacked
        return run_post_planes(inv, run)
    task, cache = run_post, None
    if pc is not None:
        cache, hit = post_cache(inv, pc)
        if cache is not None:
            task = run_post.with_options(
                result_storage=Path(pc.result_storage), refresh_cache=not hit
            )
        else:
            task = run_post.with_options(cache_policy=NO_CACHE, persist_result=False)
    state = task(inv, run=run, cache=cache, return_state=True)
    if state.is_completed():
        return state.result()
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, StepFailedError):
        return exc.result
    return StepResult(inv.step, "post", "failed", inv.render(), error=str(exc))


def clean_workdir(
    plan: Plan, files: list[FileSummary], keep: bool, outcome: ProductsOutcome, logger: Any
) -> None:
    """Copy the merge inputs the user keeps to the output folder, then remove the rest."""
    by_id = {f.file_id: f for f in files if f.status == "ok"}
    for fp in plan.files:
        if fp.file_id not in by_id:
            continue
        # Where each output is now: the store for stored outputs, else the work folder.
        now = {Path(p).name: Path(p) for r in by_id[fp.file_id].steps for p in r.outputs.values()}
        for planned, dest in fp.keep:
            src = now.get(Path(planned).name, Path(planned))
            if src.exists() and src != Path(dest) and not same_file(src, Path(dest)):
                Path(dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
    if keep:
        logger.info("intermediates kept in %s (--keep-intermediate)", plan.workdir)
        return
    if all(m.status == "ok" for m in outcome.merges):
        for path in plan.cleanup:
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
    for fp in plan.files:  # only what the plan put there: <workdir>/<file_id>/
        folder = plan.workdir / fp.file_id
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        plan.workdir.rmdir()  # only when nothing else is left in it


def same_file(a: Path, b: Path) -> bool:
    """True when ``b`` already holds ``a``'s bytes (same inode, or same size and content)."""
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    return sa.st_size == sb.st_size and sha256_file(a) == sha256_file(b)


# ------------------------------------------------------------------------ the summary


def finish_run(summary: RunSummary, summary_json: str | None) -> RunSummary | State:
    """Print and publish the summary; end Failed (naming the failures) if anything failed."""
    logger = get_run_logger()
    summary.finished = time.time()
    failures = summary.failures()
    if failures:
        names = ", ".join(sorted({row["file"] for row in failures}))
        summary.state = "Failed"
        summary.message = f"{len(failures)} failure(s): {names}"
    table = summary.breakdown_text()
    print(table)
    logger.info("per-step breakdown:\n%s", table)
    create_table_artifact(
        table=summary.step_rows(), key="fermipipe-steps", description="Per-step breakdown"
    )
    if failures:
        create_table_artifact(
            table=summary.failure_table(),
            key="fermipipe-failures",
            description="Failed files and steps, with their last stderr lines",
        )
    create_markdown_artifact(
        markdown=summary.markdown(), key="fermipipe-summary", description="Run summary"
    )
    if summary_json:
        Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_json).write_text(summary.to_json())
    if failures:
        return Failed(message=summary.message)
    return summary


# ----------------------------------------------------------------------------- the CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python flows/fermi.py CONFIG [flags]``: 0 ok, 1 the run failed, 2 config error."""
    args = parse_args(argv)
    code = preflight(args)
    if code is not None:
        return code
    return run_from_args(args)


def run_from_args(args: Any) -> int:
    import signal

    from flows import shutdown

    shutdown.cli_stops()
    restore_interrupt()
    try:
        state = fermi_pipeline(**flow_parameters(args, args.config), return_state=True)
    except KeyboardInterrupt:
        shutdown.finish_stop(signal.SIGINT)
    except TerminationSignal as exc:
        shutdown.finish_stop(exc.signal)
    except SystemExit:  # Prefect re-sends SIGTERM to exit_on_sigterm's handler
        if not shutdown.stopping():
            raise
        shutdown.finish_stop(signal.SIGTERM)
    if not state.is_completed():
        print(f"fermipipe: run {state.name}: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_from_args(_ARGS))
