"""The run summary: what happened to every file, step, merge and post-processing command.

Built by the flow from the results it holds in memory — never from Prefect's database, which
in ephemeral mode loses task-run records at exit — so it is complete whatever the server
kept. Rendered three ways: JSON (``--summary-json``), a plain-text per-step table (printed at
the end of a run) and markdown (a Prefect artifact).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fermipipe.manifest import read_manifest, sidecar_path
from fermipipe.plan import Plan
from fermipipe.runner import StepResult

#: stderr lines of a failed step shown in the failure table artifact.
FAILURE_TAIL_LINES = 5
#: Inputs listed one by one in the markdown summary (beyond: a count only).
MAX_LISTED_INPUTS = 50

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
    #: Data warnings ("step: warning") of steps not in ``steps``: carried by a skipped step
    #: that came from the cache (the empty step that warned did not run again).
    upstream_warnings: list[str] = field(default_factory=list)

    @property
    def cached(self) -> bool:
        """Every step of the file came from the cache (nothing was recomputed)."""
        return bool(self.steps) and len(self.cached_steps) == len(self.steps)

    @property
    def warnings(self) -> list[str]:
        """The data warnings of its steps ("step: warning"), in step order, each once (a
        cache hit brings its earlier steps' warnings along: those steps did not run)."""
        seen = [*self.upstream_warnings] + [
            w
            for r in self.steps
            for w in (*r.upstream_warnings, *(f"{r.step}: {text}" for text in r.warnings))
        ]
        return list(dict.fromkeys(seen))


def summarize_file(file_id: str, input: str, results: Iterable[StepResult]) -> FileSummary:
    """The one summary of a file, from its steps' results in chain order, however they ran
    (per-step tasks, a node-local chain, a bulk cache hit). A result ``from_store`` ran no
    tool; ``skipped`` ones (after an empty step) only carry that step's data warnings. Steps
    that do not wait for each other may both fail: the file failed at the first in chain
    order."""
    summary = FileSummary(file_id, input, "ok")
    for result in results:
        if result.status == "skipped":
            # Remembered as skipped after an empty earlier step: the file is empty.
            summary.upstream_warnings += result.upstream_warnings
            if summary.status == "ok":
                summary.status, summary.error = "empty", result.error
            continue
        summary.steps.append(result)
        if result.from_store:  # no tool ran for it
            summary.cached_steps.append(result.step)
        if result.status == "failed" and summary.failed_step is None:
            summary.status, summary.failed_step = "failed", result.step
            summary.error = result.error or "failed"
        elif result.status == "empty" and summary.status == "ok":
            summary.status, summary.error = "empty", f"{result.step}: {result.error}"
    return summary


def show_user_paths(summary: FileSummary, file_id: str, input: Path) -> None:
    """Name the user's input file, not its staged copy (``<work>/<file>/input/<name>`` on
    the RAM disk, gone after the run), in what the summary and the UI show of a failure."""
    staged = re.compile(r"[^\s()'\"]*/" + re.escape(file_id) + "/input/" + re.escape(input.name))

    def fix(text: str | None) -> str | None:
        return staged.sub(lambda _m: str(input), text) if text else text

    summary.error = fix(summary.error)
    for result in summary.steps:
        result.error = fix(result.error)
        result.stderr_tail = [fix(line) or "" for line in result.stderr_tail]


def show_final_paths(plan: Plan, files: Iterable[FileSummary]) -> None:
    """Make the per-file outputs of the summary name files that still exist, where the
    user finds them: a kept copy in the output folder or a product planned outside the work
    area, not the cache store; cleaned-up intermediates are gone."""
    moved = {str(src): str(dest) for fp in plan.files for src, dest in fp.keep}
    shown = {
        (fp.file_id, Path(p).name): str(p)
        for fp in plan.files
        for p in [*(dest for _src, dest in fp.keep), *(
            q for inv in fp.chain for q in inv.outputs.values()
            if not Path(q).is_relative_to(plan.workdir)
        )]
    }  # fmt: skip
    for f in files:
        for result in f.steps:
            outputs = {
                k: shown.get((f.file_id, Path(v).name), moved.get(v, v))
                for k, v in result.outputs.items()
            }
            result.outputs = {k: v for k, v in outputs.items() if Path(v).exists()}


@dataclass
class MergeSummary:
    name: str
    output: str
    strategy: str
    status: Literal["ok", "failed", "skipped"]
    inputs: int = 0
    left_out: dict[str, str] = field(default_factory=dict)  # file_id → reason (failed/empty)
    #: Task-seconds: its final step (waits aside) and its streamed tasks (tree nodes, folds).
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None
    quicklook: str | None = None  # the PNG drawn beside a merged counts map
    #: full, incremental (previous product + new inputs) or up_to_date (nothing to do)
    mode: str = "full"


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
    #: The config's ``science_models`` (references for a later likelihood stage).
    science_models: dict[str, Any] = field(default_factory=dict)
    #: Matches of the input pattern that could not be used (name → why): left out.
    rejected: dict[str, str] = field(default_factory=dict)

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

    def data_warnings(self) -> list[tuple[str, str]]:
        """(file or "(post)", "step: warning") for every data warning of the run."""
        rows = [(f.file_id, w) for f in self.files for w in f.warnings]
        rows += [("(post)", f"{p.step}: {w}") for p in self.post for w in p.warnings]
        return rows

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

    def failure_table(self) -> list[dict[str, str]]:
        """The table artifact: the user's file (its path), the step, the reason, then the
        last stderr lines — in that order, the columns a person reads first."""
        tails: dict[tuple[str, str], str] = {}
        for f in self.failed_files():
            failed = [r for r in f.steps if r.status == "failed"]
            if failed:
                tails[(f.file_id, f.failed_step or "?")] = "\n".join(
                    failed[-1].stderr_tail[-FAILURE_TAIL_LINES:]
                )
        for p in self.post:
            if p.status == "failed":
                tails[("(post)", p.step)] = "\n".join(p.stderr_tail[-FAILURE_TAIL_LINES:])
        inputs = {f.file_id: f.input for f in self.files}
        return [
            {
                "file": inputs.get(row["file"], row["file"]),
                "step": row["step"],
                "reason": row["error"],
                "stderr_tail": tails.get((row["file"], row["step"]), ""),
            }
            for row in self.failures()
        ]

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
            "started": self.started,  # epoch seconds (time.time()), as the steps' "started"
            "finished": self.finished,
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
            "data_warnings": len(self.data_warnings()),
            "outputs": self.outputs(),
            "merge_note": self.merge_note,
            "merges": [asdict(m) for m in self.merges],
            "science_models": dict(self.science_models),
            "rejected_inputs": dict(self.rejected),
            "per_file": [
                {
                    "file": f.file_id,
                    "input": f.input,
                    "status": f.status,
                    "cached_steps": f.cached_steps,
                    "error": f.error,
                    "warnings": f.warnings,
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
            + (f"{len(self.data_warnings())} data warning(s); " if self.data_warnings() else "")
            + f"wall {self.wall_seconds:.1f} s with {self.workers} workers; {self.state}"
        )
        return "\n".join(out)

    def markdown(self) -> str:
        """The run report published as a Prefect markdown artifact.

        Inputs, cached vs run, empty and failed files, the per-step time table, and each
        merged product with its manifest (the ``<product>.manifest.json`` sidecar) and its
        quick-look PNG. Local files are linked as file:// URLs (and named in full): Prefect
        serves no files, so the links work where the UI's browser sees the output folder.
        """
        d = self.to_dict()
        files = d["files"]
        run = files["processed"] - files["cached"]
        lines = [
            f"# fermipipe run: {self.state}",
            "",
            f"Config `{self.config}`, {self.workers} workers, {self.wall_seconds:.1f} s.",
            "",
            "| files | run | cached | ok | empty | failed |\n|---:|---:|---:|---:|---:|---:|\n"
            f"| {files['total']} | {run} | {files['cached']} | {files['ok']} "
            f"| {files['empty']} | {files['failed']} |",
            "",
        ]
        if self.message:
            lines += [f"**{self.message}**", ""]
        lines += self._markdown_inputs()
        lines += ["## Steps", "", "| step | total s | mean s/file | cpu s | files |"]
        lines.append("|---|---:|---:|---:|---:|")
        for r in d["steps"]:
            lines.append(
                f"| {r['step']} | {r['total_seconds']:.2f} | {r['mean_seconds_per_file']:.2f} "
                f"| {r['cpu_seconds']:.2f} | {r['files']} |"
            )
        failures = self.failures()
        if failures:
            lines += ["", "## Failures", "", "| file | step | reason |", "|---|---|---|"]
            for row in self.failure_table():
                lines.append(f"| `{row['file']}` | {row['step']} | {_cell(row['reason'])} |")
            lines += ["", "(their last stderr lines: the `fermipipe-failures` table artifact)"]
        warnings = self.data_warnings()
        if warnings:
            lines += ["", "## Data warnings", ""]
            lines += [f"- `{name}`: {_cell(text)}" for name, text in warnings]
        if self.rejected:
            lines += ["", "## Inputs that could not be used (left out)", ""]
            lines += [f"- `{name}`: {why}" for name, why in self.rejected.items()]
        empties = [f for f in self.files if f.status == "empty"]
        if empties:
            lines += ["", "## Empty files (left out of merges)", ""]
            lines += [f"- `{f.file_id}`: {f.error or 'empty'}" for f in empties]
        if self.merges or self.merge_note:
            lines += ["", "## Merged products", ""]
            if self.merge_note:
                lines += [self.merge_note, ""]
            for m in self.merges:
                lines += self._markdown_product(m)
        if self.science_models:
            lines += ["", "## Science models (from the config; not used by any step yet)", ""]
            lines += [f"- {key}: `{value}`" for key, value in self.science_models.items()]
        return "\n".join(lines) + "\n"

    def _markdown_inputs(self) -> list[str]:
        status = {
            f.file_id: ("cached" if f.cached else f.status) if f.steps else f.status
            for f in self.files
        }
        lines = ["## Inputs", ""]
        if len(self.files) > MAX_LISTED_INPUTS:
            return [*lines, f"{len(self.files)} input files (the list: --summary-json).", ""]
        lines += [f"- `{f.input}`: {status[f.file_id]}" for f in self.files]
        return [*lines, ""]

    @staticmethod
    def _markdown_product(m: MergeSummary) -> list[str]:
        left = f"; left out: {', '.join(sorted(m.left_out))}" if m.left_out else ""
        lines = [
            f"- **{m.name}** ({m.strategy}): {m.status}, {m.inputs} inputs → "
            f"{_link(m.output)}{left}" + (f" — {m.error}" if m.error else "")
        ]
        if m.status != "ok":
            return lines
        sidecar = sidecar_path(Path(m.output))
        manifest = read_manifest(Path(m.output)) if sidecar.exists() else None
        if manifest is not None:
            lines.append(
                f"  - manifest {_link(str(sidecar))}: {len(manifest.inputs)} inputs, "
                f"config {manifest.config_hash[:12]}, fermipipe {manifest.fermipipe_version}"
            )
        if m.quicklook:
            lines.append(f"  - quick-look: {_link(m.quicklook)}")
            if image := inline_png(Path(m.quicklook)):
                lines += ["", f"![quick-look of {m.name}]({image})", ""]
        return lines


#: Largest PNG embedded in the summary (base64 grows it by a third; the API stores it).
MAX_INLINE_PNG = 1_000_000


def inline_png(png: Path) -> str | None:
    """``png`` as a ``data:`` URL, or None (missing, unreadable or too large).

    The Prefect UI runs in a browser, which refuses ``file://`` images from an http page,
    and the Prefect server serves no files: an image inside the markdown itself is what
    the UI shows wherever it runs."""
    try:
        data = png.read_bytes()
    except OSError:
        return None
    if len(data) > MAX_INLINE_PNG or not data.startswith(b"\x89PNG"):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _cell(text: str) -> str:
    """Text made safe for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _link(path: str) -> str:
    """A markdown link to a local file (file:// URL) showing its full path."""
    p = Path(path)
    uri = p.resolve().as_uri() if p.is_absolute() or p.exists() else path
    return f"[`{path}`]({uri})"
