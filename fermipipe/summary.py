"""The run summary: what happened to every file, step, merge and post-processing command.

Built by the flow from the results it holds in memory — never from Prefect's database, which
in ephemeral mode loses task-run records at exit — so it is complete whatever the server
kept. Rendered three ways: JSON (``--summary-json``), a plain-text per-step table (printed at
the end of a run) and markdown (a Prefect artifact).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fermipipe.runner import StepResult

FileStatus = Literal["ok", "empty", "failed", "cached"]


@dataclass
class FileSummary:
    """One input file: its overall status and the results of the steps that ran."""

    file_id: str
    input: str
    status: Literal["ok", "empty", "failed"]
    steps: list[StepResult] = field(default_factory=list)
    cached_steps: list[str] = field(default_factory=list)  # steps Prefect served from cache
    failed_step: str | None = None
    error: str | None = None  # why it failed or is empty (one line)

    @property
    def cached(self) -> bool:
        """Every step of the file came from the cache (nothing was recomputed)."""
        return bool(self.steps) and len(self.cached_steps) == len(self.steps)


@dataclass
class MergeSummary:
    name: str
    output: str
    strategy: str
    status: Literal["ok", "failed", "skipped"]
    inputs: int = 0
    left_out: dict[str, str] = field(default_factory=dict)  # file_id → reason (failed/empty)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None


@dataclass
class StepStats:
    step: str
    files: int
    total_wall: float
    total_cpu: float

    @property
    def mean_wall(self) -> float:
        return self.total_wall / self.files if self.files else 0.0


@dataclass
class RunSummary:
    config: str
    workers: int
    started: float
    finished: float = 0.0
    files: list[FileSummary] = field(default_factory=list)
    merges: list[MergeSummary] = field(default_factory=list)
    post: list[StepResult] = field(default_factory=list)
    merge_note: str | None = None  # why merging did not run, when it did not
    state: Literal["Completed", "Failed"] = "Completed"
    message: str = ""

    # ---------------------------------------------------------------- derived views

    @property
    def wall_seconds(self) -> float:
        return max(0.0, self.finished - self.started)

    def count(self, status: FileStatus) -> int:
        if status == "cached":
            return sum(1 for f in self.files if f.cached)
        return sum(1 for f in self.files if f.status == status)

    def failed_files(self) -> list[FileSummary]:
        return [f for f in self.files if f.status == "failed"]

    def failures(self) -> list[dict[str, str]]:
        """Rows file, step, error for every failed file, merge and post command."""
        rows = [
            {"file": f.file_id, "step": f.failed_step or "?", "error": f.error or ""}
            for f in self.failed_files()
        ]
        rows += [
            {"file": "(merge)", "step": m.name, "error": m.error or ""}
            for m in self.merges
            if m.status == "failed"
        ]
        rows += [
            {"file": "(post)", "step": p.step, "error": p.error or ""}
            for p in self.post
            if p.status == "failed"
        ]
        return rows

    def step_stats(self) -> list[StepStats]:
        """Per-step totals over the results that actually ran a tool, in first-seen order."""
        stats: dict[str, StepStats] = {}
        results: Iterable[StepResult] = (
            r for f in self.files for r in f.steps if r.status in ("ok", "empty", "failed")
        )
        for r in results:
            s = stats.setdefault(r.step, StepStats(r.step, 0, 0.0, 0.0))
            s.files += 1
            s.total_wall += r.wall_seconds
            s.total_cpu += r.cpu_seconds
        for m in self.merges:
            if m.status != "skipped":
                stats[f"merge:{m.name}"] = StepStats(
                    f"merge:{m.name}", 1, m.wall_seconds, m.cpu_seconds
                )
        for p in self.post:
            s = stats.setdefault(f"post:{p.step}", StepStats(f"post:{p.step}", 0, 0.0, 0.0))
            s.files += 1
            s.total_wall += p.wall_seconds
            s.total_cpu += p.cpu_seconds
        return list(stats.values())

    def step_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "step": s.step,
                "total_seconds": round(s.total_wall, 3),
                "mean_seconds_per_file": round(s.mean_wall, 3),
                "cpu_seconds": round(s.total_cpu, 3),
                "files": s.files,
            }
            for s in self.step_stats()
        ]

    def outputs(self) -> dict[str, Any]:
        return {
            "merged": {m.name: m.output for m in self.merges if m.status == "ok"},
            "per_file": {
                f.file_id: {k: v for r in f.steps for k, v in r.outputs.items()}
                for f in self.files
                if f.status == "ok"
            },
            "post": {p.step: p.outputs for p in self.post if p.status == "ok"},
        }

    # ---------------------------------------------------------------- renderings

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "state": self.state,
            "message": self.message,
            "workers": self.workers,
            "wall_seconds": round(self.wall_seconds, 3),
            "files": {
                "total": len(self.files),
                "processed": sum(1 for f in self.files if f.steps),
                "ok": self.count("ok"),
                "empty": self.count("empty"),
                "failed": self.count("failed"),
                "cached": self.count("cached"),
            },
            "steps": self.step_rows(),
            "failures": self.failures(),
            "outputs": self.outputs(),
            "merge_note": self.merge_note,
            "merges": [asdict(m) for m in self.merges],
            "per_file": [
                {
                    "file": f.file_id,
                    "input": f.input,
                    "status": f.status,
                    "cached_steps": f.cached_steps,
                    "error": f.error,
                    "steps": [asdict(r) for r in f.steps],
                }
                for f in self.files
            ],
            "post": [asdict(p) for p in self.post],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def breakdown_text(self) -> str:
        """The per-step table printed at the end of a run."""
        rows = self.step_rows()
        head = ("step", "total s", "mean s/file", "cpu s", "files")
        body = [
            (
                r["step"],
                f"{r['total_seconds']:.2f}",
                f"{r['mean_seconds_per_file']:.2f}",
                f"{r['cpu_seconds']:.2f}",
                str(r["files"]),
            )
            for r in rows
        ]
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

        def line(cells: tuple[str, ...]) -> str:
            first = cells[0].ljust(widths[0])
            rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
            return "  ".join((first, *rest))

        out = [line(head), line(tuple("-" * w for w in widths)), *(line(b) for b in body)]
        out.append(
            f"files: {len(self.files)} — ok {self.count('ok')}, empty {self.count('empty')}, "
            f"failed {self.count('failed')}, cached {self.count('cached')}; "
            f"wall {self.wall_seconds:.1f} s with {self.workers} workers; {self.state}"
        )
        return "\n".join(out)

    def markdown(self) -> str:
        """The run report published as a Prefect markdown artifact."""
        d = self.to_dict()
        files = d["files"]
        lines = [
            f"# fermipipe run: {self.state}",
            "",
            f"Config `{self.config}`, {self.workers} workers, {self.wall_seconds:.1f} s.",
            "",
            f"| files | ok | empty | failed | cached |\n|---|---|---|---|---|\n"
            f"| {files['total']} | {files['ok']} | {files['empty']} | {files['failed']} "
            f"| {files['cached']} |",
            "",
        ]
        if self.message:
            lines += [f"**{self.message}**", ""]
        lines += ["## Steps", "", "| step | total s | mean s/file | cpu s | files |"]
        lines.append("|---|---:|---:|---:|---:|")
        for r in d["steps"]:
            lines.append(
                f"| {r['step']} | {r['total_seconds']:.2f} | {r['mean_seconds_per_file']:.2f} "
                f"| {r['cpu_seconds']:.2f} | {r['files']} |"
            )
        failures = self.failures()
        if failures:
            lines += ["", "## Failures", "", "| file | step | error |", "|---|---|---|"]
            for row in failures:
                error = row["error"].replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {row['file']} | {row['step']} | {error} |")
        empties = [f for f in self.files if f.status == "empty"]
        if empties:
            lines += ["", "## Empty files (left out of merges)", ""]
            lines += [f"- `{f.file_id}`: {f.error or 'empty'}" for f in empties]
        if self.merges or self.merge_note:
            lines += ["", "## Merged products", ""]
            if self.merge_note:
                lines += [self.merge_note, ""]
            for m in self.merges:
                left = f"; left out: {', '.join(sorted(m.left_out))}" if m.left_out else ""
                lines.append(
                    f"- **{m.name}** ({m.strategy}): {m.status}, {m.inputs} inputs → "
                    f"`{m.output}`{left}" + (f" — {m.error}" if m.error else "")
                )
        return "\n".join(lines) + "\n"
