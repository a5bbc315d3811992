"""flows/progress.py: the console bar (terminals only) and the Prefect progress artifact.

The artifact is checked against Prefect's test harness (a real server): created at 0 %,
updated as files finish, 100 % with the final counts at the end.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.testing.utilities import prefect_test_harness

from flows.progress import ARTIFACT_KEY, Progress


class Terminal(io.StringIO):
    """A stream that says it is a terminal (what a console run writes to)."""

    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_counts_done_failed_empty_cached() -> None:
    out = Terminal()
    p = Progress(4, stream=out, artifact=False, width=8)
    p.file_done("ok")
    p.file_done("failed")
    p.file_done("ok", cached=True)
    p.file_done("empty")
    p.close()
    frames = out.getvalue().split("\r")[1:]
    assert frames[0] == "[........] 0/4 files"
    assert frames[2] == "[####....] 2/4 files — 1 failed"
    assert frames[-1] == "[########] 4/4 files — 1 failed, 1 empty, 1 cached\n"
    assert (p.counts.done, p.counts.failed, p.counts.empty, p.counts.cached) == (4, 1, 1, 1)


def test_no_bar_when_not_a_terminal() -> None:
    out = io.StringIO()  # a pipe or a log file: no carriage-return noise
    p = Progress(2, stream=out, artifact=False)
    p.file_done("ok")
    p.file_done("ok")
    p.close()
    assert out.getvalue() == ""
    assert p.counts.percent == 100.0


def test_real_stdout_pipe_is_not_a_terminal() -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as stream:
        assert not Progress(1, stream=stream, artifact=False).tty
    os.close(read)


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=90):
        yield


def test_progress_artifact_is_updated_as_files_finish(harness: None) -> None:
    seen: list[tuple[float, str]] = []

    def latest() -> tuple[float, str]:
        with get_client(sync_client=True) as client:
            (art,) = client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
            )
        return float(art.data), str(art.description)

    @flow
    def three_files() -> None:
        p = Progress(3, stream=io.StringIO(), min_interval=0.0)
        seen.append(latest())
        p.file_done("ok")
        seen.append(latest())
        p.file_done("failed")
        p.file_done("ok", cached=True)
        p.close()
        seen.append(latest())

    three_files()
    assert seen[0] == (0.0, "0/3 files")
    assert seen[1][0] == pytest.approx(100 / 3)
    assert seen[1][1] == "1/3 files"
    assert seen[2] == (100.0, "3/3 files — 1 failed, 1 cached")
