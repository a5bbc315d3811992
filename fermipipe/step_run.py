"""One step of one file, the one way both execution paths run it.

The per-step Prefect task (``tasks/steps.py``) and the node-local chain (``tasks/chain.py``)
both call :func:`run_file_step`: skip after an empty or failed upstream step, take the
result from the cache store or run the tool (staging the raw input on a RAM disk first),
store it, then delete the work-area files the cleanup policy says are done with.

One retry policy (:data:`RETRY_DELAYS`, :func:`is_transient`): a transient failure (an I/O
error, the Fermitools' parameter-file race) is tried again after each delay; a
deterministic one (bad data) never is. The per-step task hands it to Prefect's task
retries; the chain, which runs its steps inside one task, applies it with
:func:`with_retries`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fermipipe import runner
from fermipipe.caching import (
    StepCache,
    materialise_inputs,
    remember_skipped,
    run_cached,
)
from fermipipe.cleanup import remove_files
from fermipipe.fits.writing import atomic_copy
from fermipipe.plan import Invocation, relocate
from fermipipe.runner import StepFailedError, StepResult

#: Seconds before the first and the second retry of a transient failure (backoff).
RETRY_DELAYS: list[float] = [2.0, 10.0]


def is_transient(exc: BaseException | None) -> bool:
    """Worth retrying: a failed step whose failure was classified transient."""
    return isinstance(exc, StepFailedError) and exc.result.failure_kind == "transient"


def with_retries(attempt: Callable[[], StepResult]) -> StepResult:
    """``attempt()`` again after each of :data:`RETRY_DELAYS` while it fails transiently;
    the last failure's result is returned (not raised)."""
    for delay in [*RETRY_DELAYS, None]:
        try:
            return attempt()
        except StepFailedError as exc:
            if delay is None or not is_transient(exc):
                return exc.result
            time.sleep(delay)
    raise AssertionError("unreachable")


def run_file_step(
    inv: Invocation,
    upstream: Sequence[StepResult],
    *,
    run: runner.RunSpec | str,
    order: int,
    step_index: int,
    logger: Any,
    cache: StepCache | None = None,
    drops: tuple[str, ...] = (),
    stage: tuple[str, str] | None = None,
) -> StepResult:
    """Run ``inv`` unless one of ``upstream`` (the results of the file's steps it waits
    for, :mod:`fermipipe.step_graph`) was not ok (then: ``skipped``).

    A failed tool raises :class:`StepFailedError`; an empty product returns a result with
    status ``empty``. ``order``/``step_index`` set the priority of the concurrency slot
    (earlier files' next steps go first). ``cache`` (None: no caching): see
    :mod:`fermipipe.caching`; ``drops``: work-area files deleted after this step;
    ``stage``: (input, copy) — the input is copied there just before the tool runs.
    """
    if not_ok := next((r for r in upstream if r.status != "ok"), None):
        skipped = inherit(
            StepResult(
                inv.step,
                inv.file_id,
                "skipped",
                inv.render(),
                error=f"upstream step {not_ok.step} was {not_ok.status}"
                + (f" ({not_ok.error})" if not_ok.error else ""),
            ),
            upstream,
        )
        if cache is not None and cache.stored:
            remember_skipped(inv, cache, skipped)
        return skipped

    def execute() -> StepResult:
        return inherit(_execute(inv, run, order, step_index, logger, stage), upstream)

    if cache is None:
        result = execute()
    elif cache.stored:
        result = run_cached(inv, cache, execute, logger)
    elif not cache.needed:
        logger.info("%s: not needed (every consumer is cached)", inv.step)
        return StepResult(inv.step, inv.file_id, "ok", inv.render(), from_store=True)
    else:
        materialise_inputs(cache)
        result = execute()
    remove_files(drops)
    return result


def inherit(result: StepResult, upstream: Sequence[StepResult]) -> StepResult:
    """``result`` with the data warnings of the file's steps upstream of it (see
    StepResult), each once (two upstream steps may share theirs)."""
    seen = [
        w for r in upstream for w in (*r.upstream_warnings, *(f"{r.step}: {w}" for w in r.warnings))
    ]
    result.upstream_warnings = list(dict.fromkeys(seen))
    return result


def _execute(
    inv: Invocation,
    run: runner.RunSpec | str,
    order: int,
    step_index: int,
    logger: Any,
    stage: tuple[str, str] | None,
) -> StepResult:
    ctx = runner.get_run(run)
    staged: Path | None = None
    copy: Callable[[], Path] | None = None
    if stage is not None and (moved := relocate(inv, Path(stage[0]), Path(stage[1]))):
        staged, inv = Path(stage[1]), moved

        def copy() -> Path:  # once the tool's slot is granted: few copies at a time
            return atomic_copy(stage[0], stage[1])

    try:
        result = runner.run_invocation(
            inv,
            log_path=ctx.log_path(inv.file_id),
            logger=logger,
            scratch=ctx.scratch,
            pool=ctx.pool,
            priority=(order, -step_index),
            env=ctx.env,
            prepare=copy,
            native=ctx.native,
        )
    finally:
        if staged is not None:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
    if result.status == "failed":
        # A data warning under on_data_warning: fail is already deterministic (runner).
        result.failure_kind = result.failure_kind or runner.classify_failure(result)
        if result.failure_kind == "transient":
            logger.warning("%s — transient failure: retried with backoff", result.describe())
        else:
            logger.error("%s — deterministic failure (bad data?): not retried", result.describe())
        raise StepFailedError(result)
    if result.status == "empty":
        logger.warning("%s — left out of merges", result.describe())
    return result
