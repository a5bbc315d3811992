"""An image sum's quick-look, rendered from its sum while its product is written
(flows.products.EarlyLook): published only once the product is in place, the PNG the one
drawn from the product; a merge that fails leaves no picture (Prefect's test harness)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_project import make_project, run_flow, write_config

from fermipipe.quicklook import make_quicklook

pytestmark = pytest.mark.timeout(300)

BLOCK = """
import os, shutil, sys
os.makedirs("{folder}/in-the-way", exist_ok=True)
shutil.copyfile(sys.argv[1], sys.argv[2])
"""


def test_the_published_quick_look_is_the_one_of_the_product(
    tmp_path: Path, prefect_server: Any
) -> None:
    """Two weeks streamed into the counts merge: its PNG (rendered from the sum during the
    write) is byte for byte the one drawn from the written product, with the same title."""
    state, summary = run_flow(make_project(tmp_path), tmp_path / "s.json")
    assert state.is_completed(), summary.get("failures")
    (ccube,) = [m for m in summary["merges"] if m["strategy"] == "image_sum"]
    png, product = Path(ccube["quicklook"]), Path(ccube["output"])
    drawn = make_quicklook(product, tmp_path / "drawn.png", title=f"ccube: {product.name}")
    assert png == product.with_suffix(".png") and png.read_bytes() == drawn.read_bytes()


def test_a_merge_that_fails_in_its_write_leaves_no_picture(
    tmp_path: Path, prefect_server: Any
) -> None:
    """The counts product cannot be put in place (a folder holds its name): the sum was
    made and its picture rendered, but no PNG claims the product that does not exist."""
    config = make_project(tmp_path)
    products = tmp_path / "products"
    # A last step that puts the folder there while the files run (after the plan checked
    # the output names).
    (tmp_path / "block.py").write_text(BLOCK.format(folder=products / "example_ccube.fits"))
    cfg = yaml.safe_load(config.read_text())
    cfg["steps"].append(
        {
            "name": "block",
            "command": f"{sys.executable} {tmp_path / 'block.py'} {{input}} {{copy}}",
            "outputs": {"copy": "{stem}_copy.fits"},
        }
    )
    write_config(tmp_path, cfg)
    state, summary = run_flow(config, tmp_path / "s.json")
    assert not state.is_completed()
    (ccube,) = [m for m in summary["merges"] if m["strategy"] == "image_sum"]
    assert ccube["status"] == "failed" and "cannot write the product" in ccube["error"]
    assert ccube["quicklook"] is None
    assert not list(tmp_path.rglob("*.png")) and not list(products.glob(".*tmp*"))
