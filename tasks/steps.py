"""Prefect tasks for one file's steps: a thin layer over :mod:`fermipipe.step_run`.

``run_step`` runs one step of one file. The flow submits it with the futures of the file's
steps it waits for (:mod:`fermipipe.step_graph`: those making what it reads), so it starts as
soon as they are done — two steps reading the same upstream output run side by side.
Concurrency is capped inside the runner (exact, no polling), not by Prefect.

Caching (:mod:`fermipipe.caching`): the task's Prefect cache key *is* the step's content
key (``persist_result=True``, result storage in the project's cache folder), so an unchanged
step comes back as a **Cached** task run and runs nothing. Prefect never checks that the
files behind a cached result still exist, so the flow submits a step whose stored product
is missing or damaged with ``refresh_cache=True`` (flows/files.py).
"""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.states import State

from fermipipe import runner
from fermipipe.caching import StepCache, cached_result
from fermipipe.plan import Invocation
from fermipipe.runner import StepResult
from fermipipe.step_run import RETRY_DELAYS, is_transient, run_file_step
from flows.prefect_compat import InProcess


def step_cache_key(_ctx: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """The Prefect cache key of a run-step task: the step's content key (None: uncached)."""
    cache: StepCache | None = parameters.get("cache")
    return f"step-{cache.key}" if cache is not None else None


def retry_transient(_task: Task[Any, Any], _run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition from the one retry policy (fermipipe.step_run)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)  # type: ignore[assignment]
        except Exception:  # noqa: BLE001 - an unreadable state is not worth a retry
            return False
    return is_transient(exc)


@task(
    name="run-step",
    task_run_name="{invocation.step}[{invocation.file_id}]",
    cache_policy=CacheKeyFnPolicy(cache_key_fn=step_cache_key),
    persist_result=True,
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_transient,
)
def run_step(
    invocation: Invocation,
    upstream: tuple[StepResult, ...],
    *,
    run: runner.RunSpec | str,
    order: int,
    step_index: int,
    cache: StepCache | None = None,
    drops: tuple[str, ...] = (),
    stage: tuple[str, str] | None = None,
) -> StepResult:
    """One step of one file (:func:`fermipipe.step_run.run_file_step`) after ``upstream``;
    a failed tool raises, so the task run is Failed and the steps waiting for it are not
    run (Prefect leaves them NotReady)."""
    return run_file_step(
        invocation,
        upstream,
        run=run,
        order=order,
        step_index=step_index,
        logger=get_run_logger(),
        cache=cache,
        drops=drops,
        stage=stage,
    )


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

    Submitting their steps one by one would cost Prefect's per-task overhead (tens of ms
    each) — most of a no-op rerun over 1000 small weekly files. So they appear in the UI as
    one task run (Cached when the same set of keys, ``digest``, was seen before), and their
    results are read from the store. Runs in the flow's process: ``handle`` names the
    chains there (:data:`HIT_CHAINS`)."""
    out: list[list[StepResult]] = []
    for chain, caches, needs in HIT_CHAINS.get(handle):
        # As in a run: a step after a step that was not ok is not reported (a stored one
        # was remembered as skipped); one that does not wait for that step is.
        results: dict[int, StepResult] = {}
        for k, (inv, sc) in enumerate(zip(chain, caches, strict=True)):
            if all(j in results and results[j].status == "ok" for j in needs[k]):
                results[k] = cached_result(inv, sc)
        out.append([results[k] for k in sorted(results)])
    return out


#: Chains handed to :func:`cached_chains` in this process, by handle: each file's steps,
#: their caches and the steps each waits for (FilePlan.needs).
HIT_CHAINS: InProcess[
    list[tuple[tuple[Invocation, ...], tuple[StepCache, ...], tuple[tuple[int, ...], ...]]]
] = InProcess("cache-hit chains")
