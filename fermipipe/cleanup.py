"""When each file of the run's work area goes: one policy, computed once from the plan.

* **After a step**: a work-area file goes once every step of the file that reads it is
  over (or the step that makes it, when none reads it), unless something reads it after the
  chain and it is not in the cache store (an uncached merge input, an output the step
  keeps). The file's steps form a graph (:mod:`fermipipe.step_graph`), so two readers may
  finish in either order: a file whose readers include one that waits for all the others
  goes with that reader's task (:attr:`Cleanup.drops`); else the flow deletes it when the
  last of them is over (:attr:`Cleanup.joins`, :class:`Joins`). The raw input, copied to a
  RAM disk just before the first step, goes after that step.
* **After every file's chain**: a failed or empty file's folder goes (nothing of it is
  merged); an ok file keeps only what the merges or the user still need.
* **After the merges**: what the user keeps is copied to the output folder, then every
  file's folder goes, and the work folder itself when nothing else is in it.

``--keep-intermediate`` keeps everything. The staging area itself (RAM disk or disk) is
created and removed by its owner, the work subflow (``flows/stagectl.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fermipipe.cache import content_hash
from fermipipe.caching import get_store
from fermipipe.fits.writing import atomic_copy
from fermipipe.plan import FilePlan, Plan
from fermipipe.step_graph import ancestors
from fermipipe.summary import FileSummary

#: Work-area files and the steps that must all be over before they go.
Join = tuple[tuple[str, ...], frozenset[int]]


@dataclass(frozen=True)
class Cleanup:
    keep: bool  # --keep-intermediate: nothing is removed
    #: file_id → per chain step, the work-area files that step's task deletes once it is
    #: done: every other step reading them is upstream of it, so over by then.
    drops: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    #: file_id → files read by steps that may finish in any order (siblings in the file's
    #: step graph), with those steps: deleted once all are over, whatever their state.
    joins: dict[str, tuple[Join, ...]] = field(default_factory=dict)
    #: file_id → work-area files read after the chain (uncached merge inputs, kept outputs).
    needed: dict[str, frozenset[str]] = field(default_factory=dict)
    #: file_id → (input, its copy in the work area) when inputs are staged (RAM disk).
    stage: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The cache store's root: a kept product stored there is linked out, not copied.
    store: str | None = None

    def after_step(self, file_id: str, k: int) -> tuple[str, ...]:
        """What step ``k``'s task deletes when done (the joins aside)."""
        steps = self.drops.get(file_id, ())
        return steps[k] if k < len(steps) else ()

    def in_order(self, file_id: str) -> tuple[tuple[str, ...], ...]:
        """Per step, what goes after it when the steps run one at a time in chain order
        (a node-local chain): a join's files after the last of its steps."""
        steps = [list(paths) for paths in self.drops.get(file_id, ())]
        for paths, after in self.joins.get(file_id, ()):
            steps[max(after)] += paths
        return tuple(tuple(paths) for paths in steps)


class Joins:
    """The flow's side of :attr:`Cleanup.joins`: told each step that is over (done, failed,
    never run), it returns the files whose steps are now all over. Used by one thread."""

    def __init__(self, policy: Cleanup) -> None:
        self._left = {
            file_id: [(paths, set(after)) for paths, after in joins]
            for file_id, joins in policy.joins.items()
        }

    def over(self, file_id: str, k: int) -> tuple[str, ...]:
        out: list[str] = []
        for paths, after in self._left.get(file_id, ()):
            if k in after:
                after.discard(k)
                out += paths if not after else ()
        return tuple(out)


