"""A hierarchical merge (gtltsum) as one fixed binary tree over its inputs, node by node.

The leaves are the per-file products in plan order (files that failed or were empty are
left out). The node at level ``d`` and index ``k`` covers leaves ``[k·2^d, (k+1)·2^d)``
(cut at the last leaf); a node with one child *is* that child, no merge. This is the tree a
level-by-level pairwise reduction makes — pairs (0,1), (2,3), …, an odd last one going up
unchanged — so the product is the same whether the tree is computed at the end or node by
node while the files are still being processed, and float32 livetime sums never depend on
the order in which files finish.

Every node has a key: the merge's configuration and the keys of its leaves. Complete nodes
of :data:`BATCH` leaves or more (8 consecutive weeks, the batch of the existing runner's
streaming gtltsum) are kept in the cache store, so adding or changing one week recomputes
only the nodes on that week's path to the root, and the product still equals a full merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Leaves of the smallest node kept in the cache store (a complete node of 8 weeks).
BATCH = 8


@dataclass(frozen=True, order=True)
class Node:
    level: int
    index: int

    @property
    def start(self) -> int:
        return self.index << self.level

    def stop(self, n: int) -> int:
        return min((self.index + 1) << self.level, n)

    def children(self) -> tuple[Node, Node]:
        return Node(self.level - 1, 2 * self.index), Node(self.level - 1, 2 * self.index + 1)

    def parent(self) -> Node:
        return Node(self.level + 1, self.index // 2)

    def complete(self, n: int) -> bool:
        """Covers its full ``2**level`` leaves (it stays the same when leaves are added)."""
        return self.stop(n) - self.start == 1 << self.level

    def label(self) -> str:
        return f"L{self.level}-{self.index}"


def depth(n: int) -> int:
    """The root's level for ``n`` leaves."""
    return max(0, (n - 1).bit_length())


def exists(node: Node, n: int) -> bool:
    return node.start < n


def merged(node: Node, n: int) -> bool:
    """A node that is a real pairwise merge: its right child exists."""
    return node.level > 0 and exists(node.children()[1], n)


def same_as(node: Node, n: int) -> Node:
    """The node whose product ``node`` is: a node with one child is that child."""
    while node.level > 0 and not merged(node, n):
        node = node.children()[0]
    return node


def merges(n: int) -> Iterator[Node]:
    """Every pairwise merge of the tree, children before parents (level by level)."""
    for level in range(1, depth(n) + 1):
        for index in range(((n - 1) >> level) + 1):
            node = Node(level, index)
            if merged(node, n):
                yield node


def root(n: int) -> Node:
    return same_as(Node(depth(n), 0), n)


def ready(node: Node, n: int, done: int) -> bool:
    """With the first ``done`` leaves known and made, ``node``'s leaves all are."""
    return node.stop(n) <= done


def stored(node: Node, n: int) -> bool:
    """Kept in the cache store: complete, and of at least :data:`BATCH` leaves."""
    return node.complete(n) and (1 << node.level) >= BATCH


def node_key(config_hash: str, leaf_keys: Sequence[str], node: Node, n: int) -> str:
    """The content key of ``node``: how the merge is made and which leaves it covers."""
    text = "\n".join([config_hash, *leaf_keys[node.start : node.stop(n)]])
    return hashlib.sha256(f"merge-tree-node\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class NodeJob:
    """One pairwise merge to run: ``left`` + ``right`` → ``output`` (then kept in the
    store under ``key`` when ``keep``)."""

    node: Node
    left: Path
    right: Path
    output: Path
    key: str | None
    keep: bool
    #: The merges it reads (its children, or a one-child child's child): it must wait for
    #: those launched before it.
    after: tuple[Node, ...] = ()


class TreeMerge:
    """The state of one tree merge: leaves arrive in plan order (as the files before them
    are done), :meth:`due` hands out the merges whose inputs are known.

    ``reuse(key)`` returns a kept product of a node (the cache store, or the previous
    merged product when it covered exactly that node's leaves), else None. Without
    ``config_hash`` (no cache) nothing is reused or kept.
    """

    def __init__(
        self,
        name: str,
        scratch: Path,
        config_hash: str | None = None,
        reuse: Callable[[str], Path | None] | None = None,
    ) -> None:
        self.name = name
        self.scratch = scratch
        self.config_hash = config_hash
        self.reuse = reuse or (lambda _key: None)
        self.leaves: list[Path] = []
        self.keys: list[str] = []
        self.paths: dict[Node, Path] = {}  # every merged node launched or reused
        self.reused: list[Node] = []

    def add_leaf(self, path: Path, key: str | None = None) -> None:
        self.leaves.append(Path(path))
        self.keys.append(key or "")

    def _key(self, node: Node, n: int) -> str | None:
        if self.config_hash is None or not all(self.keys[node.start : node.stop(n)]):
            return None
        return node_key(self.config_hash, self.keys, node, n)

    def path(self, node: Node, n: int) -> Path | None:
        """Where ``node``'s product is (or will be), None while it is not launched."""
        node = same_as(node, n)
        if node.level == 0:
            return self.leaves[node.index]
        return self.paths.get(node)

    def due(self, final: bool = False) -> list[NodeJob]:
        """The merges that can be launched now, children before parents: while files are
        still running, the complete nodes over the leaves known so far (they never change);
        with ``final``, every remaining node of the tree. Kept nodes are looked for from the
        top down first, so nothing below a reused node is merged again."""
        n = len(self.leaves)
        if n < 2:
            return []
        candidates = [
            node
            for level in range(depth(n), 0, -1)
            for index in range(((n - 1) >> level) + 1)
            if (node := Node(level, index)) not in self.paths
            and merged(node, n)
            and (final or node.complete(n))
        ]
        for node in candidates:  # top down
            if self._under_reused(node, n):
                continue
            key = self._key(node, n)
            kept = self.reuse(key) if key is not None else None
            if kept is not None:
                self.paths[node] = kept
                self.reused.append(node)
        jobs: list[NodeJob] = []
        suffix = "".join(self.leaves[0].suffixes[-1:]) or ".fits"
        for node in sorted(candidates):  # bottom up, each level in order
            if node in self.paths or self._under_reused(node, n):
                continue
            left, right = (self.path(c, n) for c in node.children())
            if left is None or right is None:
                continue
            output = self.scratch / f"{self.name}-{node.label()}{suffix}"
            self.paths[node] = output
            after = tuple(
                below
                for c in node.children()
                if (below := same_as(c, n)).level > 0 and below not in self.reused
            )
            jobs.append(
                NodeJob(node, left, right, output, self._key(node, n), stored(node, n), after)
            )
        return jobs

    def _under_reused(self, node: Node, n: int) -> bool:
        above = node.parent()
        while above.level <= depth(n):
            if above in self.reused:
                return True
            above = above.parent()
        return False

    def root_path(self) -> Path:
        """The merged product (once every job of ``due(final=True)`` is done)."""
        n = len(self.leaves)
        path = self.path(root(n), n)
        assert path is not None, "the tree is not finished"
        return path
