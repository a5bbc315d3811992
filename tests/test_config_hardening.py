"""Configs that would lose or corrupt data, or fail per file hours later, are refused before
anything runs — each problem one line naming the key — and pattern matches that cannot be
used are reported and listed as left out, never dropped silently.

Real files in a temporary project (the sample weeks); the inputs' sha256 are compared before
and after every case.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_project import make_project, run_flow

from fermipipe.errors import ConfigError
from flows.cli import load_and_plan


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def edited(config: Path, change: Any) -> Path:
    cfg = yaml.safe_load(config.read_text())
    change(cfg)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


def problems_of(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_and_plan(str(config), root=str(config.parent))
    lines = info.value.problems
    assert lines and all("\n" not in line for line in lines)
    return lines


def test_merge_output_onto_an_input_is_refused(project: Path) -> None:
    root = project.parent
    before = digests(root / "in")
    photon = next((root / "in").glob("lat_photon*"))
    spacecraft = next((root / "in").glob("lat_spacecraft*"))
    (root / "link.fits").symlink_to(photon)
    outputs = [
        str(photon),  # the input itself
        str(root / "products" / ".." / "in" / photon.name),  # through ..
        str(root / "link.fits"),  # through a symlink
        str(spacecraft),  # a file a step reads
        "./in/lat_photon_weekly_w999_p305_v001.fits",  # the next run would read it
        "../../escaped.fits",  # out of the run root
        "./products/.fermipipe-cache/store/x.fits",  # into the cache store
    ]

    def change(cfg: dict[str, Any]) -> None:
        for i, output in enumerate(outputs):
            merge = dict(cfg["merging"][i % 2], name=f"m{i}", output_file=output)
            cfg["merging"].append(merge)

    text = "\n".join(problems_of(edited(project, change)))
    for i in range(len(outputs)):
        assert f"merging[{i + 2}].output_file" in text, (i, text)
    assert "would overwrite an input file" in text
    assert "would overwrite the input 'scfile'" in text
    assert "matches input.pattern" in text
    assert "leads out of the run root" in text
    assert "inside the cache store" in text
    assert digests(root / "in") == before


def test_impossible_tool_parameters_fail_when_the_config_is_loaded(project: Path) -> None:
    def change(cfg: dict[str, Any]) -> None:
        select = cfg["steps"][0]["params"]
        select["emn"] = 100
        select["zmax"] = "abc"
        select["emin"], select["emax"] = 1000, 100
        cfg["steps"][2]["params"]["nxpix"] = 0

    text = "\n".join(problems_of(edited(project, change)))
    assert "steps[0].params.emn: gtselect has no parameter 'emn' (did you mean emin?)" in text
    assert "steps[0].params.zmax: parameter zmax='abc' is not a valid real" in text
    assert "steps[0].params.emin: emin=1000 is not below emax=100" in text
    assert "steps[2].params.nxpix: must be at least 1 (got 0)" in text


def test_non_fits_common_file_and_output_folder_below_a_file(project: Path) -> None:
    root = project.parent
    (root / "ft2.fits").write_text("lat_spacecraft_weekly_w700_p310_v001.fits\n")
    (root / "afile").write_text("x")

    def change(cfg: dict[str, Any]) -> None:
        cfg["common_files"] = {"ft2list": str(root / "ft2.fits")}
        cfg["output"]["directory"] = "afile/products"

    text = "\n".join(problems_of(edited(project, change)))
    assert "common_files.ft2list:" in text and "ft2.fits: not a FITS file" in text
    assert "output.directory:" in text and "is a file, not a folder" in text


def test_unusable_pattern_matches_are_reported_and_left_out(
    project: Path, prefect_server: Any
) -> None:
    """A dangling link, a FIFO, a folder, a text file and gzip content under a .fits name
    all match the pattern: none is dropped silently — each is named with its reason in the
    log, the summary and every merged product's manifest, and the good weeks are merged."""
    root = project.parent
    pattern = "lat_photon_weekly_w{}_p305_v001.fits"
    (root / "in" / pattern.format("800")).symlink_to(root / "nowhere.fits")
    os.mkfifo(root / "in" / pattern.format("801"))
    (root / "in" / pattern.format("802")).mkdir()
    (root / "in" / pattern.format("803")).write_text(str(next((root / "in").glob("*w700*"))))
    (root / "in" / pattern.format("804")).write_bytes(gzip.compress(b"SIMPLE  =  T"))
    before = digests(root / "in")
    reasons = {
        "800": "a dangling symbolic link",
        "801": "not a regular file",
        "802": "a folder, not a file",
        "803": "not a FITS file",
        "804": "gzip-compressed: name it .gz",
    }
    state, summary = run_flow(project, root / "summary.json")
    assert state.is_completed()
    rejected = summary["rejected_inputs"]
    assert len(rejected) == len(reasons)
    for week, why in reasons.items():
        assert why in rejected[pattern.format(week)], (week, rejected)
    manifest = json.loads((root / "products" / "example_ccube.fits.manifest.json").read_text())
    assert {name for name in manifest["left_out"]} == set(rejected)
    assert summary["files"]["ok"] == 2
    assert digests(root / "in") == before


def test_merge_with_no_input_fails_the_run(project: Path, prefect_server: Any) -> None:
    """Every week empty (an energy range with no events): the merges read nothing, so the
    run ends Failed saying which merge got no input — unless on_failure: skip, which
    warns instead."""

    def empty(cfg: dict[str, Any]) -> None:
        cfg["steps"][0]["params"].update({"emin": 1, "emax": 2})

    config = edited(project, empty)
    root = project.parent
    state, summary = run_flow(config, root / "a.json")
    assert not state.is_completed()
    assert summary["files"]["empty"] == 2
    errors = {m["name"]: m["error"] for m in summary["merges"]}
    assert "merge 'ccube' got no input" in errors["ccube"]
    assert not (root / "products" / "example_ccube.fits").exists()
    edited(config, lambda cfg: cfg.update(on_failure="skip"))
    state, summary = run_flow(config, root / "b.json")
    assert state.is_completed()
    assert {m["status"] for m in summary["merges"]} == {"skipped"}


def test_names_are_data_through_the_pipeline(project: Path, prefect_server: Any) -> None:
    """An input named with $HOME, ~, quotes and non-ASCII letters runs like any other:
    nothing in the name is expanded and nothing fails to encode it (task names, logs, FITS
    keywords, manifests)."""
    root = project.parent
    odd = "lat_photon_weekly_w700_é日本 $HOME ~x 'q'_p305_v001.fits"
    (root / "in" / "lat_photon_weekly_w700_p305_v001.fits").rename(root / "in" / odd)
    before = digests(root / "in")
    state, summary = run_flow(project, root / "s.json")
    assert state.is_completed(), state
    assert summary["files"]["ok"] == 2
    assert odd in {Path(f["input"]).name for f in summary["per_file"]}
    manifest = json.loads((root / "products" / "example_ccube.fits.manifest.json").read_text())
    assert odd in {item["source"] for item in manifest["inputs"]}
    assert not (root / "products" / "x").exists() and not list(root.rglob("*/home/*"))
    assert digests(root / "in") == before
