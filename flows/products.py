"""Merges and post-processing, as Prefect tasks (part of the work subflow).

Each merge reads the per-file products of the files that succeeded
(:func:`fermipipe.merge_sources.merge_sources`); with the cache on, a merge whose product's
manifest already covers its inputs is up to date, and a sum gets only the new weeks added
(:func:`fermipipe.product_cache.merge_decision`). image_sum runs as parallel partial sums,
hierarchical merges (gtltsum) as a tree of pairwise tasks. Post-processing steps run after
every merge succeeded, in order, each keyed by the content of what it reads.
"""

from __future__ import annotations

import contextlib
import contextvars
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from prefect import unmapped
from prefect.artifacts import create_image_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from fermipipe import merge as merging
from fermipipe import runner
from fermipipe.caching import get_store
from fermipipe.cleanup import Cleanup, after_merges
from fermipipe.manifest import Manifest
from fermipipe.merge_sources import merge_how, merge_sources
from fermipipe.plan import Invocation, MergePlan, Plan
from fermipipe.product_cache import (
    MergeDecision,
    ProductCache,
    merge_decision,
    post_cache,
    stored_map,
)
from fermipipe.quicklook import image_of, make_quicklook, render, write_png
from fermipipe.quicklook import preload as quicklook_modules
from fermipipe.runner import StepFailedError, StepResult
from fermipipe.summary import FileSummary, MergeSummary, inline_png
from flows.shutdown import on_interrupt
from flows.streams import MergeStreams
from tasks.merge import LOOKS, merge_all, merge_part
from tasks.post import plane_parallel, quicklook_outputs, run_post, run_post_planes


@dataclass(frozen=True)
class ProductOptions:
    """What merges and post-processing need besides the plan and the per-file outcomes."""

    run: runner.RunSpec  # the runner context (picklable: rebuilt on Dask workers)
    cleanup: Cleanup  # the run's cleanup policy (fermipipe.cleanup)
    streams: MergeStreams  # what streaming merges did while the files ran
    skip_post: bool = False
    cache: ProductCache | None = None  # merge/post caching (None: cache disabled)
    on_failure: str = "stop"  # a merge with no input fails the run unless "skip"
    looks: Quicklooks = field(default_factory=lambda: Quicklooks())  # the PNGs being drawn


@dataclass
class ProductsOutcome:
    merges: list[MergeSummary] = field(default_factory=list)
    post: list[StepResult] = field(default_factory=list)
    note: str | None = None


def run_products(plan: Plan, files: list[FileSummary], opts: ProductOptions) -> ProductsOutcome:
    """Merges, then post-processing; then, whatever happened (a failed merge, Ctrl-C, a
    cancellation), what the user keeps is copied out and the per-file folders go
    (:func:`fermipipe.cleanup.after_merges`). The staging folder itself is removed by its
    owner, the work subflow."""
    outcome = ProductsOutcome()
    looks = opts.looks
    try:
        for merge in plan.merges:
            outcome.merges.append(run_merge(merge, plan, files, opts, looks))
        if opts.skip_post:
            outcome.note = "post-processing skipped (--skip-post)"
        elif any(m.status == "failed" for m in outcome.merges):
            outcome.note = "post-processing not run: a merge failed"
        else:
            for inv in plan.post:
                outcome.post.append(run_post_step(inv, opts.run, opts.cache))
                for name, path in quicklook_outputs(inv, outcome.post[-1]).items():
                    looks.draw(name, Path(path))  # a flux map: PNG beside it
                if outcome.post[-1].status == "failed":
                    outcome.note = f"post-processing stopped: {inv.step} failed"
                    break
        looks.finish()
    except BaseException as exc:
        on_interrupt(exc)
        runner.kill_all()
        raise
    finally:
        looks.close()
        after_merges(plan, files, opts.cleanup)
    return outcome


def run_merge(
    merge: MergePlan,
    plan: Plan,
    files: list[FileSummary],
    opts: ProductOptions,
    looks: Quicklooks,
) -> MergeSummary:
    """One merge; an image_sum's quick-look is rendered from its sum while its product is
    written (:class:`EarlyLook`) and published once the product is in place, or, when it
    could not be, drawn from the product after."""
    early = looks.early(merge.name, merge.output) if merge.strategy == "image_sum" else None
    with contextlib.ExitStack() as stack:
        look = stack.enter_context(LOOKS.passing(early)) if early is not None else None
        out = _run_merge(merge, plan, files, opts, look)
    if out.status == "ok" and merge.strategy == "image_sum":  # image_sum: counts maps only
        png = Path(merge.output).with_suffix(".png")

        def then(png: str | None) -> None:
            out.quicklook = png

        if out.mode == "up_to_date" and png.exists():  # the product did not change
            out.quicklook = str(png)
        elif early is not None and early.rendered is not None:
            looks.publish(early, then)
        else:
            looks.draw(merge.name, merge.output, then)
    elif early is not None:  # no product: its picture is not published
        early.discard()
    return out


