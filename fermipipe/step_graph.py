"""Which steps of one file's chain wait for which: a graph, not a line.

A step waits for the earlier steps that make a file it reads (its inputs among their
outputs) — in the mission chain ccube and ltcube both wait for mktime only, so they can run
at the same time. It also waits for an earlier step that reads or writes a file it writes,
so a rewrite never overtakes a read. A step other than the first that reads no earlier
step's output waits for the step before it, as in a line: nothing declared ties it to the
chain, so whatever it depends on is undeclared (a path written literally in a shell
command, an effect outside a step's declared outputs), and its config was written for a
line. Pure: no Prefect, nothing runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fermipipe.plan import Invocation


def step_needs(chain: Sequence[Invocation]) -> tuple[tuple[int, ...], ...]:
    """Per step of ``chain``, the earlier steps (indices, ascending) it waits for."""
    reads = [{Path(p) for p in inv.inputs.values()} for inv in chain]
    writes = [{Path(p) for p in inv.outputs.values()} for inv in chain]
    needs: list[tuple[int, ...]] = []
    for k in range(len(chain)):
        made = {j for j in range(k) if reads[k] & writes[j]}
        rewritten = {j for j in range(k) if writes[k] & (reads[j] | writes[j])}
        line = {k - 1} if k and not made else set()
        needs.append(tuple(sorted(made | rewritten | line)))
    return tuple(needs)


def ancestors(needs: Sequence[Sequence[int]]) -> tuple[frozenset[int], ...]:
    """Per step, every step it waits for directly or through others."""
    out: list[frozenset[int]] = []
    for direct in needs:
        out.append(frozenset(direct).union(*(out[j] for j in direct)))
    return tuple(out)
