"""What each merge reads: the per-file products of the files that succeeded, and who is
left out (failed, empty, or rejected inputs) with the reason — named in the product."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fermipipe.plan import MergePlan, Plan
from fermipipe.summary import FileSummary


def merge_sources(
    merge: MergePlan, plan: Plan, files: Iterable[FileSummary]
) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """(file id, path) of each per-file product of ``merge``, and who is left out.

    The path is where the product is now: the cache store when the step's outputs were
    stored (a cache hit never wrote to the work folder), else its planned path.
    """
    by_id = {f.file_id: f for f in files}
    inputs: list[tuple[str, Path]] = []
    left_out: dict[str, str] = {name: f"not used: {why}" for name, why in plan.rejected.items()}
    for fp, path in zip(plan.files, merge.inputs, strict=True):
        f = by_id[fp.file_id]
        if f.status == "ok":
            actual = next(
                (r.outputs[merge.output_name] for r in f.steps if merge.output_name in r.outputs),
                str(path),
            )
            inputs.append((fp.file_id, Path(actual)))
        else:
            reason = f"failed at {f.failed_step}" if f.status == "failed" else "empty"
            left_out[fp.file_id] = f"{reason}: {(f.error or '').splitlines()[0][:120]}"
    return inputs, left_out


def merge_how(merge: MergePlan) -> str:
    """How a merge is described in its product's HISTORY (the same for full and
    incremental merges, so both give the same header)."""
    if merge.strategy == "hierarchical":
        return f"{merge.tool} tree merge"
    return "image_sum" if merge.strategy == "image_sum" else "event merge"
