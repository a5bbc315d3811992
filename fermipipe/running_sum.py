"""Counts maps folded into running sums as the files finish (streaming image_sum).

A weekly counts map is added to a running sum as soon as its file's chain is done, so the
weekly maps need not pile up until every file is processed. Counts are whole numbers, and
sums of whole numbers are exact in int64 or float64 accumulators (below 2**53) whatever
the order, so maps are added in the order they finish — into one of ``lanes`` accumulators,
each taken by one adder at a time — and the product equals a one-pass merge. A map with a
fractional pixel is refused (:class:`NotWholeCounts`): such a sum depends on the order, and
the merge then sums the maps in plan order instead.

The parts are written in the partial-sum format of :func:`fermipipe.merge.image_sum`.
"""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np

from fermipipe import merge
from fermipipe.errors import ToolError


class NotWholeCounts(ToolError):
    """A map with a fractional pixel: its sum depends on the order of additions."""


def _whole(pixels: merge.Pixels) -> bool:
    columns = pixels.values() if isinstance(pixels, dict) else [pixels]
    for column in columns:
        a = np.asarray(column)
        if a.dtype.kind == "f" and not np.array_equal(a, np.trunc(a)):
            return False
    return True


class RunningSum:
    """Running sums of one image_sum merge (thread-safe: one adder per lane at a time)."""

    def __init__(self, first: Path, lanes: int = 1) -> None:
        with merge.open_map(first) as template:
            self._ref = merge.reference(template, Path(first))
        self._free: queue.Queue[int] = queue.Queue()
        self._acc: list[merge.Pixels | None] = [None] * max(1, lanes)
        self._covered: list[list[str]] = [[] for _ in self._acc]
        for lane in range(len(self._acc)):
            self._free.put(lane)

    def add(self, path: Path) -> None:
        """Add one map (checked against the first: same grid and EBOUNDS, whole counts)."""
        path = merge.verified(Path(path))
        lane = self._free.get()
        try:
            with merge.open_map(path) as hdul:
                merge.check(self._ref, hdul, path)
                pixels = merge.pixels(self._ref, hdul)
                if not _whole(pixels):
                    raise NotWholeCounts(
                        "image_sum", "a map with fractional counts cannot be streamed", str(path)
                    )
                acc = self._acc[lane]
                if acc is None:
                    self._acc[lane] = merge.accumulator(self._ref, pixels)
                else:
                    merge.add(acc, pixels)
            self._covered[lane].append(str(path))
        finally:
            self._free.put(lane)

    @property
    def covered(self) -> list[str]:
        return [p for lane in self._covered for p in lane]

    def write_parts(self, folder: Path, name: str) -> list[Path]:
        """One partial-sum file per used lane (then the accumulators are released)."""
        folder.mkdir(parents=True, exist_ok=True)
        parts: list[Path] = []
        for lane, acc in enumerate(self._acc):
            if acc is None:
                continue
            out = folder / f"{name}-running{lane}.npz"
            merge.save_partial(acc, self._covered[lane], out)
            parts.append(out)
            self._acc[lane] = None
        return parts

    def release(self) -> None:
        self._acc = [None] * len(self._acc)
