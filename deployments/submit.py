"""Run the pipeline through a deployment from the command line, and wait for it.

    uv run python deployments/submit.py CONFIG [-d fermipipe/on-demand] [--no-wait]
                                        [--steps a,b] [--skip-merge] [--skip-post]
                                        [--keep-intermediate] [--workers N] [--summary-json P]

Same config and flags as ``python flows/fermi.py``, but the run is a run of a deployment
(``fermipipe/on-demand`` from prefect.yaml, run by a ``fermipipe-local`` worker, or
``fermipipe/served`` from ``deployments/serve.py``): the Prefect UI offers Retry on it, and
the run goes on in the worker if this command is interrupted. Prints the flow-run id and its
UI address at once, then waits. Exit code: 0 Completed, 1 anything else, 2 config error or
unknown deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import wait_for_flow_run
from prefect.utilities.urls import url_for

from flows.cli import FLOW_NAME, add_flow_flags, check_flow_flags, flow_parameters, preflight

DEFAULT_DEPLOYMENT = f"{FLOW_NAME}/on-demand"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="deployments/submit.py",
        description="Start a fermipipe run through a deployment and wait for it.",
    )
    p.add_argument("config", help="pipeline YAML file")
    p.add_argument(
        "-d",
        "--deployment",
        default=DEFAULT_DEPLOYMENT,
        help=f"FLOW/DEPLOYMENT to run (default {DEFAULT_DEPLOYMENT}; "
        f"{FLOW_NAME}/served with deployments/serve.py)",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="print the run's id and address, do not wait"
    )
    add_flow_flags(p)
    args = p.parse_args(argv)
    check_flow_flags(p, args)
    args.dry_run = False  # for flows.cli.preflight
    return args


def submit(deployment: str, parameters: dict[str, object]) -> FlowRun:
    """Create a flow run of ``deployment``; print its id and UI address right away."""
    flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
    print(f"flow run {flow_run.name} ({flow_run.id}) of {deployment}")
    url = url_for("flow-run", obj_id=flow_run.id)
    if url:
        print(f"watch it: {url}")
    return flow_run


def wait(flow_run: FlowRun) -> FlowRun:
    """Block until the run reaches a final state (no time limit: mission runs take hours)."""
    return asyncio.run(wait_for_flow_run(flow_run.id, timeout=None))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    code = preflight(args)  # config errors now, not in the worker minutes later
    if code is not None:
        return code
    try:
        flow_run = submit(args.deployment, flow_parameters(args, args.config))
    except ObjectNotFound:
        print(
            f"fermipipe: deployment {args.deployment!r} not found: run "
            "`prefect --no-prompt deploy --all` (work pool) or "
            "`python deployments/serve.py` first",
            file=sys.stderr,
        )
        return 2
    if args.no_wait:
        return 0
    print("waiting for it to finish (Ctrl-C stops waiting, not the run)")
    try:
        final = wait(flow_run)
    except KeyboardInterrupt:
        print(f"stopped waiting; the run goes on: {flow_run.id}", file=sys.stderr)
        return 1
    state = final.state
    name = state.name if state else "unknown"
    print(f"flow run {flow_run.id}: {name}")
    if state is None or not state.is_completed():
        message = f": {state.message}" if state and state.message else ""
        print(f"fermipipe: run {name}{message}", file=sys.stderr)
        print(
            "retry it from the UI (Retry button on the run's page) or with "
            f"`prefect flow-run retry {flow_run.id}`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
