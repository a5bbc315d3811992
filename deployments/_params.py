"""Flow parameters from command-line flags, shared by ``serve.py`` and ``submit.py``.

The flags mirror ``python flows/fermi.py`` (``--steps``, ``--skip-merge``, …) so that a run
started through a deployment takes the same options as a direct run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: Flow-run names and tags of runs started by these helpers.
FLOW_NAME = "fermipipe"


def add_flow_flags(parser: argparse.ArgumentParser) -> None:
    """Add the pipeline flags of ``flows/fermi.py`` (all optional) to ``parser``."""
    parser.add_argument("--steps", help="comma-separated steps (and merges/post steps) to run")
    parser.add_argument("--skip-merge", action="store_true", help="do not merge")
    parser.add_argument("--skip-post", action="store_true", help="do not run post-processing")
    parser.add_argument(
        "--keep-intermediate", action="store_true", help="keep per-file intermediates"
    )
    parser.add_argument(
        "--workers", type=int, help="tools running at once (default: resources.cores)"
    )
    parser.add_argument("--summary-json", help="write a machine-readable run summary here")


def check_flow_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject flag values the flow would reject later, while the user is still here."""
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")


def flow_parameters(args: argparse.Namespace, config: str | None) -> dict[str, Any]:
    """The ``fermi_pipeline`` parameters for ``config`` and the parsed flags.

    Paths are made absolute here: the flow runs in another process whose working directory is
    the repository (work pool) or the serving process's, not necessarily the caller's.
    Only flags the user set are included, so a deployment's own defaults stay in force.
    """
    params: dict[str, Any] = {}
    if config is not None:
        params["config"] = str(Path(config).resolve())
    if args.steps:
        params["steps"] = [s for s in args.steps.split(",") if s]
    for flag in ("skip_merge", "skip_post", "keep_intermediate"):
        if getattr(args, flag):
            params[flag] = True
    if args.workers is not None:
        params["workers"] = args.workers
    if args.summary_json:
        params["summary_json"] = str(Path(args.summary_json).resolve())
    return params
