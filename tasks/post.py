"""Prefect task: one post-processing command, run once after the merges.

Cached like the per-file steps (``tasks.steps``): its key covers the content of every file
it reads (the merged products, common files), so an unchanged post-processing step is a
Cached task run, and its outputs come back from the store if they were deleted.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.logging import get_run_logger

from fermipipe import runner
from fermipipe.plan import Invocation
from fermipipe.runner import StepFailedError, StepResult
from tasks.steps import StepCache, run_stored, step_cache_key

#: Post-processing tools whose outputs are sky images (flux maps) worth a quick-look PNG.
QUICKLOOK_TOOLS = frozenset({"farith", "hpx_divide"})


def quicklook_outputs(invocation: Invocation, result: StepResult) -> dict[str, str]:
    """The outputs of a finished post step to draw as quick-looks: every output of a
    farith/hpx_divide step (counts / exposure = a flux map), none for other tools. The
    planned paths in the output folder (``result.outputs`` may name the cache store's copy,
    and the PNG belongs beside the product the user sees)."""
    if result.status != "ok" or invocation.tool not in QUICKLOOK_TOOLS:
        return {}
    return {name: str(path) for name, path in invocation.outputs.items() if path.is_file()}


@task(
    name="post",
    task_run_name="post-{invocation.step}",
    cache_policy=CacheKeyFnPolicy(cache_key_fn=step_cache_key),
    persist_result=True,
)
def run_post(
    invocation: Invocation, *, run: runner.RunSpec | str, cache: StepCache | None = None
) -> StepResult:
    """Run a post-processing invocation (its placeholders already name the merged files)."""
    logger = get_run_logger()

    def execute() -> StepResult:
        ctx = runner.get_run(run)
        result = runner.run_invocation(
            invocation,
            log_path=ctx.log_path("post"),
            logger=logger,
            scratch=ctx.scratch,
            pool=ctx.pool,
            env=ctx.env,
        )
        if result.status != "ok":
            raise StepFailedError(result)
        return result

    if cache is None:
        return execute()
    return run_stored(invocation, cache, execute, logger)
