"""Merges fed while the files are processed (``resources.stream_merge``, default on).

As each file's chain finishes, :meth:`MergeStreams.files_done` hands its products to the
merges, which start working at once instead of after the last file:

* a **hierarchical** merge (gtltsum) runs its fixed tree (:mod:`fermipipe.merge_tree`) node
  by node: a node is launched as a ``merge-pair`` task when its leaves — the files before it
  in plan order — are all done; complete nodes of 8 or more weeks are kept in the cache
  store, so a rerun recomputes only the nodes on a changed week's path;
* an **image_sum** merge folds each weekly counts map into a running sum as a ``fold`` task
  (:class:`fermipipe.merge.RunningSum`: whole counts, exact in any order), so the weekly maps can go.

What is left — the right edge of a tree, maps not folded — is done by the products stage
(flows/products.py), which finishes every merge the same way with or without streaming.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger

from fermipipe import runner
from fermipipe.caching import get_store
from fermipipe.manifest import Manifest, read_manifest
from fermipipe.merge import NotWholeCounts, PairJob, RunningSum
from fermipipe.merge_tree import Node, NodeJob, TreeMerge, node_key, root
from fermipipe.plan import MergePlan, Plan
from fermipipe.product_cache import ProductCache
from fermipipe.summary import FileSummary
from tasks.merge import RUNNING, fold_map, merge_pair


@dataclass
class TreeStream:
    merge: MergePlan
    tree: TreeMerge
    futures: dict[Node, PrefectFuture[Any]] = field(default_factory=dict)
    positions: list[int] = field(default_factory=list)  # each leaf's file, in the plan


@dataclass
class SumStream:
    merge: MergePlan
    running: RunningSum | None = None
    handle: str | None = None
    folds: list[tuple[str, Path, PrefectFuture[Any]]] = field(default_factory=list)
    skip: frozenset[str] = frozenset()  # files the previous product already holds


class MergeStreams:
    """The merges of one run, fed file by file (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        run: runner.RunSpec,
        pc: ProductCache | None,
        *,
        streaming: bool,
    ) -> None:
        self.plan = plan
        self.run = run
        self.pc = pc
        self.streaming = streaming
        self.position = {fp.file_id: i for i, fp in enumerate(plan.files)}
        self.summaries: list[FileSummary | None] = [None] * len(plan.files)
        self.prefix = 0  # files [0, prefix) are all done
        scratch = runner.get_run(run).scratch
        self.trees = {
            m.name: TreeStream(m, TreeMerge(m.name, scratch / f"tree-{m.name}",
                                            *self._reuse_of(m)))
            for m in plan.merges
            if m.strategy == "hierarchical"
        }  # fmt: skip
        self.sums = {m.name: SumStream(m, skip=self._held(m)) for m in plan.merges
                     if m.strategy == "image_sum"}  # fmt: skip
        self._exits = ExitStack()  # the running sums' handles
        #: Seconds the products stage spent waiting for streamed work, per merge.
        self.waited: dict[str, float] = {}

    # ----------------------------------------------------------------- feeding

    def files_done(self, summaries: Sequence[FileSummary]) -> None:
        """Files whose chains are over (ok, empty or failed): feed the merges what they can
        take, then launch what became possible (once for a batch: cache hits come at once,
        so a kept tree node above them is found before anything below it is merged)."""
        for summary in summaries:
            i = self.position.get(summary.file_id)
            if i is None or self.summaries[i] is not None:
                continue
            self.summaries[i] = summary
            if self.streaming:
                for stream in self.sums.values():
                    self._fold(stream, summary)
        if not self.streaming:
            return
        while self.prefix < len(self.summaries) and self.summaries[self.prefix] is not None:
            done = self.summaries[self.prefix]
            assert done is not None
            for stream in self.trees.values():
                self._add_leaf(stream, done)
            self.prefix += 1
        final = self.prefix == len(self.summaries)  # every file is done: the whole tree
        for stream in self.trees.values():
            self._launch(stream, stream.tree.due(final=final))

    def _product(self, merge: MergePlan, summary: FileSummary) -> Path | None:
        if summary.status != "ok":
            return None
        return next(
            (Path(r.outputs[merge.output_name]) for r in summary.steps
             if merge.output_name in r.outputs),
            None,
        )  # fmt: skip

    def _leaf_key(self, merge: MergePlan, file_id: str) -> str | None:
        facts = self.pc.files.get(file_id) if self.pc is not None else None
        return facts.keys.get(merge.output_name) if facts is not None else None

    def _add_leaf(self, stream: TreeStream, summary: FileSummary) -> None:
        path = self._product(stream.merge, summary)
        if path is not None:
            stream.tree.add_leaf(path, self._leaf_key(stream.merge, summary.file_id))
            stream.positions.append(self.position[summary.file_id])

    def _launch(self, stream: TreeStream, jobs: list[NodeJob]) -> None:
        merge = stream.merge
        assert merge.tool is not None
        if jobs:
            jobs[0].output.parent.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            n = len(stream.tree.leaves)
            waits = [stream.futures[c] for c in job.after if c in stream.futures]
            # The merges it reads, launched in this run, are read by nothing else.
            drop = tuple(stream.tree.paths[c] for c in job.after if c in stream.futures)
            keep = (self.pc.store, job.key) if job.keep and job.key and self.pc else None
            last = job.node.stop(n) - 1
            position = stream.positions[last] if last < len(stream.positions) else float("inf")
            stream.futures[job.node] = merge_pair.with_options(
                task_run_name=f"merge:{merge.name}[{job.node.label()}]"
            ).submit(
                PairJob(job.left, job.right, job.output, job.node.label()),
                tool=merge.tool,
                engine=merge.engine,
                step=f"merge:{merge.name}",
                timeout=merge.timeout,
                run=self.run,
                keep=keep,
                priority=(position, 1),
                drop=drop,
                wait_for=waits,
            )

    def _fold(self, stream: SumStream, summary: FileSummary) -> None:
        path = self._product(stream.merge, summary)
        if path is None or summary.file_id in stream.skip or stream.handle == "":
            return
        if stream.running is None:
            try:
                stream.running = RunningSum(path)
            except Exception as exc:  # noqa: BLE001 - the products stage says what is wrong
                get_run_logger().info("merge %s: not streamed (%s)", stream.merge.name, exc)
                stream.handle = ""  # never again: the merge reads every map at the end
                return
            stream.handle = self._exits.enter_context(RUNNING.passing(stream.running))
        position = self.position[summary.file_id]
        future = fold_map.submit(
            stream.handle, path, merge=stream.merge.name, run=self.run, priority=(position, 1)
        )
        stream.folds.append((summary.file_id, path, future))

    # ------------------------------------------------------------------ finishing

    def tree_product(
        self, merge: MergePlan, leaves: list[tuple[str, Path]]
    ) -> tuple[Path, float, int]:
        """Finish a hierarchical merge's tree over ``leaves`` (file id, path, in plan order):
        launch what streaming did not, wait for every node. Returns the root's file, the
        merges' CPU seconds and how many kept nodes were reused."""
        stream = self.trees[merge.name]
        tree = stream.tree
        known = len(tree.leaves)
        if [str(p) for p in tree.leaves] != [str(p) for _id, p in leaves[:known]]:
            raise RuntimeError(f"merge {merge.name}: streamed leaves differ from the inputs")
        for file_id, path in leaves[known:]:
            tree.add_leaf(path, self._leaf_key(merge, file_id))
            stream.positions.append(self.position[file_id])
        self._launch(stream, tree.due(final=True))
        t0 = time.perf_counter()
        for future in stream.futures.values():
            future.wait()
        self.waited[merge.name] = time.perf_counter() - t0
        cpu = sum(future.result().cpu_seconds for future in stream.futures.values())
        return tree.root_path(), cpu, len(tree.reused)

    def running_sum(self, merge: MergePlan, inputs: list[Path]) -> str | None:
        """The handle of an image_sum's running sum (tasks.merge.RUNNING) when every fold
        succeeded and its maps are all among ``inputs`` (else None: the maps are read)."""
        stream = self.sums[merge.name]
        if stream.running is None or not stream.handle:
            return None
        t0 = time.perf_counter()
        for _file_id, _path, future in stream.folds:
            future.wait()
        self.waited[merge.name] = time.perf_counter() - t0
        for _file_id, path, future in stream.folds:
            if not future.state.is_completed():
                exc = future.state.result(raise_on_failure=False)
                if not isinstance(exc, NotWholeCounts):
                    get_run_logger().warning("merge %s: fold of %s: %s", merge.name, path, exc)
                return None
        if not {str(p) for p in stream.running.paths} <= {str(p) for p in inputs}:
            return None
        return stream.handle

    def streamed_work(self, merge: MergePlan) -> tuple[float, float]:
        """Wall and CPU seconds of the merge's work done by streamed tasks (tree nodes,
        folds) that succeeded: the merge's own task-seconds, beside its final step's."""
        results: list[tuple[float, float]] = []
        if (tree := self.trees.get(merge.name)) is not None:
            results = [
                (r.wall_seconds, r.cpu_seconds)
                for f in tree.futures.values()
                if f.state.is_completed() and (r := f.result()) is not None
            ]
        elif (sums := self.sums.get(merge.name)) is not None:
            results = [f.result() for _i, _p, f in sums.folds if f.state.is_completed()]
        return sum(w for w, _c in results), sum(c for _w, c in results)

    def close(self) -> None:
        """Wait for what streaming launched (a run that does not merge still lets it end
        before its folders go), then release the running sums and their handles."""
        launched = [f for s in self.trees.values() for f in s.futures.values()]
        launched += [f for s in self.sums.values() for _id, _p, f in s.folds]
        for future in launched:
            future.wait()
        self._exits.close()
        for stream in self.sums.values():
            stream.running = None

    # ------------------------------------------------------------------ reuse

    def _reuse_of(self, merge: MergePlan) -> tuple[str | None, Any]:
        """The tree's config hash and how it finds kept nodes: the cache store, or the
        previous product when it covered exactly a node's leaves."""
        if self.pc is None:
            return None, None
        config = self.pc.merge_hashes[merge.name]
        store = get_store(self.pc.store)
        previous = self._previous(merge)
        held: str | None = None
        if previous is not None and previous.config_hash == config and previous.inputs:
            keys = [item.key for item in previous.inputs]
            held = node_key(config, keys, root(len(keys)), len(keys))

        def reuse(key: str) -> Path | None:
            if key == held:
                return merge.output
            files = store.lookup(key)
            return next(iter(files.values()), None) if files else None

        return config, reuse

    def _held(self, merge: MergePlan) -> frozenset[str]:
        """Files whose current key the previous product already holds (incremental merges
        add only the others)."""
        if self.pc is None:
            return frozenset()
        previous = self._previous(merge)
        if previous is None or previous.config_hash != self.pc.merge_hashes[merge.name]:
            return frozenset()
        keys = {item.key for item in previous.inputs}
        return frozenset(
            file_id
            for file_id, facts in self.pc.files.items()
            if facts.keys.get(merge.output_name) in keys
        )

    def _previous(self, merge: MergePlan) -> Manifest | None:
        """The previous product's manifest when the product is intact (hash index)."""
        assert self.pc is not None
        previous = read_manifest(merge.output)
        try:
            ok = previous is not None and previous.product_blake3 == get_store(
                self.pc.store
            ).hashes.hash(merge.output)
        except OSError:
            ok = False
        return previous if ok else None