def _run_merge(
    merge: MergePlan,
    plan: Plan,
    files: list[FileSummary],
    opts: ProductOptions,
    look: str | None,
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
    # The product and its manifest are written together (the product renamed last), so a
    # kill never leaves one without the other.
    manifest = decision.manifest if decision is not None else None
    try:
        out.mode = decision.mode if decision is not None else "full"
        if decision is not None:
            get_run_logger().info("merge %s: %s (%s)", merge.name, decision.mode, decision.reason)
        if out.mode == "up_to_date":
            pass  # the product and its manifest already cover exactly these inputs
        elif merge.strategy == "hierarchical":
            out.mode, out.cpu_seconds = tree_merge(merge, sources, left_out, opts, manifest)
        elif merge.strategy == "image_sum":
            out.cpu_seconds = summed_merge(merge, sources, left_out, opts, decision, look)
        else:
            _info, _wall, out.cpu_seconds = merge_all(
                merge, inputs, left_out, run=opts.run, manifest=manifest
            )
    except Exception as exc:  # noqa: BLE001 - recorded, reported, the run ends Failed
        out.status, out.error = "failed", str(exc).splitlines()[0]
        get_run_logger().error("merge %s failed: %s", merge.name, exc)
    # Task-seconds: the final step without its waits for streamed work, plus that work
    # (tree nodes, folds: each holding a tool slot while it ran).
    streamed_wall, streamed_cpu = opts.streams.streamed_work(merge)
    span = time.perf_counter() - t0 - opts.streams.waited.get(merge.name, 0.0)
    out.wall_seconds = span + streamed_wall
    if merge.strategy == "image_sum":  # a tree's CPU already counts its nodes
        out.cpu_seconds += streamed_cpu
    return out


def tree_merge(
    merge: MergePlan,
    sources: list[tuple[str, Path]],
    left_out: dict[str, str],
    opts: ProductOptions,
    manifest: Manifest | None,
) -> tuple[str, float]:
    """A gtltsum tree (fermipipe.merge_tree), finished here where streaming left it;
    incremental when kept nodes (or the previous product) were reused. (mode, CPU s)."""
    root, cpu, reused = opts.streams.tree_product(merge, sources)
    merging.finish(root, merge.output, left_out, len(sources), merge_how(merge), manifest=manifest)
    if reused:
        get_run_logger().info("merge %s: %d kept tree node(s) reused", merge.name, reused)
    return ("incremental" if reused else "full"), cpu


def summed_merge(
    merge: MergePlan,
    sources: list[tuple[str, Path]],
    left_out: dict[str, str],
    opts: ProductOptions,
    decision: MergeDecision | None,
    look: str | None = None,
) -> float:
    """An image_sum: the running sum of the maps folded while files ran, plus what it does
    not hold; incremental: the previous product + the new weeks − the changed or gone ones.
    ``look``: the handle of its image hook (tasks.merge.LOOKS). Returns CPU seconds."""
    paths = dict(sources)
    todo, subtract = [path for _id, path in sources], []
    if decision is not None and decision.mode == "incremental":
        assert opts.cache is not None
        names = {fid: Path(p).name for fid, p in sources}
        for item in decision.remove:
            old = stored_map(opts.cache, item, names.get(item.file_id))
            if old is None:  # the old map is gone from the store: sum every map
                get_run_logger().info("merge %s: %s's old map is gone: full", merge.name,
                                      item.file_id)  # fmt: skip
                break
            subtract.append(old)
        else:
            todo = [Path(merge.output), *(paths[i] for i in decision.add)]
        if len(subtract) != len(decision.remove):
            subtract = []
    handle = opts.streams.running_sum(merge, todo)
    manifest = decision.manifest if decision is not None else None
    if handle is None and not subtract:  # nothing streamed: parallel partial sums
        return parallel_image_sum(merge, todo, left_out, opts.run, manifest, look)
    _info, _wall, cpu = merge_all(
        merge,
        todo,
        left_out,
        run=opts.run,
        manifest=manifest,
        subtract=subtract,
        running=handle,
        look=look,
    )
    return cpu


class Quicklooks:
    """Quick-look PNGs drawn in the background, one after the other (pyplot is not
    thread-safe), while the next merges and post-processing steps run: each reads a
    finished product, or, for an image sum, its sum before it is written (:meth:`early`).
    :meth:`finish` waits for them (the run ends after its PNGs)."""

    def __init__(self, preload: bool = False) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fermipipe-quicklook")
        self._pending: list[tuple[Future[str | None], Callable[[str | None], object] | None]] = []
        if preload:  # the imports, while the files run (an import error shows when drawing)
            self._pool.submit(quicklook_modules)

    def draw(
        self, name: str, product: Path, then: Callable[[str | None], object] | None = None
    ) -> None:
        """Draw ``product``'s PNG; ``then`` gets its path (None: not made) in :meth:`finish`.
        The drawing runs in this flow run's context (its logger, its artifacts)."""
        context = contextvars.copy_context()
        self._pending.append(
            (self._pool.submit(context.run, publish_quicklook, name, product), then)
        )

    def early(self, name: str, product: Path) -> EarlyLook:
        """The image hook of an image sum writing ``product`` (:class:`EarlyLook`)."""
        return EarlyLook(self._pool, name, Path(product))

    def publish(self, early: EarlyLook, then: Callable[[str | None], object] | None = None) -> None:
        """``early``'s product is in place: its PNG and artifact are made from the picture
        rendered while it was written (after it: one thread, in order), as :meth:`draw`."""
        context = contextvars.copy_context()
        future = self._pool.submit(
            context.run, publish_quicklook, early.name, early.product, early.rendered
        )
        self._pending.append((future, then))

    def finish(self) -> None:
        for future, then in self._pending:
            png = future.result()
            if then is not None:
                then(png)
        self._pending.clear()

    def close(self) -> None:
        """Drop drawings not started (a stopped run); wait for the one in progress."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class EarlyLook:
    """An image sum's quick-look, rendered from its summed image while the product is
    written (the ``image_hook`` of :func:`fermipipe.merge.image_sum`): the merge sums the
    energy planes (before its write byteswaps the sum), the quick-look thread renders the
    PNG in memory meanwhile; the PNG file and artifact are made only once the product is
    in place (:meth:`Quicklooks.publish`), and never for a merge that failed
    (:meth:`discard`): no picture of a product that does not exist."""

    def __init__(self, pool: ThreadPoolExecutor, name: str, product: Path) -> None:
        self._pool = pool
        self.name, self.product = name, product
        self.rendered: Future[bytes] | None = None  # None: draw from the product

    def __call__(self, pixels: np.ndarray, header: fits.Header, dtype: np.dtype[Any]) -> None:
        try:
            image = image_of(pixels, header, dtype)
        except Exception:  # noqa: BLE001 - drawn from the product then, which says what fails
            return
        title = quicklook_title(self.name, self.product)
        self.rendered = self._pool.submit(render, image, header, title)

    def discard(self) -> None:
        if self.rendered is not None:
            self.rendered.cancel()  # not started: dropped; else its bytes are not used
            self.rendered = None


def quicklook_title(name: str, product: Path) -> str:
    return f"{name}: {Path(product).name}"


def publish_quicklook(
    name: str, product: Path, rendered: Future[bytes] | None = None
) -> str | None:
    """``<product stem>.png`` beside the merged counts map, shown in the UI: drawn from the
    product, or written from ``rendered`` (an :class:`EarlyLook`'s picture).

    A browser refuses ``file://`` images in an http page and the Prefect server serves no
    files, so the image goes into the run summary's markdown as a ``data:`` URL
    (:func:`fermipipe.summary.inline_png`) and, when small enough, into an image artifact of
    its own the same way. A drawing failure is logged, never fatal: the product is fine.
    """
    png = Path(product).with_suffix(".png")
    try:
        if rendered is None:
            make_quicklook(Path(product), png, title=quicklook_title(name, product))
        else:
            write_png(rendered.result(), png)
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
    look: str | None = None,
) -> float:
    """image_sum in parallel partial sums (one per worker, consecutive inputs each), then
    one task that adds the parts and writes the product. Few inputs, one worker or
    ``resources.parallel_accum: false``: a single streaming pass. Returns CPU seconds."""
    workers = runner.get_run(run).pool.total if merge.parallel else 1
    parts = merging.split_parts(inputs, min(workers, len(inputs) // MIN_PER_PART))
    if len(parts) < 2:
        _info, _wall, cpu = merge_all(
            merge, inputs, left_out, run=run, manifest=manifest, look=look
        )
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
            look=look,
        )
        return cpu + sum(part_cpu for _path, part_cpu in done)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_post_step(
    inv: Invocation, run: runner.RunSpec, pc: ProductCache | None = None
) -> StepResult:
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
