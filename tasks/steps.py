"""Prefect task: run one step of one file.

A thin wrapper over :func:`fermipipe.runner.run_invocation`. The flow maps it over the files,
passing each file's previous result, so a file's next step starts as soon as its own previous
step is done. Concurrency is capped inside the runner (exact, no polling), not by Prefect.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from fermipipe import runner
from fermipipe.plan import Invocation
from fermipipe.runner import StepFailedError, StepResult


@task(
    name="run-step",
    task_run_name="{invocation.step}[{invocation.file_id}]",
    cache_policy=NO_CACHE,  # outputs are files; caching is decided by fermipipe.cache
)
def run_step(
    invocation: Invocation,
    previous: StepResult | None,
    *,
    run: runner.RunSpec | str,
    order: int,
    step_index: int,
) -> StepResult:
    """Run ``invocation`` unless the file's previous step was empty (then: ``skipped``).

    A failed tool raises :class:`StepFailedError` (the task run is Failed and the file's
    later steps are not run); an empty product returns a result with status ``empty``.
    ``order``/``step_index`` set the priority of the concurrency slot: earlier files' next
    steps go first among the work that is ready.
    """
    if previous is not None and previous.status != "ok":
        return StepResult(
            invocation.step,
            invocation.file_id,
            "skipped",
            invocation.render(),
            error=f"previous step {previous.step} was {previous.status}",
        )
    logger = get_run_logger()
    ctx = runner.get_run(run)
    result = runner.run_invocation(
        invocation,
        log_path=ctx.log_path(invocation.file_id),
        logger=logger,
        scratch=ctx.scratch,
        pool=ctx.pool,
        priority=(order, -step_index),
        env=ctx.env,
    )
    if result.status == "failed":
        raise StepFailedError(result)
    if result.status == "empty":
        logger.warning("%s — left out of merges", result.describe())
    return result
