"""Prefect task: run one step of one file, through the content-addressed cache.

A thin wrapper over :func:`fermipipe.runner.run_invocation`. The flow maps it over the files,
passing each file's previous result, so a file's next step starts as soon as its own previous
step is done. Concurrency is capped inside the runner (exact, no polling), not by Prefect.

Caching (see ``fermipipe.cache`` and ``fermipipe.keys``): the flow gives each (file, step) a
:class:`StepCache` whose ``key`` covers the content of everything the step reads. The task's
Prefect cache key *is* that key (``persist_result=True``, result storage in the project's
cache folder), so an unchanged step comes back as a **Cached** task run and runs nothing.
Prefect never checks that the files behind a cached result still exist, so the flow looks
them up in the :class:`~fermipipe.cache.ProductStore` first and submits the task with
``refresh_cache=True`` when they are missing or damaged. Inside the task the store is checked
again under the key's lock (another run of the same config may have made the entry while
this one waited), then the tool runs, then its outputs are put in the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.states import State

from fermipipe import runner
from fermipipe.cache import ProductStore, StoreObjectDamagedError
from fermipipe.plan import Invocation, relocate
from fermipipe.runner import StepFailedError, StepResult

#: Seconds before the first and the second retry of a transient failure (backoff).
RETRY_DELAYS: list[float] = [2.0, 10.0]


@dataclass(frozen=True)
class StepCache:
    """What the task needs to use the cache for one (file, step). Small and picklable."""

    key: str  # the step's cache key (fermipipe.keys.chain_keys)
    store: str  # root of the ProductStore
    stored: bool  # this step's outputs are kept in the store (merge inputs, products)
    #: Inputs made by earlier *stored* steps: (planned path, their key, stored file name).
    #: When the path is missing (the earlier step was a cache hit) it is materialised from
    #: the store before the tool runs.
    upstream: tuple[tuple[str, str, str], ...] = ()
    workdir: str = ""  # outputs planned outside it are products the user sees
    #: False for an intermediate whose every consumer is a cache hit: if Prefect has no
    #: record of it (its result storage was deleted), the task returns without running.
    needed: bool = True
    #: Work-folder files this step is the last to need (dropped after it, to keep the RAM
    #: disk small; empty with --keep-intermediate).
    drop: tuple[str, ...] = ()
    #: (input file, path on the RAM disk): the input is copied there just before the tool
    #: runs (overlapped with the other files' work, not all up front) and removed after.
    stage: tuple[str, str] | None = None


_STORES: dict[str, ProductStore] = {}
_STORES_LOCK = threading.Lock()


def get_store(root: str) -> ProductStore:
    """One ProductStore (and SQLite hash index) per store root and process."""
    with _STORES_LOCK:
        store = _STORES.get(root)
        if store is None:
            store = _STORES[root] = ProductStore(Path(root))
        return store


def step_cache_key(_ctx: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """The Prefect cache key of a run-step task: the step's content key (None: uncached)."""
    cache: StepCache | None = parameters.get("cache")
    return f"step-{cache.key}" if cache is not None else None


