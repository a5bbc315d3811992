"""The execution plan: config × input files → concrete invocations.

This module's dataclasses are the contract between the config/plan layer and the runner and
Prefect layers (``tasks/``, ``flows/``). Data flows one way: config → plan → tasks → products.
Nothing here runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Engine = Literal["native", "fermitools", "shell"]


@dataclass(frozen=True)
class Invocation:
    """One step applied to one input file (or one merge/post-processing command).

    ``engine`` says how the runner executes it:
    - ``native``: ``fermipipe.native.run_tool(tool, params)`` in-process.
    - ``fermitools``: ``argv`` (a list, never a shell string) in a subprocess with a private
      PFILES and working directory.
    - ``shell``: ``shell`` is a templated command whose substituted values are already
      shell-quoted; run with ``/bin/sh -c`` in its own process group.
    """

    step: str
    file_id: str
    engine: Engine
    tool: str | None = None  # Fermitools tool name when known (gtselect, gtbin, ...)
    params: dict[str, str] = field(default_factory=dict)  # key=value, for native and argv
    argv: tuple[str, ...] | None = None
    shell: str | None = None
    inputs: dict[str, Path] = field(default_factory=dict)  # name → file read
    outputs: dict[str, Path] = field(default_factory=dict)  # name → file written
    timeout: float | None = None  # seconds
    max_parallel: int | None = None  # per-step cap below resources.cores

    def render(self) -> str:
        """The command line a user would type (for --dry-run and logs)."""
        if self.shell is not None:
            return self.shell
        import shlex

        if self.argv is not None:
            return shlex.join(self.argv)
        return shlex.join([self.tool or self.step, *(f"{k}={v}" for k, v in self.params.items())])


@dataclass(frozen=True)
class FilePlan:
    """The chain of invocations for one input file, in step order."""

    file_id: str
    input: Path
    chain: tuple[Invocation, ...]
    cleanup: tuple[Path, ...] = ()  # intermediates removed after the chain (unless kept)


@dataclass(frozen=True)
class MergePlan:
    """One merge: per-file outputs named ``output_name`` → one merged product."""

    name: str
    output_name: str  # the step output placeholder being merged, e.g. chunk_ccube
    output: Path
    strategy: Literal["image_sum", "hierarchical", "ftmerge"]
    tool: str | None = None  # pairwise tool for hierarchical, e.g. gtltsum
    engine: Engine = "native"


@dataclass(frozen=True)
class Plan:
    files: tuple[FilePlan, ...]
    merges: tuple[MergePlan, ...]
    post: tuple[Invocation, ...]
    workdir: Path  # intermediates (RAM disk or disk)
    outdir: Path  # merged products and kept per-file products
