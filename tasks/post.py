"""Prefect task: one post-processing command, run once after the merges."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from fermipipe import runner
from fermipipe.plan import Invocation
from fermipipe.runner import StepFailedError, StepResult


@task(name="post", task_run_name="post-{invocation.step}", cache_policy=NO_CACHE)
def run_post(invocation: Invocation, *, run: runner.RunSpec | str) -> StepResult:
    """Run a post-processing invocation (its placeholders already name the merged files)."""
    ctx = runner.get_run(run)
    result = runner.run_invocation(
        invocation,
        log_path=ctx.log_path("post"),
        logger=get_run_logger(),
        scratch=ctx.scratch,
        pool=ctx.pool,
        env=ctx.env,
    )
    if result.status != "ok":
        raise StepFailedError(result)
    return result
