"""Merges fed while the files are processed (``resources.stream_merge``, default on).

As each file's chain finishes, :meth:`MergeStreams.file_done` hands its products to the
merges, which start working at once instead of after the last file:

* a **hierarchical** merge (gtltsum) runs its fixed tree (:mod:`fermipipe.merge_tree`) node
  by node: a node is launched as a ``merge-pair`` task when its leaves — the files before it
  in plan order — are all done; complete nodes of 8 or more weeks are kept in the cache
  store, so a rerun recomputes only the nodes on a changed week's path;
* an **image_sum** merge folds each weekly counts map into a running sum as a ``fold`` task
  (:mod:`fermipipe.running_sum`: whole counts, exact in any order), so the weekly maps can go.

What is left — the right edge of a tree, maps not folded — is done by the products stage
(flows/products.py), which finishes every merge the same way with or without streaming.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger

from fermipipe import runner
from fermipipe.caching import get_store
from fermipipe.manifest import read_manifest
from fermipipe.merge_tree import Node, NodeJob, TreeMerge, node_key, root
from fermipipe.plan import MergePlan, Plan
from fermipipe.product_cache import ProductCache
from fermipipe.running_sum import NotWholeCounts, RunningSum
from fermipipe.summary import FileSummary
from flows.prefect_compat import InProcess
from tasks.merge import fold_map, merge_pair

#: Running sums the fold tasks add to, by handle (they live in this process: counts maps
#: summed in memory, never a file per week).
RUNNING: InProcess[RunningSum] = InProcess("running sum")


@dataclass
class TreeStream:
    merge: MergePlan
    tree: TreeMerge
    futures: dict[Node, PrefectFuture[Any]] = field(default_factory=dict)


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
        self._registered: list[Any] = []

    # ----------------------------------------------------------------- feeding

    def file_done(self, summary: FileSummary) -> None:
        """A file's chain is over (ok, empty or failed): feed the merges what they can take."""
        i = self.position.get(summary.file_id)
        if i is None or self.summaries[i] is not None:
            return
        self.summaries[i] = summary
        if not self.streaming:
            return
        for stream in self.sums.values():
            self._fold(stream, summary)
        while self.prefix < len(self.summaries) and self.summaries[self.prefix] is not None:
            done = self.summaries[self.prefix]
            assert done is not None
            for stream in self.trees.values():
                self._add_leaf(stream, done)
            self.prefix += 1
        for stream in self.trees.values():
            self._launch(stream, stream.tree.due())

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

    def _launch(self, stream: TreeStream, jobs: list[NodeJob]) -> None:
        merge = stream.merge
        assert merge.tool is not None
        if jobs:
            jobs[0].output.parent.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            waits = [stream.futures[c] for c in job.node.children() if c in stream.futures]
            keep = (self.pc.store, job.key) if job.keep and job.key and self.pc else None
            stream.futures[job.node] = merge_pair.with_options(
                task_run_name=f"merge:{merge.name}[{job.node.label()}]"
            ).submit(
                job,
                tool=merge.tool,
                engine=merge.engine,
                step=f"merge:{merge.name}",
                timeout=merge.timeout,
                run=self.run,
                keep=keep,
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
            ctx = RUNNING.passing(stream.running)
            stream.handle = ctx.__enter__()
            self._registered.append(ctx)
        future = fold_map.submit(stream.handle, path, merge=stream.merge.name, run=self.run)
        stream.folds.append((summary.file_id, path, future))

    # ------------------------------------------------------------------ finishing

    def tree_product(self, merge: MergePlan, leaves: list[tuple[str, Path]]) -> Path:
        """Finish a hierarchical merge's tree over ``leaves`` (file id, path, in plan order):
        launch what streaming did not, wait for every node, return the root's file."""
        stream = self.trees[merge.name]
        tree = stream.tree
        known = len(tree.leaves)
        if [str(p) for p in tree.leaves] != [str(p) for _id, p in leaves[:known]]:
            raise RuntimeError(f"merge {merge.name}: streamed leaves differ from the inputs")
        for file_id, path in leaves[known:]:
            tree.add_leaf(path, self._leaf_key(merge, file_id))
        self._launch(stream, tree.due(final=True))
        for future in stream.futures.values():
            future.result()  # raises the first failed pair
        return tree.root_path()

    def folded(self, merge: MergePlan) -> tuple[RunningSum | None, list[tuple[str, Path]]]:
        """A streamed image_sum's running sum and the (file id, map) it holds, once every
        fold is done (None: nothing folded, or a fold failed: the maps are read again)."""
        stream = self.sums[merge.name]
        done: list[tuple[str, Path]] = []
        ok = True
        for file_id, path, future in stream.folds:
            state = future.wait() or future.state
            if future.state.is_completed():
                done.append((file_id, path))
            else:
                ok = False
                exc = future.state.result(raise_on_failure=False)
                if not isinstance(exc, NotWholeCounts):
                    get_run_logger().warning("merge %s: fold of %s: %s", merge.name, path, exc)
            del state
        if not ok or stream.running is None:
            return None, []
        return stream.running, done

    def close(self) -> None:
        """Release the running sums (their memory) and their handles."""
        for ctx in self._registered:
            ctx.__exit__(None, None, None)
        self._registered.clear()
        for stream in self.sums.values():
            if stream.running is not None:
                stream.running.release()
                stream.running = None

    # ------------------------------------------------------------------ reuse

    def _reuse_of(self, merge: MergePlan) -> tuple[str | None, Any]:
        """The tree's config hash and how it finds kept nodes: the cache store, or the
        previous product when it covered exactly a node's leaves."""
        if self.pc is None:
            return None, None
        config = self.pc.merge_hashes[merge.name]
        store = get_store(self.pc.store)
        previous = read_manifest(merge.output, check_product=True)
        held: str | None = None
        if previous is not None and previous.config_hash == config and previous.inputs:
            keys = [item.key for item in previous.inputs]
            held = node_key(config, keys, root(len(keys)), len(keys))

        def reuse(key: str) -> Path | None:
            if key == held:
                return merge.output
            files = store.lookup(f"tree-{key}")
            return next(iter(files.values()), None) if files else None

        return config, reuse

    def _held(self, merge: MergePlan) -> frozenset[str]:
        """Files whose current key the previous product already holds (incremental merges
        add only the others)."""
        if self.pc is None:
            return frozenset()
        previous = read_manifest(merge.output, check_product=True)
        if previous is None or previous.config_hash != self.pc.merge_hashes[merge.name]:
            return frozenset()
        keys = {item.key for item in previous.inputs}
        return frozenset(
            file_id
            for file_id, facts in self.pc.files.items()
            if facts.keys.get(merge.output_name) in keys
        )
