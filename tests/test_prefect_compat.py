"""One test per Prefect workaround in flows/prefect_compat.py, against the installed Prefect:
each shows the workaround still does what it claims (and so that the Prefect internal it
relies on is still there). Run this file first after a Prefect upgrade.

Covered elsewhere, end to end (not repeated here):
* ``stop_temporary_servers`` stopping a running temporary server after SIGTERM:
  tests/test_shutdown.py::test_sigterm_without_a_server_leaves_no_temporary_server.
* ``settings_serialized_once`` in a whole pipeline run on a Dask cluster:
  tests/test_dask.py::test_example_on_dask_equals_local_run (fast_submission).
* ``dask_client_if_connected`` stopping tools on real workers:
  tests/test_dask.py::test_sigterm_stops_the_runs_tools_on_the_workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from typing import Any

import pytest
from pipeline_project import REPO

from flows import prefect_compat
from flows.prefect_compat import (
    CHECKED_AGAINST,
    InProcess,
    PrefectVersionWarning,
    UnknownHandle,
    check_prefect_version,
    named_copy,
    no_subflow_heartbeat,
)

pytestmark = pytest.mark.timeout(120)


def test_installed_prefect_is_the_checked_version_and_another_warns_once() -> None:
    # Fails after a Prefect upgrade on purpose: re-check this file, then CHECKED_AGAINST.
    assert check_prefect_version() is None, check_prefect_version()
    major, minor, *_ = CHECKED_AGAINST.split(".")
    assert check_prefect_version(f"{major}.{minor}.999") is None  # a patch release: fine
    other = f"{int(major) + 1}.0.{uuid.uuid4().int % 1000}"
    with pytest.warns(PrefectVersionWarning, match=f"this is {other}"):
        message = check_prefect_version(other)
    assert message is not None and CHECKED_AGAINST in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_prefect_version(other) == message  # said once: no second warning


def test_settings_serialized_once_gives_the_task_the_same_settings(
    prefect_server: dict[str, str],
) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.context import SettingsContext
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, get_current_settings
    from prefect.settings.context import temporary_settings
    from prefect_dask import DaskTaskRunner

    @task(cache_policy=NO_CACHE)
    def settings_seen(i: int) -> dict[str, Any]:
        return get_current_settings().model_dump(mode="json")

    original = SettingsContext.serialize
    in_process = DaskTaskRunner(  # real Dask, its worker threads in this process: quick
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"processes": False, "n_workers": 1, "dashboard_address": None},
    )

    @flow(task_runner=in_process)
    def submit_five() -> tuple[dict[str, Any], list[dict[str, Any]], int, int]:
        with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 7}):  # not the default
            with prefect_compat.settings_serialized_once() as count:
                futures = [settings_seen.submit(i) for i in range(5)]
            ours = get_current_settings().model_dump(mode="json")
        return ours, [f.result() for f in futures], count.calls, count.computed

    ours, seen, calls, computed = submit_five()
    assert ours["client"]["max_retries"] == 7
    assert all(s == ours for s in seen)  # every task ran with the submitting flow's settings
    assert calls >= 5 and computed == 1  # serialized once, reused for the other submissions
    assert SettingsContext.serialize is original  # Prefect untouched outside the block


def test_dask_client_only_once_connected() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert prefect_compat.dask_client_if_connected(ThreadPoolTaskRunner(max_workers=1)) is None
    with DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"processes": False, "n_workers": 1, "dashboard_address": None},
    ) as pool:
        assert prefect_compat.dask_client_if_connected(pool) is None  # no cluster started yet
        client = pool.client  # connects (starts the cluster) now
        assert prefect_compat.dask_client_if_connected(pool) is client
        assert client.run(os.getpid)  # a live client: its worker answers


def test_drop_pending_threads_does_not_wait_for_the_running_task(
    prefect_server: dict[str, str],
) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    @task(cache_policy=NO_CACHE)
    def hold(label: str) -> None:
        ran.append(label)
        started.set()
        release.wait(30)

    @flow
    def one_running_one_pending() -> float:
        with ThreadPoolTaskRunner(max_workers=1) as pool:
            pool.submit(hold, {"label": "running"})
            pool.submit(hold, {"label": "pending"})
            assert started.wait(30)
            t0 = time.monotonic()
            prefect_compat.drop_pending_threads(pool)
            took = time.monotonic() - t0
            release.set()  # leaving the block must not wait either; let the thread end
        return took

    try:
        took = one_running_one_pending()
    finally:
        release.set()
    assert took < 1.0  # did not wait for the running task (it held for up to 30 s)
    time.sleep(0.5)  # had the pending task not been dropped, it would run now
    assert ran == ["running"]


def test_named_copy_names_the_task_run_and_keeps_its_cache_key(
    prefect_server: dict[str, str],
) -> None:
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, TASK_SOURCE
    from prefect.client.orchestration import get_client
    from prefect.states import State

    @task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
    def double(x: str) -> str:
        return x * 2

    label = "double · w712"
    value = uuid.uuid4().hex  # a fresh input: the first run is not a cache hit

    @flow
    def plain_then_named() -> tuple[State, State]:
        first = double(value, return_state=True)
        named = named_copy(double, label)(value, return_state=True)
        return first, named

    first, named = plain_then_named()
    assert first.is_completed() and first.name == "Completed"
    assert named.name == "Cached" and named.result() == value * 2  # same key as the original
    assert double.name == "double"  # the original task is untouched
    with get_client(sync_client=True) as client:
        run = client.read_task_run(named.state_details.task_run_id)
    assert run.name == label


def test_in_process_registry_passes_by_handle_and_always_removes() -> None:
    registry: InProcess[list[int]] = InProcess("test inputs")
    obj = [1, 2, 3]
    with registry.passing(obj) as handle:
        assert registry.get(handle) is obj and len(registry) == 1
    assert len(registry) == 0
    with pytest.raises(UnknownHandle, match=f"no test inputs under handle '{handle}'"):
        registry.get(handle)
    with pytest.raises(ZeroDivisionError), registry.passing(obj) as failed:
        assert registry.get(failed) is obj
        _ = 1 / 0
    assert len(registry) == 0 and failed != handle  # removed on the error; a fresh handle


def test_in_process_registry_reaches_a_subflow(prefect_server: dict[str, str]) -> None:
    from prefect import flow

    registry: InProcess[threading.Event] = InProcess("work inputs")
    obj = threading.Event()  # could not be a flow run's parameter at all

    @flow
    def child(handle: str) -> None:
        registry.get(handle).set()

    @flow
    def parent() -> None:
        with registry.passing(obj) as handle, no_subflow_heartbeat():
            child(handle)

    parent()
    assert obj.is_set()  # the subflow had this very object
    assert len(registry) == 0


def test_in_process_registry_travels_empty_with_a_flow_shipped_to_dask() -> None:
    """prefect-dask pickles the flow run's flow (its function by value, with the globals it
    names) for every task: a registry named by a flow pickles, empty and with a new lock."""
    import cloudpickle

    registry: InProcess[object] = InProcess("work inputs")

    def flow_body(handle: str) -> object:
        return registry.get(handle)

    with registry.passing(object()) as handle:
        copy = cloudpickle.loads(cloudpickle.dumps(flow_body))
        with pytest.raises(UnknownHandle):
            copy(handle)  # another process has none of this one's objects
        assert registry.get(handle) is not None  # the original keeps its own
    with registry.passing(7) as handle:  # and it still works after being pickled
        assert registry.get(handle) == 7


def test_no_subflow_heartbeat_unsets_the_frequency_inside_only() -> None:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        with no_subflow_heartbeat():
            assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() is None
        assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() == 30


def test_show_cancelling_follows_the_engines_cancel_intent(prefect_server: dict[str, str]) -> None:
    # The runner delivers a cancellation by setting the control listener's intent (over its
    # loopback channel) before the kill; set it here the same way the listener does.
    from prefect import flow
    from prefect._internal import control_listener
    from prefect.context import FlowRunContext

    @flow
    def observe() -> tuple[str, str]:
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        before = ctx.flow_run.state
        prefect_compat.show_cancelling()  # no intent: nothing changes
        without = ctx.flow_run.state.name if ctx.flow_run.state else "none"
        control_listener._set_intent("cancel")
        try:
            prefect_compat.show_cancelling()
            with_intent = ctx.flow_run.state.name if ctx.flow_run.state else "none"
        finally:
            control_listener.clear_intent()
            ctx.flow_run.state = before
        return without, with_intent

    assert observe() == ("Running", "Cancelling")
    prefect_compat.show_cancelling()  # outside a flow run: nothing to do, no error


def test_stop_temporary_servers_finds_prefects_servers() -> None:
    """Prefect keeps one server object per port; ours finds and stops them (a started one
    is stopped for real in test_shutdown.py, see the module docstring). The session's test
    server (prefect_test_harness) is one of them: it is set aside meanwhile."""
    from prefect.server.api.server import SubprocessASGIServer

    others = dict(SubprocessASGIServer._instances)
    SubprocessASGIServer._instances.clear()
    try:
        server = SubprocessASGIServer(8765)
        assert SubprocessASGIServer(8765) is server  # Prefect reuses it
        prefect_compat.stop_temporary_servers()
        assert SubprocessASGIServer(8765) is not server  # stopped and forgotten
    finally:
        SubprocessASGIServer._instances.clear()
        SubprocessASGIServer._instances.update(others)


def test_server_pid_file_is_prefects() -> None:
    from prefect.cli._server_utils import SERVER_PID_FILE_NAME

    assert prefect_compat.SERVER_PID_FILE == SERVER_PID_FILE_NAME


def test_drain_sends_queued_logs_at_once(prefect_server: dict[str, str]) -> None:
    from prefect import flow, get_run_logger
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_LOGGING_TO_API_BATCH_INTERVAL, temporary_settings

    marker = f"drain-me-{uuid.uuid4().hex}"

    @flow
    def log_then_drain() -> str:
        get_run_logger().info(marker)
        prefect_compat.drain_logs_and_events(10.0)
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[ctx.flow_run.id]))
            )
        return "\n".join(log.message for log in logs)

    # Batches every 60 s: without the drain the line would not be on the server yet.
    with temporary_settings({PREFECT_LOGGING_TO_API_BATCH_INTERVAL: 60}):
        assert marker in log_then_drain()


ORPHANED_IMPORT_LOCK = """
import _imp, sys, threading
from flows.prefect_compat import release_orphaned_import_lock

_imp.acquire_lock()  # what a signal between acquire and try leaves behind
done = threading.Event()
threading.Thread(target=lambda: (__import__("xml.dom.minidom"), done.set()), daemon=True).start()
blocked = not done.wait(2)  # another thread cannot import anything meanwhile
released = release_orphaned_import_lock()
print(blocked, released, done.wait(10), release_orphaned_import_lock())
"""


def test_an_orphaned_import_lock_is_released() -> None:
    out = subprocess.run(
        [sys.executable, "-c", ORPHANED_IMPORT_LOCK],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "1", "True", "0"], out.stdout
