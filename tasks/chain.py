"""Prefect task: one file's whole chain on one worker, in that node's own folder.

Used on a Dask cluster whose workers are on other nodes (``runner.node_local``): a thin
wrapper over :func:`fermipipe.node_chain.run_chain_on_node`.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from fermipipe import runner
from fermipipe.caching import StepCache
from fermipipe.node_chain import run_chain_on_node
from fermipipe.plan import Invocation
from fermipipe.runner import StepResult
from fermipipe.staging import NodeStaging


@task(name="run-chain", task_run_name="chain[{file_id}]", cache_policy=NO_CACHE)
def run_chain(
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
) -> list[StepResult]:
    """Run ``chain`` (one file's steps) here; returns each step's result, in order."""
    return run_chain_on_node(
        file_id,
        chain,
        caches,
        drops,
        exports,
        run=run,
        order=order,
        node=node,
        need_bytes=need_bytes,
        logger=get_run_logger(),
    )