def is_transient(_task: Task[Any, Any], _run: TaskRun, state: State[Any]) -> bool:
    """Retry only transient failures (I/O errors, the Ape parameter-file error)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)  # type: ignore[assignment]
        except Exception:  # noqa: BLE001 - an unreadable state is not worth a retry
            return False
    return isinstance(exc, StepFailedError) and exc.result.failure_kind == "transient"


def stored_name(inv: Invocation, output: str) -> str:
    """The file name a step output is stored under (its planned name)."""
    return Path(inv.outputs[output]).name


def result_from_store(inv: Invocation, store: ProductStore, key: str) -> StepResult | None:
    """The StepResult of a valid store entry (no tool runs), or None when absent/damaged."""
    files = store.lookup(key)
    if files is None:
        return None
    meta = store.meta(key)
    status = meta.get("status", "ok")
    outputs: dict[str, str] = {}
    if status == "ok":
        for name in inv.outputs:
            path = files.get(stored_name(inv, name))
            if path is None:
                return None  # an entry from an older layout: recompute
            outputs[name] = str(path)
    return StepResult(
        inv.step,
        inv.file_id,
        status,
        inv.render(),
        error=meta.get("error"),
        outputs=outputs,
        from_store=True,
    )


def place_products(inv: Invocation, result: StepResult, store: ProductStore, workdir: str) -> None:
    """Put stored outputs planned outside the work folder (user products) back if missing."""
    for name, planned in inv.outputs.items():
        stored = result.outputs.get(name)
        if stored is None or (workdir and Path(planned).is_relative_to(workdir)):
            continue
        if not Path(planned).exists():
            store.materialise(Path(stored), Path(planned))


def materialise_inputs(cache: StepCache, store: ProductStore) -> None:
    """Bring each input made by a stored upstream step to its planned path if it is not
    there (the upstream step was a cache hit and did not run)."""
    for path, key, name in cache.upstream:
        if Path(path).exists():
            continue
        files = store.lookup(key)
        if files is None or name not in files:
            raise RuntimeError(
                f"upstream product {name} (key {key[:12]}…) vanished from the cache store "
                f"{store.root}; rerun to recompute it"
            )
        store.materialise(files[name], Path(path))


@task(
    name="run-step",
    task_run_name="{invocation.step}[{invocation.file_id}]",
    cache_policy=CacheKeyFnPolicy(cache_key_fn=step_cache_key),
    persist_result=True,
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=is_transient,
)
def run_step(
    invocation: Invocation,
    previous: StepResult | None,
    *,
    run: runner.RunSpec | str,
    order: int,
    step_index: int,
    cache: StepCache | None = None,
) -> StepResult:
    """Run ``invocation`` unless the file's previous step was empty (then: ``skipped``).

    A failed tool raises :class:`StepFailedError` (the task run is Failed and the file's
    later steps are not run; transient failures are retried with backoff first); an empty
    product returns a result with status ``empty``. ``order``/``step_index`` set the
    priority of the concurrency slot: earlier files' next steps go first among the work that
    is ready. ``cache`` (None: no caching) is described in the module docstring. A
    node-local chain (tasks/chain.py) calls the plain function, ``run_step.fn``, step after
    step.
    """
    if previous is not None and previous.status != "ok":
        skipped = StepResult(
            invocation.step,
            invocation.file_id,
            "skipped",
            invocation.render(),
            error=f"previous step {previous.step} was {previous.status}"
            + (f" ({previous.error})" if previous.error else ""),
        )
        if cache is not None and cache.stored:  # remembered, so a rerun finds it settled
            meta = {"status": "skipped", "error": skipped.error, "step": invocation.step}
            get_store(cache.store).put(cache.key, {}, meta=meta)
        return skipped
    logger = get_run_logger()
    if cache is None:
        return _execute(invocation, run, order, step_index, logger)
    store = get_store(cache.store)
    if not cache.stored:
        if not cache.needed:
            logger.info("%s: not needed (every consumer is cached)", invocation.step)
            return StepResult(
                invocation.step, invocation.file_id, "ok", invocation.render(), from_store=True
            )
        materialise_inputs(cache, store)
        result = _execute(invocation, run, order, step_index, logger, cache.stage)
        drop(cache)
        return result
    return run_stored(
        invocation,
        cache,
        lambda: _execute(invocation, run, order, step_index, logger, cache.stage),
        logger,
    )


def run_stored(
    invocation: Invocation, cache: StepCache, execute: Callable[[], StepResult], logger: Any
) -> StepResult:
    """Under the key's lock: the store's entry if valid, else ``execute()`` and store it."""
    store = get_store(cache.store)
    with store.lock(cache.key):  # one run computes an entry; the others wait, then reuse it
        hit = result_from_store(invocation, store, cache.key)
        if hit is not None:
            try:
                place_products(invocation, hit, store, cache.workdir)
            except StoreObjectDamagedError as exc:  # edited in place: recomputed, not trusted
                logger.warning("%s: %s; recomputing", invocation.step, exc)
                hit = None
        if hit is not None:
            logger.info("%s: taken from the cache store (no tool run)", hit.describe())
            drop(cache)
            return hit
        store.forget(cache.key)  # a damaged entry is replaced, never trusted
        materialise_inputs(cache, store)
        result = execute()
        files = {stored_name(invocation, n): Path(p) for n, p in result.outputs.items()}
        if result.status == "empty":  # remembered as empty: nothing to merge from it
            files, result.outputs = {}, {}
        stored = store.put(
            cache.key,
            files,
            link=True,
            meta={"status": result.status, "error": result.error, "step": invocation.step},
        )
        result.outputs = {n: str(stored[stored_name(invocation, n)]) for n in result.outputs}
    drop(cache)
    return result


def drop(cache: StepCache) -> None:
    """Delete the work-folder files no later step of this file reads."""
    for path in cache.drop:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def _execute(
    invocation: Invocation,
    run: runner.RunSpec | str,
    order: int,
    step_index: int,
    logger: Any,
    stage: tuple[str, str] | None = None,
) -> StepResult:
    ctx = runner.get_run(run)
    staged: Path | None = None
    if stage is not None:
        src, staged = Path(stage[0]), Path(stage[1])
        moved = relocate(invocation, src, staged)
        if moved is None:
            staged = None
        else:
            staged.parent.mkdir(parents=True, exist_ok=True)
            tmp = staged.with_name(f".{staged.name}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, staged)
            invocation = moved
    try:
        result = runner.run_invocation(
            invocation,
            log_path=ctx.log_path(invocation.file_id),
            logger=logger,
            scratch=ctx.scratch,
            pool=ctx.pool,
            priority=(order, -step_index),
            env=ctx.env,
        )
    finally:
        if staged is not None:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
    if result.status == "failed":
        result.failure_kind = runner.classify_failure(result)
        if result.failure_kind == "transient":
            logger.warning("%s — transient failure: retried with backoff", result.describe())
        else:
            logger.error("%s — deterministic failure (bad data?): not retried", result.describe())
        raise StepFailedError(result)
    if result.status == "empty":
        logger.warning("%s — left out of merges", result.describe())
    return result


#: Chains handed to a bulk cache-hit task in this process, by handle: a task's parameters
#: are walked by Prefect (futures, inputs, cache policy), which costs seconds for 1000
#: files' invocations — the task gets a handle and a digest of the keys instead.
BULK_INPUTS: dict[str, list[tuple[tuple[Invocation, ...], tuple[StepCache, ...]]]] = {}


def chains_cache_key(_ctx: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Key of a bulk cache-hit task: the digest of every (file, step) key it covers."""
    return f"hits-{parameters['digest']}"


