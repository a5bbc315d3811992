"""Progress of a run as a person sees it: a Prefect progress artifact and a console bar.

The flow calls :meth:`Progress.file_done` as each file's chain finishes (whatever the task
runner). The artifact (key ``fermipipe-progress``) shows the percentage of files done and a
description such as "3/3 files — 1 failed, 2 cached"; the bar is drawn only when the stream is a
terminal (a log file or a pipe gets no carriage-return noise).

Publishing never fails a run: an API error is logged once and the artifact is dropped. An
update costs ~30 ms against a server (prefect-3-facts), so artifact updates are throttled to
one per ``min_interval`` seconds, plus the final one; the console bar is redrawn every time.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO
from uuid import UUID

ARTIFACT_KEY = "fermipipe-progress"


@dataclass
class Counts:
    total: int
    done: int = 0
    failed: int = 0
    empty: int = 0
    cached: int = 0

    def describe(self) -> str:
        """``3/3 files — 1 failed, 2 cached``: the counts that are not zero."""
        parts = [
            f"{n} {label}"
            for n, label in (
                (self.failed, "failed"),
                (self.empty, "empty"),
                (self.cached, "cached"),
            )
            if n
        ]
        return f"{self.done}/{self.total} files" + (" — " + ", ".join(parts) if parts else "")

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0


@dataclass
class Progress:
    """Counts of finished files, published to Prefect and (on a terminal) drawn as a bar.

    ``artifact=False`` keeps it out of Prefect (tests, or outside a flow run).
    """

    total: int
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    artifact: bool = True
    min_interval: float = 0.5
    logger: Any = None
    width: int = 30
    counts: Counts = field(init=False)
    artifact_id: UUID | None = field(init=False, default=None)
    _last_publish: float = field(init=False, default=0.0)
    _bar_drawn: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.counts = Counts(self.total)
        self.tty = _isatty(self.stream)
        if self.artifact:
            self._publish(force=True)
        self._draw()

    def file_done(self, status: str, *, cached: bool = False) -> None:
        """One more file finished: ``status`` ok / empty / failed; ``cached`` if nothing ran."""
        c = self.counts
        c.done += 1
        c.failed += status == "failed"
        c.empty += status == "empty"
        c.cached += bool(cached)
        self._publish(force=c.done >= c.total)
        self._draw()

    def close(self) -> None:
        """Publish the final counts and end the bar's line."""
        self._publish(force=True)
        if self.tty and self._bar_drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_drawn = False

    # ------------------------------------------------------------------ outputs

    def bar(self) -> str:
        """The console line: ``[#####.....] 2/3 files — 1 cached``."""
        c = self.counts
        filled = round(self.width * c.done / c.total) if c.total else self.width
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {c.describe()}"

    def _draw(self) -> None:
        if not self.tty:
            return
        self.stream.write("\r" + self.bar())
        self.stream.flush()
        self._bar_drawn = True

    def _publish(self, *, force: bool) -> None:
        if not self.artifact:
            return
        now = time.monotonic()
        if not force and now - self._last_publish < self.min_interval:
            return
        self._last_publish = now
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    progress=self.counts.percent,
                    key=ARTIFACT_KEY,
                    description=self.counts.describe(),
                )
            else:
                update_progress_artifact(
                    self.artifact_id,
                    progress=self.counts.percent,
                    description=self.counts.describe(),
                )
        except Exception as exc:  # noqa: BLE001 - progress must never fail a run
            self.artifact = False
            if self.logger is not None:
                self.logger.warning("progress artifact disabled: %s", exc)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
