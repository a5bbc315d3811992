"""The gtltsum tree (fermipipe.merge_tree): its shape, streaming order and node reuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from fermipipe.merge import next_level
from fermipipe.merge_tree import BATCH, Node, NodeJob, TreeMerge, depth, merges, node_key, root


def run_tree(tree: TreeMerge, jobs: list[NodeJob], done: dict[Path, tuple[str, ...]]) -> None:
    """'Merge' each job: its output holds the leaves of its two inputs, in order. A job may
    read only leaves and the outputs of the merges it says it waits for (``after``)."""
    for job in jobs:
        assert job.left in done and job.right in done, "a job before its inputs"
        waited = {leaf for leaf in tree.leaves} | {tree.paths[a] for a in job.after}
        waited |= {tree.paths[r] for r in tree.reused}
        assert {job.left, job.right} <= waited, f"{job.node} reads a merge it does not wait for"
        done[job.output] = done[job.left] + done[job.right]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 16, 23, 24, 40])
def test_the_tree_is_the_level_by_level_pairwise_reduction(n: int, tmp_path: Path) -> None:
    leaves = [tmp_path / f"w{i}.fits" for i in range(n)]
    # The pairs a level-by-level reduction (fermipipe.merge.next_level) makes…
    level, pairs, d = list(leaves), [], 1
    while len(level) > 1:
        jobs, level = next_level(level, tmp_path, "lt", d)
        pairs += [(j.left.name, j.right.name) for j in jobs]
        d += 1
    # …are the tree's merges, in the same order.
    tree = TreeMerge("lt", tmp_path)
    for leaf in leaves:
        tree.add_leaf(leaf)
    jobs = tree.due(final=True)
    assert [(j.left.name, j.right.name) for j in jobs] == pairs
    assert [j.node for j in jobs] == list(merges(n))
    done = {leaf: (leaf.name,) for leaf in leaves}
    run_tree(tree, jobs, done)
    assert done[tree.root_path()] == tuple(leaf.name for leaf in leaves)
    assert root(n).level == (depth(n) if n > 1 else 0)


@pytest.mark.parametrize("n", [13, 24])
def test_streaming_launches_only_complete_nodes_then_finishes(n: int, tmp_path: Path) -> None:
    leaves = [tmp_path / f"w{i}.fits" for i in range(n)]
    tree = TreeMerge("lt", tmp_path)
    done = {leaf: (leaf.name,) for leaf in leaves}
    launched: list[Node] = []
    for leaf in leaves:  # as files finish, in plan order
        tree.add_leaf(leaf)
        jobs = tree.due()
        assert all(j.node.complete(len(tree.leaves)) for j in jobs)
        launched += [j.node for j in jobs]
        run_tree(tree, jobs, done)
    # Every complete node was merged while streaming, the right edge at the end.
    assert sorted(launched) == sorted(nd for nd in merges(n) if nd.complete(n))
    if n == 13:  # 6 pairs, 3 quads, 1 octet; then L3-1 (w8..w12) and the root
        assert len(launched) == 10
    final = tree.due(final=True)
    run_tree(tree, final, done)
    assert {j.node for j in final} == {nd for nd in merges(n) if not nd.complete(n)}
    if n == 24:  # the root reads L3-2 (16..23) through L4-1, a node with one child
        assert final[-1].node == Node(5, 0) and Node(3, 2) in final[-1].after
    assert done[tree.root_path()] == tuple(leaf.name for leaf in leaves)


def test_kept_nodes_are_reused_from_the_top_down(tmp_path: Path) -> None:
    n = 2 * BATCH + 3
    keys = [f"k{i}" for i in range(n)]
    leaves = [tmp_path / f"w{i}.fits" for i in range(n)]
    first = TreeMerge("lt", tmp_path / "a", config_hash="cfg")
    for leaf, key in zip(leaves, keys, strict=True):
        first.add_leaf(leaf, key)
    jobs = first.due(final=True)
    kept = {j.key: j.output for j in jobs if j.keep}
    # Only complete nodes of BATCH leaves or more are kept: two batches and their parent.
    assert sorted((j.node.level, j.node.index) for j in jobs if j.keep) == [(3, 0), (3, 1), (4, 0)]

    # The same weeks and one more: the kept 16-week node is reused whole, nothing under it
    # is merged again; only the new right edge is.
    second = TreeMerge("lt", tmp_path / "b", config_hash="cfg", reuse=kept.get)
    for leaf, key in zip([*leaves, tmp_path / "new.fits"], [*keys, "k-new"], strict=True):
        second.add_leaf(leaf, key)
    again = second.due(final=True)
    assert second.reused == [Node(4, 0)]
    assert all(j.node.start >= 2 * BATCH for j in again if j.node != Node(5, 0))
    assert len(again) == 4  # (16,17) (18,new) their parent, and the root

    # A changed week inside the first batch: its batch and the 16-week node are merged
    # again (their keys changed); the second batch is reused.
    changed = [*keys]
    changed[3] = "k3-changed"
    third = TreeMerge("lt", tmp_path / "c", config_hash="cfg", reuse=kept.get)
    for leaf, key in zip(leaves, changed, strict=True):
        third.add_leaf(leaf, key)
    redo = third.due(final=True)
    assert third.reused == [Node(3, 1)]
    assert Node(3, 0) in {j.node for j in redo} and Node(4, 0) in {j.node for j in redo}


def test_a_node_key_names_its_leaves_only() -> None:
    keys = [f"k{i}" for i in range(12)]
    node = Node(3, 0)  # leaves 0..7
    assert node_key("c", keys, node, 12) == node_key("c", keys[:8], node, 8)
    assert node_key("c", keys, node, 12) != node_key("d", keys, node, 12)
    other = [*keys]
    other[9] = "changed"  # outside the node
    assert node_key("c", other, node, 12) == node_key("c", keys, node, 12)
    other[2] = "changed"
    assert node_key("c", other, node, 12) != node_key("c", keys, node, 12)
