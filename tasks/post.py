"""Prefect task: one post-processing command, run once after the merges.

Cached like the per-file steps (``tasks.steps``): its key covers the content of every file
it reads (the merged products, common files), so an unchanged post-processing step is a
Cached task run, and its outputs come back from the store if they were deleted.

A gtexpcube2 step run by the real Fermitools (``engine: fermitools``) is energy-parallel
instead (:func:`run_post_planes`): one ``expcube-plane`` task per exposure plane, mapped, each
running the real gtexpcube2 for exactly that plane, then one ``expcube-stack`` task that
stacks them into the product a single run makes (:mod:`fermipipe.expcube_planes`). The real
tool is single-threaded, so this is what makes the 360 s mission grid (3600×1800 × 25 planes)
parallel: ~360 s / cores. (Not cached: the planes are scratch files.)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from prefect import task, unmapped
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.logging import get_run_logger

from fermipipe import runner
from fermipipe.caching import StepCache, run_cached
from fermipipe.errors import FermipipeError
from fermipipe.expcube_planes import PlaneRun, plane_runs, stack_planes
from fermipipe.fermitools_argv import fermitools_argv
from fermipipe.plan import Invocation
from fermipipe.runner import StepFailedError, StepResult
from tasks.steps import step_cache_key

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
            native=ctx.native,
        )
        if result.status != "ok":
            raise StepFailedError(result)
        return result

    if cache is None:
        return execute()
    return run_cached(invocation, cache, execute, logger)


# ------------------------------------------------------------- energy-parallel gtexpcube2


def plane_parallel(invocation: Invocation) -> bool:
    """A Fermitools gtexpcube2 step: run per energy plane (see the module docstring)."""
    return invocation.engine == "fermitools" and invocation.tool == "gtexpcube2"


def plane_invocation(invocation: Invocation, plane: PlaneRun) -> Invocation:
    """The step's invocation for one plane: its parameters, argv and plane file."""
    out = plane.params["outfile"]
    return replace(
        invocation,
        step=f"{invocation.step}[plane {plane.index}]",
        params=plane.params,
        argv=fermitools_argv(invocation.argv[0] if invocation.argv else "gtexpcube2",
                              plane.params),
        outputs={"plane": Path(out)},
    )  # fmt: skip


@task(name="expcube-plane", task_run_name="expcube-plane-{plane.index}")
def run_expcube_plane(
    invocation: Invocation, plane: PlaneRun, *, run: runner.RunSpec | str
) -> StepResult:
    """The real gtexpcube2 for one plane (a subprocess, a pool slot, the run's environment)."""
    ctx = runner.get_run(run)
    result = runner.run_invocation(
        plane_invocation(invocation, plane),
        log_path=ctx.log_path("post"),
        logger=get_run_logger(),
        scratch=ctx.scratch,
        pool=ctx.pool,
        env=ctx.env,
    )
    if result.status != "ok":
        raise StepFailedError(result)
    return result


@task(name="expcube-stack", task_run_name="expcube-stack-{invocation.step}")
def stack_expcube_planes(invocation: Invocation, planes: list[Path]) -> str:
    """The per-plane products stacked into the step's output file."""
    return str(stack_planes(planes, Path(invocation.params["outfile"])))


def run_post_planes(invocation: Invocation, run: runner.RunSpec | str) -> StepResult:
    """A Fermitools gtexpcube2 post step, energy-parallel: mapped plane tasks, then the
    stack. Returns the step's result (failed with the first plane's error, if any)."""
    ctx = runner.get_run(run)
    folder = ctx.scratch / f"post-{invocation.step}-planes"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    command = invocation.render()
    try:
        # At run time: the energies may come from the merged counts map's EBOUNDS.
        planes = plane_runs(invocation.params, folder)
        get_run_logger().info(
            "%s: gtexpcube2 energy-parallel, %d planes", invocation.step, len(planes)
        )
        done = run_expcube_plane.map(unmapped(invocation), planes, run=unmapped(run)).result()
        stack_expcube_planes(invocation, [Path(p.params["outfile"]) for p in planes])
    except StepFailedError as exc:
        failed = exc.result
        return replace(failed, step=invocation.step, command=command)
    except FermipipeError as exc:
        return StepResult(invocation.step, "post", "failed", command, error=str(exc))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return StepResult(
        invocation.step,
        "post",
        "ok",
        command,
        wall_seconds=time.perf_counter() - t0,
        cpu_seconds=sum(r.cpu_seconds for r in done),
        outputs={k: str(v) for k, v in invocation.outputs.items()},
    )
