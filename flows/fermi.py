"""fermipipe: Fermi-LAT data reduction as a Prefect flow.

    python flows/fermi.py CONFIG.yaml [--dry-run] [--steps a,b] [--workers N] ...

The pipeline, as the flow below runs it::

    config ─► plan (files × steps → commands, in the run's work area; built once)
                │
    work subflow: staging area (RAM disk or disk) created; cache decisions; cleanup policy
    ┆ file 1 ─► step 1 ─► step 2 ─► … ─┐   each file's chain runs on its own: a step starts
    ┆ file 2 ─► step 1 ─► step 2 ─► … ─┤   as soon as the steps making what it reads are
    ┆ …                                │   done (no barrier between steps; siblings run side
    ┆ file N ─► step 1 ─► step 2 ─► … ─┘   by side); a failing file never stops the others
    ┆           │   streaming merges: as files finish, counts maps are folded into running
    ┆           │   sums and gtltsum tree nodes start (flows/streams.py)
    ┆           ▼  every file done (merging waits for failures unless on_failure: skip)
    ┆ merges finished ─► post-processing ─► staging area removed (always: finally)
                │
                ▼
    summary: per-step table + artifacts + --summary-json; the run ends Failed if anything
    failed (a table of file, step, error says what).

Concurrency: ``resources.cores`` (or ``--workers``) tools at once, fewer for a step with
``max_parallel``; the caps are semaphores inside the runner (exact, microseconds), not
Prefect's polling concurrency limits. The Prefect thread pool is only sized so that tasks
waiting for their file's upstream steps never starve the ready ones.
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

import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import TerminationSignal
from prefect.logging import get_run_logger
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from fermipipe import runner
from fermipipe.caching import get_store, open_cache, prefetch_hashes, stored_outputs
from fermipipe.cleanup import after_chains, after_merges, cleanup_policy
from fermipipe.config import PipelineConfig, RunChoices
from fermipipe.fermitools import FermitoolsInstall, locate
from fermipipe.fits.writing import remove_dead_temporaries
from fermipipe.native_workers import use_workers
from fermipipe.plan import Plan
from fermipipe.product_cache import product_cache
from fermipipe.slices import slice_plan
from fermipipe.summary import RunSummary, show_final_paths, show_user_paths
from flows.cli import flow_parameters, load_and_plan, parse_args, preflight, restore_interrupt
from flows.files import process_files
from flows.prefect_compat import InProcess, no_subflow_heartbeat, show_cancelling
from flows.products import ProductOptions, Quicklooks, run_products
from flows.progress import Progress
from flows.shutdown import on_interrupt, quiet_teardown_tracebacks
from flows.stagectl import close_staging, node_staging, open_staging
from flows.streams import MergeStreams
from flows.task_runners import check_server_for_dask, is_dask


def kill_tools(flow: Any, flow_run: Any, state: State) -> None:
    """on_cancellation hook (Prefect calls hooks as ``hook(flow, flow_run, state)``, by
    keyword): stop every tool group of this process at once."""
    runner.kill_all()


# ----------------------------------------------------------------------------- the flow


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
    cfg, choices, plan = load_and_plan(  # built once: the command line's, when it made one
        config,
        steps,
        skip_merge=skip_merge,
        skip_post=skip_post,
        keep_intermediate=keep_intermediate,
        verify_cache=verify_cache,
        root=root,
        settings=settings or (),
        workers=workers,
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
    work = Work(cfg, plan, choices, n_workers, progress, summary)
    with WORK.passing(work) as handle:
        try:
            with no_subflow_heartbeat():
                state = work_subflow(handle, return_state=True)
        except TerminationSignal:
            show_cancelling()
            raise
    if not state.is_completed() and not (state.is_failed() and summary.failures()):
        state.result()  # raises what ended it (a bug, a cancellation)
    # The summary: complete from what this process saw, whatever Prefect's server kept.
    return finish_run(summary, summary_json)


@dataclass(frozen=True)
class Work:
    """What the work subflow gets from the main flow, in this process (:data:`WORK`)."""

    cfg: PipelineConfig
    plan: Plan
    choices: RunChoices  # command-line flags over the config's run: section
    workers: int
    progress: Progress  # the main run's progress artifact and console bar
    summary: RunSummary  # filled in by the subflow


#: The plan and summary of ~100 weekly files exceed the 512 KB of parameters the Prefect
#: API takes, so the work subflow (in this process) gets a handle to them.
WORK: InProcess[Work] = InProcess("work of a fermipipe run")


@flow(
    name="fermipipe-work",
    validate_parameters=False,
    task_runner=ThreadPoolTaskRunner(max_workers=32),  # merges: parts, tree-level pairs
    on_cancellation=[kill_tools],
)
def work_subflow(handle: str) -> State | None:
    """The staging area's owner: every file's chain, the merges and post-processing run in
    it, and it is removed on the way out — tools still running are killed first — whatever
    happens (failure, Ctrl-C, SIGTERM, cancellation), unless --keep-intermediate. Ends
    Failed, like its parent, when a file, merge or post-processing step failed."""
    work = WORK.get(handle)
    cfg, plan, choices, summary = work.cfg, work.plan, work.choices, work.summary
    logger = get_run_logger()
    quiet_teardown_tracebacks()
    keep = choices.keep_intermediate
    install = locate(cfg.fermitools.prefix)
    # Started first, all at once: the inputs' hashing, the native workers, the slices.
    hashing = prefetch_hashes(cfg, plan, choices.verify_cache)
    try:
        staging = open_staging(cfg, plan, keep, logger)
    except BaseException:
        hashing.cancel()
        raise
    run: runner.RunContext | None = None
    try:
        run = open_run(plan, work.workers, install, native_processes(cfg, plan, work.workers))
        if cfg.resources.slice_scfile:  # mission FT2 → per-week slices, in the store
            store = get_store(cfg.cache_root / "store") if cfg.cache.enabled else None
            plan = slice_plan(plan, store, logger)
        hashing.wait()
        cache = open_cache(cfg, plan, install, choices.verify_cache)
        cleanup = cleanup_policy(
            plan,
            keep=keep,
            stored=stored_outputs(cfg) if cache else (),
            cached_files=[f for f, steps in cache.steps.items() if steps] if cache else (),
            stage_inputs=staging.choice.on_ram_disk,
            store=str(cache.store.root) if cache else None,
        )
        # Temporaries of writers killed mid-write (a merge, a kept copy) are removed.
        for folder in {plan.outdir, *(m.output.parent for m in plan.merges)}:
            remove_dead_temporaries(folder)
    except BaseException:
        hashing.cancel()
        if run is not None:
            runner.close_run(run.name)
        close_staging(staging)
        raise
    assert run is not None
    logger.info(
        "%d files × %d steps, %d workers; products in %s",
        len(plan.files),
        max((len(f.chain) for f in plan.files), default=0),
        work.workers,
        plan.outdir,
    )
    spec = runner.run_spec(run)
    pc = product_cache(cfg, plan, cache)
    # Merges fed while the files run (resources.stream_merge), unless they will not run.
    streams = MergeStreams(
        plan, spec, pc, streaming=cfg.resources.stream_merge and not choices.skip_merge
    )
    # Quick-looks of merged counts maps and flux maps: their modules load while files run
    # (not in a rerun with nothing to run: its merges are up to date, nothing is drawn).
    draws = any(m.strategy == "image_sum" for m in plan.merges) or bool(plan.post)
    work_to_do = cache is None or not all(cache.fully_cached(f.file_id) for f in plan.files)
    looks = Quicklooks(preload=draws and work_to_do)
    try:
        # 1. Every file through its chain of steps; merges start as files finish.
        node = node_staging(cfg, plan, keep, logger)
        summary.files = process_files(
            plan, spec, work.workers, cfg, cleanup, cache, node, work.progress, streams.files_done
        )
        work.progress.close()
        for f, fp in zip(summary.files, plan.files, strict=True):
            show_user_paths(f, fp.file_id, Path(fp.input))
            if f.status == "failed":
                logger.error("%s failed at %s: %s", f.file_id, f.failed_step, f.error)
        after_chains(plan, summary.files, cleanup)

        # 2. Merges and post-processing, unless failures (or the user) say no.
        failed = summary.failed_files()
        stored = "; the per-file products are in the cache store" if cache else ""
        if choices.skip_merge:
            summary.merge_note = "merging skipped (--skip-merge)" + stored
        elif failed and cfg.on_failure != "skip":
            summary.merge_note = (
                f"merging not run: {len(failed)} file(s) failed and on_failure is 'stop' "
                + ("(the other files' products are cached: fix the files and rerun or retry)"
                   if cache else "")
            )  # fmt: skip
        elif plan.merges or plan.post:
            opts = ProductOptions(
                spec, cleanup, streams, choices.skip_post, pc, cfg.on_failure, looks
            )
            products = run_products(plan, summary.files, opts)
            summary.merges, summary.post = products.merges, products.post
            summary.merge_note = products.note
        if not summary.merges and not summary.post:  # run_products did not run
            after_merges(plan, summary.files, cleanup)
        if summary.merge_note:
            logger.warning(summary.merge_note)
        show_final_paths(plan, summary.files)
    except BaseException as exc:
        on_interrupt(exc)  # wherever a SIGTERM lands, the folder goes at once
        raise
    finally:
        looks.close()
        streams.close()
        runner.close_run(run.name)
        shutil.rmtree(run.scratch, ignore_errors=True)
        close_staging(staging, logger)  # kills tools still running, then removes the folder
    if failures := summary.failures():
        return Failed(message=f"{len(failures)} failure(s): see the parent run's summary")
    return None


def native_processes(cfg: PipelineConfig, plan: Plan, workers: int) -> bool:
    """Native tools in worker processes (``resources.native_processes``), when the tools run
    in this process (not on Dask workers)."""
    runs = sum(inv.engine == "native" for f in plan.files for inv in f.chain)
    return not is_dask(cfg.runner) and use_workers(cfg.resources.native_processes, runs, workers)


def open_run(
    plan: Plan, n_workers: int, install: FermitoolsInstall | None, native: bool = False
) -> runner.RunContext:
    """Register this run's slot pool (global and per-step caps), scratch and log folders,
    and its native worker processes (``native``)."""
    caps = {inv.step: inv.max_parallel for f in plan.files for inv in f.chain if inv.max_parallel}
    name = uuid.uuid4().hex[:12]
    return runner.open_run(
        name,
        workers=n_workers,
        caps=caps,
        scratch=plan.workdir / f".fermipipe-tmp-{name}",
        log_dir=plan.outdir / "logs",
        env=install.env() if install is not None else None,
        native_processes=native,
    )


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
