"""What a person sees in the Prefect UI, checked in a real browser.

A real `prefect server start` on loopback (UI on, SQLite in a temporary PREFECT_HOME),
`python deployments/serve.py` as the worker, and a run of its `fermipipe/served` deployment
(a deployment run: the 3.9 UI offers Retry only on those) over copies of the three sample
weeks, one of them cut short, with ``on_failure: skip`` so that the other two are merged
and a quick-look is drawn. Debian's Chromium, driven by Playwright (never a downloaded
browser), reads the flow-run page and its artifacts, then the broken week is repaired and
the UI's Retry pressed: only that week's steps may run again. On failure, screenshots go
to the test's temporary folder.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
from server_processes import prefect_server, start_group, stop_group

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SAMPLE = REPO / "data" / "sample"
CHROMIUM = Path("/usr/bin/chromium")
#: Headless Chromium on a machine with no display, no GPU and no network beyond loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROKEN = "lat_photon_weekly_w701_p305_v001.fits"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    with (
        prefect_server(
            home,
            drop={"FERMIPIPE_HOME"},
            settings={"PREFECT_UI_ENABLED": "true", "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
            timeout=120,
        ) as env,
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: str(home)}),
    ):
        yield env


@pytest.fixture(scope="module")
def client(server: dict[str, str]) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as c:
        yield c


@pytest.fixture(scope="module")
def served(server: dict[str, str], client: SyncPrefectClient, tmp_path_factory: Any) -> Any:
    folder = tmp_path_factory.mktemp("serve")
    log = folder / "serve.log"
    proc = start_group([PY, str(REPO / "deployments" / "serve.py")], server, log, folder)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                yield client.read_deployment_by_name("fermipipe/served")
                break
            except Exception:  # noqa: BLE001 - ObjectNotFound until serve.py registers it
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"serve.py registered nothing: {log.read_text()[-3000:]}")
                time.sleep(0.5)
    finally:
        stop_group(proc, signal.SIGINT, 20)


def project(folder: Path) -> Path:
    """Copies of the sample weeks (one cut short: not a FITS file any more) and the example
    chain on coarse grids, merging what succeeded (``on_failure: skip``)."""
    data = folder / "data"
    data.mkdir(parents=True)
    for src in SAMPLE.glob("*.fits"):
        shutil.copy(src, data / src.name)
    (data / BROKEN).write_bytes((SAMPLE / BROKEN).read_bytes()[:5000])
    cfg = yaml.safe_load((REPO / "configs" / "example.yaml").read_text())
    cfg["resources"] = {"cores": 2, "ram_disk": {"enabled": True, "path": "/dev/shm"}}
    cfg["input"] = {"directory": "data", "pattern": "lat_photon_weekly_w*_p305_v001.fits"}
    cfg["output"] = {"directory": "products", "workdir": "work"}
    cfg["on_failure"] = "skip"
    cfg["caldb"] = str(SAMPLE / "caldb")  # the example's own path is relative to configs/
    for step in cfg["steps"]:
        if "scfile" in step.get("inputs", {}):
            step["inputs"]["scfile"] = (
                "{config_dir}/data/lat_spacecraft_weekly_w{week}_p310_v001.fits"
            )
        if step["name"] == "ccube":
            step["params"].update({"nxpix": 36, "nypix": 18, "binsz": 10.0, "enumbins": 2})
        if step["name"] == "ltcube":
            step["params"].update({"binsz": 30, "dcostheta": 0.2})
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def wait_final(
    client: SyncPrefectClient, run_id: uuid.UUID, timeout: float, run_count: int = 1
) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final() and run.run_count >= run_count:
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"flow run {run_id} still {run.state and run.state.name} after {timeout} s")
        time.sleep(0.5)


def ran_steps(summary: dict[str, Any]) -> set[tuple[str, str]]:
    """(file, step) of every per-file step a tool actually ran for."""
    return {
        (f["file"], r["step"])
        for f in summary["per_file"]
        for r in f["steps"]
        if r["step"] not in f["cached_steps"]
    }


@pytest.mark.timeout(420)
def test_failed_run_reads_right_in_the_ui_and_retry_reruns_only_the_fixed_file(
    server: dict[str, str],
    client: SyncPrefectClient,
    served: Any,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    config = project(tmp_path / "project")
    summary_json = tmp_path / "summary.json"
    run = client.create_flow_run_from_deployment(
        served.id, parameters={"config": str(config), "summary_json": str(summary_json)}
    )
    first = wait_final(client, run.id, 240)
    assert first.state_type == StateType.FAILED, first.state
    broken_id = BROKEN.removesuffix(".fits")
    first_summary = json.loads(summary_json.read_text())
    assert {f for f, _step in ran_steps(first_summary)} == {
        "lat_photon_weekly_w700_p305_v001",
        broken_id,
        "lat_photon_weekly_w702_p305_v001",
    }
    ui = server["PREFECT_API_URL"].removesuffix("/api")
    user_file = str(config.parent / "data" / BROKEN)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        shot = 0

        def screenshot(what: str) -> None:
            nonlocal shot
            shot += 1
            page.screenshot(path=str(tmp_path / f"{shot:02d}-{what}.png"), full_page=True)

        try:
            # The flow-run page: Failed, its work subflow Failed too, tasks named by step
            # and file, and on the Artifacts tab the progress count and the summary.
            page.goto(f"{ui}/runs/flow-run/{run.id}", wait_until="networkidle")
            expect(page.get_by_text("Failed").first).to_be_visible()
            page.get_by_text("Subflow Runs", exact=True).click()
            work = page.get_by_text("fermipipe-work").first
            expect(work).to_be_visible()
            (work_run,) = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["fermipipe-work"]))
            )
            assert work_run.state_type == StateType.FAILED, work_run.state
            page.get_by_text("Artifacts", exact=True).click()
            expect(page.get_by_text("3/3 files — 1 failed").first).to_be_visible()

            # The summary: the user's file, the step and the reason; the quick-look loaded.
            page.get_by_text("fermipipe-summary", exact=True).first.click()
            expect(page.get_by_text("fermipipe run: Failed").first).to_be_visible()
            failures = page.locator("tr", has_text=user_file).filter(has_text="select")
            expect(failures.first).to_be_visible()
            expect(failures.first).to_contain_text("not a readable FITS file")
            assert "/dev/shm" not in page.inner_text("body")
            image = page.get_by_alt_text("quick-look of ccube")
            image.scroll_into_view_if_needed()
            expect(image).to_be_visible()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
            )

            # The failures table artifact: file path, step, reason first.
            page.go_back(wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text("fermipipe-failures", exact=True).first.click()
            expect(page.locator("td", has_text=user_file).first).to_be_visible()
            headers = [h.strip() for h in page.locator("th").all_inner_texts()]
            assert headers[:3] == ["file", "step", "reason"], headers

            # Task runs named by step and file.
            page.goto(f"{ui}/runs/flow-run/{work_run.id}", wait_until="networkidle")
            page.get_by_text("Task Runs", exact=True).click()
            expect(page.get_by_text("select · w701").first).to_be_visible()

            # Repair the week and press Retry: only that week runs again.
            shutil.copy(SAMPLE / BROKEN, config.parent / "data" / BROKEN)
            page.goto(f"{ui}/runs/flow-run/{run.id}", wait_until="networkidle")
            page.get_by_role("button", name="Retry").click()
            page.get_by_role("dialog").get_by_role("button", name="Retry").click()  # confirm
            second = wait_final(client, run.id, 240, run_count=2)
            assert second.state_type == StateType.COMPLETED, second.state
            again = json.loads(summary_json.read_text())
            assert {f for f, _step in ran_steps(again)} == {broken_id}
            assert again["files"]["cached"] == 2 and again["files"]["failed"] == 0
            page.reload(wait_until="networkidle")
            expect(page.get_by_text("Completed").first).to_be_visible()
        except BaseException:
            screenshot("failure")
            raise
        finally:
            browser.close()
