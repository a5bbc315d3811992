"""The run summary as a person reads it: markdown report and the failure table."""

from __future__ import annotations

from pathlib import Path

from fermipipe.manifest import Manifest, ManifestInput, write_manifest
from fermipipe.runner import StepResult
from fermipipe.summary import FileSummary, MergeSummary, RunSummary


def make_summary(tmp_path: Path) -> RunSummary:
    product = tmp_path / "out" / "example_ccube.fits"
    product.parent.mkdir()
    product.write_bytes(b"")
    write_manifest(
        product,
        Manifest(
            product=str(product),
            strategy="image_sum",
            config_hash="0123456789abcdef0123",
            tool_versions={"gtbin": "native"},
            inputs=[ManifestInput("w700", "w700.fits", "aa" * 32, "k1")],
            left_out={"w701": "failed at select"},
        ),
    )
    s = RunSummary(config="/cfg/example.yaml", workers=2, started=100.0, finished=112.5)
    ok = FileSummary(
        "w700",
        "/data/w700.fits",
        "ok",
        steps=[StepResult("select", "w700", "ok", "gtselect …", wall_seconds=1.5)],
    )
    cached = FileSummary(
        "w702",
        "/data/w702.fits",
        "ok",
        steps=[StepResult("select", "w702", "ok", "gtselect …")],
        cached_steps=["select"],
    )
    failed_step = StepResult(
        "select",
        "w701",
        "failed",
        "gtselect …",
        exit_code=2,
        error="exit code 2: bad | header",
        stderr_tail=[f"line {i}" for i in range(8)],
    )
    failed = FileSummary(
        "w701",
        "/data/w701.fits",
        "failed",
        steps=[failed_step],
        failed_step="select",
        error="exit code 2: bad | header",
    )
    s.files = [ok, failed, cached]
    s.merges = [
        MergeSummary(
            "ccube",
            str(product),
            "image_sum",
            "ok",
            2,
            {"w701": "failed at select"},
            quicklook=str(product.with_suffix(".png")),
        )
    ]
    return s


def test_markdown_has_inputs_counts_steps_failures_products(tmp_path: Path) -> None:
    md = make_summary(tmp_path).markdown()
    assert "| files | run | cached | ok | empty | failed |" in md
    assert "| 3 | 2 | 1 | 2 | 0 | 1 |" in md  # 3 inputs: 2 ran, 1 from the cache
    assert "- `/data/w701.fits`: failed" in md
    assert "- `/data/w702.fits`: cached" in md
    assert "| select | 1.50 | 0.50 | 0.00 | 3 |" in md
    # the user's file (its path), the step, the reason; a | in a cell escaped
    assert "| `/data/w701.fits` | select | exit code 2: bad \\| header |" in md
    product = tmp_path / "out" / "example_ccube.fits"
    assert f"[`{product}`]({product.as_uri()}); left out: w701" in md
    sidecar = product.with_name(product.name + ".manifest.json")
    assert f"manifest [`{sidecar}`]({sidecar.as_uri()}): 1 inputs, config 0123456789ab" in md
    png = product.with_suffix(".png")
    assert f"quick-look: [`{png}`]({png.as_uri()})" in md


def test_failure_table_carries_the_last_stderr_lines(tmp_path: Path) -> None:
    rows = make_summary(tmp_path).failure_table()
    assert rows == [
        {
            "file": "/data/w701.fits",
            "step": "select",
            "reason": "exit code 2: bad | header",
            "stderr_tail": "line 3\nline 4\nline 5\nline 6\nline 7",
        }
    ]


def test_json_keeps_the_quicklook_path(tmp_path: Path) -> None:
    d = make_summary(tmp_path).to_dict()
    assert d["merges"][0]["quicklook"].endswith("example_ccube.png")
    assert d["files"]["cached"] == 1 and d["files"]["failed"] == 1
