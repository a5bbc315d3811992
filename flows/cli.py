"""The command line of ``flows/fermi.py``, without Prefect.

Config errors and ``--dry-run`` are answered here, before Prefect is imported: importing
Prefect creates its home folder, and a dry run must create nothing (config errors are also
instant this way).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fermipipe.config import PipelineConfig, RunChoices, parse_steps
from fermipipe.errors import ConfigError
from fermipipe.plan import Plan, prepare, render_dry_run

#: Flow-run names and tags of runs started by the deployment helpers.
FLOW_NAME = "fermipipe"


def add_flow_flags(parser: argparse.ArgumentParser) -> None:
    """The pipeline flags (all optional), shared by ``flows/fermi.py`` and the deployment
    helpers so that a deployment run takes the same options as a direct run."""
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
    parser.add_argument(
        "--verify-cache",
        action="store_true",
        help="re-hash every cache-store object before it is used (slow; finds edited files)",
    )
    parser.add_argument(
        "--root",
        help="run root: ${root:...} and relative paths in commands and merge outputs "
        "(default: the current directory)",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override a config value before ${...} interpolation, e.g. "
        "--set input.directory=/data/weekly (repeatable)",
    )


def check_flow_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject flag values the flow would reject later, while the user is still here."""
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    for item in args.settings:
        if "=" not in item or not item.split("=", 1)[0].strip():
            parser.error(f"--set {item!r}: expected KEY=VALUE")
    args.step_list = parse_steps(args.steps)


def flow_parameters(args: argparse.Namespace, config: str | None) -> dict[str, Any]:
    """The ``fermi_pipeline`` parameters for ``config`` and the parsed flags.

    Paths are made absolute here: the flow may run in another process whose working
    directory is the repository (work pool) or the serving process's. Only flags the user set
    are included, so a deployment's own defaults stay in force.
    """
    params: dict[str, Any] = {}
    if config is not None:
        params["config"] = str(Path(config).resolve())
    if args.steps:
        params["steps"] = parse_steps(args.steps)
    for flag in ("skip_merge", "skip_post", "keep_intermediate", "verify_cache"):
        if getattr(args, flag):
            params[flag] = True
    if args.workers is not None:
        params["workers"] = args.workers
    if args.summary_json:
        params["summary_json"] = str(Path(args.summary_json).resolve())
    if args.root:
        params["root"] = str(Path(args.root).resolve())
    if args.settings:
        params["settings"] = list(args.settings)
    return params


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="flows/fermi.py", description="Run the fermipipe Fermi-LAT pipeline."
    )
    p.add_argument("config", help="pipeline YAML file")
    p.add_argument(
        "--dry-run", action="store_true", help="print every command; run and write nothing"
    )
    p.add_argument(
        "--ephemeral",
        action="store_true",
        help="use a temporary Prefect server for this run only (records are not kept); "
        "default: the local server kept running across runs (see flows/server.py)",
    )
    add_flow_flags(p)
    args = p.parse_args(argv)
    check_flow_flags(p, args)
    return args


#: The plan the command line made before Prefect loaded, for the flow run it starts in
#: this process: a plan is built once per run (key: the flow's parameters and the config
#: file's identity).
_PREPARED: dict[str, tuple[PipelineConfig, RunChoices, Plan]] = {}


def _prepared_key(config: str, **params: Any) -> str:
    try:
        st = Path(config).stat()
        identity = [str(Path(config).resolve()), st.st_mtime_ns, st.st_size]
    except OSError:
        identity = [config]
    return json.dumps([identity, params], sort_keys=True, default=str)


def load_and_plan(
    config: str,
    steps: list[str] | None = None,
    *,
    skip_merge: bool = False,
    skip_post: bool = False,
    keep_intermediate: bool = False,
    verify_cache: bool = False,
    root: str | None = None,
    settings: Sequence[str] = (),
    dry_run: bool = False,
    workers: int | None = None,
    remember: bool = False,
) -> tuple[PipelineConfig, RunChoices, Plan]:
    """Validate the config and render the whole plan (ConfigError naming every problem).

    ``remember``: keep it for the flow run this process starts next, which then takes it
    instead of building it again."""
    params = dict(
        steps=steps, skip_merge=skip_merge, skip_post=skip_post,
        keep_intermediate=keep_intermediate, verify_cache=verify_cache, root=root,
        settings=list(settings), dry_run=dry_run, workers=workers,
    )  # fmt: skip
    key = _prepared_key(config, **params)
    if (known := _PREPARED.pop(key, None)) is not None:
        return known
    cfg, _install, plan, choices = prepare(
        config,
        dry_run=dry_run,
        only_steps=steps,
        skip_merge=skip_merge,
        skip_post=skip_post,
        keep_intermediate=keep_intermediate,
        verify_cache=verify_cache,
        root=Path(root) if root else None,
        overrides=settings,
        workers=workers,
    )
    if remember:
        _PREPARED[key] = (cfg, choices, plan)
    return cfg, choices, plan


def report_config_error(exc: ConfigError) -> None:
    """Every problem of a config, one line each, on stderr."""
    for line in exc.problems or [str(exc)]:
        print(f"fermipipe: config error: {line}", file=sys.stderr)


def preflight(args: argparse.Namespace) -> int | None:
    """Exit code for a config error (2) or a finished dry run (0); None: go on and run."""
    try:
        params = flow_parameters(args, args.config)
        params.pop("summary_json", None)
        config = params.pop("config")
        _cfg, _choices, plan = load_and_plan(
            config, **params, dry_run=args.dry_run, remember=not args.dry_run
        )
    except ConfigError as exc:
        report_config_error(exc)
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


def _stopped_before_run(signum: int, _frame: Any) -> None:
    if "prefect.server.api.server" in sys.modules:  # --ephemeral: its server is started
        from flows.prefect_compat import stop_temporary_servers

        stop_temporary_servers()
    sys.stderr.write("fermipipe: stopped by Ctrl-C before the run started\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def quiet_interrupt_until_run() -> None:
    """Ctrl-C while Prefect loads or the server starts: one line, no traceback (nothing to
    clean yet). The run restores Python's handler (:func:`restore_interrupt`)."""
    signal.signal(signal.SIGINT, _stopped_before_run)


def restore_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
