"""The command line of ``flows/fermi.py``, without Prefect.

Config errors and ``--dry-run`` are answered here, before Prefect is imported: importing
Prefect creates its home folder, and a dry run must create nothing (config errors are also
instant this way).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from fermipipe.config import PipelineConfig, load_config
from fermipipe.errors import ConfigError
from fermipipe.fermitools import locate
from fermipipe.plan import Plan, build_plan, render_dry_run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="flows/fermi.py", description="Run the fermipipe Fermi-LAT pipeline."
    )
    p.add_argument("config", help="pipeline YAML file")
    p.add_argument(
        "--dry-run", action="store_true", help="print every command; run and write nothing"
    )
    p.add_argument("--steps", help="comma-separated steps (and merges/post steps) to run")
    p.add_argument("--skip-merge", action="store_true", help="do not merge")
    p.add_argument("--skip-post", action="store_true", help="do not run post-processing")
    p.add_argument("--keep-intermediate", action="store_true", help="keep per-file intermediates")
    p.add_argument("--workers", type=int, help="tools running at once (default: resources.cores)")
    p.add_argument("--summary-json", help="write a machine-readable run summary here")
    args = p.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        p.error("--workers must be at least 1")
    args.step_list = [s for s in args.steps.split(",") if s] if args.steps else None
    return args


def load_and_plan(
    config: str, steps: list[str] | None, *, dry_run: bool = False
) -> tuple[PipelineConfig, Plan]:
    """Validate the config and render the whole plan (ConfigError on any problem)."""
    cfg = load_config(config)
    install = locate(cfg.fermitools.prefix)
    plan = build_plan(cfg, only_steps=steps, fermitools=install, allow_missing_tools=dry_run)
    return cfg, plan


def preflight(args: argparse.Namespace) -> int | None:
    """Exit code for a config error (2) or a finished dry run (0); None: go on and run."""
    try:
        _cfg, plan = load_and_plan(args.config, args.step_list, dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"fermipipe: config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(render_dry_run(plan))
        return 0
    return None


def exit_on_sigterm() -> None:
    """Make SIGTERM end the process like ``sys.exit(143)``, running ``atexit`` handlers.

    During a flow run Prefect turns SIGTERM into an exception (our ``finally`` blocks kill
    the tools and remove the staging folder), then sends the signal again to the handler it
    found installed. With Python's default handler the process then dies without running
    ``atexit``, which is where Prefect stops the temporary server it started for a run
    without PREFECT_API_URL: that uvicorn process was left running for good, holding its
    port and the caller's stdout pipe (measured: a caller waiting for EOF hung).
    """
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