def cleanup_policy(
    plan: Plan,
    *,
    keep: bool,
    stored: Iterable[str] = (),
    cached_files: Iterable[str] = (),
    stage_inputs: bool = False,
    store: str | None = None,
) -> Cleanup:
    """The run's policy. ``stored``: output placeholders kept in the cache store;
    ``cached_files``: files whose steps use the store (their stored outputs need no
    work-area copy after the step); ``stage_inputs``: copy each raw input to the work
    area just before its first step (a RAM disk) — unless that step is native: a native
    tool reads its input once, front to back, and never writes it, so a copy would only
    double the I/O (and hold a tool slot while it is made)."""
    stored, cached = set(stored), set(cached_files)
    merged = {m.output_name for m in plan.merges}
    drops: dict[str, tuple[tuple[str, ...], ...]] = {}
    joins: dict[str, tuple[Join, ...]] = {}
    needed: dict[str, frozenset[str]] = {}
    stage: dict[str, tuple[str, str]] = {}
    for fp in plan.files:
        after = _read_after_chain(fp, merged, stored if fp.file_id in cached else set())
        needed[fp.file_id] = frozenset(after)
        if not keep:
            drops[fp.file_id], joins[fp.file_id] = _step_drops(fp, plan.workdir, after)
        first = fp.chain[0].inputs.values() if fp.chain else ()
        native = bool(fp.chain) and fp.chain[0].engine == "native"
        if stage_inputs and not native and Path(fp.input) in map(Path, first):
            copy = plan.workdir / fp.file_id / "input" / Path(fp.input).name
            stage[fp.file_id] = (str(fp.input), str(copy))
    return Cleanup(keep, drops, joins, needed, stage, store)


def _read_after_chain(fp: FilePlan, merged: set[str], stored: set[str]) -> set[str]:
    """Work-area outputs of ``fp`` read after its chain and not kept in the store."""
    kept = {str(src) for src, _dest in fp.keep}
    return {
        str(path)
        for inv in fp.chain
        for name, path in inv.outputs.items()
        if (name in merged or str(path) in kept) and name not in stored
    }


def _step_drops(
    fp: FilePlan, workdir: Path, after: set[str]
) -> tuple[tuple[tuple[str, ...], ...], tuple[Join, ...]]:
    """Each work-area file goes once every step that reads it is over (the one that makes
    it, when none reads it): with the reader that waits for all the others, when one does;
    else as a join."""
    made_by = {Path(p): k for k, inv in enumerate(fp.chain) for p in inv.outputs.values()}
    upstream = ancestors(fp.needs)
    per_step: list[list[str]] = [[] for _ in fp.chain]
    joins: dict[frozenset[int], list[str]] = {}
    for path, k in made_by.items():
        if not path.is_relative_to(workdir) or str(path) in after:
            continue
        readers = frozenset(
            j for j in range(k + 1, len(fp.chain)) if path in map(Path, fp.chain[j].inputs.values())
        ) or frozenset({k})
        last = [r for r in sorted(readers) if readers - {r} <= upstream[r]]
        if last:
            per_step[last[0]].append(str(path))
        else:
            joins.setdefault(readers, []).append(str(path))
    return (
        tuple(tuple(paths) for paths in per_step),
        tuple((tuple(paths), steps) for steps, paths in joins.items()),
    )


def remove_files(paths: Iterable[str | Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def after_chains(plan: Plan, files: Iterable[FileSummary], policy: Cleanup) -> None:
    """Once every chain is done: free what no merge and no user will read."""
    if policy.keep:
        return
    for f in files:
        folder = plan.workdir / f.file_id
        needed = policy.needed.get(f.file_id, frozenset()) if f.status == "ok" else frozenset()
        if not needed:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        for root, _dirs, names in os.walk(folder):
            remove_files(p for n in names if str(p := Path(root) / n) not in needed)


def after_merges(plan: Plan, files: Iterable[FileSummary], policy: Cleanup) -> None:
    """Copy what the user keeps to the output folder, then remove every file's folder."""
    by_id = {f.file_id: f for f in files if f.status == "ok"}
    for fp in plan.files:
        if fp.file_id not in by_id:
            continue
        # Where each output is now: the store for stored outputs, else the work folder.
        now = {Path(p).name: Path(p) for r in by_id[fp.file_id].steps for p in r.outputs.values()}
        for planned, dest in fp.keep:
            src = now.get(Path(planned).name, Path(planned))
            if not src.exists() or src == Path(dest) or same_file(src, Path(dest)):
                continue
            if policy.store is not None and src.is_relative_to(policy.store):
                get_store(policy.store).materialise(src, Path(dest))  # a hard link, checked
            else:
                atomic_copy(src, dest)
    if policy.keep:
        return
    for fp in plan.files:  # only what the plan put there: <workdir>/<file_id>/
        shutil.rmtree(plan.workdir / fp.file_id, ignore_errors=True)
    with contextlib.suppress(OSError):
        plan.workdir.rmdir()  # only when nothing else is left in it


def same_file(a: Path, b: Path) -> bool:
    """True when ``b`` already holds ``a``'s bytes (same inode, or same size and content)."""
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    return sa.st_size == sb.st_size and content_hash(a) == content_hash(b)
