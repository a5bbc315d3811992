"""Serve the fermipipe flow as deployments, for users without a work pool or worker.

    uv run python deployments/serve.py [CONFIG ...] [--weekly | --cron EXPR] [--limit N]

This process is the worker: it polls the Prefect server and runs the flow runs of the
deployments it serves, in subprocesses, until Ctrl-C (which pauses their schedules).

* ``fermipipe/served`` — always served, no default config: start runs of it with
  ``python deployments/submit.py CONFIG -d fermipipe/served`` (or from the UI, giving
  ``config``). Because these are deployment runs, the UI offers Retry on them.
* ``fermipipe/served-<stem>`` — one per CONFIG given, with that config (made absolute) and
  the flags given here as default parameters, and the schedule of ``--weekly``/``--cron``.

The served names differ from prefect.yaml's (example, weekly, on-demand) on purpose: a served
deployment of the same name would take that deployment away from the work pool.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from fermipipe.config import load_config
from fermipipe.errors import ConfigError
from flows.cli import add_flow_flags, check_flow_flags, flow_parameters, report_config_error
from flows.fermi import fermi_pipeline

#: The FSSC publishes one photon file per mission week: re-run once a week, Friday 06:00 UTC
#: (the same schedule as prefect.yaml's ``weekly`` deployment).
WEEKLY_CRON = "0 6 * * 5"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="deployments/serve.py",
        description="Serve fermipipe deployments from this process (no work pool needed).",
    )
    p.add_argument("configs", nargs="*", metavar="CONFIG", help="pipeline YAML file(s)")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--weekly", action="store_true", help=f"run each CONFIG weekly (cron {WEEKLY_CRON!r})"
    )
    when.add_argument("--cron", help="run each CONFIG on this cron schedule")
    p.add_argument("--timezone", default="UTC", help="time zone of the schedule (default UTC)")
    p.add_argument(
        "--limit",
        type=int,
        default=1,
        help="flow runs executed at once (default 1: a run already uses every core)",
    )
    add_flow_flags(p)
    args = p.parse_args(argv)
    check_flow_flags(p, args)
    if args.limit < 1:
        p.error("--limit must be at least 1")
    if (args.weekly or args.cron) and not args.configs:
        p.error("a schedule needs at least one CONFIG to run")
    for config in args.configs:  # a bad config is refused now, not at its first run
        try:
            load_config(config, root=args.root, overrides=args.settings)
        except ConfigError as exc:
            report_config_error(exc)
            p.exit(2)
    return args


def build_deployments(args: argparse.Namespace) -> list[RunnerDeployment]:
    """The generic ``served`` deployment plus one per config (see the module docstring)."""
    cron = WEEKLY_CRON if args.weekly else args.cron
    schedules = [Cron(cron, timezone=args.timezone)] if cron else None
    deployments = [
        fermi_pipeline.to_deployment(
            name="served",
            description="fermipipe runs started from the command line (deployments/submit.py).",
            tags=["fermipipe", "served"],
        )
    ]
    for config in args.configs:
        deployments.append(
            fermi_pipeline.to_deployment(
                name=f"served-{Path(config).stem}",
                description=f"fermipipe on {Path(config).resolve()}",
                parameters=flow_parameters(args, config),
                schedules=schedules,
                tags=["fermipipe", "served"],
            )
        )
    return deployments


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    serve(*build_deployments(args), limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