@task(
    name="cache-hits",
    task_run_name="cached[{n_files} files]",
    cache_policy=CacheKeyFnPolicy(cache_key_fn=chains_cache_key),
    persist_result=True,
)
def cached_chains(digest: str, n_files: int, handle: str) -> list[list[StepResult]]:
    """The results of files whose whole chain is a verified cache hit, in one task run.

    The flow found every stored product of these files intact in the store and nothing to
    run; submitting their steps one by one would cost Prefect's per-task overhead (tens of
    ms each) — most of a no-op rerun over 1000 small weekly files. So they appear in the UI
    as one task run (Cached when the same set of keys, ``digest``, was seen before), and
    their results are read from the store: stored steps from their entries, intermediates
    as not needed. Runs in the flow's process (``handle`` names the chains there).
    """
    out: list[list[StepResult]] = []
    for chain, caches in BULK_INPUTS[handle]:
        results: list[StepResult] = []
        for inv, sc in zip(chain, caches, strict=True):
            hit = result_from_store(inv, get_store(sc.store), sc.key) if sc.stored else None
            if hit is None:  # an intermediate nobody needs: it was not run
                hit = StepResult(inv.step, inv.file_id, "ok", inv.render(), from_store=True)
            results.append(hit)
            if hit.status != "ok":
                break
        out.append(results)
    return out
